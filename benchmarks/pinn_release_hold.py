"""Hold the release law at its start while the networks fit, then release it (issue 9): does
keeping (pH_50, n) fixed for the first Adam steps stop the still-poor networks' PDE residuals
from dragging the law off the truth?

Background (benchmarks/pinn_release_causal.py, ``pull``): the data terms have zero gradient on
the law's unknowns (the law acts only through the PDE residuals); at the start the residuals of
untrained networks push both pH_50 and n down, and Adam moves each unknown by about its learning
rate per step whenever the sign of its gradient persists, so a weak but biased early push moves
the law at full speed. Started at the true law with networks regressed onto the FEM truth, the
weak form with balance "residuals" holds the law ((6.82, 2.05) after 300 steps;
pinn_release_weak.py criterion (a)); the strong form does not ((6.75, 1.54)).

Method (``TrainingConfig.unknowns_from_step``, hybrid/inverse/training.py): the scalar unknowns'
Adam group has learning rate 0 for the first ``unknowns_from_step`` steps (the networks train on
data and PDE terms with the law at its start); at that step its Adam step count and moments are
zeroed and its learning rate set to ``unknown_learning_rate`` (1e-2 on the raw parameter; no
learning-rate schedule), so the gradients seen during the hold do not steer the first released
steps. The networks' Adam state is not touched. L-BFGS then trains everything.

Twin, start and truth: examples/invert_ph_release.toml (run ``hybrid synthesize
examples/synthesize_ph_release.toml`` first); truth pH_50 6.8, n 2; start (7.2, 1.0).

Pre-registration (written and committed before any run of this script):

- Settings: those of pinn_release_causal.py's ``baseline`` (the example's training: 256 points,
  float64, seed 0, one torch thread, 2000 Adam + 300 L-BFGS, RAD every 100 steps, unknown
  learning rate 1e-2) except:
  ``weak_hold``: weak form, 12 cells in space and time, balance "residuals", unknowns_from_step 1000;
  ``strong_hold``: strong form, balance "residuals", unknowns_from_step 1000.
- The two runs go at the same time as two processes, one torch thread each; the 1-min load is
  sampled every 60 s while they run and reported.
- Success: final pH_50 within 0.05 of 6.8 AND final n within 5 % of 2.
  "Helps": both |pH_50 - 6.8| and |n - 2| smaller than the same form's run without the hold
  (pinn_release_weak.json: weak "residuals" ``invert_weak_2000_300_residuals_12`` (6.661, 0.560);
  strong "residuals" ``invert_strong_2000_300_residuals`` (6.099, 0.544)).
- Recorded every 100 steps: (pH_50, n), the data and PDE terms and the weights.
- If ``weak_hold`` succeeds: the same run from a second start (6.4, 3.0) before claiming anything.
- A run that cannot finish by the session's cut-off is stopped and its trajectory so far reported
  as cut (progress lines in the log).

Outcome: not yet measured.

Post-hoc diagnostic (written after both runs, before its own run; no success criterion):
``at_release FORM``: the hold phase alone (the run's settings with 1000 Adam steps, the law held
throughout, no L-BFGS), then the networks frozen and the sum of the unweighted PDE terms
minimised over (pH_50, n) by L-BFGS (pinn_release_weak.py's ``_minimise_pde``; strong form on 8192
points of seed 11), once from the truth and once from the start (7.2, 1.0), and the same for the
PDE terms times the Trainer's balance weights at the release (``weighted_*``; ``_minimise_pde``
labels its starting value "truth" in ``pde_terms_at_truth`` whichever start it is given). Where the PDE of the
held networks puts the law: if at low n, the hold's networks, fitted with the law at its start,
carry that law's bias into the release.

Run from the repository root (each run merges its entry into
benchmarks/results/pinn_release_hold.json):
    .venv/bin/python benchmarks/pinn_release_hold.py weak_hold
    .venv/bin/python benchmarks/pinn_release_hold.py strong_hold
    .venv/bin/python benchmarks/pinn_release_hold.py weak_hold 6.4 3.0     # second start
    .venv/bin/python benchmarks/pinn_release_hold.py at_release weak       # post-hoc diagnostic
"""

from __future__ import annotations

import json
import os
import sys

import pinn_release_causal
from pinn_release_diagnosis import ROOT, training_settings
from pinn_release_weak import _minimise_pde, _setup

RESULTS = ROOT / "benchmarks" / "results" / "pinn_release_hold.json"
HOLD = {"weak_hold": {"residual_form": "weak", "weak_cells": 12, "weak_time_cells": 12, "balance": "residuals",
                      "unknowns_from_step": 1000},
        "strong_hold": {"residual_form": "strong", "balance": "residuals", "unknowns_from_step": 1000}}
pinn_release_causal.RUNS |= HOLD   # pinn_release_causal.run: the causal baseline's settings | HOLD[name]


def _merge(key: str, value) -> None:
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data[key] = value
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=1) + "\n")


def at_release(form: str, strong_points: int = 8192) -> dict:
    """Post-hoc: train ``{form}_hold``'s hold phase only, freeze the networks, and minimise the
    unweighted PDE terms over the law from the truth and from the start (module doc)."""
    import torch
    from hybrid.inverse import Trainer, TrainingConfig
    config, truth, build = _setup()
    name = f"{form}_hold"
    settings = training_settings(config) | pinn_release_causal.COMMON | HOLD[name]
    settings |= {"adam_steps": settings["unknowns_from_step"], "lbfgs_steps": 0}
    problem = build()
    start = {u.name: float(u().detach()) for u in problem.scalar_unknowns()}
    load = os.getloadavg()
    result = Trainer(problem, TrainingConfig(**settings), progress=lambda line: print(line, flush=True)).run()
    problem.network.requires_grad_(False)
    points = problem.sample_collocation(strong_points, torch.Generator().manual_seed(11))

    weights = result.history[-1]["weights"]

    def pde_terms(weighted: bool = False):   # weak: the Trainer's test functions (``points`` unused)
        residuals = problem.pde_residuals(points.clone())
        return {f"pde_{n}": (weights[f"pde_{n}"] if weighted else 1.0) * (r**2).mean()
                for n, r in zip(("lipo", "free", "cell"), residuals)}
    return {"settings": settings, "start": start, "truth": truth, "hold_wall_s": result.seconds,
            "terms_at_release": result.history[-1]["terms"], "weights_at_release": weights,
            "from_truth": _minimise_pde(problem, pde_terms, truth), "from_start": _minimise_pde(problem, pde_terms, start),
            "weighted_from_truth": _minimise_pde(problem, lambda: pde_terms(True), truth),
            "weighted_from_start": _minimise_pde(problem, lambda: pde_terms(True), start),
            "machine": pinn_release_causal._machine(), "load_before": list(load), "load_after": list(os.getloadavg())}


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "at_release" and sys.argv[2] in ("weak", "strong"):
        _merge(f"at_release_{sys.argv[2]}", outcome := at_release(sys.argv[2]))
        print(json.dumps(outcome, indent=1))
        raise SystemExit(0)
    if len(sys.argv) not in (2, 4) or sys.argv[1] not in HOLD:
        raise SystemExit(f"usage: pinn_release_hold.py {{{','.join(HOLD)}}} [PH_50 N]")
    name = sys.argv[1]
    start = {"ph_50": float(sys.argv[2]), "steepness": float(sys.argv[3])} if len(sys.argv) == 4 else None
    key = name + (f"_from_{sys.argv[2]}_{sys.argv[3]}" if start else "")
    outcome = pinn_release_causal.run(name, start)
    _merge(key, outcome)
    print(json.dumps({k: v for k, v in outcome.items() if k != "trajectory"}, indent=1))
