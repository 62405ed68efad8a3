"""Why the release PINN leaves the truth (issue 9): the FEM ground truth of the pH-release twin
(examples/synthesize_ph_release.toml) against the continuous equations the PINN enforces.

Stage ``fem`` (DOLFINx): re-runs the twin (``hybrid.commands.synthesize.run_synthesize``, noise 0)
with the example's time discretisation (backward Euler, 300 s) and with a fine one (BDF2, 10 s),
and reports the difference of the observed voxel quantities (total drug, released fraction, per
species) between the two, against the example's noise level (5 % of the series maximum): a
difference of the order of the noise in the data means the synthetic images are not a solution of
the continuous equations the PINN enforces, so its loss has its minimum elsewhere.

Stage ``pinn`` (torch, 1 thread): builds the example's release problem (as ``hybrid invert``
does) and reports the loss terms of the trained example run (``results/invert_ph_release``) at
its estimates and at the true law, the data terms of the fine FEM truth through the PINN's own
observation operator (should be ~ the noisy-minus-clean floor), and the PDE residual the networks
have when fitted to the fine FEM truth by supervised regression (Adam, then L-BFGS).

Stage ``balance`` (torch): the PINN's three equations checked term by term on the FEM nodes
(no network involved): release, exchange, plasma curve, uptake and pH lookup.

Stage ``drift VARIANT STEPS [LABEL-OF-START [KEY-SUFFIX]]`` (torch): starts at the truth (true law,
networks from the ``pinn`` stage's regression fit) and trains on the PINN's own loss with the
example's settings changed as in ``VARIANTS``: whether the loss keeps the truth.

Run from the repository root:
    .venv/bin/python benchmarks/pinn_release_diagnosis.py fem
    .venv/bin/python benchmarks/pinn_release_diagnosis.py pinn 4000 2048 1000
    .venv/bin/python benchmarks/pinn_release_diagnosis.py balance
    .venv/bin/python benchmarks/pinn_release_diagnosis.py drift example_256_all 300 "..." lbfgs_fit
Writes benchmarks/results/pinn_release_diagnosis.json (every stage merges its entry into it).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "synthesize_ph_release.toml"
INVERT = ROOT / "examples" / "invert_ph_release.toml"
WORK = Path(os.environ.get("DIAGNOSIS_DIR", "/tmp/pinn_release_diagnosis"))
RESULTS = ROOT / "benchmarks" / "results" / "pinn_release_diagnosis.json"
SCHEMES = {"example_be_300s": (1, 300.0), "fine_bdf2_10s": (2, 10.0)}
FIELDS = ("liposomal_drug", "free_drug", "cell_drug", "total_drug", "released_fraction")


def _load(name: str) -> dict[str, np.ndarray]:
    import nibabel
    return {field: np.asarray(nibabel.load(WORK / name / "truth" / f"{field}.nii.gz").get_fdata())
            for field in FIELDS}


def merge_entry(results: Path, key: str, value) -> None:
    """Set ``key`` of the JSON object in ``results`` to ``value``, keeping its other entries."""
    data = json.loads(results.read_text()) if results.exists() else {}
    data[key] = value
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(data, indent=1) + "\n")


def fem_stage() -> dict:
    from mpi4py import MPI
    from hybrid.commands.synthesize import run_synthesize
    from hybrid.config.synthesize import load_synthesize_config

    transport, observation = load_synthesize_config(CONFIG)
    observation = replace(observation, noise=0.0)
    timings = {}
    for name, (order, step) in SCHEMES.items():
        if (WORK / name / "truth.json").exists():   # already run
            continue
        config = replace(transport, time=replace(transport.time, order=order, step=step),
                         output=replace(transport.output, directory=WORK / name))
        start = time.perf_counter()
        run_synthesize(config, observation, MPI.COMM_WORLD, lambda *_: None)
        timings[name] = time.perf_counter() - start
    coarse, fine = _load("example_be_300s"), _load("fine_bdf2_10s")
    times = list(observation.times)
    out = {"frame_times_s": times, "wall_s": timings, "load": os.getloadavg()[0],
           "noise_relative_to_series_max": 0.05, "per_field": {}}
    for field in FIELDS:
        scale = float(np.nanmax(np.abs(fine[field])))
        diff = coarse[field] - fine[field]
        frames = []
        for i in range(len(times)):
            f, d = fine[field][..., i], diff[..., i]
            ok = np.isfinite(f) & np.isfinite(d)
            if not ok.any():
                frames.append(None)
                continue
            frames.append({"rel_l2": float(np.linalg.norm(d[ok]) / max(np.linalg.norm(f[ok]), 1e-300)),
                           "rms_over_series_max": float(np.sqrt(np.mean(d[ok] ** 2)) / scale),
                           "mean_signed_over_series_max": float(np.mean(d[ok]) / scale)})
        out["per_field"][field] = {"series_max_fine": scale, "coarse_minus_fine_by_frame": frames}
    out["fine_snapshots"] = str(_snapshots(transport))
    return out


def _snapshots(transport, every_s: float = 60.0) -> Path:
    """Nodal C_L, C_F, C_I [mol/m^3] of the fine FEM run (BDF2, 10 s) every ``every_s`` s with the
    node coordinates [m], saved to WORK/fine_snapshots.npz (serial)."""
    from mpi4py import MPI
    from hybrid.commands.transport import setup_transport

    path = WORK / "fine_snapshots.npz"
    if path.exists():
        return path
    order, step = SCHEMES["fine_bdf2_10s"]
    config = replace(transport, time=replace(transport.time, order=order, step=step),
                     release=replace(transport.release, ph_map=WORK / "fine_bdf2_10s" / "truth" / "ph.nii.gz"))
    setup = setup_transport(config, MPI.COMM_SELF, lambda *_: None, {})
    solver = setup.solver
    species = solver.species()
    coordinates = species[0].function_space.tabulate_dof_coordinates()[:, :2]
    times, values = [0.0], [np.stack([f.x.array.copy() for f in species])]
    try:
        for index in range(1, int(round(config.time.end / step)) + 1):
            solver.step(step)
            if index % int(round(every_s / step)) == 0:
                times.append(solver.time)
                values.append(np.stack([f.x.array.copy() for f in solver.species()]))
    finally:
        solver.close()
    np.savez(path, coordinates=coordinates, times=np.array(times), values=np.stack(values))
    return path


def fem_truth(path: Path, length: float, time_scale: float):
    """The FEM snapshots saved by :func:`_snapshots` (``path``) at nondimensional (x~, t~) points of
    a release problem: C_L, C_F, C_I [mol/m^3] (:class:`hybrid.inverse.warm_start.SnapshotInterpolant`:
    P1 on the Delaunay triangles of the nodes, linear in time, the nearest node outside the hull)."""
    from hybrid.inverse.warm_start import SnapshotInterpolant
    from hybrid.records import FemSnapshots

    data = np.load(path)
    return SnapshotInterpolant(FemSnapshots(data["coordinates"], data["times"], data["values"], FIELDS[:3]),
                               length, time_scale)


def set_unknowns(problem, values: dict[str, float]) -> None:
    """Set every scalar unknown of ``problem`` to ``values[name]`` (SI), through the public
    BoundedScalar: its raw parameter is that of a BoundedScalar started at the value."""
    import torch
    from hybrid.inverse import BoundedScalar
    with torch.no_grad():
        for u in problem.scalar_unknowns():
            u.raw.copy_(BoundedScalar(u.name, u.unit, u.lower, u.upper, initial=values[u.name], log=u.log).raw)


def _terms(problem, points) -> dict[str, float]:
    """Loss terms (nondimensional mean squares) and their gradient w.r.t. each unknown's value."""
    import torch
    terms = problem.loss_terms(points.clone())
    out = {name: float(value.detach()) for name, value in terms.items()}
    for name, value in terms.items():
        grads = torch.autograd.grad(value, [u.raw for u in problem.scalar_unknowns()], retain_graph=True,
                                    allow_unused=True)
        for unknown, raw_grad in zip(problem.scalar_unknowns(), grads):
            if raw_grad is None:
                continue
            dvalue_draw = torch.autograd.grad(unknown(), unknown.raw)[0]   # chain rule to the value
            out[f"d_{name}/d_{unknown.name}"] = float(raw_grad / dvalue_draw)
    out["estimates"] = {u.name: float(u().detach()) for u in problem.scalar_unknowns()}
    return out


def supervised_fit(problem, fem, steps: int, points: int, seed: int, lbfgs_steps: int) -> dict:
    """The problem's state networks regressed onto ``fem`` (:func:`hybrid.inverse.warm_start.fit_states`:
    ``steps`` Adam then ``lbfgs_steps`` L-BFGS iterations at ``points`` points drawn with ``seed``):
    the relative L2 error per state on fresh points and the final loss (after the last step; entries
    written before the fit moved into hybrid.inverse hold the loss at the start of L-BFGS)."""
    from hybrid.inverse.warm_start import fit_states

    fit = fit_states(problem, fem, seed=seed, adam_steps=steps, lbfgs_steps=lbfgs_steps, points=points)
    return fit.relative_l2 | {"final_loss": fit.final_loss}


def _clean_data_misfit(problem, config) -> dict:
    """Per data record: mean square (nondimensional, the PINN's units) of the noisy data minus the
    clean FEM voxel values of the same voxels (the floor the PINN's data terms can reach), and the
    noise level squared it should equal."""
    import nibabel
    from hybrid.commands.invert import observation_records
    out = {}
    truth_dir = Path(config.data.truth).parent / "truth"
    for record, data in zip(observation_records(config)[1], problem.data):
        clean = np.asarray(nibabel.load(truth_dir / f"{record.quantity}.nii.gz").get_fdata())
        voxels, frames, values = record.observed()
        clean_values = clean[voxels[:, 0], voxels[:, 1], voxels[:, 2], frames]
        keep = np.isfinite(clean_values)
        diff = (values - clean_values)[keep] / data.value_scale
        out[record.quantity] = {"noisy_minus_clean_ms": float(np.mean(diff ** 2)),
                                "noise_sd_squared": float(data.noise ** 2), "voxel_values": int(keep.sum())}
    return out


def _fem_data_terms(problem, fem) -> dict[str, float]:
    """The problem's data terms with the FEM truth in place of its networks: the fine FEM fields
    averaged by the PINN's own observation operator (its sub-voxel points and weights) against the
    noisy data, i.e. the data misfit of the truth as the PINN measures it (should be ~ the noise)."""
    import torch
    from types import MethodType

    def fem_states(self, xt):
        values = torch.as_tensor(fem(xt.detach().numpy()), dtype=xt.dtype)
        return [values[:, i:i + 1] for i in range(3)]
    saved = problem.boundary
    problem.states = MethodType(fem_states, problem)
    problem._residuals = MethodType(lambda self, points: (), problem)
    problem.boundary = "free"   # no boundary term (the FEM field has no autograd graph)
    try:
        with torch.no_grad():
            return {name: float(value) for name, value in problem.loss_terms(problem.sample_collocation(
                8, torch.Generator().manual_seed(0))).items()}
    finally:
        del problem.states, problem._residuals
        problem.boundary = saved


def pinn_stage(steps: int = 3000, points: int = 4096, lbfgs_steps: int = 0) -> dict:
    import torch
    from hybrid.commands.invert import build_problems, observation_records
    from hybrid.config.invert import load_invert_config
    from hybrid.inverse.images import load_state

    torch.set_num_threads(1)
    config = load_invert_config(INVERT)
    release = json.loads(Path(config.data.truth).read_text())["parameters"]["release"]
    truth = {name: release[name]["value"] for name in ("ph_50", "steepness")}
    records = observation_records(config)[1]
    out = {"load_before": os.getloadavg()[0], "truth": {k: truth[k] for k in ("ph_50", "steepness")}}
    generator = torch.Generator().manual_seed(123)

    trained = build_problems(config, records)[0]
    load_state(trained, Path(config.output.directory) / "networks" / "seed0.pt", "float64")
    collocation = trained.sample_collocation(points, generator)
    out["trained_pinn_at_its_estimates"] = _terms(trained, collocation)
    set_unknowns(trained, truth)
    out["trained_pinn_networks_at_truth"] = _terms(trained, collocation)
    fem = fem_truth(WORK / "fine_snapshots.npz", trained.scales.length, trained.scales.time)
    with torch.no_grad():
        xt = trained.sample_collocation(points, generator)
        reference = torch.as_tensor(fem(xt.numpy()), dtype=xt.dtype)
        states = torch.cat(trained.states(xt), dim=1)
    out["trained_pinn_vs_fem_rel_l2"] = {name: float((states[:, i] - reference[:, i]).norm() / reference[:, i].norm())
                                         for i, name in enumerate(("liposomal_drug", "free_drug", "cell_drug"))}
    out["clean_data_floor"] = _clean_data_misfit(trained, config)
    out["fem_truth_data_terms"] = _fem_data_terms(trained, fem)

    fitted = build_problems(config, records)[0].double()
    set_unknowns(fitted, truth)
    start = time.perf_counter()
    out["supervised_fit"] = supervised_fit(fitted, fem, steps, points, seed=7, lbfgs_steps=lbfgs_steps)
    out["supervised_fit"] |= {"steps": steps, "lbfgs_steps": lbfgs_steps, "points": points, "wall_s": time.perf_counter() - start,
                              "load": os.getloadavg()[0]}
    out["fem_fit_networks_at_truth"] = _terms(fitted, collocation)
    torch.save(fitted.state_dict(), WORK / "fem_fit.pt")
    return out


def balance_stage() -> dict:
    """Representation-free check of the liposomal equation on the FEM truth: at the fine run's
    nodes with |x| < 0.9 R (away from the edge layer; D_L / L^2 ~ 3e-7 1/s makes diffusion
    negligible there), the release rate the FEM's C_L implies, k = (J_L - dC_L/dt) / C_L - k_L
    (central differences of the 60 s snapshots, J_L the PINN's own Kedem-Katchalsky exchange with
    its plasma curve), against the PINN's coefficient k(pH_e(x)) with the true law (its KnownMap
    lookup); likewise the free equation (release implied by the FEM's C_F, its own exchange and
    uptake, over k C_L) and the cell equation (dC_I/dt over k_up C_F). A systematic ratio != 1 is a
    mismatch in release, exchange, plasma curve, uptake or pH lookup."""
    import torch
    from hybrid.commands.invert import build_problems, observation_records
    from hybrid.config.invert import load_invert_config
    from hybrid.problems.exchange import kedem_katchalsky_flux
    from hybrid.problems.namespace import TORCH

    torch.set_num_threads(1)
    config = load_invert_config(INVERT)
    problem = build_problems(config, observation_records(config)[1])[0].double()
    release = json.loads(Path(config.data.truth).read_text())["parameters"]["release"]
    set_unknowns(problem, {name: release[name]["value"] for name in ("ph_50", "steepness")})
    data = np.load(WORK / "fine_snapshots.npz")
    nodes, times, values = data["coordinates"], data["times"], data["values"]
    length = problem.scales.length
    keep = np.linalg.norm(nodes, axis=1) < 0.9 * length
    x = torch.as_tensor(nodes[keep] / length)
    with torch.no_grad():
        k_pinn = problem.coefficient("release_rate", x).numpy()
    exchange, phi = problem.exchange[0], problem.interstitial_fraction
    clearance = float(problem.coefficient("clearance", x))
    uptake = float(problem.coefficient("uptake_rate", x))
    rows = []
    for i in range(2, len(times) - 1, 20):
        c = values[i, 0, keep]
        dcdt = (values[i + 1, 0, keep] - values[i - 1, 0, keep]) / (times[i + 1] - times[i - 1])
        with torch.no_grad():
            j = kedem_katchalsky_flux(exchange.plasma(torch.tensor(times[i]), TORCH), torch.as_tensor(c) / phi,
                                      0.0, exchange.reflection, exchange.permeability_surface, TORCH).numpy()
        k_fem = (j - dcdt) / c - clearance
        free = values[i, 1, keep]
        dfree = (values[i + 1, 1, keep] - values[i - 1, 1, keep]) / (times[i + 1] - times[i - 1])
        dcell = (values[i + 1, 2, keep] - values[i - 1, 2, keep]) / (times[i + 1] - times[i - 1])
        with torch.no_grad():
            j_free = kedem_katchalsky_flux(problem.exchange[1].plasma(torch.tensor(times[i]), TORCH),
                                           torch.as_tensor(free) / phi, 0.0, problem.exchange[1].reflection,
                                           problem.exchange[1].permeability_surface, TORCH).numpy()
        # free equation without diffusion: release the FEM's C_F implies over k(pH) C_L of the PINN
        released = (dfree - j_free + uptake * free) / (k_pinn * c)
        taken_up = dcell / (uptake * free)   # cell equation: dC_I/dt over U(C_F) = k_up C_F
        ratios = {"liposomal_k_fem_over_k_pinn": k_fem / k_pinn, "free_release_fem_over_pinn": released, "cell_uptake_fem_over_pinn": taken_up}
        rows.append({"time_s": float(times[i])} | {name: [float(np.min(r)), float(np.mean(r)), float(np.max(r))]
                                                    for name, r in ratios.items()})
    return {"nodes": int(keep.sum()), "ratios": "[min, mean, max] over the nodes; 1 = the PINN's term "
            "equals the FEM's", "k_pinn_range_1_per_s": [float(k_pinn.min()), float(k_pinn.max())], "by_time": rows}


VARIANTS = {   # training settings of the drift test (the example's: 256 points, every term balanced)
    "example_256_all": {"collocation_points": 256, "balance": "all"},
    "256_residuals": {"collocation_points": 256, "balance": "residuals"},
    "2048_all": {"collocation_points": 2048, "balance": "all"},
    "2048_residuals": {"collocation_points": 2048, "balance": "residuals"},
    "2048_residuals_data_x0.01": {"collocation_points": 2048, "balance": "residuals", "data_factor": 0.01},
    "2048_frozen_networks": {"collocation_points": 2048, "balance": "none", "freeze": True},
}


def training_settings(config) -> dict:
    """The ``[training]`` settings of an invert config that are TrainingConfig fields (not the
    checkpoint, ensemble size or the coupled problem's pressure pre-training)."""
    from dataclasses import asdict, fields
    from hybrid.inverse import TrainingConfig
    names = {f.name for f in fields(TrainingConfig)} - {"checkpoint"}
    return {name: value for name, value in asdict(config.training).items() if name in names}


def drift_stage(variant: str, steps: int, training: dict | None = None) -> dict:
    """Start at the truth (unknowns at the true pH law, networks fitted to the FEM truth by the
    ``pinn`` stage) and train on the PINN's own loss for ``steps`` Adam steps with the example's
    settings changed by ``VARIANTS[variant]`` and then ``training`` (TrainingConfig fields, e.g.
    ``residual_form``): if the loss has its minimum at the truth, the estimates stay there."""
    import torch
    from hybrid.commands.invert import build_problems, observation_records
    from hybrid.config.invert import load_invert_config
    from hybrid.inverse import Trainer, TrainingConfig

    torch.set_num_threads(1)
    config = load_invert_config(INVERT)
    problem = build_problems(config, observation_records(config)[1])[0].double()
    problem.load_state_dict(torch.load(WORK / "fem_fit.pt", weights_only=True))
    settings = training_settings(config)
    variant_settings = dict(VARIANTS[variant])
    data_factor = variant_settings.pop("data_factor", 1.0)
    if variant_settings.pop("freeze", False):   # only the unknowns move: the law the fitted state prefers
        problem.network.requires_grad_(False)
    if data_factor != 1.0:   # data terms scaled down: the PDE penalty relatively data_factor^-1 stronger
        loss_terms = problem.loss_terms
        problem.loss_terms = lambda points: {name: value * data_factor if name.startswith("data") else value
                                             for name, value in loss_terms(points).items()}
    settings |= variant_settings | (training or {}) | {"adam_steps": steps, "lbfgs_steps": 0, "progress_every": 50}
    start = time.perf_counter()
    result = Trainer(problem, TrainingConfig(**settings), progress=lambda line: print(line, flush=True)).run()
    return {"settings": settings, "data_factor": data_factor, "wall_s": time.perf_counter() - start, "load": os.getloadavg()[0],
            "start": "truth (6.8, 2.0), networks fitted to the FEM",
            "history": [{"step": h["step"], "estimates": h["estimates"], "terms": h["terms"],
                         "weights": h.get("weights")} for h in result.history],
            "final_estimates": {name: value for name, (value, _) in result.estimates.items()}}


if __name__ == "__main__":
    stage = sys.argv[1] if len(sys.argv) > 1 else "fem"
    if stage == "fem":
        result = fem_stage()
    elif stage == "pinn":
        result = pinn_stage(*(int(v) for v in sys.argv[2:5]))
    elif stage == "balance":
        result = balance_stage()
    elif stage == "drift":
        result = drift_stage(sys.argv[2], int(sys.argv[3]))
        result["networks_start"] = sys.argv[4] if len(sys.argv) > 4 else "the last `pinn` stage's supervised fit"
        stage = f"drift_{sys.argv[2]}" + (f"_{sys.argv[5]}" if len(sys.argv) > 5 else "")
    else:
        raise SystemExit(f"unknown stage {stage!r}: fem, pinn or drift")
    merge_entry(RESULTS, stage, result)
    print(json.dumps(result, indent=1))
