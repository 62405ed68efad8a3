"""Causal (time-respecting) residual weights on the pH-release twin (issue 9): does fitting the
PDE residual of early times before later ones keep the still-poor networks' late-time residual
from dragging the release law (pH_50, n) off the truth?

Method (Wang, Sankaran & Perdikaris, CMAME 2024, "Respecting causality for training
physics-informed neural networks"; ``TrainingConfig.causal_slices`` / ``causal_epsilon``,
hybrid/inverse/training.py and TransportProblem in hybrid/inverse/problems.py): the collocation
points, ordered by time, are split into M equal-count slices; each strong PDE term becomes
(1/M) sum_i w_i L_i (L_i its mean square on slice i) with w_i = exp(-eps sum_{k<i} L^tot_k),
L^tot_k the sum of the three equations' slice losses, w computed without gradient. eps follows a
schedule: it moves to the next value once min_i w_i > 0.99 (the paper's rule). For L-BFGS the
weights are frozen at their last Adam values. Data and boundary terms are not weighted.

Twin, start and truth: examples/invert_ph_release.toml (run ``hybrid synthesize
examples/synthesize_ph_release.toml`` first); truth pH_50 6.8, n 2; start (7.2, 1.0).

Pre-registration (written and committed before any causal run; the only number looked at
before it is the untrained problem's slice losses, to place eps: on 256 points and 16 slices the
lipo + free + cell slice losses run from 1.6 (first slice) to 19 (last), sum ~100; the earlier
runs' (pinn_release_weak.json) PDE terms are ~0.06 at step 100 and ~1e-2 at step 800):

- Settings: the example's training (256 points, float64, seed 0, one thread, 2000 Adam + 300
  L-BFGS, RAD every 100 steps, balance "all") with strong-form residuals, from the example's start.
- Runs (all of them reported):
  ``baseline``: causal off (the brief's ``pinn_release_weak.py invert strong 2000 300 all``,
  re-run here on the same machine for load-comparable times and the trajectory).
  ``causal_paper``: M = 16, eps schedule (1e-2, 1e-1, 1, 10, 100) (the paper's).
  ``causal_eps10``: M = 16, fixed eps = 10 (w_16 ~ exp(-3) while the slice losses are ~2e-2,
  i.e. causal throughout Adam; the paper's schedule, at these loss scales, stays at eps <= 1
  where w_i ~ 1 after a few hundred steps).
- Success: pH_50 within 0.05 of 6.8 AND n within 5 % of 2 (both final estimates).
  "Helps": both |pH_50 - 6.8| and |n - 2| smaller than the baseline's.
- Recorded every 100 steps: (pH_50, n), the loss terms, eps and the causal weights w_i, so the
  early drift can be compared with the baseline's (earlier measured: n 0.75 at step 200).
- If a causal run succeeds: the same run from a second start (6.4, 3.0), to show it is not luck.

Outcome: (filled in after the runs)

Run from the repository root (each run merges its entry into
benchmarks/results/pinn_release_causal.json):
    .venv/bin/python benchmarks/pinn_release_causal.py baseline
    .venv/bin/python benchmarks/pinn_release_causal.py causal_paper
    .venv/bin/python benchmarks/pinn_release_causal.py causal_eps10
    .venv/bin/python benchmarks/pinn_release_causal.py causal_eps10 6.4 3.0     # second start
"""

from __future__ import annotations

import json
import os
import platform
import sys

from pinn_release_diagnosis import ROOT, set_unknowns, training_settings
from pinn_release_weak import _setup

RESULTS = ROOT / "benchmarks" / "results" / "pinn_release_causal.json"
RUNS = {"baseline": {},
        "causal_paper": {"causal_slices": 16, "causal_epsilon": (1e-2, 1e-1, 1.0, 10.0, 100.0)},
        "causal_eps10": {"causal_slices": 16, "causal_epsilon": (10.0,)}}
COMMON = {"adam_steps": 2000, "lbfgs_steps": 300, "residual_form": "strong", "balance": "all",
          "progress_every": 100, "threads": 1}


def _machine() -> dict:
    import torch
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor())
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__}


def run(name: str, start: dict[str, float] | None = None) -> dict:
    """One pre-registered run: the example's inversion with ``RUNS[name]``, from the example's
    start or ``start`` {ph_50, steepness}."""
    from hybrid.inverse import Trainer, TrainingConfig
    config, truth, build = _setup()
    settings = training_settings(config) | COMMON | RUNS[name]
    problem = build()
    if start is not None:
        set_unknowns(problem, start)
    begin = {u.name: float(u().detach()) for u in problem.scalar_unknowns()}
    load = os.getloadavg()
    result = Trainer(problem, TrainingConfig(**settings), progress=lambda line: print(line, flush=True)).run()
    estimates = {name: value for name, (value, _) in result.estimates.items()}
    errors = {"ph_50": abs(estimates["ph_50"] - truth["ph_50"]), "steepness": abs(estimates["steepness"] - truth["steepness"])}
    success = errors["ph_50"] <= 0.05 and errors["steepness"] <= 0.05 * truth["steepness"]
    keep = ("step", "phase", "estimates", "terms", "weights", "causal_epsilon", "causal_weights", "seconds")
    return {"settings": settings, "start": begin, "truth": truth, "estimates": estimates, "errors": errors,
            "success_pre_registered": bool(success), "wall_s": result.seconds, "machine": _machine(),
            "load_before": list(load), "load_after": list(os.getloadavg()),
            "trajectory": [{k: h[k] for k in keep if k in h} for h in result.history]}


def _merge(key: str, value) -> None:
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data[key] = value
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    if len(sys.argv) not in (2, 4) or sys.argv[1] not in RUNS:
        raise SystemExit(f"usage: pinn_release_causal.py {{{','.join(RUNS)}}} [PH_50 N]")
    name = sys.argv[1]
    start = {"ph_50": float(sys.argv[2]), "steepness": float(sys.argv[3])} if len(sys.argv) == 4 else None
    key = name + (f"_from_{sys.argv[2]}_{sys.argv[3]}" if start else "")
    outcome = run(name, start)
    _merge(key, outcome)
    print(json.dumps({k: v for k, v in outcome.items() if k != "trajectory"}, indent=1))
