"""Inverse PINN accuracy against the data: time points x noise, and a twin without inverse crime.

Three case sets (1-D slabs, CPU; every PINN is ``hybrid.inverse`` trained by its ``Trainer``):

- ``release``: the closed-form release twin of tests/inverse/twins.py (slab |x| < 1 mm, C_L(x, 0) =
  2 mM cos(pi x / 2 mm), zero drug on the boundary, k_rel = 2e-4 1/s unknown, linear uptake;
  total- and free-drug images on 20 voxels) with 2, 3 or 5 post-injection frames and 0, 2, 5,
  10 % Gaussian noise (sd = level x peak of each quantity);
- ``ifp``: the closed-form Baxter-Jain IFP slab of the same module (half-width 2 mm, 40 voxels;
  K unknown with Lp S/V known, so the rim sqrt(K / Lp S/V) and the plateau p_e are recovered)
  at the same noise levels (a steady map: the number of frames does not apply);
- ``exchange``: a twin WITHOUT inverse crime. The PINN assumes liposomes entering from vessels
  (Kedem-Katchalsky, P_L S/V, phi_T of the parameter table) with the default liposomal plasma
  curve of 0.7 mg/kg (mono-exponential, t1/2 45 h), a pre-loaded liposome profile C_L(x, 0) =
  0.5 mM (1 + 0.5 cos(pi x / 1 mm)) (about the hour's influx from the plasma), no-flux walls, k_rel unknown, and its 3-point voxel operator
  with Gaussian noise. The data change one thing at a time, then all three: ``discretisation``
  (a 40-cell finite-volume solve with backward Euler in 60 s steps, each voxel the exact mean of
  its cells, instead of the converged 800-cell method-of-lines solve sampled at 3 points per
  voxel); ``noise`` (Rician magnitude noise instead of Gaussian); ``plasma`` (a bi-exponential
  plasma curve: the same initial concentration with 25 % in a 15-min distribution phase). Each
  case records how far its clean data lie from the inverse-crime data (``data_difference``).

Per case: estimate, relative error, the best the data allow (least-squares fit of the exact
model the PINN assumes to the same data), the Cramer-Rao relative sd of that model at the truth
(``hybrid.identifiability``; for the exchange twin, of the model the PINN assumes), an ensemble
spread where asked (``--ensemble``: release at 3 frames and IFP, both at 5 % noise), the relative L2 error
of the PINN fields against the true fields, the mean-square PDE residual on fresh points, wall
and process CPU time, and the load average at the start. ``converged`` is false when that residual exceeds ``RESIDUAL_LIMIT``.

Run ``python benchmarks/pinn_sweep.py [--smoke] [--output PATH] [--threads N] [--ensemble N] [--resume]``;
writes JSON (after every case; ``--resume`` keeps the cases already there) and, at the end, a PNG
beside it (default benchmarks/results/pinn_sweep.json).
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

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch
from scipy.integrate import solve_ivp
from scipy.optimize import least_squares, minimize_scalar

from hybrid.identifiability import analyse, noise_scaled_jacobian
from hybrid.inverse import BoundedScalar, Box, DrugExchange, Trainer, TrainingConfig, TransportProblem, ensemble
from hybrid.problems.parameters import default
from hybrid.problems.pharmacokinetics import PlasmaCurve, dose_amount
from hybrid.records import Observations

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "inverse"))
import twins  # noqa: E402  (the tested closed-form twins; tests/inverse/test_residuals.py checks them)

RESIDUAL_LIMIT = 5e-3        # mean-square nondimensional PDE residual on fresh points (tests/inverse/test_twin_2d.py)
FRAMES = {2: (1800.0, 3600.0), 3: (600.0, 1800.0, 3600.0), 5: (600.0, 1200.0, 1800.0, 2700.0, 3600.0)}
NOISE = (0.0, 0.02, 0.05, 0.10)
EXCHANGE_VARIANTS = {"none (inverse crime)": (), "discretisation": ("discretisation",), "noise": ("noise",),
                     "plasma": ("plasma",), "all three": ("discretisation", "noise", "plasma")}

# exchange twin (SI): slab |x| < HALF, the release twin's drug constants, table vessel constants
HALF, END, C0 = 1e-3, 3600.0, 5e-4   # preloaded liposomes [mol/m^3]: comparable to the hour's influx
PHI, PS_LIPO = default("phi_T"), default("P_L") * default("SV_T")
ASSUMED_PLASMA = PlasmaCurve.liposomal(dose_amount(0.7, "mg/kg"))
TRUE_PLASMA = PlasmaCurve((0.25 * ASSUMED_PLASMA.amplitudes[0], 0.75 * ASSUMED_PLASMA.amplitudes[0]),
                          (math.log(2) / 900.0, ASSUMED_PLASMA.rates[0]))


class Clock:
    """Wall time [s], process CPU time [s] (what other jobs on a shared box distort least) and
    the load average at the start."""

    def __init__(self):
        self.load, self.wall, self.cpu = os.getloadavg()[0], time.perf_counter(), time.process_time()

    def read(self) -> dict:
        return {"wall_s": time.perf_counter() - self.wall, "cpu_s": time.process_time() - self.cpu,
                "load_average_1min": self.load}


def _training(args, adam: int, lbfgs: int, points: int) -> TrainingConfig:
    return TrainingConfig(adam_steps=adam, lbfgs_steps=lbfgs, collocation_points=points, resample_every=250,
                          dtype="float64", progress_every=0)


def _relative_sd(predict, log_theta, sd, names) -> list[float]:
    """Cramer-Rao sd of the logs (= relative sd) of the parameters at the truth."""
    jacobian = noise_scaled_jacobian(predict, np.asarray(log_theta), sd, step=1e-4)
    return analyse(jacobian, names).standard_errors.tolist()


def _fresh_residual(problem, n: int = 4000) -> float:
    points = problem.sample_collocation(n, torch.Generator().manual_seed(123))
    return float((problem.pointwise_residual(points).detach() ** 2).mean())


def _relative_l2(estimate: np.ndarray, truth: np.ndarray) -> float:
    return float(np.linalg.norm(estimate - truth) / np.linalg.norm(truth))


def _summary(estimate: float, truth: float, fit: float) -> dict:
    return {"estimate": estimate, "truth": truth, "relative_error": estimate / truth - 1,
            "best_fit": fit, "best_fit_relative_error": fit / truth - 1}


# -- release twin ----------------------------------------------------------------------------------
def _release_predict(grid, times, k_rel: float) -> np.ndarray:
    """Voxel means (total then free, all frames) of the closed form at ``k_rel`` [1/s]."""
    x = twins.voxel_points(grid)
    out = []
    for quantity in ("total", "free"):
        for t in times:
            lipo, free = twins.release_solution(x, t, k_rel)
            out.append((lipo + free if quantity == "total" else free).mean(axis=1))
    return np.concatenate(out)


def release_case(frames: int, noise: float, args) -> dict:
    times = FRAMES[frames]
    observations = twins.release_observations(noise=noise, times=times, seed=args.seed)
    grid, data = observations[0].grid, np.concatenate([r.values[:, 0, 0, :].T.ravel() for r in observations])
    total, free = np.split(_release_predict(grid, times, twins.K_REL), 2)
    peak = np.concatenate([np.full(total.size, np.abs(total).max()), np.full(free.size, np.abs(free).max())])
    fit = math.exp(minimize_scalar(lambda q: np.sum(((_release_predict(grid, times, math.exp(q)) - data) / peak) ** 2),
                                   bounds=(math.log(1e-5), math.log(1e-3)), method="bounded",
                                   options={"xatol": 1e-7}).x)
    crb = _relative_sd(lambda q: _release_predict(grid, times, math.exp(q[0])), [math.log(twins.K_REL)], peak,
                       ["log_k_rel"])[0] * noise
    config = _training(args, *args.release_steps)
    clock = Clock()
    problem = twins.release_problem(observations, seed=args.seed)
    result = Trainer(problem, config).run()
    timing = clock.read()
    k = result.estimates["release_rate"][0]
    x = np.linspace(-twins.L, twins.L, 101)
    t = np.linspace(0.0, twins.T, 61)
    xx, tt = np.meshgrid(x, t, indexing="ij")
    xt = torch.tensor(np.stack([xx.ravel() / twins.L, tt.ravel() / twins.T], axis=1))
    with torch.no_grad():
        lipo, free = (c.numpy().ravel() for c in problem.concentrations(xt))
    true_lipo, true_free = twins.release_solution(xx.ravel(), tt.ravel())
    case = {"twin": "release", "frames_s": list(times), "noise": noise, "unknown": "release_rate", "unit": "1/s",
            **_summary(k, twins.K_REL, fit), "crb_relative_sd": crb,
            "field_relative_l2": {"liposomal": _relative_l2(lipo, true_lipo), "free": _relative_l2(free, true_free)},
            "fresh_residual": _fresh_residual(problem), **timing, "steps": result.steps}
    if args.ensemble and frames == 3 and noise == 0.05:
        spread = ensemble(lambda seed: twins.release_problem(observations, seed=seed), range(args.ensemble), config)
        case["ensemble"] = spread["estimates"]["release_rate"]
    case["converged"] = case["fresh_residual"] < RESIDUAL_LIMIT
    return case


# -- IFP twin --------------------------------------------------------------------------------------
def ifp_case(noise: float, args) -> dict:
    observations = twins.ifp_observations(noise=noise, seed=args.seed)
    x = twins.voxel_points(observations.grid)
    data = observations.values.ravel()
    rim_true = math.sqrt(twins.K / twins.LPSV)

    def predict(log_q):   # log rim [ln m], log p_e [ln Pa]
        return twins.ifp_pressure(x, math.exp(log_q[0]), math.exp(log_q[1])).mean(axis=1)
    fit = least_squares(lambda q: predict(q) - data, [math.log(3e-4), math.log(1000.0)], xtol=1e-12).x
    crb = np.array(_relative_sd(predict, [math.log(rim_true), math.log(twins.PE)], twins.PE, ["log_rim", "log_p_e"]))
    config = _training(args, *args.ifp_steps)
    clock = Clock()
    problem = twins.ifp_problem(observations, seed=args.seed)
    result = Trainer(problem, config).run()
    timing = clock.read()
    grid = np.linspace(-twins.R, twins.R, 401)
    with torch.no_grad():
        pressure = problem.pressure(torch.tensor(grid[:, None] / twins.R)).numpy().ravel()
    case = {"twin": "ifp", "frames_s": [0.0], "noise": noise,
            "rim_thickness": _summary(result.estimates["rim_thickness"][0], rim_true, math.exp(fit[0]))
            | {"unit": "m", "crb_relative_sd": crb[0] * noise},
            "effective_pressure": _summary(result.estimates["effective_pressure"][0], twins.PE, math.exp(fit[1]))
            | {"unit": "Pa", "crb_relative_sd": crb[1] * noise},
            "field_relative_l2": {"pressure": _relative_l2(pressure, twins.ifp_pressure(grid, rim_true, twins.PE))},
            "fresh_residual": _fresh_residual(problem), **timing, "steps": result.steps}
    if args.ensemble and noise == 0.05:
        spread = ensemble(lambda seed: twins.ifp_problem(observations, seed=seed), range(args.ensemble), config)
        case["ensemble"] = {name: spread["estimates"][name] for name in ("rim_thickness", "effective_pressure")}
    case["converged"] = case["fresh_residual"] < RESIDUAL_LIMIT
    return case


# -- exchange twin without inverse crime -----------------------------------------------------------
def _neumann_laplacian(cells: int) -> scipy.sparse.csr_matrix:
    """Finite-volume Laplacian [1/m^2] on ``cells`` equal cells of [-HALF, HALF], no-flux walls."""
    h = 2 * HALF / cells
    main = np.full(cells, -2.0)
    main[[0, -1]] = -1.0
    return scipy.sparse.diags([np.ones(cells - 1), main, np.ones(cells - 1)], [-1, 0, 1], format="csr") / h**2


def exchange_solution(k_rel: float, plasma: PlasmaCurve, times, *, cells: int = 800, euler_step: float | None = None):
    """(centres [m], C_L, C_F [mol/m^3] of shape (cells, frames)) of the exchange twin at ``times``
    [s]: method of lines (BDF, rtol 1e-9) or, with ``euler_step`` [s], backward Euler."""
    centres = -HALF + (np.arange(cells) + 0.5) * 2 * HALF / cells
    lap = _neumann_laplacian(cells)
    eye = scipy.sparse.identity(cells, format="csr")
    lipo_rate = twins.D_L * lap - (PS_LIPO / PHI + k_rel) * eye
    system = scipy.sparse.bmat([[lipo_rate, None], [k_rel * eye, twins.D_F * lap - twins.K_UP * eye]], format="csc")
    initial = np.concatenate([C0 * (1 + 0.5 * np.cos(math.pi * centres / HALF)), np.zeros(cells)])

    def source(t):
        return np.concatenate([np.full(cells, PS_LIPO * plasma(t)), np.zeros(cells)])
    if euler_step is None:
        solution = solve_ivp(lambda t, y: system @ y + source(t), (0.0, max(times)), initial, method="BDF",
                             t_eval=times, jac=system, rtol=1e-9, atol=1e-12 * C0)
        states = solution.y
    else:
        if any(abs(t / euler_step - round(t / euler_step)) > 1e-9 for t in times):
            raise ValueError(f"frame times {list(times)} s must be multiples of the Euler step {euler_step} s")
        solve = scipy.sparse.linalg.factorized((scipy.sparse.identity(2 * cells) - euler_step * system).tocsc())
        y, steps, states = initial, 0, []
        for stop in times:
            while steps < round(stop / euler_step):
                steps += 1
                y = solve(y + euler_step * source(steps * euler_step))
            states.append(y)
        states = np.stack(states, axis=1)
    return centres, states[:cells], states[cells:]


def _exchange_images(k_rel, plasma, times, grid, *, discretisation: bool) -> dict[str, np.ndarray]:
    """Clean total/free voxel images (voxels, frames): the converged solve sampled with the PINN's
    3-point operator, or (``discretisation``) the coarse backward-Euler solve averaged exactly."""
    voxels = grid.shape[0]
    if discretisation:
        _, lipo, free = exchange_solution(k_rel, plasma, times, cells=2 * voxels, euler_step=60.0)
        average = lambda c: c.reshape(voxels, 2, -1).mean(axis=1)   # noqa: E731  two cells per voxel
    else:
        centres, lipo, free = exchange_solution(k_rel, plasma, times)
        x = twins.voxel_points(grid)
        average = lambda c: np.stack([np.interp(x, centres, c[:, j]).mean(axis=1)   # noqa: E731
                                      for j in range(c.shape[1])], axis=1)
    return {"total_drug": average(lipo + free), "free_drug": average(free)}


def exchange_problem(observations, seed: int) -> TransportProblem:
    """The PINN's model of the exchange twin (assumed plasma curve)."""
    return TransportProblem(
        Box(1, HALF), {"diffusivity_lipo": twins.D_L, "diffusivity_free": twins.D_F, "uptake_rate": twins.K_UP,
                       "release_rate": BoundedScalar("release_rate", "1/s", 1e-6, 1e-2)},
        end_time=END, concentration_scale=C0, observations=observations, boundary="no_flux",
        initial_lipo=lambda x: C0 * (1 + 0.5 * torch.cos(math.pi * x[:, 0])),
        exchange_lipo=DrugExchange(ASSUMED_PLASMA, PS_LIPO, default("sigma_L")), interstitial_fraction=PHI,
        width=32, depth=3, features=16, generator=torch.Generator().manual_seed(seed))


def exchange_case(variant: str, changes: tuple[str, ...], args, noise: float = 0.05) -> dict:
    times = FRAMES[3]
    grid = twins.slab_grid(HALF, 20)
    plasma = TRUE_PLASMA if "plasma" in changes else ASSUMED_PLASMA
    clean = _exchange_images(twins.K_REL, plasma, times, grid, discretisation="discretisation" in changes)
    crime = _exchange_images(twins.K_REL, ASSUMED_PLASMA, times, grid, discretisation=False)
    difference = {q: float(np.abs(clean[q] - crime[q]).max() / np.abs(crime[q]).max()) for q in clean}
    rng = np.random.default_rng(args.seed)
    records, sds = [], []
    for quantity, image in clean.items():
        sd = noise * np.abs(image).max()
        if "noise" in changes:    # magnitude of a complex signal with Gaussian noise in both channels
            noisy = np.hypot(image + sd * rng.standard_normal(image.shape), sd * rng.standard_normal(image.shape))
        else:
            noisy = image + sd * rng.standard_normal(image.shape)
        records.append(Observations(quantity, "mol/m^3", grid, times, noisy.reshape(20, 1, 1, -1), sd, twins.OPERATOR))
        sds.append(np.full(image.size, sd))
    data, sds = np.concatenate([r.values.ravel() for r in records]), np.concatenate(sds)

    def assumed(log_k):   # the model the PINN assumes, as flat data (quantity, voxel, frame)
        images = _exchange_images(math.exp(log_k), ASSUMED_PLASMA, times, grid, discretisation=False)
        return np.concatenate([images[q].ravel() for q in ("total_drug", "free_drug")])
    fit = math.exp(minimize_scalar(lambda q: np.sum(((assumed(q) - data) / sds) ** 2),
                                   bounds=(math.log(2e-5), math.log(2e-3)), method="bounded",
                                   options={"xatol": 1e-5}).x)
    crb = _relative_sd(lambda q: assumed(q[0]), [math.log(twins.K_REL)], sds, ["log_k_rel"])[0]
    clock = Clock()
    problem = exchange_problem(tuple(records), args.seed)
    result = Trainer(problem, _training(args, *args.exchange_steps)).run()
    timing = clock.read()
    k = result.estimates["release_rate"][0]
    centres, lipo, free = exchange_solution(twins.K_REL, plasma, np.linspace(0.0, END, 13)[1:], cells=200)
    xx, tt = np.meshgrid(centres / HALF, np.linspace(0.0, 1.0, 13)[1:], indexing="ij")
    with torch.no_grad():
        pinn = problem.concentrations(torch.tensor(np.stack([xx.ravel(), tt.ravel()], axis=1)))
    case = {"twin": "exchange", "variant": variant, "changes": list(changes), "frames_s": list(times), "noise": noise,
            "data_difference": difference, "unknown": "release_rate", "unit": "1/s", **_summary(k, twins.K_REL, fit),
            "crb_relative_sd": crb, "field_relative_l2": {"liposomal": _relative_l2(pinn[0].numpy().ravel(), lipo.ravel()),
                                  "free": _relative_l2(pinn[1].numpy().ravel(), free.ravel())},
            "fresh_residual": _fresh_residual(problem), **timing, "steps": result.steps}
    case["converged"] = case["fresh_residual"] < RESIDUAL_LIMIT
    return case


# -- report ----------------------------------------------------------------------------------------
def _figure(report: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    release = [c for c in report["cases"] if c["twin"] == "release"]
    for frames in sorted({len(c["frames_s"]) for c in release}):
        rows = [c for c in release if len(c["frames_s"]) == frames]
        line, = axes[0].plot([100 * c["noise"] for c in rows], [100 * abs(c["relative_error"]) for c in rows], "o-",
                             label=f"PINN, {frames} frames")
        axes[0].plot([100 * c["noise"] for c in rows], [100 * abs(c["best_fit_relative_error"]) for c in rows], "x--",
                     color=line.get_color(), label=f"closed-form fit, {frames} frames")
    axes[0].set(xlabel="noise [% of peak]", ylabel="|k_rel error| [%]", title="release twin")
    ifp = [c for c in report["cases"] if c["twin"] == "ifp"]
    for name in ("rim_thickness", "effective_pressure"):
        line, = axes[1].plot([100 * c["noise"] for c in ifp], [100 * abs(c[name]["relative_error"]) for c in ifp],
                             "o-", label=f"PINN {name}")
        axes[1].plot([100 * c["noise"] for c in ifp], [100 * abs(c[name]["best_fit_relative_error"]) for c in ifp],
                     "x--", color=line.get_color(), label=f"closed-form fit {name}")
    axes[1].set(xlabel="noise [% of peak]", ylabel="|error| [%]", title="IFP twin")
    exchange = [c for c in report["cases"] if c["twin"] == "exchange"]
    positions = np.arange(len(exchange))
    axes[2].bar(positions - 0.2, [100 * c["relative_error"] for c in exchange], 0.4, label="PINN")
    axes[2].bar(positions + 0.2, [100 * c["best_fit_relative_error"] for c in exchange], 0.4, label="exact-model fit")
    axes[2].set_xticks(positions, [c["variant"] for c in exchange], rotation=20, fontsize=8)
    axes[2].set(ylabel="k_rel error [%]", title="exchange twin: what the data differ in")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="one tiny case per set: checks the script runs")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (one beats two on the shared box)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ensemble", type=int, default=0, help="seeds of an ensemble at 5 %% noise (3 frames); 0: none")
    parser.add_argument("--resume", action="store_true", help="keep the cases already in --output (same settings)")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "pinn_sweep.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # Adam steps, L-BFGS iterations, collocation points (1-D space x time or space)
    args.release_steps, args.ifp_steps, args.exchange_steps = (500, 400, 512), (500, 200, 256), (800, 400, 512)
    frames, noises, variants = list(FRAMES), NOISE, EXCHANGE_VARIANTS
    if args.smoke:
        args.release_steps, args.ifp_steps, args.exchange_steps = (20, 5, 64), (20, 5, 64), (20, 5, 64)
        frames, noises, args.ensemble = [2], [0.05], 0
        variants = {"all three": EXCHANGE_VARIANTS["all three"]}
    report = {"timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                          "python": platform.python_version(), "torch_threads": torch.get_num_threads(),
                          "load_average_before": list(os.getloadavg())},
              "versions": {"torch": torch.__version__, "numpy": np.__version__},
              "sizes": {"release": "slab |x| < 1 mm, 20 voxels x 3 points, total + free drug, T = 1 h",
                        "ifp": "slab |x| < 2 mm, 40 voxels x 3 points",
                        "exchange": "slab |x| < 1 mm, 20 voxels x 3 points, total + free drug, 3 frames, 5 % noise; "
                                    "truth 800-cell BDF (or 40-cell backward Euler, 60 s)",
                        "training": {"release": args.release_steps, "ifp": args.ifp_steps,
                                     "exchange": args.exchange_steps, "keys": "Adam steps, L-BFGS iterations, "
                                     "collocation points (float64, RAD every 250 steps)"},
                        "residual_limit": RESIDUAL_LIMIT},
              "truth": {"release_rate_per_s": twins.K_REL, "rim_thickness_m": math.sqrt(twins.K / twins.LPSV),
                        "effective_pressure_Pa": twins.PE},
              "cases": []}
    done = {}
    if args.resume and args.output.exists():
        done = {_key(case): case for case in json.loads(args.output.read_text())["cases"]}
    start = time.perf_counter()
    jobs = [(release_case, (n, level)) for n in frames for level in noises]
    jobs += [(ifp_case, (level,)) for level in noises]
    jobs += [(exchange_case, (name, changes)) for name, changes in variants.items()]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    for function, job in jobs:
        key = _key({"twin": function.__name__.removesuffix("_case"), "job": job})
        case = done.get(key) or function(*job, args) | {"job": list(job)}
        report["cases"].append(case)
        print(json.dumps({k: v for k, v in case.items() if k != "ensemble"}), flush=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n")   # after every case: a killed run keeps its cases
    report["total_wall_s"] = time.perf_counter() - start
    report["machine"]["load_average_after"] = list(os.getloadavg())
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    _figure(report, args.output.with_suffix(".png"))
    print(f"wrote {args.output} and {args.output.with_suffix('.png')} ({report['total_wall_s']:.0f} s)")


def _key(case: dict) -> str:
    """Identity of a case across runs (``--resume``): its set and its arguments."""
    return json.dumps([case["twin"], list(case["job"])])


if __name__ == "__main__":
    main()
