"""``hybrid validate CONFIG.toml``: cross-validation of a ``hybrid invert`` run against the FEM
(issue 9 point 4). DOLFINx and MPI; torch only to evaluate the trained networks
(:mod:`hybrid.inverse.images`, given node coordinates as numpy), never in the FEM code.

Kind "ifp":

1. Re-solve the steady IFP (:func:`hybrid.forward.ifp.solve_ifp`, P1) on the ``[geometry]`` disc
   with the recovered coefficients of ``inversion.json`` (estimates and known values; a field
   unknown as its recovered NIfTI map interpolated onto P1, NaN voxels from the nearest finite
   one), p = ``far_pressure`` on the edge.
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
4. Identifiability from the invert run's IFP map and ``[data] noise_sd`` (> 0; else not available):
   the FEM's Fisher information at the recovered values, the Jacobian by central differences of
   FEM solves, with every scalar unknown and every finite voxel of a field unknown's recovered map
   as a variable of its own (ln of the value where the unknown is positive; the map between voxels
   interpolated as in step 1, so the voxels' sum is the uniform field). ``identifiability.unknowns``
   marks each scalar as for the drug kinds; ``identifiability.fields.NAME`` counts the identifiable
   voxels, and ``<NAME>_cramer_rao_sd.nii.gz`` (sd of ln NAME, or in its unit; inf where the voxel
   loads on a direction the data do not see, NaN off the map) and ``<NAME>_identified.nii.gz`` (the
   recovered map where the voxel is identifiable, NaN elsewhere) are written beside
   validation.json. Each voxel costs two FEM solves (at most ``MAX_FIELD_VOXELS`` voxels).

Kind "release":

1. Re-solve the transport of the invert run's ``[problem] transport`` configuration
   (:func:`hybrid.commands.transport.setup_transport`: its mesh, IFP, plasma curves) with the
   recovered release rate, or for pH-sensitive liposomes the pH law k(pH_e) with the recovered
   ``ph_50`` / ``steepness`` on the invert run's ``[data] ph_map`` (else the transport's pH), and a
   recovered liposomal ``vessel_permeability`` (:func:`hybrid.commands.invert.with_unknown_values`), stepping to every frame time after injection (:func:`hybrid.commands.synthesize.frame_stops`,
   steps of at most ``[time] step``).
2. PINN vs FEM at every such frame: the networks (ensemble mean) at the P1 nodes against the FEM
   fields, relative L2 over the mesh (assembled) for liposomal, free, cell and total drug.
3. Held-out frames (``[data] held_out_times``): the FEM at the recovered release rate and the PINN,
   both voxel-averaged like the data, against the observed frame (and with a truth against the
   noise-free ``truth/total_drug.nii.gz``), relative l2 over the voxels finite in both; the same
   for the released fraction when it was observed.
4. Identifiability of every unknown from the trained frames: the FEM's Fisher information at the
   recovered values with the data's noise sd (:func:`hybrid.validation.classical.release_identifiability`;
   with a ``vessel_permeability`` unknown by FEM runs at each perturbed value, as for "coupled");
   ``recovered.NAME.identifiable`` is false where the Cramer-Rao sd exceeds 5 % of the value or the
   unknown loads on an unseen direction: such an estimate is not a measurement.

Kind "coupled" (tumour disc in host, pressure and drug recovered together): as "release", with
the FEM re-solved at the recovered tumour ``conductivity`` and ``effective_pressure`` too (the
steady IFP of the transport configuration with those, :func:`hybrid.commands.invert.with_unknown_values`),
and

- ``pressure``: the pressure network (ensemble mean) at the P1 nodes against the FEM IFP at the
  recovered values, relative L2 over the mesh (assembled); with a truth, the recovered map
  ``ifp.nii.gz`` and the FEM IFP voxel-averaged like the data against ``truth/ifp.nii.gz``
  (relative l2 over the voxels finite in both);
- identifiability of every unknown (release law, K and p_e) as in step 4, the Jacobian by central
  differences of FEM runs that re-solve the IFP and the transport at each perturbed value.

With ``[classical] fit = true`` (scalar unknowns), ``classical``: the same inverse problem solved
by FEM least squares (:func:`hybrid.validation.classical.fit_images`): the invert run's unknowns
from their start values within their bounds, on the same data (the trained frames) with their
noise sd, every residual a FEM run (kind "ifp": an IFP solve on the ``[geometry]`` mesh; the drug
kinds: a transport run as in the identifiability); estimates, Cramer-Rao sd, FEM runs and seconds
beside the PINN's estimates and training time, and with a truth both relative errors.

Writes ``validation.json`` (every number with its unit) into the output directory.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from mpi4py import MPI
from scipy import ndimage

import hybrid._fem_stack  # noqa: F401  (before dolfinx)
import dolfinx.fem
import ufl

from hybrid.config.crossval import CrossvalConfig
from hybrid.config.invert import COUPLED_UNKNOWNS, DRUG_UNKNOWNS, IFP_COEFFICIENTS, RELEASE_UNKNOWNS
from hybrid.forward.image_sampling import observe_on_grid, sample_image
from hybrid.forward.ifp import solve_ifp
from hybrid.io.nifti import read_dce_series, read_volume, write_volume
from hybrid.problems.ifp import OuterBoundary, TissueProperties
from hybrid.problems.release import released_fraction

__all__ = ["run_crossval", "recovered_coefficients", "relative_l2", "fill_nan_nearest", "identifiability_spread"]

HELD_OUT_NOTE = ("the IFP kind is steady (no time axis): the prediction reported is that of the noise-free "
                 "truth map truth/ifp.nii.gz, which is the training data itself when [data] observations is that "
                 "map; held-out imaging time points are validated for the release kind")


def recovered_coefficients(inversion: dict) -> dict[str, float]:
    """The five IFP coefficients [SI] of an inversion.json: estimates of the unknowns, the rest known;
    a field unknown by its voxel mean (the field itself: its NIfTI, ``inversion["fields"]``)."""
    values = {name: entry["value"] for name, entry in inversion["known"].items()}
    values |= {name: entry["estimate"] for name, entry in inversion["estimates"].items() if name in IFP_COEFFICIENTS}
    values |= {name: entry["mean"] for name, entry in inversion.get("fields", {}).items()}
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


def fill_nan_nearest(volume: np.ndarray, name: str = "the recovered IFP map ifp.nii.gz") -> np.ndarray:
    """``volume`` (``name`` in the error) with every NaN voxel set to the value of the nearest finite
    voxel (ValueError if none)."""
    missing = np.isnan(volume)
    if missing.all():
        raise ValueError(f"{name} has no finite voxel")
    index = ndimage.distance_transform_edt(missing, return_distances=False, return_indices=True)
    return volume[tuple(index)]


def _tissue_name(name: str) -> str:
    """The TissueProperties field of the IFP coefficient ``name`` (IFP_COEFFICIENTS)."""
    return "hydraulic_conductivity" if name == "conductivity" else name


def _solve(domain, boundary: OuterBoundary, coefficients: dict):
    """P1 IFP [Pa] with the five coefficients over the tumour: numbers (constants) or fields."""
    mesh = domain.mesh
    fields = {_tissue_name(name): value if isinstance(value, dolfinx.fem.Function) else dolfinx.fem.Constant(mesh, value)
              for name, value in coefficients.items()}
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
    """Re-solve, compare and write ``validation.json`` (and, kind "ifp" with a field unknown, its
    identifiability maps) into ``directory`` (collective). Returns its content."""
    from hybrid.collective import on_rank0

    if config.invert.problem.kind == "ifp":
        result = _ifp(config, Path(directory), comm, log)
    else:
        result = _drug(config, comm, log)
    on_rank0(comm, lambda: (Path(directory) / "validation.json").write_text(json.dumps(result, indent=2) + "\n"))
    return result


def _ifp(config: CrossvalConfig, directory: Path, comm: MPI.Comm, log) -> dict:
    """Kind "ifp" (module docstring); the identifiability maps go into ``directory``."""
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
    field_entries = inversion.get("fields", {})
    field_maps = {name: everywhere(comm, lambda entry=entry: read_volume(source / entry["file"]))
                  for name, entry in field_entries.items()}
    fields = {name: sample_image(domain, fill_nan_nearest(volume, f"the recovered {name} map"), affine_field, name=name)
              for name, (volume, affine_field) in field_maps.items()}
    fem = _solve(domain, boundary, recovered | fields)
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
                                         | ({"field": field_entries[name]["file"], "value_is": "voxel mean"}
                                            if name in field_entries else {})
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
    truth_tissue = None if invert.data.truth is None else everywhere(comm, lambda: _truth_tissue(invert.data.truth))
    if truth_tissue is not None:
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
    needs_map = invert.data.noise_sd > 0 or config.classical.fit
    observed, observed_affine = everywhere(comm, lambda: read_volume(invert.data.observations)) if needs_map \
        else (None, None)
    truth = None if truth_tissue is None else {name: getattr(truth_tissue, _tissue_name(name))
                                               for name in IFP_COEFFICIENTS}
    result["identifiability"] = _ifp_identifiability(invert, domain, boundary, recovered, field_maps, observed,
                                                     observed_affine, truth, directory, comm, log)
    if config.classical.fit:
        unknowns = {name: recovered[name] for name in invert.unknowns}
        predict = lambda values: {"ifp": observe_on_grid(_solve(domain, boundary, recovered | values), observed.shape,
                                                         observed_affine, points_per_axis=points_per_axis)}
        result["classical"] = _fit_beside_pinn(config, predict, {"ifp": observed}, {"ifp": invert.data.noise_sd},
                                               unknowns, inversion, truth, log)
    result["seconds"] = time.perf_counter() - start
    return result


def _image_error(predicted: np.ndarray, reference: np.ndarray) -> tuple[float, int, float]:
    """(relative l2 error, voxels, largest absolute error) over the voxels finite in both."""
    use = np.isfinite(predicted) & np.isfinite(reference)
    difference = predicted[use] - reference[use]
    return (float(np.linalg.norm(difference) / np.linalg.norm(reference[use])), int(use.sum()),
            float(np.abs(difference).max()))


def _quiet(_line: str) -> None:
    """A log that drops the FEM's progress lines (the identifiability's many runs)."""


def _drug(config: CrossvalConfig, comm: MPI.Comm, log) -> dict:
    """Kinds "release" and "coupled" (module docstring)."""
    from hybrid.collective import everywhere
    from hybrid.commands.invert import (load_transport, observation_records, trained_problems, with_ph_map,
                                        with_unknown_values)
    from hybrid.commands.synthesize import frame_stops
    from hybrid.commands.transport import build_domain, setup_transport
    from hybrid.inverse.images import DRUG_FIELDS, drug_at
    from hybrid.problems.release import release_law

    invert, source, kind = config.invert, config.inversion.directory, config.invert.problem.kind
    units = COUPLED_UNKNOWNS if kind == "coupled" else DRUG_UNKNOWNS
    inversion = everywhere(comm, lambda: json.loads((source / "inversion.json").read_text()))
    recovered = everywhere(comm, lambda: {name: float(entry["estimate"]) for name, entry in
                                          inversion["estimates"].items() if name in units})
    transport = everywhere(comm, lambda: with_ph_map(with_unknown_values(load_transport(invert.problem.transport),
                                                                       recovered), invert.data.ph_map))
    observed, trained_on, trained, held = everywhere(comm, lambda: observation_records(invert))
    problems = everywhere(comm, lambda: trained_problems(invert, source))
    series = _held_out_series(invert, source, [record.quantity for record in observed], comm) if any(held) else {}
    start, stages = time.perf_counter(), {}
    domain = build_domain(transport, comm, log, stages)
    constants = {name: dolfinx.fem.Constant(domain.mesh, value) for name, value in recovered.items()
                 if name in RELEASE_UNKNOWNS}
    law = release_law(constants)
    setup = setup_transport(transport, comm, log, stages, domain, release_rate=law)
    solver = setup.solver
    grid, operator = observed[0].grid, observed[0].operator
    times = observed[0].frame_times_s
    frames, predictions = [], []
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
            predictions.append(_held_out(series, species, index, stop, observed, grid, operator, log))
    nodes_global = species[0].function_space.dofmap.index_map.size_global
    if set(recovered) <= set(RELEASE_UNKNOWNS):   # the release law alone: constants changed in place
        analyse_images = lambda *data: _release_analysis(setup, constants, *data)
    else:
        analyse_images = lambda *data: _coupled_analysis(setup, constants, recovered, law, comm, *data)
    identifiability = _identifiability(invert, recovered, trained_on, trained, analyse_images, log)
    # closed on success only: after a failure on one rank the CLI ends every rank, where a
    # collective close would wait for the ranks still in the FEM runs of the analyses
    solver.close()
    classical = _classical(config, setup, constants, recovered, law, comm, trained_on, trained, inversion, log) \
        if config.classical.fit else None
    flags = identifiability["unknowns"] if identifiability["available"] else {}
    pressure = {"pressure": _pressure(invert, source, setup.pressure, problems, observed[0], comm, log)
                } if kind == "coupled" else {}
    return {"command": "validate", "problem": kind, "inversion": str(source)} | pressure | {
            "recovered": {name: {"value": value, "unit": units[name],
                                 "identifiable": flags[name]["identifiable"] if flags else None}
                          for name, value in recovered.items()},
            "identifiability": identifiability,
            "fem": {"transport": str(invert.problem.transport), "nodes": nodes_global, "degree": 1,
                    "time_step_max_s": transport.time.step,
                    "ph_map": None if transport.release.ph_map is None else str(transport.release.ph_map)},
            "pinn_vs_fem": {"frames": frames, "unit": "1", "members": len(problems),
                            "norm": "L2 over the mesh (assembled) of the P1 interpolant of the networks (ensemble "
                                    "mean) against the FEM at the recovered values"},
            "held_out": {"available": bool(predictions), "frames": predictions,
                         "note": None if predictions else "no [data] held_out_times in the invert configuration"},
            "classical": classical, "seconds": time.perf_counter() - start, "stages_s": stages}


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
    return (sd if log else _relative(sd, value)), IDENTIFIABLE_RELATIVE_SD


def _relative(sd: float, value: float) -> float:
    """sd / |value|; inf at a value of 0 (no relative precision to claim there)."""
    return sd / abs(value) if value != 0 else float("inf")


MAX_FIELD_VOXELS = 2000
"""Kind "ifp": field unknowns with more finite voxels than this (all fields together) get no
per-voxel identifiability (two FEM solves per voxel); coarser maps do."""


def _unknown_identifiability(name: str, value: float, sd: float, log: bool) -> dict:
    """validation.json's entry of one variable with Cramer-Rao ``sd`` (of ln ``value`` where ``log``)."""
    relative = float(sd) if log else _relative(float(sd), value)
    spread, limit = identifiability_spread(name, value, float(sd), log)
    return {"variable": f"ln {name}" if log else name, "cramer_rao_sd": float(sd), "cramer_rao_relative_sd": relative,
            "spread": spread, "limit": limit, "identifiable": bool(np.isfinite(spread) and spread <= limit)}


def ifp_identifiability(domain, boundary: OuterBoundary, coefficients: dict, logs: dict, field_maps: dict,
                        observed: np.ndarray, observed_affine, noise_sd: float, points_per_axis: int = 3,
                        log=_quiet) -> tuple[dict, dict, object]:
    """Fisher information (:func:`hybrid.validation.classical.identifiability`) of the IFP map
    ``observed`` [Pa] (noise sd ``noise_sd`` [Pa]) at ``coefficients`` (the five IFP coefficients
    [SI]) for the unknowns ``logs`` (name -> varied as ln where true): a scalar unknown is one
    variable; a field unknown (``field_maps``: name -> (volume, affine_mm) of its map, which
    replaces its coefficient) has one variable per finite voxel, named ``NAME[i,j,k]``, the map
    between voxels interpolated trilinearly after filling NaN voxels from the nearest finite one
    (as the re-solve), so varying every voxel alike varies the field uniformly. Two FEM solves per
    variable. Returns (variable -> value, field -> its variables' names in voxel order,
    :class:`hybrid.identifiability.Identifiability` over the variables in that order). Collective."""
    from hybrid.validation.classical import identifiability

    finite = {name: np.isfinite(volume) for name, (volume, _) in field_maps.items()}
    scalars = [name for name in logs if name not in field_maps]
    voxel_names = {name: [f"{name}[{i},{j},{k}]" for i, j, k in np.argwhere(mask)] for name, mask in finite.items()}
    values = {name: coefficients[name] for name in scalars}
    variable_logs = {name: logs[name] for name in scalars}
    for name, (volume, _) in field_maps.items():
        values |= dict(zip(voxel_names[name], volume[finite[name]].tolist()))
        variable_logs |= dict.fromkeys(voxel_names[name], logs[name])
    solves = 2 * len(values)
    log(f"identifiability: {solves} FEM solves ({len(scalars)} scalar unknowns, "
        f"{sum(map(len, voxel_names.values()))} field voxels)")
    done = [0]

    def predict(trial: dict) -> dict:
        fields = {}
        for name, (volume, affine) in field_maps.items():
            varied = volume.copy()
            varied[finite[name]] = [trial[voxel] for voxel in voxel_names[name]]
            fields[name] = sample_image(domain, fill_nan_nearest(varied, f"the recovered {name} map"), affine,
                                        name=name)
        pressure = _solve(domain, boundary, coefficients | {name: trial[name] for name in scalars} | fields)
        done[0] += 1
        if done[0] % max(1, solves // 10) == 0:
            log(f"identifiability: {done[0]}/{solves} FEM solves")
        return {"ifp": observe_on_grid(pressure, observed.shape, observed_affine, points_per_axis=points_per_axis)}

    analysis = identifiability(predict, values, variable_logs, {"ifp": observed}, {"ifp": noise_sd},
                               restore=lambda: None)
    return values, voxel_names, analysis


def _ifp_identifiability(invert, domain, boundary: OuterBoundary, recovered: dict, field_maps: dict,
                         observed: np.ndarray, observed_affine, truth: dict | None, directory: Path, comm: MPI.Comm,
                         log) -> dict:
    """Kind "ifp" step 4 (module docstring, :func:`ifp_identifiability`) as validation.json's
    ``identifiability`` (``observed`` None when ``[data] noise_sd`` is 0: not available); with the
    uniform ``truth`` (name -> SI), each field's median relative error over its identifiable and
    its other voxels; writes each field's maps into ``directory`` (rank 0). Collective."""
    from hybrid.collective import on_rank0
    from hybrid.validation.classical import IDENTIFIABILITY_STEP, RANK_TOLERANCE

    noise_sd = invert.data.noise_sd
    if noise_sd <= 0:
        return {"available": False, "note": "[data] noise_sd is 0: no noise scale for the Fisher information"}
    voxels = int(sum(np.isfinite(volume).sum() for volume, _ in field_maps.values()))
    if voxels > MAX_FIELD_VOXELS:
        return {"available": False, "note": f"the field maps have {voxels} voxels, more than MAX_FIELD_VOXELS = "
                                            f"{MAX_FIELD_VOXELS} (two FEM solves each)"}
    logs = {name: getattr(invert.unknowns, name).log for name in invert.unknowns}
    values, voxel_names, analysis = ifp_identifiability(domain, boundary, recovered, logs, field_maps, observed,
                                                        observed_affine, noise_sd, invert.data.points_per_axis, log)
    scalars = [name for name in logs if name not in field_maps]
    errors = dict(zip(values, analysis.standard_errors))
    unknowns = {name: _unknown_identifiability(name, values[name], errors[name], logs[name]) for name in scalars}
    for name, entry in unknowns.items():
        log(f"{name}: Cramer-Rao relative sd {100 * entry['cramer_rao_relative_sd']:.3g} % from the IFP map: "
            + ("identifiable" if entry["identifiable"] else "NOT identifiable (do not trust its estimate)"))
    fields = {}
    for name, (volume, affine) in field_maps.items():
        entries = [_unknown_identifiability(name, values[voxel], errors[voxel], logs[name])
                   for voxel in voxel_names[name]]
        on_map = np.isfinite(volume)
        sd, identified = np.full(volume.shape, np.nan), np.full(volume.shape, np.nan)
        sd[on_map] = [entry["cramer_rao_sd"] for entry in entries]
        ok = np.zeros(volume.shape, dtype=bool)
        ok[on_map] = [entry["identifiable"] for entry in entries]
        identified[ok] = volume[ok]
        variable, unit = (f"ln {name}", "1") if logs[name] else (name, IFP_COEFFICIENTS[name])
        on_rank0(comm, lambda name=name, sd=sd, identified=identified, affine=affine, variable=variable, unit=unit: (
            write_volume(directory / f"{name}_cramer_rao_sd.nii.gz", sd, affine,
                         description=f"Cramer-Rao sd of {variable} [{unit}] per voxel; inf: not seen"[:79],
                         intent_name=f"sd [{unit}]"[:15]),
            write_volume(directory / f"{name}_identified.nii.gz", identified, affine,
                         description=f"recovered {name} [{IFP_COEFFICIENTS[name]}] where identifiable"[:79],
                         intent_name=name[:15])))
        relative = np.array([entry["spread"] for entry in entries if entry["identifiable"]])
        fields[name] = {"variable": variable, "voxels": len(entries), "identifiable_voxels": int(ok.sum()),
                        "limit": entries[0]["limit"],
                        "median_identifiable_spread": float(np.median(relative)) if relative.size else None,
                        "cramer_rao_sd_map": f"{name}_cramer_rao_sd.nii.gz", "identified_map": f"{name}_identified.nii.gz"}
        if truth is not None and truth[name] != 0:
            error = volume / truth[name] - 1.0
            fields[name]["against_truth"] = {
                f"median_relative_error_{part}": float(np.median(error[mask])) if mask.any() else None
                for part, mask in (("identifiable", ok), ("not_identifiable", on_map & ~ok))} | {"truth": truth[name]}
        log(f"{name}: {int(ok.sum())} of {len(entries)} voxels identifiable (Cramer-Rao sd <= {entries[0]['limit']:g}"
            f"{' of the value' if logs[name] else ''}); the others are not measured by the IFP map")
    return {"available": True, "unknowns": unknowns, "fields": fields, "fem_solves": 2 * len(values),
            "singular_values": analysis.singular_values.tolist(),
            "data_points": int(np.isfinite(observed).sum()), "noise_sd": {"value": noise_sd, "unit": "Pa"},
            "method": "Fisher information J^T J of the noise-scaled FEM IFP map at the recovered values, J by central "
                      f"differences (step {IDENTIFIABILITY_STEP:g} in ln of positive unknowns, else in their unit), "
                      "every finite voxel of a field's map a variable of its own; Cramer-Rao bound "
                      "(hybrid.identifiability)",
            "rule": f"identifiable: Cramer-Rao sd <= {IDENTIFIABLE_RELATIVE_SD:g} x the value, and no weight on a "
                    f"direction with singular value <= {RANK_TOLERANCE:g} x the largest"}


def _identifiability(invert, recovered: dict, trained_on, trained: np.ndarray, analyse_images, log) -> dict:
    """Fisher information of the unknowns at the ``recovered`` values [SI] for the trained frames:
    ``analyse_images(times, images, noise, logs, affine_mm, points_per_axis)`` returns the
    :class:`hybrid.identifiability.Identifiability` of the FEM images; each unknown marked
    identifiable or not (:func:`identifiability_spread`); collective."""
    from hybrid.validation.classical import IDENTIFIABILITY_STEP, RANK_TOLERANCE

    if any(record.noise_sd <= 0 for record in trained_on):
        return {"available": False, "note": "noise-free data (NoiseRelativeSD 0): no noise scale for the Fisher "
                                            "information"}
    times = trained_on[0].frame_times_s[trained]
    images, noise = _trained_data(trained_on, trained)
    logs = {name: getattr(invert.unknowns, name).log for name in recovered}
    analysis = analyse_images(times, images, noise, logs, trained_on[0].grid.affine_mm,
                              trained_on[0].operator.points_per_axis)
    unknowns = {}
    for name, sd in zip(recovered, analysis.standard_errors):
        unknowns[name] = entry = _unknown_identifiability(name, recovered[name], sd, logs[name])
        log(f"{name}: Cramer-Rao relative sd {100 * entry['cramer_rao_relative_sd']:.3g} % (spread "
            f"{entry['spread']:.3g}, limit {entry['limit']:g}) from the trained frames: "
            + ("identifiable" if unknowns[name]["identifiable"] else "NOT identifiable (do not trust its estimate)"))
    return {"available": True, "unknowns": unknowns, "singular_values": analysis.singular_values.tolist(),
            "summary": analysis.summary().splitlines(), "data_points": int(sum(np.isfinite(v).sum()
                                                                                for v in images.values())),
            "frames_s": times.tolist(),
            "method": "Fisher information J^T J of the noise-scaled FEM images (total drug and released fraction as "
                      "observed) at the recovered values, J by central differences (step "
                      f"{IDENTIFIABILITY_STEP:g} in ln of positive unknowns, in pH units for a linear ph_50; "
                      "a tumour conductivity or effective pressure re-solves the IFP); "
                      "Cramer-Rao bound (hybrid.identifiability)",
            "rule": f"identifiable: Cramer-Rao sd <= {IDENTIFIABLE_PH_SD:g} pH for ph_50 (already logarithmic), "
                    f"<= {IDENTIFIABLE_RELATIVE_SD:g} x the value for the others (the spread against the limit), "
                    f"and no weight on a direction with singular value <= {RANK_TOLERANCE:g} x the largest"}


def _release_analysis(setup, constants: dict, times, images: dict, noise: dict, logs: dict, affine_mm,
                      points_per_axis: int):
    """Identifiability of the release-law ``constants``
    (:func:`hybrid.validation.classical.release_identifiability`)."""
    from hybrid.validation.classical import release_identifiability

    return release_identifiability(setup, {name: (c, logs[name]) for name, c in constants.items()}, times,
                                   images, noise, affine_mm, points_per_axis)


def _trained_data(trained_on, trained: np.ndarray) -> tuple[dict, dict]:
    """(quantity -> the trained frames (nx, ny, nz, frames), quantity -> noise sd) of the records."""
    return ({record.quantity: record.values[..., trained] for record in trained_on},
            {record.quantity: record.noise_sd for record in trained_on})


def _fem_predictor(setup, constants: dict, law, comm, times, shape, affine_mm, points_per_axis: int):
    """values (name -> [SI]) -> the FEM's total drug and released fraction images at ``times`` [s]:
    the release-law ``constants`` set to the values, ``setup.config`` with the others
    (:func:`hybrid.commands.invert.with_unknown_values`; with Darcy flow the IFP re-solved)."""
    from hybrid.commands.invert import with_unknown_values
    from hybrid.commands.transport import setup_transport
    from hybrid.validation.classical import release_images

    def predict(values: dict) -> dict:
        _set_constants(constants, values)
        run = setup_transport(with_unknown_values(setup.config, values), comm, _quiet, {}, setup.domain,
                              release_rate=law)
        run.solver.close()
        return release_images(run, run.solver.model, times, shape, affine_mm, points_per_axis)
    return predict


def _classical(config: CrossvalConfig, setup, constants: dict, recovered: dict, law, comm, trained_on,
               trained: np.ndarray, inversion: dict, log) -> dict:
    """``[classical] fit`` of kinds "release" and "coupled": :func:`_fit_beside_pinn` on the trained
    frames with the data's noise sd, every prediction a transport run (:func:`_fem_predictor`); the
    release-law constants are restored to the recovered values. Collective."""
    from hybrid.commands.invert import truth_values

    invert = config.invert
    truth = truth_values(invert.data.truth, invert.problem.kind, list(recovered)) if invert.data.truth else None
    grid, operator = trained_on[0].grid, trained_on[0].operator
    predict = _fem_predictor(setup, constants, law, comm, trained_on[0].frame_times_s[trained], grid.shape,
                             grid.affine_mm, operator.points_per_axis)
    try:
        return _fit_beside_pinn(config, predict, *_trained_data(trained_on, trained), recovered, inversion, truth, log)
    finally:
        _set_constants(constants, recovered)


def _set_constants(constants: dict, values: dict) -> None:
    """Set the release-law ``dolfinx.fem.Constant`` s ``constants`` to ``values`` (name -> [SI])."""
    for name, constant in constants.items():
        constant.value = values[name]


def _fit_beside_pinn(config: CrossvalConfig, predict, images: dict, noise_sd: dict, recovered: dict,
                     inversion: dict, truth: dict | None, log) -> dict:
    """FEM least squares (:func:`hybrid.validation.classical.fit_images`) of the invert run's
    scalar unknowns (``recovered``: the PINN's estimates) from their start values within their
    bounds (each as ln(value) where ``log``) on ``images`` with ``noise_sd`` (quantity -> sd in
    the image unit; 0 for noise-free data: 1e-3 x the largest value as the residual's scale,
    ``noise_assumed``, no Cramer-Rao sd), at most ``max_fem_runs`` predictions in the fit
    (least-squares steps of 1 + one per unknown) and 2 per unknown for the standard errors; the
    record of ``validation.json`` beside the PINN's estimates and training time (with ``truth``, name
    -> true value [SI], both relative errors). Collective."""
    from hybrid.config.invert import starting_value
    from hybrid.validation.classical import fit_images

    invert = config.invert
    specs = {name: asdict(getattr(invert.unknowns, name)) for name in recovered}
    start = {name: starting_value(spec) for name, spec in specs.items()}
    assumed = any(not sd > 0 for sd in noise_sd.values())   # noise-free data: a scale, not a noise
    noise = {quantity: sd if sd > 0 else 1e-3 * float(np.nanmax(np.abs(images[quantity]), initial=0.0))
             for quantity, sd in noise_sd.items()}
    bad = [quantity for quantity, sd in noise.items() if not (np.isfinite(sd) and sd > 0)]
    if bad:
        raise ValueError(f"[classical] fit: the {', '.join(bad)} data have no finite nonzero value to scale the "
                         "residual by")
    steps = max(1, config.classical.max_fem_runs // (len(specs) + 1))   # each step: 1 + one run per unknown
    log(f"classical FEM least squares from {', '.join(f'{n} = {v:.4g}' for n, v in start.items())} "
        f"(at most {steps * (len(specs) + 1)} FEM runs in the fit, {2 * len(specs)} for the standard errors)")
    result = fit_images(predict, start, {name: spec["log"] for name, spec in specs.items()}, images, noise,
                        bounds={name: (spec["lower"], spec["upper"]) for name, spec in specs.items()}, max_nfev=steps)
    estimates = {name: float(np.exp(v)) if specs[name]["log"] else float(v)
                 for name, v in zip(recovered, result.estimate)}
    out = {"start": start, "estimates": estimates,
           "cramer_rao_sd": {name: None if assumed else {"value": float(sd), "of": f"ln {name}" if specs[name]["log"]
                                                          else name}
                             for name, sd in zip(recovered, result.standard_error)},
           "chi2_per_datum": result.chi2_per_datum, "fem_runs": result.fem_solves, "seconds": result.wall_s,
           "status": result.status,
           "pinn": {"estimates": recovered, "training_seconds": inversion.get("training", {}).get("seconds")},
           "noise_sd": noise, "noise_assumed": assumed,
           "method": "scipy least_squares (trust region, 2-point Jacobian of FEM runs) of the noise-scaled residual; "
                     "Cramer-Rao sd from the central Jacobian at the estimate"}
    if truth is not None:
        out["relative_errors"] = {"classical": {n: (estimates[n] - truth[n]) / truth[n] for n in recovered if truth[n]},
                                  "pinn": {n: (recovered[n] - truth[n]) / truth[n] for n in recovered if truth[n]}}
    log("classical: " + ", ".join(f"{n} = {v:.4g}" for n, v in estimates.items())
        + f" ({result.fem_solves} FEM runs, {result.wall_s:.1f} s)")
    return out


def _coupled_analysis(setup, constants: dict, recovered: dict, law, comm, times, images: dict, noise: dict,
                      logs: dict, affine_mm, points_per_axis: int):
    """Identifiability (:func:`hybrid.validation.classical.identifiability`) of the unknowns at
    ``recovered`` beyond the release law alone: the release-law ``constants`` and the tumour's
    conductivity / effective pressure or the liposomes' vessel permeability, every perturbed value a
    FEM run of ``setup.config`` (:func:`hybrid.commands.invert.with_unknown_values`; with Darcy flow
    the IFP re-solved, :func:`hybrid.validation.classical.release_images`); the constants are restored."""
    from hybrid.validation.classical import identifiability

    predict = _fem_predictor(setup, constants, law, comm, times, next(iter(images.values())).shape[:3], affine_mm,
                             points_per_axis)

    return identifiability(predict, recovered, logs, images, noise, restore=lambda: _set_constants(constants, recovered))


def _pressure(invert, source: Path, fem, problems: list, record, comm, log) -> dict:
    """Kind "coupled": the pressure networks (ensemble mean) at the P1 nodes against the FEM IFP
    ``fem`` [Pa] at the recovered values; with a truth, the recovered map and the FEM voxel-averaged
    like the data against the true map ``truth/ifp.nii.gz`` (module docstring)."""
    from hybrid.collective import everywhere
    from hybrid.inverse.images import pressure_at

    nodes = fem.function_space.tabulate_dof_coordinates()
    pinn = _nodal(fem, np.mean([pressure_at(p.flow, nodes) for p in problems], axis=0), "pinn_pressure_nodes")
    error = relative_l2(pinn, fem)
    log(f"pressure: PINN networks at the FEM nodes vs FEM at the recovered values, relative L2 {100 * error:.2f} %")
    out = {"pinn_vs_fem": {"relative_l2": error, "unit": "1",
                           "norm": "L2 over the mesh (assembled) of the P1 interpolant of the pressure networks "
                                   "(ensemble mean) against the FEM IFP at the recovered values"},
           "against_truth_image": None}
    if invert.data.truth is not None:
        truth_path = Path(invert.data.truth).parent / "truth" / "ifp.nii.gz"
        truth_map, affine = everywhere(comm, lambda: read_volume(truth_path))
        fem_map = observe_on_grid(fem, truth_map.shape, affine, points_per_axis=record.operator.points_per_axis)
        pinn_map = everywhere(comm, lambda: read_volume(source / "ifp.nii.gz")[0])
        errors = {name: _image_error(image, truth_map)[0] for name, image in (("pinn", pinn_map), ("fem", fem_map))}
        out["against_truth_image"] = errors | {"unit": "1", "image": str(truth_path),
                                               "norm": "relative l2 over the voxels finite in both"}
        log(f"pressure against the true map: PINN {100 * errors['pinn']:.2f} %, FEM at the recovered values "
            f"{100 * errors['fem']:.2f} %")
    return out


def _held_out_series(invert, source: Path, quantities: list[str], comm) -> dict:
    """The 4-D series the held-out frames are taken from, each read once per run (by every rank):
    quantity -> {"pinn": the invert run's map series in ``source``, "truth": the noise-free
    ``truth/QUANTITY.nii.gz`` beside the invert run's ``[data] truth``, or None without one}."""
    from hybrid.collective import everywhere

    truth = None if invert.data.truth is None else Path(invert.data.truth).parent / "truth"
    read = lambda path: everywhere(comm, lambda: read_dce_series(path))
    return {quantity: {"pinn": read(source / f"{quantity}.nii.gz"),
                       "truth": None if truth is None else read(truth / f"{quantity}.nii.gz")}
            for quantity in quantities}


def _frame(series, time_s: float) -> np.ndarray:
    """The frame at ``time_s`` [s] of a 4-D ``series`` (its FrameTimes_s axis)."""
    return series.data[..., int(np.flatnonzero(np.isclose(series.axis, time_s))[0])]


def _held_out(series: dict, species, index: int, time_s: float, observed, grid, operator, log) -> dict:
    """FEM and PINN predictions of one held-out frame against the observed (and true) frame, the
    PINN and true frames taken from ``series`` (:func:`_held_out_series`)."""
    shape, affine = grid.shape, grid.affine_mm
    on_grid = lambda function: observe_on_grid(function, shape, affine, points_per_axis=operator.points_per_axis)
    parts = [on_grid(function) for function in species]
    fem_fields = {"total_drug": sum(parts)}
    fem_fields["released_fraction"] = released_fraction(parts[0], fem_fields["total_drug"])
    entry = {"time_s": time_s, "frame": index}
    for record in observed:
        quantity = record.quantity
        pinn_frame = _frame(series[quantity]["pinn"], time_s)
        item = {"unit": "1", "against": "the observed (noisy) frame"}
        for name, predicted in (("fem", fem_fields[quantity]), ("pinn", pinn_frame)):
            error, voxels, _ = _image_error(predicted, record.values[..., index])
            item[name] = {"relative_l2": error, "voxels": voxels}
        if series[quantity]["truth"] is not None:
            true_frame = _frame(series[quantity]["truth"], time_s)
            item["against_truth"] = {name: _image_error(predicted, true_frame)[0]
                                     for name, predicted in (("fem", fem_fields[quantity]), ("pinn", pinn_frame))}
        entry[quantity] = item
    total = entry["total_drug"]
    log(f"held-out frame t = {time_s:g} s: total drug relative l2 against the observed frame: FEM "
        f"{100 * total['fem']['relative_l2']:.2f} %, PINN {100 * total['pinn']['relative_l2']:.2f} %")
    return entry
