"""Is the drifted release law a lower minimum of the PINN loss than the truth (issue 9)?

From the example's start (7.2, 1.0) the weak-form PINN with balance "residuals" (2000 Adam + 300
L-BFGS, 256 points, float64, seed 0, one torch thread) ends at (6.661, 0.560)
(pinn_release_weak.json ``invert_weak_2000_300_residuals_12``) while the truth is (6.8, 2).
Started at the truth with networks regressed onto the FEM truth it held the law for 300 Adam
steps ((6.820, 2.05); pinn_release_weak criterion (a)), but no full run from the truth was made.
Either the drifted law is a lower minimum of the same loss (the loss is biased: identifiability /
loss design), or the truth is lower and the optimiser does not reach it from the start
(optimisation).

Twin, truth and start: examples/invert_ph_release.toml (run ``hybrid synthesize
examples/synthesize_ph_release.toml`` first); truth pH_50 6.8, n 2.

Pre-registration (written and committed before the run):

- Run ``truth_start``: the settings of the weak "residuals" full inversion (the example's training,
  weak form with 12 cells in space and time, balance "residuals", 2000 Adam + 300 L-BFGS, 256
  points, float64, seed 0, one torch thread, unknown learning rate 1e-2; pinn_release_causal.run
  with its COMMON settings and ``RUNS["truth_start"]`` below), the example's networks initialised
  as usual (seed 0), the unknowns started at the truth (6.8, 2.0).
- Baseline: the default-start run's entry in pinn_release_weak.json, not re-run (~1000 s). In the
  weak form every unweighted term is evaluated on fixed test functions, boundary points and
  observations (the collocation points are not used), so the two runs' final terms are values of
  the same functions of the parameters.
  Added after the truth-start run was launched (its step-100 line seen, nothing else): the baseline
  is also re-run here (``default_start``, same settings, the example's start), at the same time as
  a second process, to check that today's code reproduces the JSON entry; the comparison uses the
  JSON entry unless the re-run differs, and then reports both.
- Compared at the end of both runs (the last recorded step, after L-BFGS): (pH_50, n); the
  UNWEIGHTED data terms (data_total_drug, data_released_fraction), PDE terms (pde_lipo, pde_free,
  pde_cell) and bc_no_flux; the data sum, the PDE sum (pde_* + bc) and the sum of all unweighted
  terms; which run is lower in each. Weighted terms are not compared (the balance weights differ).
- Decision rule:
  "optimisation problem": the truth-start run ends within the success rule (pH_50 within 0.05 of
  6.8 AND n within 5 % of 2) AND has both the lower data sum and the lower PDE sum;
  "the loss's minimum is not at the truth": the truth-start run drifts to near the drifted law
  (pH_50 within 0.2 of 6.66 AND n <= 0.7);
  anything else: "mixed", described.
- Recorded every 100 Adam steps (every 25 L-BFGS iterations): (pH_50, n), the unweighted terms
  and the balance weights.

Outcome (benchmarks/results/pinn_release_minimum.json; 2-core AMD EPYC shared with other jobs
(a CI run and other helpers), one torch thread; the two runs at the same time; 1-min load 1.2
before, 2.7-4.1 while they ran): by the rule, "the loss's minimum is not at the truth"; but
the comparison below and a post-hoc look at an earlier run say the drifted law is NOT a lower
point of the loss than the truth: it is where the joint descent from untrained networks goes.

    run            start        pH_50  n      data sum  PDE sum   total     wall    load before/after
    default_start  (7.2, 1.0)   6.661  0.560  6.97e-4   3.87e-4   1.085e-3  1353 s  1.7 / 1.4
    truth_start    (6.8, 2.0)   6.618  0.551  7.20e-4   4.45e-4   1.164e-3  1259 s  1.2 / 4.1
    (final unweighted terms; data = total drug + released fraction, PDE = lipo + free + cell + bc)

The default-start re-run reproduced pinn_release_weak.json's entry bit for bit (every recorded
estimate and term of its 32 records identical), so the comparison uses that run.

truth_start final terms: data_total_drug 7.00e-4, data_released_fraction 1.99e-5, pde_lipo 3.50e-4,
pde_free 6.0e-7, pde_cell 9.19e-5, bc_no_flux 2.06e-6 (default: 6.80e-4, 1.76e-5, 3.00e-4, 8.0e-7,
8.39e-5, 2.29e-6): the default-start run is lower in both sums and the total (the truth-start run
lower only in pde_free and bc). Started at the truth, the law left it at once, faster than from
the default start: (pH_50, n) = (6.688, 1.183) at step 100, (6.595, 1.016) at 200, (6.514, 0.767)
at 500, (6.518, 0.615) at 1000, (6.562, 0.552) at 2000 (default start: (7.026, 0.819) at 100,
(6.832, 0.754) at 200). Neither run is at a minimum: L-BFGS was still lowering the loss (truth
start: 1.16e-3 -> 1.06e-3 weighted over its last 50 iterations, pH_50 +0.004 per 25, n fixed).

Post-hoc (not pre-registered; pinn_release_weak.json ``drift_2048_residuals_weak_12_1000_steps``,
the same weak problem, test functions and data, unweighted terms): with networks first regressed
onto the FEM truth and the law at the truth, 1000 Adam steps of this loss (no L-BFGS) end at
(6.824, 2.144) (n 7 % off) with data sum 7.58e-4 (total drug 7.03e-4, released fraction 5.5e-5),
PDE sum 1.06e-4, total 8.6e-4: 20-26 % below the two runs' totals, PDE 3.7-4.2x lower, data 5-9 %
higher (the drifted runs fit the released fraction further below its noise floor 8.3e-4). So a
state near the true law with a lower loss exists: the drift is an optimisation (path) problem of
the joint network + law descent from untrained networks, which takes n to ~0.55 from either
start, with a small data-side bias (noise fitting) favouring the drifted law.

Run ``fitted_start`` (pre-registered and committed before the run): does the lower-loss state near
the truth survive the full training? The ``drift`` setting of the post-hoc entry above (networks
regressed onto the FEM truth, /tmp/pinn_release_diagnosis/fem_fit.pt; law at the truth (6.8, 2.0);
pinn_release_diagnosis.drift_stage with variant ``2048_residuals``: 2048 points (unused by the weak
form), balance "residuals"; weak form 12 x 12 cells; float64, seed 0, one torch thread, one process)
continued to the inversions' budget, 2000 Adam + 300 L-BFGS (drift_stage fixes L-BFGS at 0: a
wrapper sets it to 300 and records every 100 steps / every 25 L-BFGS iterations). Recorded: (pH_50,
n), the unweighted terms and balance weights at each record. The Adam steps have no schedule, so its
step 1000 should reproduce the entry's (6.824, 2.144) (checked, reported).
Decision rule (final record, after L-BFGS): "survives" if pH_50 is within 0.05 of 6.8 AND n within
5 % of 2 AND its unweighted total (all six terms) is below the default-start run's 1.085e-3;
"drifts late" if it ends outside that success box; otherwise (in the box, total >= 1.085e-3)
"mixed", described.

Outcome (entry ``fitted_start_2000_300``; one process, one torch thread, 654 s, 1-min load 0.1
before, 1.0 during/after, other helpers' jobs): by the rule "drifts late" (n ends 7.7 % high, the
box is 5 %), but it does not drift towards the default runs' law: it ends at (6.827, 2.154) with
an unweighted total 6.16e-4, 43 % below the default start's 1.085e-3 and lower in BOTH sums (data
4.58e-4 vs 6.97e-4: total drug 4.36e-4, released fraction 2.24e-5; PDE 1.57e-4 vs 3.87e-4: lipo
1.38e-4, free 1.9e-6, cell 1.64e-5, bc 9.2e-7). Steps 100-1000 reproduce the 1000-step entry bit for
bit. pH_50 stays in 6.80-6.83 throughout; n rises to 2.11 by step 500, 2.14-2.23 to step 1700
(Adam loss spikes at 800, 1300, 1800 knock it back to 1.88 once), 2.059 at step 2000, and L-BFGS
lifts it again, +0.007 per 25 iterations at the end (still descending: weighted 6.41e-4 -> 5.98e-4
over the last 75). So the lower-loss state near the truth survives the full budget as a basin with
a small positive n bias that the continuing descent is widening; the default start's (6.66, 0.56)
is a worse point of the same loss, reached by the path from untrained networks.

Run from the repository root (merges into benchmarks/results/pinn_release_minimum.json):
    .venv/bin/python benchmarks/pinn_release_minimum.py truth_start 6.8 2.0
    .venv/bin/python benchmarks/pinn_release_minimum.py default_start   # the baseline, re-run
    .venv/bin/python benchmarks/pinn_release_minimum.py compare   # the table above, from both JSONs
    .venv/bin/python benchmarks/pinn_release_minimum.py fitted_start   # networks fitted, law at the truth
"""

from __future__ import annotations

import json
import sys

import pinn_release_causal
from pinn_release_diagnosis import ROOT, drift_stage, merge_entry

RESULTS = ROOT / "benchmarks" / "results" / "pinn_release_minimum.json"
BASELINE = ROOT / "benchmarks" / "results" / "pinn_release_weak.json", "invert_weak_2000_300_residuals_12"
RUNS = {"truth_start": {"residual_form": "weak", "weak_cells": 12, "weak_time_cells": 12, "balance": "residuals"}}
RUNS["default_start"] = RUNS["truth_start"]   # the baseline re-run from the example's start (reproducibility)
pinn_release_causal.RUNS |= RUNS   # pinn_release_causal.run: the causal baseline's settings | RUNS[name]


def term_sums(terms: dict[str, float]) -> dict[str, float]:
    """Unweighted data sum, PDE sum (pde_* and bc_*) and total of one run's final terms."""
    data = sum(v for k, v in terms.items() if k.startswith("data"))
    pde = sum(v for k, v in terms.items() if not k.startswith("data"))
    return {"data_sum": data, "pde_sum": pde, "total": data + pde}


def compare() -> dict:
    """The final (pH_50, n), unweighted terms and sums of the default-start and truth-start runs,
    and which is lower in each."""
    path, key = BASELINE
    default = json.loads(path.read_text())[key]["history"][-1]
    truth = json.loads(RESULTS.read_text())["truth_start_from_6.8_2.0"]["trajectory"][-1]
    runs = {name: {"step": h["step"], "estimates": h["estimates"], "terms": h["terms"], "sums": term_sums(h["terms"])}
            for name, h in (("default_start", default), ("truth_start", truth))}
    lower = {k: min(runs, key=lambda r: runs[r]["terms"][k]) for k in default["terms"]}
    lower |= {k: min(runs, key=lambda r: runs[r]["sums"][k]) for k in ("data_sum", "pde_sum", "total")}
    return {"baseline": f"{path.name} {key}", "runs": runs, "lower": lower}


def fitted_start(adam: int = 2000, lbfgs: int = 300) -> dict:
    """:func:`drift_stage` (FEM-fitted networks, law at the truth; weak form 12 cells, balance
    "residuals") for ``adam`` Adam steps and then ``lbfgs`` L-BFGS iterations, recorded every 100
    steps (drift_stage fixes lbfgs_steps 0 and progress_every 50: overridden here)."""
    import hybrid.inverse as inverse
    config_class = inverse.TrainingConfig
    override = {"lbfgs_steps": lbfgs, "progress_every": 100}

    class FullBudget(config_class):   # the same fields; the override applied on construction
        def __init__(self, **settings):
            super().__init__(**settings | override)

    inverse.TrainingConfig = FullBudget
    try:
        result = drift_stage("2048_residuals", adam, {"residual_form": "weak", "weak_cells": 12, "weak_time_cells": 12})
    finally:
        inverse.TrainingConfig = config_class
    result["settings"] |= override
    final = result["history"][-1]
    result["final_sums"] = sums = term_sums(final["terms"])
    estimates = final["estimates"]
    in_box = abs(estimates["ph_50"] - 6.8) <= 0.05 and abs(estimates["steepness"] - 2.0) <= 0.05 * 2.0
    path, key = BASELINE   # the default-start run: its final unweighted total (1.085e-3, table above)
    default_total = term_sums(json.loads(path.read_text())[key]["history"][-1]["terms"])["total"]
    result["default_start_total"] = default_total
    result["outcome"] = ("survives" if in_box and sums["total"] < default_total else
                         "drifts late" if not in_box else "mixed")
    return result


if __name__ == "__main__":
    if sys.argv[1:] == ["fitted_start"]:
        merge_entry(RESULTS, "fitted_start_2000_300", outcome := fitted_start())
        print(json.dumps({k: v for k, v in outcome.items() if k != "history"}, indent=1))
        raise SystemExit(0)
    if sys.argv[1:] == ["compare"]:
        merge_entry(RESULTS, "comparison", outcome := compare())
        print(json.dumps(outcome, indent=1))
        raise SystemExit(0)
    pinn_release_causal.run_from_command_line(sys.argv[1:], RUNS, "pinn_release_minimum.py", RESULTS)
