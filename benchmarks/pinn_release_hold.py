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

Post-hoc diagnostic (written after both runs, before its own run; no success criterion):
``at_release FORM``: the hold phase alone (the run's settings with 1000 Adam steps, the law held
throughout, no L-BFGS), then the networks frozen and the sum of the unweighted PDE terms
minimised over (pH_50, n) by L-BFGS (pinn_release_weak.py's ``minimise_pde``; strong form on 8192
points of seed 11), once from the truth and once from the start (7.2, 1.0), and the same for the
PDE terms times the Trainer's balance weights at the release (``weighted_*``; ``minimise_pde``
labels its starting value "truth" in ``pde_terms_at_truth`` whichever start it is given). Where
the PDE of the held networks puts the law: if at low n, the hold's networks, fitted with the law
at its start, carry that law's bias into the release.

Pre-registration, data-first hold (written after the outcome below, before its runs):
``weak_data_hold`` and ``strong_data_hold``: the runs above, and in addition the PDE terms
(``pde_*``) left out of the loss for the first 1000 Adam steps (the networks train on the data and
boundary terms alone while the law is held; from step 1000 on, the balanced loss as before; the
balance weights keep being updated during the hold). The Trainer's loss sum is overridden in this
script (:class:`DataFirstTrainer`), no library change. Same success and "helps" rules and
baselines (the same form's run without any hold); run at the same time, one thread each; second
start (6.4, 3.0) only if the weak one succeeds.

Outcome (benchmarks/results/pinn_release_hold.json; 2-core AMD EPYC shared with other helpers,
the two runs at the same time, one torch thread each; 1-min load 0.05 at the start, 1.0-1.7 while
both ran, 2.6 peak, 0.8-1.6 with weak_hold alone; every run made is listed): no success; the weak
form "helps" by the pre-registered rule, in pH_50 only in substance; the strong form does not.

    run          pH_50   n       |pH_50-6.8| |n-2|   without hold      wall   load 1-min before/after
    weak_hold    6.841   0.611   0.041       1.389   (6.661, 0.560)    748 s  0.05 / 1.35
    strong_hold  6.091   0.574   0.709       1.426   (6.099, 0.544)    116 s  0.05 / 1.74

weak_hold misses on n; its pH_50 is within 0.05 only as a point on a path still moving (6.889 at
the end of Adam, then -0.004 per 25 L-BFGS iterations to 6.841): not an estimate to claim, and the
second start was not run (no success). strong_hold's pH_50 error is larger than without the hold
(0.709 against 0.701): no help.

The law falls the moment it is released, in both forms, with the networks already fitted:
(pH_50, n) at steps 1100 / 1200 / 1500 / 2000 are (7.155, 0.882) / (7.101, 0.797) / (6.959,
0.672) / (6.889, 0.613) weak and (6.918, 0.739) / (6.606, 0.663) / (6.266, 0.592) / (6.091,
0.575) strong; without the hold the "residuals" runs had (7.026, 0.819) / (6.832, 0.754) weak and
(6.990, 0.811) / (6.823, 0.717) strong at steps 100 / 200: after the hold n falls about as fast.
At the release (step 1000) the weak run's data terms were 3.0e-3 (total drug; its noise floor
2.5e-3, pinn_release_weak criterion (c)) and 1.3e-4 (released fraction; 0.15x its floor 8.3e-4):
the networks fit the data, the released fraction below its noise, with the law held at (7.2, 1.0);
the PDE terms then were
2.5e-3 / 6.0e-5 / 6.5e-4 (lipo / free / cell). Strong: data 6.2e-3 / 7.3e-4, pde_lipo rising
during the hold (9.2e-3 at step 600, 1.8e-2 at 1000).

``at_release`` (post-hoc; the hold phase re-run, identical trajectory): the held networks have
adapted to the held law. With them frozen, the PDE terms at the truth are far worse than at the
start (weak: pde_free 2.3e-2 against 6.0e-5, pde_lipo 1.8e-2 against 2.5e-3; strong: 3.7e-2
against 1.1e-3), and minimising the PDE over the law alone gives, from either start,
    weak    unweighted (7.141, 1.082)   balance-weighted (7.207, 0.972)
    strong  unweighted (7.077, 0.860)   balance-weighted (7.255, 0.749)
so the hold does not give fields from which the law can be read: the PDE terms train the networks
during the hold and bake the start law into them, and what follows the release is a joint descent
of networks and law (the strong weighted minimum's n 0.75 matches the run's n 0.74 at step 1100;
the weak one's frozen minimum stays at the start, so its fall is the joint descent alone).

Outcome, data-first hold (load 1-min 0.36 before, 1.0-1.4 while both ran): no success; the strong
form "helps" by the rule, the weak form does not.

    run               pH_50   n       |pH_50-6.8| |n-2|   without hold      wall   load before/after
    weak_data_hold    6.327   0.598   0.473       1.402   (6.661, 0.560)    463 s  0.36 / 1.15
    strong_data_hold  6.247   0.602   0.553       1.398   (6.099, 0.544)     90 s  0.36 / 1.64

Without the PDE the networks did not fit the data better but worse: at step 1000 the data terms
were 6.1e-3 / 3.2e-3 weak and 6.7e-3 / 5.9e-3 strong (total drug / released fraction; floors
2.5e-3 / 8.3e-4), against 3.0e-3 / 1.3e-4 and 6.2e-3 / 7.3e-4 with the PDE on during the hold,
and the released-fraction term oscillated (strong: 9.9e-4 at step 400, 6.6e-3 at 500). On release
the law fell along the same path as in every other run: (7.086, 0.848) / (6.985, 0.782) / (6.652,
0.680) / (6.338, 0.600) weak and (7.080, 0.833) / (6.995, 0.768) / (6.615, 0.653) / (6.251,
0.603) strong at steps 1100 / 1200 / 1500 / 2000. So neither hold changes where n goes: from any
networks seen here (untrained, fitted with the law held, fitted to the data alone) the joint
descent takes n to 0.5-0.6 within about 1000 Adam steps of the release; only networks fitted to
the FEM truth (pinn_release_weak criterion (a)) kept the law.

Run from the repository root (each run merges its entry into
benchmarks/results/pinn_release_hold.json):
    .venv/bin/python benchmarks/pinn_release_hold.py weak_hold
    .venv/bin/python benchmarks/pinn_release_hold.py strong_hold
    .venv/bin/python benchmarks/pinn_release_hold.py weak_hold 6.4 3.0     # second start
    .venv/bin/python benchmarks/pinn_release_hold.py at_release weak       # post-hoc diagnostic
    .venv/bin/python benchmarks/pinn_release_hold.py weak_data_hold
    .venv/bin/python benchmarks/pinn_release_hold.py strong_data_hold
"""

from __future__ import annotations

import json
import os
import sys

import pinn_release_causal
from pinn_release_diagnosis import ROOT, merge_entry, training_settings
from pinn_release_weak import minimise_pde, setup

RESULTS = ROOT / "benchmarks" / "results" / "pinn_release_hold.json"
HOLD = {"weak_hold": {"residual_form": "weak", "weak_cells": 12, "weak_time_cells": 12, "balance": "residuals",
                      "unknowns_from_step": 1000},
        "strong_hold": {"residual_form": "strong", "balance": "residuals", "unknowns_from_step": 1000}}
HOLD |= {f"{form}_data_hold": HOLD[f"{form}_hold"] for form in ("weak", "strong")}
pinn_release_causal.RUNS |= HOLD   # pinn_release_causal.run: the causal baseline's settings | HOLD[name]


def _data_first_trainer():
    """A Trainer whose loss leaves out the PDE terms while the unknowns are held (module doc)."""
    from hybrid.inverse import Trainer

    class DataFirstTrainer(Trainer):
        def _weighted(self, terms):
            if self.step < self.config.unknowns_from_step:
                terms = {name: value for name, value in terms.items() if not name.startswith("pde")}
            return super()._weighted(terms)
    return DataFirstTrainer


def at_release(form: str, strong_points: int = 8192) -> dict:
    """Post-hoc: train ``{form}_hold``'s hold phase only, freeze the networks, and minimise the
    unweighted PDE terms over the law from the truth and from the start (module doc)."""
    import torch
    from hybrid.inverse import Trainer, TrainingConfig
    config, truth, build = setup()
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
            "from_truth": minimise_pde(problem, pde_terms, truth),
            "from_start": minimise_pde(problem, pde_terms, start),
            "weighted_from_truth": minimise_pde(problem, lambda: pde_terms(True), truth),
            "weighted_from_start": minimise_pde(problem, lambda: pde_terms(True), start),
            "machine": pinn_release_causal._machine(), "load_before": list(load), "load_after": list(os.getloadavg())}


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "at_release" and sys.argv[2] in ("weak", "strong"):
        merge_entry(RESULTS, f"at_release_{sys.argv[2]}", outcome := at_release(sys.argv[2]))
        print(json.dumps(outcome, indent=1))
        raise SystemExit(0)
    pinn_release_causal.run_from_command_line(
        sys.argv[1:], HOLD, "pinn_release_hold.py", RESULTS,
        trainer=lambda name: _data_first_trainer() if name.endswith("_data_hold") else None)
