"""``hybrid invert CONFIG.toml``: the inverse PINN on images (torch only inside hybrid.inverse; DOLFINx
only for ``[training] warm_start = "fem"``).

Composition only. Kind "ifp": the IFP map (NIfTI, Pa) -> :class:`hybrid.records.Observations` ->
:func:`hybrid.inverse.images.disc_ifp_problem`. Kind "release": the total-drug series (and the
released fraction) of a ``hybrid synthesize`` run (:mod:`hybrid.io.observations`) ->
:func:`hybrid.inverse.images.disc_release_problem` with the known physics of ``[problem]
transport`` (:func:`release_physics`); frames at t <= 0 and ``[data] held_out_times`` are left out of
training. The release unknowns are a uniform ``release_rate``, or for pH-sensitive liposomes
``ph_50`` / ``steepness`` of the pH law k(pH_e(x)) on the known ``[data] ph_map`` (else the
transport's pH map or uniform pH). Kind "coupled": the same data -> a tumour disc in host
(:func:`hybrid.inverse.coupled.tumour_host_problem`, the known physics of tumour and host from
``[problem] transport``, :func:`coupled_physics`) whose pressure is trained with the drug, the
unknowns among the release ones and the tumour's ``conductivity`` and ``effective_pressure``;
first the pressure network alone (``[training] pretrain_adam_steps`` / ``pretrain_lbfgs_steps``,
:func:`hybrid.inverse.coupled.pretrain_pressure`). All -> :class:`hybrid.inverse.Trainer` (one per
ensemble member, seeds seed, seed + 1, ...) with the ``[training]`` keys as
:class:`hybrid.inverse.TrainingConfig` fields, among them ``residual_form`` ("weak": the drug
equations against the test functions of ``weak_cells``, ``weak_time_cells`` and ``weak_gauss``,
kinds "release" and "coupled"; the pressure equation stays pointwise).
``[training] warm_start = "fem"`` (kind "release"): before training, the FEM forward solve of
``[problem] transport`` at the unknowns' start values (:func:`_fem_at_start`; the only path that
imports DOLFINx, lazily) and each member's state networks regressed onto its nodal fields
(:mod:`hybrid.inverse.warm_start`); skipped for a member resumed from its checkpoint.
Writes into ``directory``:

- ``inversion.json``: for every estimate (the scalar unknowns; IFP: the rim thickness
  sqrt(K / (Lp S/V + LpL SL/V)) [m]) ``estimate``, ``unit``, ``spread`` (sample sd over ensemble
  members; null for one member) and, with a ``truth.json``, ``truth`` and ``relative_error``; the
  loss history of every member, training seconds, device and dtype; release and coupled: the
  frames trained on and held out, and the PINN's prediction of each held-out frame (relative l2
  against the observed frame over the voxels finite in both); coupled: the pressure pre-training
  of every member (last loss record and seconds); with ``warm_start = "fem"``, ``training.warm_start``:
  per member (not resumed) the start values, FEM seconds and snapshot count, the fit's relative L2
  errors per state [1] on fresh points, its final loss and seconds (null without a warm start);
- recovered fields on the observation grid, voxel-averaged like the data (ensemble mean; NaN where
  a voxel sees no tissue): ``ifp.nii.gz`` [Pa] (ifp and coupled); release and coupled:
  ``total_drug``, ``liposomal_drug``, ``free_drug``, ``cell_drug`` [mol/m^3] and
  ``released_fraction`` [1] (4-D at every frame time after injection, with ``FrameTimes_s``);
- ``networks/seed<N>.pt``: each member's trained state (``torch.save`` of the problem's
  state_dict), which ``hybrid validate`` evaluates at the FEM mesh nodes.
"""

from __future__ import annotations

import importlib.util
import json
import math
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from hybrid.config.invert import (COUPLED_UNKNOWNS, DRUG_UNKNOWNS, IFP_COEFFICIENTS, PH_LAW_UNKNOWNS, RELEASE_UNKNOWNS,
                                  InvertConfig, load_transport)
from hybrid.io.nifti import read_volume, write_series, write_volume
from hybrid.io.observations import read_drug_series, read_truth
from hybrid.records import ObservationOperator, Observations, VoxelGrid

__all__ = ["run_invert", "read_ifp_observations", "read_release_observations", "truth_values", "release_physics",
           "load_transport", "build_problems", "training_frames", "observation_records", "trained_problems",
           "coupled_physics", "with_unknown_values", "estimate_names"]

_TRUTH_KEYS = {"conductivity": "tumour.hydraulic_conductivity",
               "vascular_exchange": "tumour_derived.vascular_exchange_LpSV",
               "effective_pressure": "tumour_derived.effective_pressure",
               "lymphatic_filtration": "tumour.lymphatic_filtration",
               "lymphatic_pressure": "tumour.lymphatic_pressure",
               "release_rate": "release_rate", "ph_50": "release.ph_50", "steepness": "release.steepness",
               "vessel_permeability": "carriers.liposome.vessel_permeability"}
"""Where each coefficient lives in ``hybrid synthesize``'s truth.json ``parameters``."""
WARM_START_INTERVAL_S = 60.0
"""Time between the FEM snapshots of the warm start [s] (every step where ``[time] step`` is coarser)."""


def read_ifp_observations(config: InvertConfig) -> Observations:
    """The IFP map [Pa] of ``config`` as an Observations record (one steady frame at t = 0)."""
    values, affine = read_volume(config.data.observations)
    operator = ObservationOperator(points_per_axis=config.data.points_per_axis, dim=2)
    return Observations("ifp", "Pa", VoxelGrid(affine, values.shape), [0.0], values, config.data.noise_sd, operator)


def read_release_observations(config: InvertConfig) -> tuple[Observations, ...]:
    """The total drug series (and the released fraction when ``[data] released_fraction`` is given)
    as Observations records, every frame (:func:`training_frames` masks the untrained ones)."""
    operator = ObservationOperator(points_per_axis=config.data.points_per_axis, dim=2)
    records = [read_drug_series(config.data.observations, "total_drug", operator)]
    if config.data.released_fraction is not None:
        records.append(read_drug_series(config.data.released_fraction, "released_fraction", operator))
        if not np.array_equal(records[1].frame_times_s, records[0].frame_times_s) \
                or records[1].grid.shape != records[0].grid.shape:
            raise ValueError(f"{config.data.released_fraction}: frame times or grid differ from "
                             f"{config.data.observations}; give the released fraction of the same run")
    return tuple(records)


def training_frames(record: Observations, held_out_times) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks over the frames of ``record``: (trained on, held out). Frames at t <= 0
    (pre-injection, before the PINN's time domain) are neither; every held-out time must be a
    frame time after injection (ValueError otherwise)."""
    times = record.frame_times_s
    held = np.zeros(times.size, dtype=bool)
    for t in held_out_times:
        match = np.flatnonzero(np.isclose(times, t, rtol=1e-9, atol=1e-6))
        if match.size != 1 or times[match[0]] <= 0:
            raise ValueError(f"[data] held_out_times: {t:g} s is not a frame time after injection of the "
                             f"observations (FrameTimes_s {', '.join(f'{v:g}' for v in times)})")
        held[match[0]] = True
    trained = (times > 0) & ~held
    if not trained.any():
        raise ValueError("no frame after injection is left to train on: hold out fewer [data] held_out_times")
    return trained, held


def _masked(record: Observations, keep: np.ndarray) -> Observations:
    """``record`` with the frames outside ``keep`` set to NaN (not observed)."""
    values = record.values.copy()
    values[..., ~keep] = np.nan
    return Observations(record.quantity, record.unit, record.grid, record.frame_times_s, values, record.noise_sd,
                        record.operator)


def observation_records(config: InvertConfig):
    """(every record, the records as trained on, frames trained on, frames held out): the IFP map
    (one frame, trained on), or the release series with the untrained frames masked
    (:func:`training_frames`)."""
    if config.problem.kind == "ifp":
        records = (read_ifp_observations(config),)
        return records, records, np.ones(1, dtype=bool), np.zeros(1, dtype=bool)
    records = read_release_observations(config)
    trained, held = training_frames(records[0], config.data.held_out_times)
    return records, tuple(_masked(record, trained) for record in records), trained, held


def trained_problems(config: InvertConfig, directory: Path) -> list:
    """The ensemble of a finished ``hybrid invert`` run in ``directory``: the problems rebuilt from
    ``config`` with the states of ``networks/seed<N>.pt`` (CPU, evaluation only)."""
    from hybrid.inverse.images import load_state

    problems = build_problems(config, observation_records(config)[1])
    for seed, problem in zip(_seeds(config), problems):
        path = Path(directory) / "networks" / f"seed{seed}.pt"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no trained network; run `hybrid invert` with this configuration first")
        load_state(problem, path, config.training.dtype)
    return problems


def truth_values(path: Path, kind: str = "ifp", unknowns=None) -> dict[str, float]:
    """True coefficients [SI] of ``kind`` from a ``hybrid synthesize`` truth.json (release and
    coupled: those of the ``unknowns`` names, required); IFP also the rim thickness [m]."""
    if kind != "ifp" and unknowns is None:
        raise ValueError(f"truth_values of the {kind} kind needs the unknowns' names (a truth has either the rate "
                         "or the pH law)")
    parameters = read_truth(path).parameters
    names = IFP_COEFFICIENTS if kind == "ifp" else [name for name in COUPLED_UNKNOWNS if name in unknowns]
    missing = [_TRUTH_KEYS[name] for name in names if _TRUTH_KEYS[name] not in parameters]
    if missing:
        raise ValueError(f"{path}: not a `hybrid synthesize` truth.json of this problem (no {', '.join(missing)}); "
                         "point [data] truth at one or leave it out")
    truth = {name: parameters[_TRUTH_KEYS[name]][0] for name in names}
    if kind == "ifp":
        truth["rim_thickness"] = math.sqrt(truth["conductivity"] / (truth["vascular_exchange"]
                                                                    + truth["lymphatic_filtration"]))
    return truth


def release_physics(transport, radius: float, ph_map: Path | None = None) -> dict:
    """Known coefficients [SI] of :func:`hybrid.inverse.images.disc_release_problem` from a
    TransportConfig (tumour-scale disc of ``radius`` [m] without host, flow none or darcy,
    formulation liposomal or ph_sensitive, linear uptake, no albumin binding, heating or
    radiation); ValueError naming what the release PINN does not model. pH-sensitive liposomes:
    ``ph_law`` holds the pH law's table constants and the pH_e map (``ph_map``, else the
    transport's ``[release] ph_map``; non-finite voxels take its uniform ``[release] ph``, as in
    the FEM) as ``ph_volume`` on ``ph_grid``, or None for a uniform pH; ``release_rate`` is the
    rate at the uniform pH (None with a map). ``ktrans_map``: the transport's ``[tissue]
    ktrans_map`` (``volume`` [1/min], ``grid``, ``slice_index``, ``label``, ``path``) or None; the
    PINN scales the vascular exchange with it as the FEM does (:func:`hybrid.inverse.images.ktrans_scale`)."""
    from hybrid.problems import release
    from hybrid.problems.parameters import default
    from hybrid.commands.plasma import plasma_curves

    geometry, formulation = transport.geometry, transport.drug.formulation
    refuse = [text for text, bad in (
        (f"geometry {geometry.shape!r} (needs a disc without host)", geometry.shape != "disc"
         or geometry.host_thickness > 0),
        (f"a disc of radius {geometry.tumour_radius:g} m (the [problem] radius is {radius:g} m)",
         not math.isclose(geometry.tumour_radius, radius, rel_tol=1e-9)),
        (f"formulation {formulation!r} (needs liposomal or ph_sensitive)", formulation not in ("liposomal",
                                                                                               "ph_sensitive")),
        (f"uptake {transport.free_drug.uptake!r} (needs linear)", transport.free_drug.uptake != "linear"),
        (f"albumin binding {transport.free_drug.albumin_binding!r}", transport.free_drug.albumin_binding != "none"),
        ("[heating]", transport.heating is not None), ("[radiation]", transport.radiation is not None))
        if bad]
    if refuse:
        raise ValueError(f"{transport.output.directory}: the release PINN does not model {'; '.join(refuse)}")
    free_plasma, liposomal = plasma_curves(transport)   # the drug in the blood, as hybrid transport has it
    surface, lipo, free = transport.tissue.surface_to_volume, transport.liposome, transport.free_drug
    flow = None
    if transport.flow.model == "darcy":
        tumour = transport.tumour
        if transport.flow.boundary != "dirichlet":
            raise ValueError("the release PINN models [flow] boundary = \"dirichlet\" only")
        flow = {"conductivity": tumour.hydraulic_conductivity, "vascular_exchange": tumour.vascular_exchange,
                "effective_pressure": tumour.effective_pressure, "lymphatic_filtration": tumour.lymphatic_filtration,
                "lymphatic_pressure": tumour.lymphatic_pressure, "far_pressure": transport.flow.far_field_pressure}
    ph_law = None
    if formulation == "ph_sensitive":
        ph_law = release.ph_law_constants() | {"ph": transport.release.ph, "ph_volume": None, "ph_grid": None,
                                               "slice_index": transport.geometry.slice_index}
        ph_map = ph_map or transport.release.ph_map
        if ph_map is not None:
            volume, affine = read_volume(ph_map)
            ph_law |= {"ph_volume": np.where(np.isfinite(volume), volume, transport.release.ph),
                       "ph_grid": VoxelGrid(affine, volume.shape)}
    ktrans_map = None
    if transport.tissue.ktrans_map is not None:
        volume, affine = read_volume(transport.tissue.ktrans_map)
        ktrans_map = {"volume": volume, "grid": VoxelGrid(affine, volume.shape), "slice_index": geometry.slice_index,
                      "label": f"Ktrans map {transport.tissue.ktrans_map}", "path": str(transport.tissue.ktrans_map)}
    rate = default("k_rel_L") if formulation == "liposomal" else \
        None if ph_law["ph_volume"] is not None else float(release.ph_release_rate(transport.release.ph))
    return {"diffusivity_lipo": lipo.diffusivity, "diffusivity_free": free.diffusivity, "ph_law": ph_law,
            "uptake_rate": free.uptake_rate, "clearance": lipo.clearance, "release_rate": rate,
            "interstitial_fraction": transport.tissue.interstitial_fraction, "hindrance": lipo.hindrance,
            "surface_to_volume": surface, "ktrans_map": ktrans_map,
            "free_binding_ratio": 0.0, "end_time": transport.time.end, "flow": flow,
            "exchange_lipo": {"plasma": liposomal, "permeability_surface": lipo.vessel_permeability * surface,
                              "reflection": lipo.reflection},
            "exchange_free": {"plasma": free_plasma,
                              "permeability_surface": free.vessel_permeability * surface,
                              "reflection": free.reflection}}


def coupled_physics(transport, radius: float, ph_map: Path | None = None) -> dict:
    """Known coefficients [SI] of :func:`hybrid.inverse.coupled.tumour_host_problem` from a
    TransportConfig of a tumour disc of ``radius`` [m] in host tissue with Darcy flow: the tumour's
    of :func:`release_physics` (same refusals) and the host's IFP coefficients, the outer radius
    and the host's S/V relative to the tumour's; ValueError without host or Darcy flow."""
    geometry = transport.geometry
    if geometry.host_thickness <= 0 or transport.flow.model != "darcy":
        raise ValueError(f"{transport.output.directory}: the coupled PINN needs a tumour disc in host tissue "
                         "([geometry] host_thickness > 0) with [flow] model = \"darcy\"")
    physics = release_physics(replace(transport, geometry=replace(geometry, host_thickness=0.0)), radius, ph_map)
    host = transport.host
    return physics | {
        "tumour_radius": radius, "outer_radius": radius + geometry.host_thickness,
        "host_flow": {"conductivity": host.hydraulic_conductivity, "vascular_exchange": host.vascular_exchange,
                      "effective_pressure": host.effective_pressure,
                      "lymphatic_filtration": host.lymphatic_filtration, "lymphatic_pressure": host.lymphatic_pressure},
        "host_surface_ratio": host.vessel_surface_density / transport.tissue.surface_to_volume}


def with_unknown_values(transport, values: dict):
    """``transport`` (a TransportConfig) with the tumour's ``conductivity`` K [m^2/(Pa s)] and
    ``effective_pressure`` p_e [Pa] of ``values`` where present (p_e through the vascular pressure
    p_v = p_e + sigma (pi_v - pi_i), the FEM's parameters) and the liposomes'
    ``vessel_permeability`` P_L [m/s]; other names (the release law's) are ignored."""
    tumour, changes = transport.tumour, {}
    if "conductivity" in values:
        changes["hydraulic_conductivity"] = values["conductivity"]
    if "effective_pressure" in values:
        # p_v - p_e = sigma (pi_v - pi_i) is unchanged (hybrid.problems.exchange.effective_pressure)
        changes["vascular_pressure"] = tumour.vascular_pressure + values["effective_pressure"] - tumour.effective_pressure
    if changes:
        transport = replace(transport, tumour=replace(tumour, **changes))
    if "vessel_permeability" in values:
        transport = replace(transport, liposome=replace(transport.liposome,
                                                        vessel_permeability=values["vessel_permeability"]))
    return transport


def estimate_names(kind: str) -> dict[str, str]:
    """Name of each unknown in the trained problem's estimates -> its configuration name."""
    from hybrid.inverse.coupled import TUMOUR_FLOW_UNKNOWNS

    return {inner: name for name, inner in TUMOUR_FLOW_UNKNOWNS.items()} if kind == "coupled" else {}


def _seeds(config: InvertConfig) -> list[int]:
    return [config.training.seed + i for i in range(config.training.ensemble)]


def build_problems(config: InvertConfig, observations: tuple[Observations, ...]) -> list:
    """One inverse problem per ensemble member (seeds seed, seed + 1, ...), untrained."""
    from hybrid.inverse.images import disc_ifp_problem, disc_release_problem

    unknowns = {name: asdict(unknown) for name, unknown in config.unknowns.items()}
    problem = config.problem
    if problem.kind != "ifp":   # scalar unknowns only (the config refuses fields there)
        unknowns = {name: {k: v for k, v in spec.items() if k != "field"} for name, spec in unknowns.items()}
    if problem.kind == "ifp":
        return [disc_ifp_problem(problem.radius, config.known(), unknowns, IFP_COEFFICIENTS, observations[0],
                                 far_pressure=problem.far_pressure, pressure_scale=problem.pressure_scale, seed=seed)
                for seed in _seeds(config)]
    transport = load_transport(problem.transport)
    physics = (coupled_physics if problem.kind == "coupled" else release_physics)(transport, problem.radius,
                                                                                  config.data.ph_map)
    if physics["ph_law"] is None and any(name in config.unknowns for name in PH_LAW_UNKNOWNS):
        raise ValueError(f"{problem.transport}: [unknowns] {', '.join(n for n in PH_LAW_UNKNOWNS if n in config.unknowns)}"
                         " need [drug] formulation = \"ph_sensitive\" in the transport configuration")
    if physics["release_rate"] is None and "release_rate" in config.unknowns:
        raise ValueError("with a pH map the release rate varies in space: declare [unknowns.ph_50] / "
                         "[unknowns.steepness] instead of [unknowns.release_rate]")
    scale = problem.concentration_scale or float(np.nanmax(np.abs(observations[0].values)))
    if problem.kind == "coupled":
        from hybrid.inverse.coupled import tumour_host_problem

        return [tumour_host_problem(physics, unknowns, COUPLED_UNKNOWNS, observations, concentration_scale=scale,
                                    pressure_scale=problem.pressure_scale, seed=seed,
                                    interface_points=problem.interface_points, flow_points=problem.flow_points,
                                    interface_width=problem.interface_width,
                                    parametric_pressure=problem.parametric_pressure)
                for seed in _seeds(config)]
    return [disc_release_problem(problem.radius, physics, unknowns, DRUG_UNKNOWNS, observations,
                                 concentration_scale=scale, pressure_scale=problem.pressure_scale, seed=seed)
            for seed in _seeds(config)]


def _train(config: InvertConfig, problems: list, log, resume: bool) -> tuple[list, list, list | None]:
    """Train every member; returns (results, the pressure pre-training of each member: None unless
    kind "coupled" pre-trained it, else its last loss record with the seconds, the warm-start
    record of each member not resumed (:func:`_warm_start`; None without ``warm_start = "fem"``))."""
    from hybrid.inverse import Trainer, TrainingConfig

    settings = asdict(config.training)
    checkpoint, _ = settings.pop("checkpoint"), settings.pop("ensemble")
    warm_start = settings.pop("warm_start") == "fem"
    fit_settings = {name: settings.pop(f"warm_start_{name}") for name in ("adam_steps", "lbfgs_steps", "points")}
    pressure_steps = {"adam_steps": settings.pop("pretrain_adam_steps"),
                      "lbfgs_steps": settings.pop("pretrain_lbfgs_steps")}
    pretraining = TrainingConfig(**settings | pressure_steps | {
        "collocation_points": config.problem.flow_points or config.training.collocation_points,
        "unknowns_from_step": 0})   # the unknowns are held during the pressure pre-training anyway
    results, pretrained, warm_starts, fem = [], [], [], None
    for seed, problem in zip(_seeds(config), problems):
        path = None if checkpoint is None else str(checkpoint) if config.training.ensemble == 1 \
            else f"{checkpoint}.seed{seed}"
        trainer = Trainer(problem, TrainingConfig(**settings | {"seed": seed}, checkpoint=path), progress=log)
        resumed = False
        if resume:
            if path is None:
                raise ValueError("--resume needs [training] checkpoint in the configuration")
            if Path(path).exists():
                trainer.resume(path)
                resumed = True
                log(f"resumed member seed {seed} at step {trainer.step} from {path}")
        if warm_start and resumed:
            log(f"warm start skipped for member seed {seed}: its networks come from the checkpoint")
        elif warm_start:
            fem = fem or _fem_at_start(config, problem, log)
            warm_starts.append(_warm_start(problem, seed, fit_settings, *fem, log))
        pretrained.append(_pretrain(config, problem, replace(pretraining, seed=seed), log)
                          if not resumed else None)
        results.append(trainer.run())
    return results, pretrained, warm_starts if warm_start else None


def _write_ensemble_volume(directory: Path, stem: str, members: list, grid, what: str, unit: str) -> np.ndarray:
    """The members' maps ``what`` [``unit``] (each (nx, ny, nz) on ``grid``): their mean as
    ``<stem>.nii.gz`` and, with more than one member, their sample sd as ``<stem>_spread.nii.gz``;
    returns the mean."""
    short = lambda text: text if len(text) <= 15 else ""   # the NIfTI intent name holds 15 characters
    mean = np.mean(members, axis=0)
    write_volume(directory / f"{stem}.nii.gz", mean, grid.affine_mm,
                 description=f"recovered {what} [{unit}] (inverse PINN)"[:79], intent_name=short(f"{what} [{unit}]"))
    if len(members) > 1:
        write_volume(directory / f"{stem}_spread.nii.gz", np.std(members, axis=0, ddof=1), grid.affine_mm,
                     description=f"{what} spread [{unit}]: sample sd over the ensemble"[:79],
                     intent_name=short(f"{what} sd [{unit}]"))
    return mean


def _write_field(directory: Path, name: str, problems: list, grid, operator, truth: float | None) -> dict:
    """The field unknown ``name`` of every member voxel-averaged like the data: ``<name>.nii.gz``
    (ensemble mean) and with an ensemble ``<name>_spread.nii.gz`` (sample sd) on the observation
    grid; returns its inversion.json entry (file, unit, range; against a uniform ``truth`` [SI] the
    RMS error over the voxels and, unless the truth is 0, that relative to it)."""
    from hybrid.inverse.images import voxel_average

    unit = IFP_COEFFICIENTS[name]
    mean = _write_ensemble_volume(directory, name, [voxel_average(p, grid, operator, name) for p in problems], grid,
                                  name, unit)
    values = mean[np.isfinite(mean)]
    entry = {"file": f"{name}.nii.gz", "unit": unit, "voxels": int(values.size), "mean": float(values.mean()),
             "min": float(values.min()), "max": float(values.max())}
    if truth is not None:
        rms = float(np.linalg.norm(values - truth) / np.sqrt(values.size))
        entry |= {"truth": truth, "rms_error": rms, "relative_l2": rms / abs(truth) if truth != 0 else None}
    return entry


def _fem_at_start(config: InvertConfig, problem, log) -> tuple:
    """``[training] warm_start = "fem"``: the FEM forward solve of ``[problem] transport`` (serial,
    COMM_SELF; DOLFINx imported here only) with the release law at ``problem``'s unknowns' start
    values and the inversion's pH_e map, over the PINN's time domain [0, end_time] in the
    transport's own equal steps (``[time] step``, ``order``; not adaptive). Returns the nodal C_L,
    C_F, C_I every ``WARM_START_INTERVAL_S`` s (every step if coarser) as FemSnapshots, the start
    values [SI] and the seconds."""
    from mpi4py import MPI

    from hybrid.commands.transport import setup_transport
    from hybrid.forward.transport import SPECIES
    from hybrid.problems.release import release_law
    from hybrid.records import FemSnapshots

    start = time.perf_counter()
    values = {u.name: float(u().detach()) for u in problem.scalar_unknowns() if u.name in DRUG_UNKNOWNS}
    transport = with_unknown_values(with_ph_map(load_transport(config.problem.transport), config.data.ph_map), values)
    end = problem.scales.time   # the PINN's time domain [0, end_time] s
    steps = max(1, math.ceil(end / transport.time.step - 1e-9))
    dt = end / steps
    every = max(1, round(WARM_START_INTERVAL_S / dt))
    log(f"warm start: FEM at the initial values {', '.join(f'{k} = {v:.4g}' for k, v in values.items())}: "
        f"{steps} steps of {dt:g} s to {end:g} s")
    setup = setup_transport(transport, MPI.COMM_SELF, lambda line: log(f"warm start FEM: {line}"), {},
                            release_rate=release_law(values))
    solver = setup.solver
    try:
        species = solver.species()
        coordinates = species[0].function_space.tabulate_dof_coordinates()[:, :setup.domain.dim]
        times, fields = [0.0], [np.stack([f.x.array.copy() for f in species[:3]])]
        for index in range(1, steps + 1):
            solver.step(dt)
            if index % every == 0 or index == steps:
                times.append(solver.time)
                fields.append(np.stack([f.x.array.copy() for f in solver.species()[:3]]))
    finally:
        solver.close()
    snapshots = FemSnapshots(coordinates, np.array(times), np.stack(fields), SPECIES)
    seconds = time.perf_counter() - start
    log(f"warm start: FEM at the initial values {seconds:.1f} s ({len(times)} snapshots, {coordinates.shape[0]} nodes)")
    return snapshots, values, seconds


def _warm_start(problem, seed: int, settings: dict, snapshots, values: dict, fem_seconds: float, log) -> dict:
    """Fit ``problem``'s state networks onto the FEM ``snapshots`` (:func:`hybrid.inverse.warm_start.fit_states`
    with ``settings``: adam_steps, lbfgs_steps, points; seed ``seed``); the record of inversion.json."""
    from hybrid.inverse.warm_start import SnapshotInterpolant, fit_states

    target = SnapshotInterpolant(snapshots, problem.scales.length, problem.scales.time, species=problem.STATES)
    fit = fit_states(problem, target, seed=seed, **settings)
    log(f"warm start: fit of member seed {seed} {fit.seconds:.1f} s, relative L2 "
        + ", ".join(f"{name} {100 * error:.2f} %" for name, error in fit.relative_l2.items()))
    return {"seed": seed, "start": values, "fem_seconds": fem_seconds, "snapshots": len(snapshots.times),
            "fit_seconds": fit.seconds, "relative_l2": fit.relative_l2, "final_loss": fit.final_loss,
            "fit": settings}


def with_ph_map(transport, ph_map: Path | None):
    """``transport`` with ``[release] ph_map`` set to the inversion's ``[data] ph_map`` where given
    (the FEM then samples the pH_e map the PINN interpolates)."""
    return transport if ph_map is None else replace(transport, release=replace(transport.release, ph_map=ph_map))


def _pretrain(config: InvertConfig, problem, settings, log) -> dict | None:
    """Kind "coupled": the pressure network alone first (:func:`hybrid.inverse.coupled.pretrain_pressure`);
    its last loss record with the seconds, or None (other kinds, or no pre-training steps)."""
    if config.problem.kind != "coupled" or settings.adam_steps + settings.lbfgs_steps == 0:
        return None
    from hybrid.inverse.coupled import pretrain_pressure

    result = pretrain_pressure(problem, settings, lambda line: log(f"pressure pre-training {line}"))
    return (result.history[-1] if result.history else {}) | {"seconds": result.seconds}


def _relative_l2(predicted: np.ndarray, observed: np.ndarray) -> tuple[float, int]:
    """Relative l2 error over the voxels finite in both, and their count."""
    use = np.isfinite(predicted) & np.isfinite(observed)
    return float(np.linalg.norm(predicted[use] - observed[use]) / np.linalg.norm(observed[use])), int(use.sum())


def run_invert(config: InvertConfig, directory: Path, log, resume: bool = False) -> dict:
    """Train, then write ``inversion.json``, the recovered fields and the networks into
    ``directory``; returns the inversion.json content."""
    from hybrid.inverse.images import save_state, voxel_average, voxel_series

    kind, directory = config.problem.kind, Path(directory)
    if config.training.warm_start == "fem" and importlib.util.find_spec("dolfinx") is None:
        raise ValueError('[training] warm_start = "fem" solves the forward problem with DOLFINx, which this Python '
                         'does not have: install hybrid with its FEM stack here, or set warm_start = "none"')
    truth = truth_values(config.data.truth, kind, config.unknowns) if config.data.truth is not None else None
    records, trained_on, trained, held = observation_records(config)
    log(f"{kind} inversion: {sum(int(np.isfinite(r.values).sum()) for r in trained_on)} observed voxel values, "
        f"unknowns {', '.join(config.unknowns)}, {config.training.ensemble} member(s) on {config.training.device} "
        f"({config.training.dtype})")
    problems = build_problems(config, trained_on)
    results, pretrained, warm_starts = _train(config, problems, log, resume)
    estimates, names = {}, estimate_names(kind)
    for inner, (_, unit) in results[0].estimates.items():
        name = names.get(inner, inner)
        if kind != "ifp" and name not in config.unknowns:   # e.g. the known flow's rim thickness
            continue
        values = np.array([r.estimates[inner][0] for r in results])
        entry = {"estimate": float(values.mean()), "unit": unit,
                 "spread": float(values.std(ddof=1)) if values.size > 1 else None, "members": values.tolist()}
        if truth is not None and name in truth:
            error = abs(entry["estimate"] - truth[name])
            entry |= {"truth": truth[name], "absolute_error": error,
                      "relative_error": error / abs(truth[name]) if truth[name] != 0 else None}
        estimates[name] = entry
    summary = {"command": "invert", "problem": kind, "observations": str(config.data.observations),
               "estimates": estimates}
    scale = getattr(problems[0], "exchange_scale", None)
    if kind != "ifp":
        summary["ktrans_map"] = None if scale is None else {
            "map": scale.label, "region_mean_per_min": scale.means_per_min,
            "use": "P S/V and Lp S/V times Ktrans / its region mean (1 where the map has no value), as the FEM"}
    grid, operator = records[0].grid, records[0].operator
    if kind == "ifp":
        summary["known"] = {name: {"value": value, "unit": IFP_COEFFICIENTS[name]}
                            for name, value in config.known().items()}
    for name in [name for name, unknown in config.unknowns.items() if unknown.field]:   # kind "ifp"
        summary.setdefault("fields", {})[name] = _write_field(directory, name, problems, grid, operator,
                                                               truth.get(name) if truth is not None else None)
    if kind != "release":
        _write_ensemble_volume(directory, "ifp", [voxel_average(p if kind == "ifp" else p.flow, grid, operator)
                                                  for p in problems], grid, "IFP", "Pa")
    if kind != "ifp":
        times = records[0].frame_times_s
        after = times > 0
        members = [voxel_series(p, grid, operator, times[after]) for p in problems]
        fields = {name: np.mean([m[name] for m in members], axis=0) for name in members[0]}
        for name, data in fields.items():
            unit = "1" if name == "released_fraction" else "mol/m^3 of tissue"
            write_series(directory / f"{name}.nii.gz", data, grid.affine_mm,
                         {"FrameTimes_s": times[after].tolist(), "Quantity": name, "Unit": unit,
                          "Source": "inverse PINN (ensemble mean), voxel means like the data"},
                         description=f"recovered {name} [{unit}] (inverse PINN)")
            if len(problems) > 1:
                write_series(directory / f"{name}_spread.nii.gz", np.std([m[name] for m in members], axis=0, ddof=1),
                             grid.affine_mm, {"FrameTimes_s": times[after].tolist(), "Quantity": f"{name} spread",
                                              "Unit": unit, "Source": "inverse PINN, sample sd over the ensemble"},
                             description=f"{name} spread [{unit}]: sample sd over the ensemble")
        held_out = []
        for index in np.flatnonzero(held):
            frame = int(np.flatnonzero(np.flatnonzero(after) == index)[0])
            entry = {"time_s": float(times[index])}
            for record in records:
                error, voxels = _relative_l2(fields[record.quantity][..., frame], record.values[..., index])
                entry[record.quantity] = {"relative_l2": error, "unit": "1", "voxels": voxels,
                                          "against": "the observed (noisy) frame"}
            held_out.append(entry)
        summary |= {"transport": str(config.problem.transport),
                    "frames": {"times_s": times.tolist(), "trained": trained.tolist(), "held_out": held.tolist()},
                    "held_out_prediction": held_out}
        for entry in held_out:
            log(f"held-out frame t = {entry['time_s']:g} s: PINN total drug vs observed, relative l2 "
                f"{100 * entry['total_drug']['relative_l2']:.2f} %")
    (directory / "networks").mkdir(parents=True, exist_ok=True)
    for seed, problem in zip(_seeds(config), problems):
        save_state(problem, directory / "networks" / f"seed{seed}.pt")
    summary["training"] = {"members": [{"seed": seed, "seconds": r.seconds, "steps": r.steps, "history": r.history}
                                       for seed, r in zip(_seeds(config), results)],
                           "seconds": sum(r.seconds for r in results), "device": results[0].device,
                           "cuda_graph": all(r.cuda_graph for r in results),
                           "pressure_pretraining": pretrained if kind == "coupled" else None,
                           "parametric_pressure": config.problem.parametric_pressure if kind == "coupled" else None,
                           "warm_start": warm_starts,
                           "dtype": results[0].dtype,
                           "settings": {k: str(v) if isinstance(v, Path) else v
                                        for k, v in asdict(config.training).items()}}
    (directory / "inversion.json").write_text(json.dumps(summary, indent=2) + "\n")
    for name, entry in estimates.items():
        error = (f", error {100 * entry['relative_error']:.1f} %" if entry.get("relative_error") is not None else
                 f", error {entry['absolute_error']:.3g} {entry['unit']}" if "absolute_error" in entry else "")
        log(f"{name} = {entry['estimate']:.4g} {entry['unit']}{error}")
    return summary
