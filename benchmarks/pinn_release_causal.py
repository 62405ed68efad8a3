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

Pre-registration, weak form (written after the strong runs below, before its run): the causal
weights extended to the weak form (slices = the 11 rows of test functions in time of 12 time
cells). One run, ``weak_causal_eps10``: weak form, 12 cells, M = 11, fixed eps = 10, otherwise
the settings above. Its baseline is pinn_release_weak.json's ``invert_weak_2000_300_12`` (weak,
balance "all", same seed and code path: (6.620, 0.554)), not re-run (1210 s). Success as above;
"helps" if both |pH_50 - 6.8| and |n - 2| are smaller than that baseline's.

Outcome (benchmarks/results/pinn_release_causal.json; 2-core CPU shared with other jobs, one
torch thread; every run made is listed): no success and no help.

    run            pH_50   n       |pH_50-6.8| |n-2|   n @200  wall    load (1-min, before/after)
    baseline       6.258   0.527   0.542       1.473   0.724   503 s   1.5 / 6.5
    causal_paper   6.283   0.526   0.517       1.474   0.700   328 s   5.8 / 4.7
    causal_eps10   6.660   0.505   0.140       1.495   0.552   291 s   5.9 / 5.6
    weak baseline  6.620   0.554   0.180       1.446   0.753   1210 s  4.6 / 3.1  (pinn_release_weak.json)
    weak_causal_eps10 6.651 0.517  0.149       1.483   0.556   1039 s  3.6 / 1.5

causal_paper sat at eps 0.1 until step ~600 and at eps 1 after (min w 0.84-0.93): barely causal,
and its path is the baseline's. causal_eps10 was causal for real (w_16 ~ 0 until step 300, min w
0.24 at 500, 0.81 at 2000; L-BFGS kept 0.81) and got pH_50 closer, but n fell faster than in the
baseline (0.71 at step 100, 0.55 at 200) and ended at its lower bound 0.5. So the drift is not
caused by late-time residuals: ``pull`` (post-hoc, not pre-registered) shows the only force on the
unknowns is the PDE residual (the data terms' gradients w.r.t. pH_50 and n are exactly 0: the
law enters through the equations only); at the start both plain PDE terms push pH_50 and n down
(d/d raw +0.075, +0.047 for pde_lipo), and the causal eps-10 terms (all weight on the first slice,
w_2 = 1.5e-7) pull ~1000x less, yet under Adam (a per-parameter normalised step, lr 1e-2 on the
raw parameter) the unknowns move as fast whenever the sign of their gradient persists: down-weighting
residuals does not slow them, only a different sign would. The first slice's residual alone
already pushes n down (d/d raw +6e-6; pH_50 up, -7e-5), so n falls with or without the later
slices. The weak form behaves the same: with causal weights (M = 11, eps 10; min w 0.000 at step
100, 0.14 at 200, 0.83 at 500, 0.975 from 2000) n fell to 0.66 by step 100 and 0.556
by 200 (weak baseline 0.81 / 0.75) and pH_50 ended closer: no help. Not run: the second start
(no success).

Run from the repository root (each run merges its entry into
benchmarks/results/pinn_release_causal.json):
    .venv/bin/python benchmarks/pinn_release_causal.py baseline
    .venv/bin/python benchmarks/pinn_release_causal.py causal_paper
    .venv/bin/python benchmarks/pinn_release_causal.py causal_eps10
    .venv/bin/python benchmarks/pinn_release_causal.py causal_eps10 6.4 3.0     # second start
    .venv/bin/python benchmarks/pinn_release_causal.py weak_causal_eps10
    .venv/bin/python benchmarks/pinn_release_causal.py pull     # post-hoc: the terms' pull at the start
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

from pinn_release_diagnosis import ROOT, merge_entry, set_unknowns, training_settings
from pinn_release_weak import setup

RESULTS = ROOT / "benchmarks" / "results" / "pinn_release_causal.json"
RUNS = {"baseline": {},
        "causal_paper": {"causal_slices": 16, "causal_epsilon": (1e-2, 1e-1, 1.0, 10.0, 100.0)},
        "causal_eps10": {"causal_slices": 16, "causal_epsilon": (10.0,)},
        "weak_causal_eps10": {"residual_form": "weak", "weak_cells": 12, "weak_time_cells": 12, "causal_slices": 11,
                              "causal_epsilon": (10.0,)}}
COMMON = {"adam_steps": 2000, "lbfgs_steps": 300, "residual_form": "strong", "balance": "all",
          "progress_every": 100, "threads": 1}


def _machine() -> dict:
    import torch
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor())
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__}


def run(name: str, start: dict[str, float] | None = None, trainer: type | None = None) -> dict:
    """One pre-registered run: the example's inversion with ``RUNS[name]``, from the example's
    start or ``start`` {ph_50, steepness}, by ``trainer`` (a ``hybrid.inverse.Trainer`` subclass;
    None: the Trainer itself)."""
    from hybrid.inverse import Trainer, TrainingConfig
    trainer = trainer or Trainer
    config, truth, build = setup()
    settings = training_settings(config) | COMMON | RUNS[name]
    problem = build()
    if start is not None:
        set_unknowns(problem, start)
    begin = {u.name: float(u().detach()) for u in problem.scalar_unknowns()}
    load = os.getloadavg()
    result = trainer(problem, TrainingConfig(**settings), progress=lambda line: print(line, flush=True)).run()
    estimates = {name: value for name, (value, _) in result.estimates.items()}
    errors = {"ph_50": abs(estimates["ph_50"] - truth["ph_50"]), "steepness": abs(estimates["steepness"] - truth["steepness"])}
    success = errors["ph_50"] <= 0.05 and errors["steepness"] <= 0.05 * truth["steepness"]
    keep = ("step", "phase", "estimates", "terms", "weights", "causal_epsilon", "causal_weights", "seconds")
    return {"settings": settings, "start": begin, "truth": truth, "estimates": estimates, "errors": errors,
            "success_pre_registered": bool(success), "wall_s": result.seconds, "machine": _machine(),
            "load_before": list(load), "load_after": list(os.getloadavg()),
            "trajectory": [{k: h[k] for k in keep if k in h} for h in result.history]}


def pull(slices: int = 16, epsilon: float = 10.0, points: int = 256) -> dict:
    """Post-hoc diagnostic (not pre-registered): each loss term of the untrained example problem
    (seed 0, ``points`` collocation points of seed 0) and its gradient w.r.t. the raw parameter of
    each unknown (raw = logit of the value's position in its bounds, so the sign is that of
    d/d value), with plain and with causal PDE terms (``slices``, ``epsilon``)."""
    import torch
    _, _, build = setup()
    out = {"points": points, "load": list(os.getloadavg())}
    for label, (m, eps) in {"plain": (0, 0.0), f"causal_{slices}_eps{epsilon:g}": (slices, epsilon)}.items():
        problem = build()
        problem.use_causal_weights(m)
        if m:
            problem.causal_epsilon.fill_(eps)
        terms = problem.loss_terms(problem.sample_collocation(points, torch.Generator().manual_seed(0)))
        raws = {u.name: u.raw for u in problem.scalar_unknowns()}
        entry = {}
        for name, value in terms.items():
            grads = torch.autograd.grad(value, list(raws.values()), retain_graph=True, allow_unused=True)
            entry[name] = {"value": value.item()} | {f"d_d_raw_{n}": 0.0 if g is None else g.item()
                                                     for n, g in zip(raws, grads)}
        if m:
            entry["causal_weights"] = problem.causal_weights.tolist()
        out[label] = entry
    return out


def run_from_command_line(args: list[str], names, script: str, results: Path, trainer=None) -> None:
    """``NAME [PH_50 N]`` from ``args``: :func:`run` of run NAME (one of ``names``) from the example's
    start or (PH_50, N), by ``trainer(NAME)`` (None: the Trainer), merged into ``results``."""
    if len(args) not in (1, 3) or args[0] not in names:
        raise SystemExit(f"usage: {script} {{{','.join(names)}}} [PH_50 N]")
    name = args[0]
    start = {"ph_50": float(args[1]), "steepness": float(args[2])} if len(args) == 3 else None
    key = name + (f"_from_{args[1]}_{args[2]}" if start else "")
    outcome = run(name, start, trainer(name) if trainer else None)
    merge_entry(results, key, outcome)
    print(json.dumps({k: v for k, v in outcome.items() if k != "trajectory"}, indent=1))


if __name__ == "__main__":
    if sys.argv[1:] == ["pull"]:
        merge_entry(RESULTS, "pull_at_start", pull())
        raise SystemExit(0)
    run_from_command_line(sys.argv[1:], RUNS, "pinn_release_causal.py", RESULTS)
