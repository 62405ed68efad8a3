"""``hybrid synthesize CONFIG.toml``: a FEM twin (transport ground truth) -> synthetic MRI-like images.

Composition only: the FEM problem is :func:`hybrid.commands.transport.setup_transport`, the
voxel averaging :func:`hybrid.forward.image_sampling.observe_on_grid`. Writes into ``directory``:

- ``observations.nii.gz`` (x, y, z, frame): noisy total tissue drug [mol/m^3 of tissue], with the
  sidecar ``observations.json`` (``FrameTimes_s``, quantity, unit, noise model, seed);
- ``released_fraction.nii.gz`` (+ ``.json``) when ``[observation] quantities`` asks for it;
- ``truth.json``: every parameter of the run with its unit, the acquisition and the grid;
- ``truth/``: noise-free fields on the same grid: ``ifp.nii.gz`` [Pa] (flow = darcy),
  ``total_drug``, ``liposomal_drug``, ``free_drug``, ``cell_drug`` (4-D, the frame times) and
  ``released_fraction`` when observed; with ``[observation.ph_map]`` the synthetic pH_e map
  ``ph.nii.gz`` [1] on its own grid, which the FEM samples as its ``[release] ph_map``.

Noise: additive Gaussian, sd = ``noise`` x the largest |value| of the noise-free series of that
quantity, drawn from ``numpy.random.default_rng(seed)`` (total drug first, then the released
fraction; the same draw on every rank), so a run is reproducible and independent of the number of
MPI ranks. The time steps are ``[time] step`` or shorter, so that every frame time is a step end.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
from mpi4py import MPI

from hybrid.commands.transport import build_domain, setup_transport
from hybrid.config.synthesize import QUANTITIES, ObservationConfig, PhMapConfig
from hybrid.config.transport import TransportConfig
from hybrid.forward.image_sampling import observe_on_grid
from hybrid.problems.release import PH_LAW_UNITS, ph_law_constants, released_fraction

__all__ = ["run_synthesize", "observation_grid", "frame_stops", "radial_ph_map", "PH_MAP"]

_TUMOUR_UNITS = {"hydraulic_conductivity": "m^2/(Pa s)", "filtration_coefficient": "m/(Pa s)",
                 "vessel_surface_density": "1/m", "vascular_pressure": "Pa", "plasma_oncotic_pressure": "Pa",
                 "interstitial_oncotic_pressure": "Pa", "reflection_coefficient": "1",
                 "lymphatic_filtration": "1/(Pa s)", "lymphatic_pressure": "Pa"}
_PLASMA_UNITS = {"free_concentration": "mol/m^3", "liposomal_concentration": "mol/m^3", "infusion_duration": "s",
                 "liposome_half_life": "s", "albumin_bound_fraction": "1"}   # dose: in its own dose_unit
_TIME_UNITS = {"end": "s", "step": "s", "output_interval": "s", "tolerance": "1"}
_GEOMETRY_UNITS = {"tumour_radius": "m", "host_thickness": "m", "mesh_size": "m"}
_CARRIER_UNITS = {"diffusivity": "m^2/s", "vessel_permeability": "m/s", "reflection": "1", "hindrance": "1",
                  "clearance": "1/s"}


def observation_grid(mesh, voxel_size_mm: float) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and affine [mm] of an isotropic grid covering the mesh's bounding box (collective);
    2-D meshes (z = 0) get one slice."""
    x = mesh.geometry.x
    lo = x.min(axis=0) if x.size else np.full(3, np.inf)
    hi = x.max(axis=0) if x.size else np.full(3, -np.inf)
    mesh.comm.Allreduce(MPI.IN_PLACE, lo, op=MPI.MIN)
    mesh.comm.Allreduce(MPI.IN_PLACE, hi, op=MPI.MAX)
    extent_mm = (hi - lo) * 1e3
    counts = np.maximum(1, np.ceil(extent_mm / voxel_size_mm - 1e-9)).astype(int)
    if mesh.topology.dim == 2:
        counts[2] = 1
    centre_mm = 0.5 * (lo + hi) * 1e3
    affine = np.diag([voxel_size_mm] * 3 + [1.0])
    affine[:3, 3] = centre_mm - 0.5 * (counts - 1) * voxel_size_mm   # grid centred on the mesh
    return tuple(int(n) for n in counts), affine


def frame_stops(step: float, frame_times) -> list[tuple[float, bool]]:
    """Step end times [s] (and whether each is a frame time) of a run from 0 to the last frame
    time, with equal steps of at most ``step`` between consecutive positive frame times."""
    stops, last = [], 0.0
    for target in [t for t in frame_times if t > 0]:
        count = max(1, int(np.ceil((target - last) / step - 1e-9)))
        stops += [(last + (target - last) * i / count, False) for i in range(1, count)] + [(target, True)]
        last = target
    return stops


PH_MAP = Path("truth") / "ph.nii.gz"
"""The synthetic pH_e map of ``[observation.ph_map]``, relative to the output directory."""


def radial_ph_map(shape, affine_mm: np.ndarray, radius: float, ph_map: PhMapConfig) -> np.ndarray:
    """pH_e [1] at the voxel centres of a grid (``shape``, ``affine_mm`` [mm]): ``ph_map.core`` at the
    world origin, linear in the distance r [m] to ``ph_map.rim`` at ``radius`` [m], ``rim`` beyond."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).reshape(-1, 3)
    centres_m = (index @ affine_mm[:3, :3].T + affine_mm[:3, 3]) * 1e-3
    fraction = np.minimum(np.linalg.norm(centres_m, axis=1) / radius, 1.0)
    return (ph_map.core + (ph_map.rim - ph_map.core) * fraction).reshape(shape)


def _with_ph_map(config: TransportConfig, mesh, ph_map: PhMapConfig, comm, log) -> TransportConfig:
    """Write the synthetic pH_e map over the mesh's bounding box to ``PH_MAP`` (rank 0) and return
    ``config`` with it as ``[release] ph_map`` (collective)."""
    from hybrid.collective import on_rank0
    from hybrid.io.nifti import write_volume

    shape, affine = observation_grid(mesh, ph_map.voxel_size_mm)
    path = Path(config.output.directory) / PH_MAP
    volume = radial_ph_map(shape, affine, config.geometry.tumour_radius, ph_map)
    on_rank0(comm, lambda: write_volume(path, volume, affine, description="synthetic pH_e map [1]",
                                        intent_name="pH_e [1]"))
    comm.barrier()
    log(f"synthetic pH_e map: {ph_map.core:g} at the centre to {ph_map.rim:g} at r = "
        f"{config.geometry.tumour_radius:g} m, {shape[0]} x {shape[1]} x {shape[2]} voxels -> {PH_MAP}")
    return replace(config, release=replace(config.release, ph_map=path))


def _release_parameters(config: TransportConfig) -> dict:
    """The release law of pH-sensitive liposomes (table constants, hybrid/problems/release.py) and
    its pH_e (uniform, or the map's path relative to the output directory); {} otherwise."""
    if config.drug.formulation != "ph_sensitive":
        return {}
    ph_map = config.release.ph_map
    where = (str(Path(ph_map).relative_to(config.output.directory)) if Path(ph_map).is_relative_to(
        config.output.directory) else str(ph_map)) if ph_map is not None else None
    constants = {name: {"value": value, "unit": PH_LAW_UNITS[name]} for name, value in ph_law_constants().items()}
    ph = {"value": config.release.ph, "unit": "1"} if ph_map is None else {"map": where}
    return {"release": constants | {"ph": ph}}


def _parameters(config: TransportConfig, solver) -> dict:
    """Every parameter of the run with its unit (SI)."""
    model = solver.model
    carriers = {"free_drug": model.free} | ({"liposome": model.liposomal} if model.liposomal is not None else {})
    value = lambda v: float(v) if isinstance(v, (int, float, np.floating)) else "spatial field (see config)"
    with_units = lambda section, units: {name: {"value": getattr(section, name), "unit": units[name]}
                                         if name in units else getattr(section, name) for name in asdict(section)}
    tissue = lambda properties: {name: {"value": float(getattr(properties, name)), "unit": unit}
                                 for name, unit in _TUMOUR_UNITS.items()}
    derived = lambda properties: {
        "vascular_exchange_LpSV": {"value": properties.vascular_exchange, "unit": "1/(Pa s)"},
        "effective_pressure": {"value": properties.effective_pressure, "unit": "Pa"}}
    host = {} if config.host is None else {"host": tissue(config.host), "host_derived": derived(config.host)}
    geometry = config.geometry
    return _release_parameters(config) | host | {
        "tumour": tissue(config.tumour), "tumour_derived": derived(config.tumour),
        "geometry": {"shape": geometry.shape} | {name: {"value": float(getattr(geometry, name)), "unit": unit}
                                                 for name, unit in _GEOMETRY_UNITS.items()},
        "carriers": {name: {key: {"value": float(getattr(carrier, key)), "unit": unit}
                            for key, unit in _CARRIER_UNITS.items()} for name, carrier in carriers.items()},
        "release_rate": {"value": value(model.release_rate), "unit": "1/s"},
        "interstitial_fraction": {"value": float(model.interstitial_fraction), "unit": "1"},
        "surface_to_volume": {"value": value(model.surface_to_volume), "unit": "1/m"},
        "free_binding_ratio": {"value": float(model.free_binding_ratio), "unit": "1"},
        "free_uptake": {"model": config.free_drug.uptake,
                        "uptake_rate": {"value": float(config.free_drug.uptake_rate), "unit": "1/s"}},
        "cell_density": {"value": float(config.tissue.cell_density), "unit": "1/m^3"},
        "plasma": with_units(config.plasma, _PLASMA_UNITS),
        "flow": with_units(config.flow, {"far_field_pressure": "Pa"}), "formulation": config.drug.formulation,
        "time": with_units(config.time, _TIME_UNITS),
    }


def _write(out: Path, fields: dict, observed: dict, times, affine, observation: ObservationConfig,
           truth: dict) -> None:
    """All files (rank 0)."""
    from hybrid.io.nifti import write_series, write_volume

    for quantity, data in observed.items():
        name = "observations.nii.gz" if quantity == "total_drug" else f"{quantity}.nii.gz"
        write_series(out / name, data, affine,
                     {"FrameTimes_s": list(times), "Quantity": quantity, "Unit": QUANTITIES[quantity],
                      "NoiseModel": "additive Gaussian, sd = NoiseRelativeSD x max |noise-free value|",
                      "NoiseRelativeSD": observation.noise, "Seed": observation.seed,
                      "VoxelAveraging": f"midpoint rule, {observation.points_per_axis} points per axis"},
                     description=f"synthetic {quantity} [{QUANTITIES[quantity]}]")
    for name, data in fields.items():
        if name == "ifp":
            write_volume(out / "truth" / "ifp.nii.gz", data, affine, description="true IFP [Pa]",
                         intent_name="IFP [Pa]")
        else:
            unit = QUANTITIES.get(name, "mol/m^3 of tissue")
            write_series(out / "truth" / f"{name}.nii.gz", data, affine,
                         {"FrameTimes_s": list(times), "Quantity": name, "Unit": unit, "NoiseRelativeSD": 0.0},
                         description=f"true {name} [{unit}]")
    (out / "truth.json").write_text(json.dumps(truth, indent=2, default=str) + "\n")


def run_synthesize(config: TransportConfig, observation: ObservationConfig, comm: MPI.Comm, log) -> dict:
    """Run the twin and write the synthetic images and the truth into ``config.output.directory``
    (collective). Returns ``truth.json``'s content."""
    from hybrid.collective import on_rank0
    from hybrid.io.summary import software_versions

    stages: dict[str, float] = {}
    domain = None
    if observation.ph_map is not None:   # the FEM samples the synthetic map like a [release] ph_map
        domain = build_domain(config, comm, log, stages)
        config = _with_ph_map(config, domain.mesh, observation.ph_map, comm, log)
    setup = setup_transport(config, comm, log, stages, domain)
    solver, mesh = setup.solver, setup.domain.mesh
    shape, affine = observation_grid(mesh, observation.voxel_size_mm)
    observe = lambda function: observe_on_grid(function, shape, affine, points_per_axis=observation.points_per_axis)
    log(f"observation grid {shape[0]} x {shape[1]} x {shape[2]} voxels of {observation.voxel_size_mm:g} mm, "
        f"{len(observation.times)} frames")
    start = time.perf_counter()
    species = {name: [] for name in solver.names}   # with kinetic albumin binding also bound_drug
    times = observation.times
    try:
        def record():
            for name, function in zip(solver.names, solver.species()):
                species[name].append(observe(function))
        for _ in [t for t in times if t <= 0]:   # pre-injection frames: the initial (drug-free) state
            record()
        for stop, is_frame in frame_stops(config.time.step, times):
            solver.step(stop - solver.time)
            if is_frame:
                record()
        pressure = observe(setup.pressure) if setup.pressure is not None else None
    finally:
        solver.close()
        if setup.heat is not None:
            setup.heat.close()
    stages["stepping_and_sampling_s"] = time.perf_counter() - start
    fields = {name: np.stack(frames, axis=-1) for name, frames in species.items()}
    fields["total_drug"] = sum(fields[name] for name in solver.names)
    if "released_fraction" in observation.quantities:   # NaN where there is no drug (pre-injection)
        fields["released_fraction"] = released_fraction(fields["liposomal_drug"], fields["total_drug"])
    if pressure is not None:
        fields["ifp"] = pressure
    rng = np.random.default_rng(observation.seed)
    observed = {}
    for quantity in observation.quantities:
        clean = fields[quantity]
        sd = observation.noise * float(np.nanmax(np.abs(clean), initial=0.0))
        observed[quantity] = clean + sd * rng.standard_normal(clean.shape)
    truth = {"command": "synthesize", "config": config.source, "versions": software_versions(),
             "mpi_ranks": comm.size, "parameters": _parameters(setup.config, solver),
             "observation": asdict(observation) | {"voxel_size_unit": "mm", "times_unit": "s"},
             "grid": {"shape": list(shape), "affine_mm": affine.tolist()},
             "fields": {name: QUANTITIES.get(name, "Pa" if name == "ifp" else "mol/m^3 of tissue") for name in fields},
             "nodes": solver.concentrations.function_space.dofmap.index_map.size_global, "stages_s": stages}
    on_rank0(comm, lambda: _write(Path(config.output.directory), fields, observed, times, affine, observation, truth))
    return truth
