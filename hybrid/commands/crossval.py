"""``hybrid validate CONFIG.toml``: cross-validation of a ``hybrid invert`` run against the FEM
(issue 9 point 4). DOLFINx and MPI; torch only to evaluate the trained networks
(:mod:`hybrid.inverse.images`, given node coordinates as numpy), never in the FEM code.

Kind "ifp":

1. Re-solve the steady IFP (:func:`hybrid.forward.ifp.solve_ifp`, P1) on the ``[geometry]`` disc
   with the recovered coefficients of ``inversion.json`` (estimates and known values), p =
   ``far_pressure`` on the edge.
2. PINN vs FEM, relative L2 over the mesh from assembled integrals (not the training loss),
   ``||p_PINN - p_FEM|| / ||p_FEM||``, two ways: ``network_at_nodes``, the trained networks
   (``networks/``, ensemble mean) evaluated at the P1 nodes, and ``relative_l2``, the recovered
   voxel map ``ifp.nii.gz`` (NaN voxels take the nearest finite voxel) interpolated trilinearly
   onto P1 (:func:`hybrid.forward.image_sampling.sample_image`). The map limits the second:
   ``voxel_map_floor`` is the same error of the FEM field itself voxel-averaged on the map's grid.
3. With a truth (the invert run's ``[data] truth`` and ``truth/ifp.nii.gz`` beside it): the FEM at
   the true tumour coefficients, ``||p_FEM(recovered) - p_FEM(truth)|| / ||p_FEM(truth)||``, and
   the prediction of the truth image (FEM at the recovered coefficients voxel-averaged like the
   data, :func:`hybrid.forward.image_sampling.observe_on_grid`), relative l2 over the voxels finite
   in both. The IFP kind has no time axis, hence no held-out time point.

Kind "release":

1. Re-solve the transport of the invert run's ``[problem] transport`` configuration
   (:func:`hybrid.commands.transport.setup_transport`: its mesh, IFP, plasma curves) with the
   recovered release rate, or for pH-sensitive liposomes the pH law k(pH_e) with the recovered
   ``ph_50`` / ``steepness`` on the invert run's ``[data] ph_map`` (else the transport's pH),
   stepping to every frame time after injection (:func:`hybrid.commands.synthesize.frame_stops`,
   steps of at most ``[time] step``).
2. PINN vs FEM at every such frame: the networks (ensemble mean) at the P1 nodes against the FEM
   fields, relative L2 over the mesh (assembled) for liposomal, free, cell and total drug.
3. Held-out frames (``[data] held_out_times``): the FEM at the recovered release rate and the PINN,
   both voxel-averaged like the data, against the observed frame (and with a truth against the
   noise-free ``truth/total_drug.nii.gz``), relative l2 over the voxels finite in both; the same
   for the released fraction when it was observed.
4. Identifiability of every unknown from the trained frames: the FEM's Fisher information at the
   recovered values with the data's noise sd (:func:`hybrid.validation.classical.release_identifiability`);
   ``recovered.NAME.identifiable`` is false where the Cramer-Rao sd exceeds 5 % of the value or the
   unknown loads on an unseen direction: such an estimate is not a measurement.

Writes ``validation.json`` (every number with its unit) into the output directory.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from mpi4py import MPI
from scipy import ndimage

import hybrid._fem_stack  # noqa: F401  (before dolfinx)
import dolfinx.fem
import ufl

from hybrid.config.crossval import CrossvalConfig
from hybrid.config.invert import IFP_COEFFICIENTS, RELEASE_UNKNOWNS
from hybrid.forward.image_sampling import observe_on_grid, sample_image
from hybrid.forward.ifp import solve_ifp
from hybrid.io.nifti import read_dce_series, read_volume
from hybrid.problems.ifp import OuterBoundary, TissueProperties
from hybrid.problems.release import released_fraction

__all__ = ["run_crossval", "recovered_coefficients", "relative_l2", "fill_nan_nearest", "identifiability_spread"]

HELD_OUT_NOTE = ("the IFP kind is steady (no time axis): the prediction reported is that of the noise-free "
                 "truth map truth/ifp.nii.gz, which is the training data itself when [data] observations is that "
                 "map; held-out imaging time points are validated for the release kind")


def recovered_coefficients(inversion: dict) -> dict[str, float]:
    """The five IFP coefficients [SI] of an inversion.json: estimates of the unknowns, the rest known."""
    values = {name: entry["value"] for name, entry in inversion["known"].items()}
    values |= {name: entry["estimate"] for name, entry in inversion["estimates"].items() if name in IFP_COEFFICIENTS}
    missing = sorted(set(IFP_COEFFICIENTS) - set(values))
    if missing:
        raise ValueError(f"inversion.json lacks the coefficient(s) {', '.join(missing)}; is it a `hybrid invert` "
                         "output of the ifp kind?")
    return {name: float(values[name]) for name in IFP_COEFFICIENTS}


def relative_l2(value, reference) -> float:
    """||value - reference|| / ||reference|| in L2 over the mesh (assembled, collective)."""
    mesh = reference.function_space.mesh

    def integral(expression) -> float:
        local = dolfinx.fem.assemble_scalar(dolfinx.fem.form(expression * ufl.dx(domain=mesh)))
        return mesh.comm.allreduce(local, op=MPI.SUM)
    difference = value - reference
    return float(np.sqrt(integral(ufl.inner(difference, difference)) / integral(ufl.inner(reference, reference))))


def fill_nan_nearest(volume: np.ndarray) -> np.ndarray:
    """``volume`` with every NaN voxel set to the value of the nearest finite voxel (ValueError if none)."""
    missing = np.isnan(volume)
    if missing.all():
        raise ValueError("the recovered IFP map ifp.nii.gz has no finite voxel")
    index = ndimage.distance_transform_edt(missing, return_distances=False, return_indices=True)
    return volume[tuple(index)]


def _solve(domain, boundary: OuterBoundary, coefficients: dict[str, float]):
    """P1 IFP [Pa] with the five coefficients as constants over the tumour."""
    mesh = domain.mesh
    fields = {("hydraulic_conductivity" if name == "conductivity" else name):
              dolfinx.fem.Constant(mesh, value) for name, value in coefficients.items()}
    return solve_ifp(domain, TissueProperties.defaults("tumour"), boundary, fields=fields).pressure


def _truth_tissue(path: Path) -> TissueProperties:
    """Tumour coefficients of a ``hybrid synthesize`` truth.json."""
    try:
        tumour = json.loads(Path(path).read_text())["parameters"]["tumour"]
        return TissueProperties(**{name: float(entry["value"]) for name, entry in tumour.items()})
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not a `hybrid synthesize` truth.json (missing or bad {exc})") from None


def _nodal(function, values: np.ndarray, name: str):
    """A P1 Function on ``function``'s space holding ``values`` at its local nodes (owned and ghost)."""
    out = dolfinx.fem.Function(function.function_space, name=name)
    out.x.array[:] = values
    return out


def _network_nodes_ifp(config: CrossvalConfig, fem, log) -> dict:
    """The trained networks (ensemble mean) at the P1 nodes against the FEM pressure, or why not."""
    networks = config.inversion.directory / "networks"
    if not networks.is_dir():
        return {"relative_l2": None, "note": f"no {networks}: the inversion kept no trained networks"}
    from hybrid.commands.invert import trained_problems
    from hybrid.inverse.images import pressure_at

    nodes = fem.function_space.tabulate_dof_coordinates()
    problems = trained_problems(config.invert, config.inversion.directory)
    pinn = _nodal(fem, np.mean([pressure_at(p, nodes) for p in problems], axis=0), "pinn_pressure_nodes")
    error = relative_l2(pinn, fem)
    log(f"PINN networks at the FEM nodes vs FEM: relative L2 error {100 * error:.2f} %")
    return {"relative_l2": error, "unit": "1", "members": len(problems),
            "norm": "L2 over the mesh (assembled) of the P1 interpolant of the networks (ensemble mean)"}


def run_crossval(config: CrossvalConfig, directory: Path, comm: MPI.Comm, log) -> dict:
    """Re-solve, compare and write ``validation.json`` into ``directory`` (collective). Returns its content."""
    from hybrid.collective import on_rank0

    run = _release if config.invert.problem.kind == "release" else _ifp
    result = run(config, comm, log)
    on_rank0(comm, lambda: (Path(directory) / "validation.json").write_text(json.dumps(result, indent=2) + "\n"))
    return result


def _ifp(config: CrossvalConfig, comm: MPI.Comm, log) -> dict:
    """Kind "ifp" (module docstring)."""
    from hybrid.collective import everywhere
    from hybrid.mesh.geometry import build_mesh

    invert, source = config.invert, config.inversion.directory
    points_per_axis = invert.data.points_per_axis
    inversion = everywhere(comm, lambda: json.loads((source / "inversion.json").read_text()))
    recovered = everywhere(comm, lambda: recovered_coefficients(inversion))
    pinn_map, affine = everywhere(comm, lambda: read_volume(source / "ifp.nii.gz"))
    pinn_map = everywhere(comm, lambda: fill_nan_nearest(pinn_map))
    sink = recovered["vascular_exchange"] + recovered["lymphatic_filtration"]
    rim = float(np.sqrt(recovered["conductivity"] / sink)) if sink > 0 else float("inf")
    start = time.perf_counter()
    domain = build_mesh(config.geometry.resolved(rim), comm)
    boundary = OuterBoundary("dirichlet", invert.problem.far_pressure)
    fem = _solve(domain, boundary, recovered)
    nodes = fem.function_space.dofmap.index_map.size_global
    pinn = sample_image(domain, pinn_map, affine, name="pinn_pressure")
    pinn_error = relative_l2(pinn, fem)
    floor_map = observe_on_grid(fem, pinn_map.shape, affine, points_per_axis=points_per_axis)
    floor = relative_l2(sample_image(domain, fill_nan_nearest(floor_map), affine), fem)
    log(f"FEM re-solve at the recovered coefficients: {nodes} nodes; PINN map vs FEM relative L2 error "
        f"{100 * pinn_error:.2f} % (the FEM itself through the map's grid: {100 * floor:.2f} %)")
    at_nodes = everywhere(comm, lambda: _network_nodes_ifp(config, fem, log))
    result = {"command": "validate", "problem": "ifp", "inversion": str(source),
              "recovered_coefficients": {name: {"value": value, "unit": IFP_COEFFICIENTS[name]}
                                         for name, value in recovered.items()},
              "fem": {"nodes": nodes, "degree": 1, "geometry": {"shape": "disc",
                                                                 "tumour_radius_m": config.geometry.tumour_radius,
                                                                 "mesh_size_m": config.geometry.mesh_size},
                      "far_pressure": {"value": invert.problem.far_pressure, "unit": "Pa"}},
              "pinn_vs_fem": {"network_at_nodes": at_nodes, "relative_l2": pinn_error, "unit": "1",
                              "norm": "L2 over the mesh (assembled), PINN voxel map interpolated trilinearly "
                                      "onto P1 (NaN voxels filled from the nearest finite voxel)",
                              "voxel_map_floor": floor},
              "truth": None, "held_out": {"available": False, "note": HELD_OUT_NOTE}}
    if invert.data.truth is not None:
        truth_tissue = everywhere(comm, lambda: _truth_tissue(invert.data.truth))
        truth_image_path = Path(invert.data.truth).parent / "truth" / "ifp.nii.gz"
        truth_image, truth_affine = everywhere(comm, lambda: read_volume(truth_image_path))
        truth_fem = solve_ifp(domain, truth_tissue, boundary).pressure
        fem_error = relative_l2(fem, truth_fem)
        predicted = observe_on_grid(fem, truth_image.shape, truth_affine, points_per_axis=points_per_axis)
        image_error, voxels, max_error = _image_error(predicted, truth_image)
        result["truth"] = {"truth_json": str(invert.data.truth),
                           "fem_recovered_vs_fem_truth": {"relative_l2": fem_error, "unit": "1",
                                                          "norm": "L2 over the mesh (assembled)"}}
        result["truth_image_prediction"] = {
            "image": str(truth_image_path), "relative_l2": image_error, "unit": "1",
            "max_abs_error": {"value": max_error, "unit": "Pa"}, "voxels": voxels,
            "operator": f"voxel mean, midpoint rule, {points_per_axis} points per axis"}
        log(f"FEM(recovered) vs FEM(truth) relative L2 error {100 * fem_error:.2f} %; prediction of the truth "
            f"image: relative l2 error {100 * image_error:.2f} % over {voxels} voxels")
    result["seconds"] = time.perf_counter() - start
    return result


def _image_error(predicted: np.ndarray, reference: np.ndarray) -> tuple[float, int, float]:
    """(relative l2 error, voxels, largest absolute error) over the voxels finite in both."""
    use = np.isfinite(predicted) & np.isfinite(reference)
    difference = predicted[use] - reference[use]
    return (float(np.linalg.norm(difference) / np.linalg.norm(reference[use])), int(use.sum()),
            float(np.abs(difference).max()))


def _release(config: CrossvalConfig, comm: MPI.Comm, log) -> dict:
    """Kind "release" (module docstring)."""
    from dataclasses import replace

    from hybrid.collective import everywhere
    from hybrid.commands.invert import load_transport, observation_records, trained_problems
    from hybrid.commands.synthesize import frame_stops
    from hybrid.commands.transport import build_domain, setup_transport
    from hybrid.inverse.images import DRUG_FIELDS, drug_at
    from hybrid.problems.release import ph_release_rate

    invert, source = config.invert, config.inversion.directory
    inversion = everywhere(comm, lambda: json.loads((source / "inversion.json").read_text()))
    recovered = everywhere(comm, lambda: {name: float(entry["estimate"]) for name, entry in
                                          inversion["estimates"].items() if name in RELEASE_UNKNOWNS})
    transport = everywhere(comm, lambda: load_transport(invert.problem.transport))
    if invert.data.ph_map is not None:   # the inversion's known pH_e map, sampled by the FEM as [release] ph_map
        transport = replace(transport, release=replace(transport.release, ph_map=invert.data.ph_map))
    observed, trained_on, trained, held = everywhere(comm, lambda: observation_records(invert))
    problems = everywhere(comm, lambda: trained_problems(invert, source))
    start, stages = time.perf_counter(), {}
    domain = build_domain(transport, comm, log, stages)
    constants = {name: dolfinx.fem.Constant(domain.mesh, value) for name, value in recovered.items()}
    law = constants["release_rate"] if "release_rate" in constants else lambda ph: ph_release_rate(ph, **constants)
    setup = setup_transport(transport, comm, log, stages, domain, release_rate=law)
    solver = setup.solver
    grid, operator = observed[0].grid, observed[0].operator
    times = observed[0].frame_times_s
    frames, predictions = [], []
    try:
        for stop, is_frame in frame_stops(transport.time.step, times):
            solver.step(stop - solver.time)
            if not is_frame:
                continue
            species = solver.species()
            fem = dict(zip(DRUG_FIELDS, species[:3]))
            fem["total_drug"] = _nodal(species[0], sum(f.x.array for f in species), "total_drug")
            nodes = species[0].function_space.tabulate_dof_coordinates()
            network = [drug_at(p, nodes, stop) for p in problems]
            errors = {name: relative_l2(_nodal(fem[name], np.mean([n[name] for n in network], axis=0), name),
                                        fem[name]) for name in DRUG_FIELDS}
            frames.append({"time_s": stop, "relative_l2": errors})
            log(f"t = {stop:g} s: PINN vs FEM (networks at the nodes) relative L2: "
                + ", ".join(f"{name} {100 * e:.2f} %" for name, e in errors.items()))
            index = int(np.flatnonzero(np.isclose(times, stop))[0])
            if held[index]:
                predictions.append(_held_out(invert, source, species, index, stop, observed, grid, operator,
                                             comm, log))
        nodes_global = species[0].function_space.dofmap.index_map.size_global
        identifiability = _release_identifiability(invert, setup, constants, trained_on, trained, log)
    finally:
        solver.close()
    flags = identifiability["unknowns"] if identifiability["available"] else {}
    return {"command": "validate", "problem": "release", "inversion": str(source),
            "recovered": {name: {"value": value, "unit": RELEASE_UNKNOWNS[name],
                                 "identifiable": flags[name]["identifiable"] if flags else None}
                          for name, value in recovered.items()},
            "identifiability": identifiability,
            "fem": {"transport": str(invert.problem.transport), "nodes": nodes_global, "degree": 1,
                    "time_step_max_s": transport.time.step,
                    "ph_map": None if transport.release.ph_map is None else str(transport.release.ph_map)},
            "pinn_vs_fem": {"frames": frames, "unit": "1", "members": len(problems),
                            "norm": "L2 over the mesh (assembled) of the P1 interpolant of the networks (ensemble "
                                    "mean) against the FEM at the recovered release law"},
            "held_out": {"available": bool(predictions), "frames": predictions,
                         "note": None if predictions else "no [data] held_out_times in the invert configuration"},
            "seconds": time.perf_counter() - start, "stages_s": stages}


IDENTIFIABLE_RELATIVE_SD = 0.05
"""An unknown counts as identifiable when its Cramer-Rao standard deviation is at most this
fraction of its value (the issue's 5 % target) and it loads on no unseen direction."""

IDENTIFIABLE_PH_SD = 0.05
"""pH_50 is already logarithmic: identifiable when its Cramer-Rao sd is at most this many pH units."""


def identifiability_spread(name: str, value: float, sd: float, log: bool) -> tuple[float, float]:
    """(spread, limit) of an unknown's Cramer-Rao ``sd`` (in ln ``value`` where ``log``, else in its
    unit) at ``value``: ph_50 its sd in pH units against ``IDENTIFIABLE_PH_SD``, any other its
    relative sd against ``IDENTIFIABLE_RELATIVE_SD``; identifiable when spread <= limit."""
    if name == "ph_50":
        return (sd * abs(value) if log else sd), IDENTIFIABLE_PH_SD
    return (sd if log else sd / abs(value)), IDENTIFIABLE_RELATIVE_SD


def _release_identifiability(invert, setup, constants: dict, trained_on, trained: np.ndarray, log) -> dict:
    """FEM Fisher information of the release unknowns at the recovered values for the trained frames
    (:func:`hybrid.validation.classical.release_identifiability`), each unknown marked identifiable
    or not (:func:`identifiability_spread`); collective."""
    from hybrid.validation.classical import IDENTIFIABILITY_STEP, RANK_TOLERANCE, release_identifiability

    if any(record.noise_sd <= 0 for record in trained_on):
        return {"available": False, "note": "noise-free data (NoiseRelativeSD 0): no noise scale for the Fisher "
                                            "information"}
    times = trained_on[0].frame_times_s[trained]
    images = {record.quantity: record.values[..., trained] for record in trained_on}
    noise = {record.quantity: record.noise_sd for record in trained_on}
    logs = {name: getattr(invert.unknowns, name).log for name in constants}
    analysis = release_identifiability(setup, {name: (c, logs[name]) for name, c in constants.items()}, times,
                                       images, noise, trained_on[0].grid.affine_mm,
                                       trained_on[0].operator.points_per_axis)
    unknowns = {}
    for name, sd in zip(constants, analysis.standard_errors):
        value = float(constants[name].value)
        relative = float(sd) if logs[name] else float(sd) / abs(value)
        spread, limit = identifiability_spread(name, value, float(sd), logs[name])
        unknowns[name] = {"variable": f"ln {name}" if logs[name] else name, "cramer_rao_sd": float(sd),
                          "cramer_rao_relative_sd": relative, "spread": spread, "limit": limit,
                          "identifiable": bool(np.isfinite(spread) and spread <= limit)}
        log(f"{name}: Cramer-Rao relative sd {100 * relative:.3g} % (spread {spread:.3g}, limit {limit:g}) from the "
            "trained frames: "
            + ("identifiable" if unknowns[name]["identifiable"] else "NOT identifiable (do not trust its estimate)"))
    return {"available": True, "unknowns": unknowns, "singular_values": analysis.singular_values.tolist(),
            "summary": analysis.summary().splitlines(), "data_points": int(sum(np.isfinite(v).sum()
                                                                                for v in images.values())),
            "frames_s": times.tolist(),
            "method": "Fisher information J^T J of the noise-scaled FEM images (total drug and released fraction as "
                      "observed) at the recovered values, J by central differences (step "
                      f"{IDENTIFIABILITY_STEP:g} in ln of positive unknowns, in pH units for a linear ph_50); "
                      "Cramer-Rao bound (hybrid.identifiability)",
            "rule": f"identifiable: Cramer-Rao sd <= {IDENTIFIABLE_PH_SD:g} pH for ph_50 (already logarithmic), "
                    f"<= {IDENTIFIABLE_RELATIVE_SD:g} x the value for the others (the spread against the limit), "
                    f"and no weight on a direction with singular value <= {RANK_TOLERANCE:g} x the largest"}


def _held_out(invert, source: Path, species, index: int, time_s: float, observed, grid, operator, comm,
              log) -> dict:
    """FEM and PINN predictions of one held-out frame against the observed (and true) frame."""
    from hybrid.collective import everywhere

    shape, affine = grid.shape, grid.affine_mm
    on_grid = lambda function: observe_on_grid(function, shape, affine, points_per_axis=operator.points_per_axis)
    parts = [on_grid(function) for function in species]
    fem_fields = {"total_drug": sum(parts)}
    fem_fields["released_fraction"] = released_fraction(parts[0], fem_fields["total_drug"])
    entry = {"time_s": time_s, "frame": index}
    def frame(path: Path) -> np.ndarray:
        """The frame at ``time_s`` of the 4-D series at ``path`` (FrameTimes_s sidecar)."""
        series = everywhere(comm, lambda: read_dce_series(path))
        return series.data[..., int(np.flatnonzero(np.isclose(series.axis, time_s))[0])]

    for record in observed:
        quantity = record.quantity
        pinn_frame = frame(source / f"{quantity}.nii.gz")
        item = {"unit": "1", "against": "the observed (noisy) frame"}
        for name, predicted in (("fem", fem_fields[quantity]), ("pinn", pinn_frame)):
            error, voxels, _ = _image_error(predicted, record.values[..., index])
            item[name] = {"relative_l2": error, "voxels": voxels}
        if invert.data.truth is not None:
            true_frame = frame(Path(invert.data.truth).parent / "truth" / f"{quantity}.nii.gz")
            item["against_truth"] = {name: _image_error(predicted, true_frame)[0]
                                     for name, predicted in (("fem", fem_fields[quantity]), ("pinn", pinn_frame))}
        entry[quantity] = item
    total = entry["total_drug"]
    log(f"held-out frame t = {time_s:g} s: total drug relative l2 against the observed frame: FEM "
        f"{100 * total['fem']['relative_l2']:.2f} %, PINN {100 * total['pinn']['relative_l2']:.2f} %")
    return entry
