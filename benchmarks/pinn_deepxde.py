"""Time to the same accuracy: hybrid's inverse PINN against DeepXDE (PyTorch backend) as a peer.

The problem is the IFP slab of tests/inverse/twins.py: steady Darcy-Starling pressure
``K p'' + Lp S/V (p_e - p) = 0`` on |x| < 2 mm with p = 0 at the walls, Lp S/V known, K and
p_e unknown (the data fix the rim sqrt(K / Lp S/V) and p_e), and pressures at the 40 voxel
centres with ``--noise`` Gaussian noise (sd = level x p_e). Both PINNs get the same data points,
collocation count, float64, torch threads, initial unknowns (K = 3.2e-13 m^2/(Pa s), the geometric
mean of hybrid's bounds; p_e = 2500 Pa), nondimensionalisation (x / 2 mm, p / 1 kPa), the same
normalised residual and the same exact boundary factor (1 - x~^2); each keeps its own defaults
otherwise:

- hybrid: ``IFPProblem`` + ``Trainer`` (3 x 32 tanh MLP on 16 Fourier features; unknowns bounded in
  log space with their own learning rate 1e-2; grad-norm balancing; RAD resampling every 250 steps;
  Adam then L-BFGS);
- DeepXDE: ``dde.Variable`` unknowns (K = K_ref exp(v), p_e = 1 kPa v, the maintainer's exp trick),
  ``PointSetBC`` data, an FNN 3 x 32 tanh (Glorot), Hammersley collocation, loss weights 1/1,
  Adam (lr 1e-3 for all) then L-BFGS (torch.optim.LBFGS).

Reported per seed and framework: wall time, process CPU time (less distorted by other jobs on
a shared box) and steps until both the rim thickness and p_e are within ``--target`` (default 2 %)
of the truth and stay there to the end of training (null if never), final errors, totals; plus the least-squares fit of the closed form to the same
data (the best the data allow). Run ``python benchmarks/pinn_deepxde.py [--smoke] [--seeds ...]
[--threads N] [--output PATH]``; needs ``pip install deepxde``. Writes JSON and a PNG beside it
(default benchmarks/results/pinn_deepxde.json).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("DDE_BACKEND", "pytorch")

import numpy as np
import torch
from scipy.optimize import least_squares

from hybrid.inverse import Trainer, TrainingConfig
from hybrid.records import ObservationOperator, Observations

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "inverse"))
import twins  # noqa: E402  (the tested closed-form twins)

PRESSURE_SCALE = 1000.0                   # Pa
K_START, PE_START = math.sqrt(1e-14 * 1e-11), 2500.0   # hybrid's default initial values of its bounded unknowns
RIM_TRUE = math.sqrt(twins.K / twins.LPSV)
RECORD_EVERY = 10                         # steps between recorded estimates


def centre_observations(noise: float, seed: int) -> Observations:
    """IFP [Pa] at the 40 voxel centres (one point per voxel) of the twin slab."""
    record = twins.ifp_observations(noise=noise, seed=seed)
    operator = ObservationOperator(points_per_axis=1, dim=1)
    x = operator.voxel_points(record.grid, np.argwhere(np.ones(record.grid.shape)))[..., 0]
    clean = twins.ifp_pressure(x, RIM_TRUE, twins.PE).mean(axis=1)
    noisy = clean + noise * twins.PE * np.random.default_rng(seed).standard_normal(clean.size)
    return Observations("ifp", "Pa", record.grid, [0.0], noisy.reshape(-1, 1, 1), noise * twins.PE, operator)


def _errors(rim: float, pe: float) -> dict:
    return {"rim_thickness": float(rim / RIM_TRUE - 1), "effective_pressure": float(pe / twins.PE - 1)}


def time_to_target(trace: list[dict], target: float) -> dict:
    """First recorded point after which both errors stay within ``target``: its wall and CPU
    seconds and step (None if never)."""
    inside = [max(abs(v) for v in _errors(r["rim"], r["pe"]).values()) <= target for r in trace]
    for i in range(len(trace)):
        if all(inside[i:]):
            return {key: trace[i][key] for key in ("seconds", "cpu_seconds", "step")}
    return {"seconds": None, "cpu_seconds": None, "step": None}


class Clock:
    """Wall [s] and process CPU [s] since :meth:`start` (CPU time is what a loaded shared box
    distorts least)."""

    def start(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self) -> dict:
        return {"seconds": time.perf_counter() - self.wall, "cpu_seconds": time.process_time() - self.cpu}


def run_hybrid(observations: Observations, seed: int, adam: int, lbfgs: int, points: int) -> dict:
    problem = twins.ifp_problem(observations, seed=seed)
    config = TrainingConfig(adam_steps=adam, lbfgs_steps=lbfgs, collocation_points=points, resample_every=250,
                            dtype="float64", progress_every=RECORD_EVERY, seed=seed)
    trace, clock = [], Clock()

    def record(_line: str) -> None:   # called at every recorded step (every L-BFGS chunk)
        estimates = problem.estimates()
        trace.append({"step": trainer.step, **clock.read(), "rim": estimates["rim_thickness"][0],
                      "pe": estimates["effective_pressure"][0]})
    trainer = Trainer(problem, config, progress=record)
    clock.start()
    result = trainer.run()
    return {"trace": trace, "wall_s": trace[-1]["seconds"], "cpu_s": trace[-1]["cpu_seconds"], "steps": result.steps}


def run_deepxde(dde, observations: Observations, seed: int, adam: int, lbfgs: int, points: int) -> dict:
    dde.config.set_random_seed(seed)
    length, ratio_scale = twins.R, K_START / (twins.R**2 * twins.LPSV)   # a = K / (R^2 Lp S/V)
    log_a = dde.Variable(0.0)                      # a = ratio_scale exp(log_a): K starts at K_START
    pe = dde.Variable(PE_START / PRESSURE_SCALE)   # p_e / 1 kPa

    def pde(x, p):
        a = ratio_scale * torch.exp(log_a)
        return (a * dde.grad.hessian(p, x) + pe - p) / (a + 1.0)

    x_data = observations.operator.voxel_points(observations.grid, np.argwhere(np.ones(observations.grid.shape)))
    data_bc = dde.icbc.PointSetBC(x_data[..., 0].reshape(-1, 1) / length,
                                  observations.values.reshape(-1, 1) / PRESSURE_SCALE)
    data = dde.data.PDE(dde.geometry.Interval(-1.0, 1.0), pde, [data_bc], num_domain=points, num_boundary=0,
                        anchors=None, num_test=64)
    net = dde.nn.FNN([1] + [32] * 3 + [1], "tanh", "Glorot uniform")
    net.apply_output_transform(lambda x, y: (1.0 - x**2) * y)
    model = dde.Model(data, net)
    trace, clock = [], Clock()

    class Record(dde.callbacks.Callback):
        def on_epoch_end(self):
            step = self.model.train_state.step
            if step % RECORD_EVERY == 0 or self.model.opt_name == "L-BFGS":
                a = ratio_scale * math.exp(float(log_a.detach()))
                trace.append({"step": step, **clock.read(), "rim": math.sqrt(a) * length,
                              "pe": float(pe.detach()) * PRESSURE_SCALE})

    clock.start()
    model.compile("adam", lr=1e-3, external_trainable_variables=[log_a, pe])
    model.train(iterations=adam, callbacks=[Record()], display_every=max(adam, 1), verbose=0)
    if lbfgs:
        dde.optimizers.config.set_LBFGS_options(maxiter=lbfgs)
        options = dde.optimizers.config.LBFGS_options   # record every 25 iterations, as hybrid's L-BFGS chunks
        options["iter_per_step"] = min(25, lbfgs)
        options["fun_per_step"] = options["maxfun"] * options["iter_per_step"] // lbfgs
        model.compile("L-BFGS", external_trainable_variables=[log_a, pe])
        model.train(callbacks=[Record()], display_every=max(lbfgs, 1), verbose=0)
    return {"trace": trace, "wall_s": trace[-1]["seconds"], "cpu_s": trace[-1]["cpu_seconds"],
            "steps": model.train_state.step}


def _figure(report: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for run in report["runs"]:
        for ax, key, truth in ((axes[0], "rim", RIM_TRUE), (axes[1], "pe", twins.PE)):
            ax.semilogy([r["cpu_seconds"] for r in run["trace"]], [abs(r[key] / truth - 1) + 1e-6 for r in run["trace"]],
                        "-" if run["framework"] == "hybrid" else "--", label=f"{run['framework']} seed {run['seed']}")
    for ax, title in zip(axes, ("rim thickness", "p_e")):
        ax.axhline(report["target"], color="k", lw=0.8)
        ax.set(xlabel="process CPU time [s]", ylabel="|relative error|", title=title)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny budgets, one seed: checks the script runs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--noise", type=float, default=0.01)
    parser.add_argument("--target", type=float, default=0.02)
    parser.add_argument("--adam", type=int, default=500)
    parser.add_argument("--lbfgs", type=int, default=1000)
    parser.add_argument("--points", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "pinn_deepxde.json")
    args = parser.parse_args()
    try:
        import deepxde as dde
    except ImportError:
        print("deepxde is not installed: pip install deepxde (used with DDE_BACKEND=pytorch)", file=sys.stderr)
        sys.exit(2)
    if dde.backend.backend_name != "pytorch":
        sys.exit(f"DeepXDE runs on backend {dde.backend.backend_name!r}: set DDE_BACKEND=pytorch")
    if args.smoke:
        args.seeds, args.adam, args.lbfgs, args.points = args.seeds[:1], 30, 10, 64
    torch.set_num_threads(args.threads)
    dde.config.set_default_float("float64")
    load_before = list(os.getloadavg())
    runs, fits = [], []
    for seed in args.seeds:
        observations = centre_observations(args.noise, seed)
        x = twins.voxel_points(observations.grid)[:, 1]   # centre of the three sub-points
        fit = least_squares(lambda q: twins.ifp_pressure(x, q[0] * 1e-3, q[1] * 1e3) - observations.values.ravel(),
                            [0.3, 1.0], xtol=1e-12).x
        fits.append({"seed": seed, "errors": _errors(fit[0] * 1e-3, fit[1] * 1e3)})
        for framework in ("hybrid", "deepxde"):
            if framework == "hybrid":
                run = run_hybrid(observations, seed, args.adam, args.lbfgs, args.points)
            else:
                run = run_deepxde(dde, observations, seed, args.adam, args.lbfgs, args.points)
            last = run["trace"][-1]
            run |= {"framework": framework, "seed": seed, "final_errors": _errors(last["rim"], last["pe"]),
                    "to_target": time_to_target(run["trace"], args.target)}
            runs.append(run)
            print(f"{framework:8s} seed {seed}: to {args.target:.0%}: {run['to_target']}, final "
                  f"rim {run['final_errors']['rim_thickness']:+.4f} p_e {run['final_errors']['effective_pressure']:+.4f}"
                  f", {run['wall_s']:.1f} s ({run['cpu_s']:.1f} s CPU), {run['steps']} steps; closed-form fit {fits[-1]['errors']}", flush=True)
    report = {"timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                          "python": platform.python_version(), "torch_threads": torch.get_num_threads(),
                          "load_average_before": load_before, "load_average_after": list(os.getloadavg())},
              "versions": {"torch": torch.__version__, "deepxde": dde.__version__, "numpy": np.__version__},
              "problem": "1-D IFP slab |x| < 2 mm, p = 0 at the walls, K and p_e unknown (Lp S/V known), "
                         "40 voxel-centre pressures, float64",
              "noise": args.noise, "target": args.target,
              "budget": {"adam": args.adam, "lbfgs": args.lbfgs, "collocation_points": args.points},
              "truth": {"rim_thickness_m": RIM_TRUE, "effective_pressure_Pa": twins.PE},
              "closed_form_fit": fits, "runs": runs}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    _figure(report, args.output.with_suffix(".png"))
    print(f"wrote {args.output} and {args.output.with_suffix('.png')}")


if __name__ == "__main__":
    main()
