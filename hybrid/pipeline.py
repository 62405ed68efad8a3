"""Compose the stages into runs: ``hybrid forward`` (mesh -> IFP -> files), ``hybrid demo``,
``hybrid phantom`` and ``hybrid maps`` (quantitative MRI; serial numpy, no DOLFINx).

The FEM functions are collective over ``comm``; files are written by :mod:`hybrid.io`.
"""

from __future__ import annotations

import math
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from mpi4py import MPI

from hybrid.collective import everywhere, on_rank0
from hybrid.config import ForwardConfig, GeometryConfig, forward_config_from_dict
from hybrid.problems.exact import RadialSolution, radial_pressure

__all__ = ["build_mesh", "check_mesh_size", "closed_form_pressure", "ForwardRun", "run_forward", "run_demo", "DEMO_CONFIG", "on_rank0",
           "run_phantom", "run_maps", "MAP_UNITS"]

DIMENSION = {"slab": 1, "disc": 2, "sphere": 3}

DEMO_CONFIG = {
    "geometry": {"shape": "disc", "tumour_radius": 4.0e-3, "host_thickness": 2.0e-3, "mesh_size": 1.5e-4},
    "boundary": {"far_field_pressure": 0.0},
    "output": {"directory": "results/demo"},
}
"""Built-in phantom for ``hybrid demo``: a 2-D tumour (Baxter-Jain values) in host tissue."""


def build_mesh(geometry: GeometryConfig, comm: MPI.Comm):
    """The mesh that ``geometry`` describes, distributed over ``comm``: gmsh on rank 0 at
    ``mesh_size``, then ``refinements`` uniform refinements in parallel (hybrid.mesh.refine)."""
    from hybrid import mesh

    if geometry.shape in DIMENSION:
        coarse = mesh.tumour_mesh(comm, geometry.shape, geometry.tumour_radius, geometry.host_thickness,
                                  geometry.mesh_size, geometry.surface_mesh_size, geometry.refinement_width,
                                  partitioner=geometry.partitioner)
    elif geometry.shape == "krogh":
        coarse = mesh.krogh_mesh(comm, geometry.vessel_radius, geometry.tissue_radius, geometry.mesh_size,
                                 geometry.surface_mesh_size, partitioner=geometry.partitioner)
    elif geometry.shape == "mask":  # partitioned by the default partitioner
        from hybrid.io.nifti import read_volume

        mask, affine_mm = everywhere(comm, lambda: read_volume(geometry.mask))
        coarse = mesh.mask_mesh(comm, mask > 0, affine_mm, geometry.mesh_size, slice_index=geometry.slice_index,
                                host=geometry.field_of_view_host, surface_mesh_size=geometry.surface_mesh_size,
                                refinement_width=geometry.refinement_width)
    else:
        coarse = mesh.vessel_patch_mesh(comm, geometry.patch_size, geometry.vessel_radius, geometry.n_vessels,
                                        geometry.min_spacing, geometry.mesh_size, geometry.seed,
                                        geometry.surface_mesh_size, partitioner=geometry.partitioner)
    return mesh.refine_uniformly(coarse, geometry.refinements)


def peak_memory_mib(comm: MPI.Comm) -> list[float]:
    """Peak resident memory [MiB] of each rank of ``comm`` so far (getrusage), on every rank."""
    import resource

    return comm.allgather(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # Linux: KiB


BYTES_PER_CELL = 500
"""Lower bound of the memory one cell costs on the meshing rank (gmsh model + DOLFINx mesh) [B]."""

_CELL_MEASURE = {1: 1.0, 2: math.sqrt(3) / 4, 3: 1 / (6 * math.sqrt(2))}   # of a regular cell of edge 1


def check_mesh_size(geometry: GeometryConfig, memory_bytes: float | None = None) -> float:
    """Estimated number of cells of ``geometry``'s mesh (domain measure over the measure of a
    regular cell of edge ``mesh_size``, plus the refined band at the surface size); ValueError when
    at ``BYTES_PER_CELL`` they would not fit in ``memory_bytes`` (default: this machine's memory)."""
    g = geometry
    if g.shape in DIMENSION:
        dim = DIMENSION[g.shape]
        outer = g.tumour_radius + g.host_thickness
        measure = {1: 2 * outer, 2: math.pi * outer ** 2, 3: 4 / 3 * math.pi * outer ** 3}[dim]
        surface = {1: 2.0, 2: 2 * math.pi * g.tumour_radius, 3: 4 * math.pi * g.tumour_radius ** 2}[dim]
    elif g.shape == "mask":
        import nibabel

        dim = 2
        header = nibabel.load(str(g.mask)).header  # the header only: the grid's field of view
        nx, ny = header.get_data_shape()[:2]
        dx, dy = (1e-3 * z for z in header.get_zooms()[:2])
        measure, surface = nx * dx * ny * dy, 2 * (nx * dx + ny * dy)
    else:  # krogh, vessels: the vessel walls are refined to a quarter of the vessel radius
        dim = 2
        walls = 1 if g.shape == "krogh" else g.n_vessels
        measure = math.pi * g.tissue_radius ** 2 if g.shape == "krogh" else g.patch_size ** 2
        surface = walls * 2 * math.pi * g.vessel_radius
    cells = measure / (_CELL_MEASURE[dim] * g.mesh_size ** dim)
    if g.shape in ("krogh", "vessels"):
        fine, width = min(g.mesh_size, g.vessel_radius / 4), 4 * g.vessel_radius
    else:
        fine, width = g.surface_mesh_size or g.mesh_size, 1.5 * (g.refinement_width or 0.0)
    if fine < g.mesh_size:
        cells += min(surface * width, measure) / (_CELL_MEASURE[dim] * fine ** dim)
    if memory_bytes is None:
        memory_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if cells * BYTES_PER_CELL > memory_bytes:
        raise ValueError(f"[geometry] mesh_size = {g.mesh_size:g} m (surface {fine:g} m) would give about "
                         f"{cells:.2g} cells, {cells * BYTES_PER_CELL / 1e9:.3g} GB at {BYTES_PER_CELL} B per "
                         f"cell, beyond this machine's {memory_bytes / 1e9:.3g} GB; use larger mesh sizes")
    return cells


def closed_form_pressure(config: ForwardConfig) -> RadialSolution | None:
    """Baxter-Jain closed form for this run (Dirichlet, Robin or no-flux outer boundary, constant
    region coefficients), or None where none exists (perivascular or mask geometry, image fields)."""
    geometry = config.geometry
    if geometry.shape not in DIMENSION or config.ktrans_map:
        return None
    radius = geometry.tumour_radius
    regions = [config.tumour.radial_region(radius)]
    if config.host is not None:
        regions.append(config.host.radial_region(radius + geometry.host_thickness))
    robin = {"dirichlet": None, "robin": config.boundary.robin_coefficient, "no_flux": 0.0}[config.boundary.kind]
    return radial_pressure(DIMENSION[geometry.shape], regions, config.boundary.pressure, robin)


def _region_mean(function, domain, tag: int) -> float:
    """Volume average [unit of function] over cells tagged ``tag``."""
    import dolfinx.fem
    import ufl

    dx = ufl.Measure("dx", domain=domain.mesh, subdomain_data=domain.cell_tags)
    comm = domain.mesh.comm
    integral = comm.allreduce(dolfinx.fem.assemble_scalar(dolfinx.fem.form(function * dx(tag))), op=MPI.SUM)
    volume = comm.allreduce(dolfinx.fem.assemble_scalar(
        dolfinx.fem.form(dolfinx.fem.Constant(domain.mesh, 1.0) * dx(tag))), op=MPI.SUM)
    return integral / volume


def nodal_samples(function, comm: MPI.Comm) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates (n, 3) [m] and values of the owned degrees of freedom on this rank."""
    space = function.function_space
    owned = space.dofmap.index_map.size_local
    return space.tabulate_dof_coordinates()[:owned], function.x.array[:owned].copy()


def petsc_failure(exc: Exception) -> str:
    """One line from a PETSc error: its code and the messages of its stack, without file locations."""
    lines = [re.sub(r"^\[\d+\]\s*", "", line).strip() for line in str(exc).replace(" [", "\n[").splitlines()]
    messages = [line for line in lines if line and not re.search(r"\(\) at \S+:\d+$", line)]
    return "; ".join(messages)


def _solve(config: ForwardConfig, domain, fields: dict):
    """solve_ifp for this run; a PETSc failure (bad option, no convergence) as one ValueError line."""
    from petsc4py import PETSc

    from hybrid.forward import solve_ifp

    try:
        return solve_ifp(domain, config.tumour, config.boundary, config.host, degree=config.solver.degree,
                         petsc_options=config.solver.petsc_options, fields=fields)
    except PETSc.Error as exc:
        raise ValueError(f"the IFP linear solve failed (PETSc {petsc_failure(exc)}); check [solver] petsc_options "
                         f"{config.solver.petsc_options or '(none set)'}") from None


@dataclass
class ForwardRun:
    """What a forward run produced: the summary.json content and the live FEM objects."""

    summary: dict
    domain: object                 # hybrid.mesh.TumourMesh
    solution: object               # hybrid.forward.IFPSolution
    exact: RadialSolution | None   # closed form, where one exists


def run_forward(config: ForwardConfig, comm: MPI.Comm = MPI.COMM_WORLD, log=None) -> ForwardRun:
    """Mesh, solve the IFP problem, write ``ifp.xdmf`` and ``summary.json``."""
    from hybrid.io.fields import write_fields
    from hybrid.io.summary import software_versions, write_summary
    from hybrid.mesh import tags

    log = log or (lambda message: None)
    stages: dict[str, float] = {}
    start = time.perf_counter()
    geometry = config.geometry
    sizes = f"mesh_size {geometry.mesh_size:g} m"
    if geometry.surface_mesh_size is not None:
        sizes += f", surface {geometry.surface_mesh_size:g} m"
    everywhere(comm, lambda: check_mesh_size(geometry))
    refined = f", then {geometry.refinements} parallel refinement(s)" if geometry.refinements else ""
    log(f"meshing {geometry.shape} ({sizes}) on rank 0{refined}")
    domain = build_mesh(config.geometry, comm)
    stages["mesh_s"] = time.perf_counter() - start
    stages.update(domain.timings)   # meshing_s (gmsh, rank 0), distribution_s, refinement_s
    memory = {"after_mesh": peak_memory_mib(comm)}
    fields, image_stats = {}, None
    if config.ktrans_map is not None:
        from hybrid.forward.image_sampling import vascular_exchange_from_ktrans
        from hybrid.io.nifti import read_volume

        ktrans, affine_mm = everywhere(comm, lambda: read_volume(config.ktrans_map))
        slice_index = geometry.slice_index if domain.dim == 2 and ktrans.shape[2] > 1 else None
        fields["vascular_exchange"], image_stats = vascular_exchange_from_ktrans(
            domain, ktrans, affine_mm, config.tumour, config.host, slice_index=slice_index)
        log(f"Lp S/V scaled by Ktrans / region mean from {config.ktrans_map} (tumour mean "
            f"{image_stats['mean_tumour_ktrans_per_min']} /min)")
    log(f"solving IFP with degree {config.solver.degree} on {comm.size} rank(s)")
    # PETSc errors and non-convergence arise on every rank alike, so agreeing on them cannot hang
    solution = everywhere(comm, lambda: _solve(config, domain, fields))
    stages["assemble_s"] = solution.assemble_time_s
    stages["solve_s"] = solution.solve_time_s
    memory["after_solve"] = peak_memory_mib(comm)
    log(f"{solution.dofs} dofs, {solution.iterations} CG iterations, {solution.solve_time_s:.2f} s")

    if config.write_velocity:
        t0 = time.perf_counter()
        everywhere(comm, lambda: solution.velocity)   # the conservative flux, computed on first access
        stages["flux_s"] = time.perf_counter() - t0
        memory["after_flux"] = peak_memory_mib(comm)
    t0 = time.perf_counter()
    out = Path(config.output_directory)
    written = [solution.pressure, solution.velocity] if config.write_velocity else [solution.pressure]
    try:
        fields_bytes = write_fields(out / "ifp.xdmf", domain.mesh, written)
    except RuntimeError as exc:  # HDF5 reports a full disk or quota only as a failed write or close
        raise OSError(f"could not write {out / 'ifp.xdmf'} ({exc}); check the free space and quota of "
                      "the output directory") from exc
    stages["write_s"] = time.perf_counter() - t0
    memory["after_write"] = peak_memory_mib(comm)

    coords, values = nodal_samples(solution.pressure, comm)
    p_max = comm.allreduce(float(values.max(initial=-np.inf)), op=MPI.MAX)
    summary = {
        "command": "forward",
        "configuration": config.source,
        "resolved_geometry": asdict(config.geometry),
        "versions": software_versions(),
        "mpi_ranks": comm.size,
        "dofs": solution.dofs,
        "degree": config.solver.degree,
        "iterations": solution.iterations,
        "solve_time_s": solution.solve_time_s,
        "wall_time_s": stages,
        "p_max_Pa": p_max,
        "p_mean_tumour_Pa": _region_mean(solution.pressure, domain, tags.TUMOUR),
        "tumour_effective_pressure_Pa": config.tumour.effective_pressure,
        "rim_thickness_m": config.tumour.rim_thickness,
        "units": {"pressure": "Pa", "velocity": "m/s", "lengths": "m"},
        "mesh": {**domain.geometry, "cells": domain.mesh.topology.index_map(domain.dim).size_global,
                 "partitioner": geometry.partitioner},
        "peak_memory_MiB": {"per_rank": memory["after_write"],
                            **{f"max_{stage}": max(ranks) for stage, ranks in memory.items()}},
        "outputs": {"fields": "ifp.xdmf", "fields_bytes": fields_bytes,   # relative to the output directory
                    "fields_write_s": stages["write_s"]},
    }
    if image_stats is not None:
        summary["images"] = {"ktrans": config.source.get("images", {}).get("ktrans", str(config.ktrans_map)),
                             **image_stats}
    exact = closed_form_pressure(config)
    if exact is not None:
        dim = DIMENSION[config.geometry.shape]
        error = np.abs(values - exact.pressure(np.linalg.norm(coords[:, :dim], axis=1)))
        max_error = comm.allreduce(float(error.max(initial=0.0)), op=MPI.MAX)
        summary["closed_form"] = {
            "max_abs_error_Pa": max_error,
            "max_error_over_tumour_pe": max_error / config.tumour.effective_pressure,
            "where": "at the degrees of freedom of the pressure space",
        }
        log(f"max |p - p_exact| = {max_error:.3g} Pa = "
            f"{100 * max_error / config.tumour.effective_pressure:.3f} % of p_e")
    summary["wall_time_s"]["total_s"] = time.perf_counter() - start
    on_rank0(comm, lambda: write_summary(out / "summary.json", summary, MPI.COMM_SELF))
    return ForwardRun(summary, domain, solution, exact)


def _plot_pressure(run: ForwardRun, comm: MPI.Comm, path: Path, tumour_radius: float | None, log) -> None:
    """Gather the nodal pressure on rank 0 and draw the map and radial profile to ``path``."""
    from hybrid.report.figures import plot_radial_pressure

    gathered = comm.gather(nodal_samples(run.solution.pressure, comm), root=0)

    def plot() -> None:
        xy = np.concatenate([c for c, _ in gathered])[:, :2]
        p = np.concatenate([v for _, v in gathered])
        plot_radial_pressure(xy, p, run.exact, tumour_radius, path)
        log(f"wrote {path.name}")   # path is in the staging folder until the run commits

    on_rank0(comm, plot)


def run_demo(output_directory: Path, comm: MPI.Comm = MPI.COMM_WORLD, log=None) -> dict[str, ForwardRun]:
    """``hybrid demo``, two parts, each with its own ifp.xdmf, summary.json and figure:

    1. ``verification/``: 2-D tumour (Baxter-Jain values) in host tissue, IFP against the closed form;
    2. ``imaging/``: the digital MRI phantom -> DCE/CEST maps (``hybrid maps``) -> tumour mesh traced
       from the phantom's tumour mask -> IFP with Lp S/V scaled by the fitted Ktrans map.
    """
    from hybrid.io.nifti import read_volume, write_volume
    from hybrid.config import load_maps_config

    log = log or (lambda message: None)
    out = Path(output_directory)
    document = {**DEMO_CONFIG, "output": {"directory": str(out / "verification")}}
    config = forward_config_from_dict(document, "built-in demo")
    log("part 1/2: IFP in a 2-D tumour in host tissue, against the closed form")
    runs = {"verification": run_forward(config, comm, log)}
    _plot_pressure(runs["verification"], comm, out / "verification" / "ifp_demo.png",
                   config.geometry.tumour_radius, log)

    log("part 2/2: digital MRI phantom -> maps -> mask mesh -> IFP with Ktrans-scaled exchange")
    phantom_dir = out / "phantom"

    def imaging_stages() -> None:  # serial numpy
        maps_config = load_maps_config(run_phantom(phantom_dir, log))
        run_maps(maps_config, log)
        labels, affine_mm = read_volume(phantom_dir / "labels.nii.gz")
        write_volume(phantom_dir / "tumour_mask.nii.gz", labels >= 2, affine_mm, dtype=np.uint8,
                     description="hybrid phantom tumour (rim, core, necrotic)", intent_name="mask")

    on_rank0(comm, imaging_stages)
    imaging = {
        "geometry": {"shape": "mask", "mask": "phantom/tumour_mask.nii.gz", "mesh_size": 1.5e-4},
        "images": {"ktrans": "phantom/maps/Ktrans.nii.gz"},
        "output": {"directory": str(out / "imaging")},
    }
    config = forward_config_from_dict(imaging, "built-in demo (imaging)", base=out)
    runs["imaging"] = run_forward(config, comm, log)
    _plot_pressure(runs["imaging"], comm, out / "imaging" / "ifp_imaging.png", None, log)
    return runs


# ---- quantitative MRI: hybrid phantom, hybrid maps (serial numpy; no DOLFINx) -------------------

MAP_UNITS = {"Ktrans": "1/min", "ve": "fraction", "vp": "fraction", "PS": "1/min", "Fp": "mL/100mL/min",
             "delay_s": "s", "rss": "mM^2", "T1": "s", "pH": "pH", "ph_valid": "0/1"}
MAP_UNITS.update({f"{key}_se": MAP_UNITS[key] for key in ("Ktrans", "ve", "vp", "PS", "Fp", "delay_s")})
MAP_UNITS["dce_reason"] = "bit flags (hybrid.imaging.dce.REASONS)"
DCE_CHUNK = 4096   # voxels per DCE fit call (one progress line each)
CEST_CHUNK = 512   # voxels per CEST fit call


def _chunked(label: str, n: int, size: int, fit_chunk, log) -> dict[str, np.ndarray]:
    """``fit_chunk(slice)`` -> dict of (m,) arrays over ``n`` voxels in chunks, logging progress."""
    parts: list[dict] = []
    start = time.perf_counter()
    for first in range(0, n, size):
        parts.append(fit_chunk(slice(first, min(n, first + size))))
        done = min(n, first + size)
        log(f"{label}: {done}/{n} voxels ({100 * done // n} %), {time.perf_counter() - start:.1f} s")
    if not parts:
        raise ValueError(f"{label}: the mask selects no voxel")
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def _setting(config_value, sidecar: dict, key: str, what: str, series: Path, upper: float = math.inf) -> float:
    """A config value, else the sidecar's ``key`` (a number in (0, upper)), else a ValueError
    naming both."""
    from hybrid.io.nifti import sidecar_path

    if config_value is not None:
        return float(config_value)
    if key in sidecar:
        value = sidecar[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < upper:
            raise ValueError(f"{sidecar_path(series)} {key}: {what} must be a number in (0, {upper:g}), "
                             f"got {value!r}")
        return float(value)
    raise ValueError(f"{what} unknown: set it in the configuration or add {key} to the sidecar of {series}")


def _check_signal(series: Path, data: np.ndarray, warnings: list[str]) -> None:
    """ValueError if the series has no usable signal in the mask (``data``: (voxels, volumes));
    voxels whose series is all zero or not finite are counted in ``warnings``."""
    usable = np.isfinite(data).all(axis=1) & (np.abs(data) > 0).any(axis=1)
    if not usable.any():
        raise ValueError(f"{series}: no voxel of the mask has a finite, non-zero signal; nothing to fit "
                         "(check the image and the mask)")
    if not usable.all():
        warnings.append(f"{series}: {int((~usable).sum())} of {usable.size} voxels in the mask have an all-zero "
                        "or non-finite series")


REQUIRED_MAPS = ("Ktrans", "T1")
"""Maps that cannot be NaN in every voxel of the mask: a DCE or VFA fit that failed everywhere."""


def _check_maps(maps: dict[str, np.ndarray], mask: np.ndarray, warnings: list[str]) -> dict[str, int]:
    """Voxels of the mask where each map is NaN (its fit failed); ValueError if a map of
    ``REQUIRED_MAPS`` failed everywhere, a warning for any map that failed somewhere."""
    failed = {key: int(np.isnan(image[mask]).sum()) for key, image in maps.items()
              if np.issubdtype(image.dtype, np.floating)}
    for key, count in failed.items():
        if key in REQUIRED_MAPS and count == int(mask.sum()):
            raise ValueError(f"{key}: the fit failed in every voxel of the mask (all NaN); check the series, "
                             "their sidecars (TR, flip angle, timing) and the configuration")
        if count:
            warnings.append(f"{key}: NaN in {count} of {int(mask.sum())} voxels of the mask")
    return failed


def run_maps(config, log=None) -> dict:
    """``hybrid maps``: DCE/VFA/CEST NIfTI series -> parameter maps (NIfTI, source affine),
    ``maps.png`` and ``summary.json`` in ``config.output_directory``; returns the summary.

    Maps (float32, NaN outside the mask or where a fit failed): the DCE model's parameters
    (Ktrans [1/min], ve, vp, PS [1/min], Fp [mL/100 mL/min]), rss [mM^2], delay_s [s] with
    fit_delay, T1 [s] with [vfa], pH and ph_valid (uint8) with [cest]."""
    from hybrid.imaging import cest, dce
    from hybrid.io import nifti
    from hybrid.io.outputs import naming
    from hybrid.io.summary import software_versions, write_summary
    from hybrid.report.figures import plot_maps_overview

    log = log or (lambda message: None)
    start = time.perf_counter()
    stages: dict[str, float] = {}
    grid: tuple[str, tuple, np.ndarray] | None = None

    def on_grid(name: str, data: np.ndarray, affine: np.ndarray) -> None:
        nonlocal grid
        if grid is None:
            grid = (name, data.shape[:3], affine)
        else:
            nifti.check_same_grid(grid[0], grid[1], grid[2], name, data.shape, affine)

    dce_series = cest_series = vfa_series = None
    if config.dce is not None:
        dce_series = nifti.read_dce_series(config.dce.series)
        on_grid(str(config.dce.series), dce_series.data, dce_series.affine_mm)
    if config.vfa_series is not None:
        vfa_series = nifti.read_vfa_series(config.vfa_series)
        on_grid(str(config.vfa_series), vfa_series.data, vfa_series.affine_mm)
    if config.cest is not None:
        cest_series = nifti.read_cest_series(config.cest.series)
        on_grid(str(config.cest.series), cest_series.data, cest_series.affine_mm)
    shape, affine = grid[1], grid[2]
    if config.mask is not None:
        mask_data, mask_affine = nifti.read_volume(config.mask)
        on_grid(str(config.mask), mask_data, mask_affine)
        mask = mask_data > 0
    else:
        mask = np.ones(shape, dtype=bool)
    n = int(mask.sum())
    log(f"{n} voxels in the mask of a {shape} grid")
    if n == 0:
        raise ValueError(f"{config.mask}: the mask selects no voxel (no value > 0)")
    warnings: list[str] = []
    for path, series in ((config.dce and config.dce.series, dce_series), (config.vfa_series, vfa_series),
                         (config.cest and config.cest.series, cest_series)):
        if series is not None:
            _check_signal(path, series.data[mask], warnings)
    maps: dict[str, np.ndarray] = {}

    def put(values: dict[str, np.ndarray]) -> None:
        for key, flat in values.items():
            image = np.full(shape, np.nan)
            image[mask] = flat
            maps[key] = image

    t10 = dce_report = None
    if vfa_series is not None:
        t0 = time.perf_counter()
        tr = _setting(config.vfa_tr_s, vfa_series.metadata, "RepetitionTimeExcitation", "VFA TR [s]",
                      config.vfa_series)
        t1, _ = dce.fit_t1_vfa(vfa_series.data[mask], vfa_series.axis, tr)
        put({"T1": t1})
        t10 = t1
        stages["vfa_s"] = time.perf_counter() - t0
        log(f"T1 from {vfa_series.axis.size} flip angles: median {np.nanmedian(t1):.3g} s")
    if dce_series is not None:
        t0 = time.perf_counter()
        settings = config.dce
        tr = _setting(settings.tr_s, dce_series.metadata, "RepetitionTimeExcitation", "DCE TR [s]", settings.series)
        fa = _setting(settings.flip_angle_deg, dce_series.metadata, "FlipAngle", "DCE flip angle [deg]",
                      settings.series, 180.0)
        conc = dce.signal_to_concentration(dce_series.data[mask], t10_s=settings.t10_s if t10 is None else t10,
                                           r1_per_mM_s=settings.r1_per_mM_s, tr_s=tr, flip_angle_deg=fa,
                                           n_baseline=settings.n_baseline)
        times = dce_series.axis
        if settings.aif == "measured":
            aif_mask, aif_affine = nifti.read_volume(settings.aif_mask)
            on_grid(str(settings.aif_mask), aif_mask, aif_affine)
            cp = dce.plasma_aif_from_blood_signal(
                dce_series.data, aif_mask > 0, t10_s=settings.blood_t10_s, tr_s=tr, flip_angle_deg=fa,
                r1_per_mM_s=settings.blood_r1_per_mM_s or settings.r1_per_mM_s, n_baseline=settings.n_baseline,
                hct=settings.hematocrit)
        else:
            cp = dce.population_plasma_aif(settings.aif, times, settings.aif_delay_s, settings.hematocrit)
        log(f"DCE AIF: {settings.aif}, plasma peak {cp.max():.3g} mM")
        fitted = _chunked(f"DCE {settings.model}", n, DCE_CHUNK,
                          lambda part: dce.fit(times, conc[part], cp, settings.model, settings.fit_delay), log)
        if not settings.fit_delay:
            fitted.pop("delay_s")
        reason = fitted.pop("reason")
        put(fitted)
        maps["dce_reason"] = np.full(shape, 1, dtype=np.uint8)   # 1: not fitted (outside the mask)
        maps["dce_reason"][mask] = reason
        dce_report = {"aif": settings.aif, "plasma_aif_peak_mM": float(cp.max()),
                      "unconvertible_voxels": int((~np.isfinite(conc)).any(axis=1).sum()),
                      "unconvertible_samples": int((~np.isfinite(conc)).sum()),
                      "reason_counts": {str(bit): int(((reason & bit) > 0).sum()) for bit in dce.REASONS},
                      "reason_codes": {str(bit): text for bit, text in dce.REASONS.items()}}
        stages["dce_s"] = time.perf_counter() - t0
    cest_report = None
    if cest_series is not None:
        t0 = time.perf_counter()
        settings = config.cest
        calibration = cest.PhCalibration.fit(settings.calibration_ratio, settings.calibration_ph,
                                             settings.calibration_degree)
        cest_report = {"ratio": settings.ratio, "calibration_degree": calibration.degree,
                       "calibration_loo_rms_ph": calibration.loo_rms_ph,
                       "calibration_loo_rms_by_degree": {str(d): v if np.isfinite(v) else None   # NaN: not monotone
                                                         for d, v in calibration.loo_rms_by_degree.items()}}
        log(f"pH calibration: degree {calibration.degree}, leave-one-out error {calibration.loo_rms_ph:.3f} pH")
        z = cest_series.data[mask]

        def fit_ph(part):
            ph, valid = cest.ph_map(cest_series.axis, z[part], calibration, shifts_ppm=settings.shifts_ppm,
                                    method=settings.ratio, mt=settings.mt, hydroxyl=settings.hydroxyl,
                                    endogenous=settings.endogenous)
            return {"pH": ph, "ph_valid": valid}

        put(_chunked("CEST pH", n, CEST_CHUNK, fit_ph, log))
        maps["ph_valid"] = np.nan_to_num(maps["ph_valid"]).astype(np.uint8)
        stages["cest_s"] = time.perf_counter() - t0

    failed_voxels = _check_maps(maps, mask, warnings)
    for warning in warnings:
        log(f"warning: {warning}")
    out = Path(config.output_directory)
    outputs = {}
    for key, image in maps.items():
        unit = MAP_UNITS.get(key, "")
        dtype = np.uint8 if key in ("ph_valid", "dce_reason") else np.float32
        nifti.write_volume(out / f"{key}.nii.gz", image, affine, dtype=dtype, description=f"hybrid maps: {key} [{unit}]",
                           intent_name=f"{key} [{unit}]")
        outputs[key] = f"{key}.nii.gz"   # relative to the output directory
    figure = out / "maps.png"
    with naming(figure):
        plot_maps_overview({key: (image, MAP_UNITS.get(key, "")) for key, image in maps.items()}, figure)
    outputs["figure"] = figure.name
    stages["total_s"] = time.perf_counter() - start
    summary = {
        "command": "maps",
        "configuration": config.source,
        "versions": software_versions(),
        "grid_shape": list(shape),
        "affine_mm": affine,
        "voxels_fitted": n,
        "wall_time_s": stages,
        "median_in_mask": {key: float(np.nanmedian(image[mask])) if np.isfinite(image[mask]).any() else None
                           for key, image in maps.items() if key not in ("ph_valid", "dce_reason")},
        "ph_valid_fraction": float(maps["ph_valid"][mask].mean()) if "ph_valid" in maps else None,
        "dce": dce_report,
        "cest": cest_report,
        "failed_voxels": failed_voxels,
        "warnings": warnings,
        "units": MAP_UNITS,
        "outputs": outputs,
    }
    write_summary(out / "summary.json", summary, MPI.COMM_SELF)
    log(f"wrote {len(maps)} maps, {figure.name} and summary.json")
    return summary


def run_phantom(output_directory: Path, log=None, *, shape=(64, 64, 2), voxel_mm=(0.25, 0.25, 1.0),
                seed: int = 0) -> Path:
    """``hybrid phantom``: write the digital phantom's DCE, VFA and CEST series (NIfTI + JSON
    sidecars), mask.nii.gz, labels.nii.gz, the true maps under truth/, and a ready ``maps.toml``
    (paths relative to it); returns the path of maps.toml."""
    from hybrid.imaging import phantom
    from hybrid.io import nifti
    from hybrid.io.toml import write_toml

    log = log or (lambda message: None)
    out = Path(output_directory)
    t0 = time.perf_counter()
    p = phantom.make_phantom(shape, voxel_mm, seed=seed)
    log(f"phantom {p.labels.shape} built in {time.perf_counter() - t0:.1f} s (seed {seed})")
    s, c = phantom.DCE_SETTINGS, phantom.CEST_SETTINGS
    nifti.write_series(out / "dce.nii.gz", p.dce, p.affine_mm, description="hybrid phantom DCE SPGR signal",
                       sidecar={"FrameTimes_s": p.frame_times_s.tolist(), "RepetitionTimeExcitation": s["tr_s"],
                                "FlipAngle": s["flip_angle_deg"], "ContrastAgentRelaxivity_per_mM_s": s["r1_per_mM_s"]})
    nifti.write_series(out / "vfa.nii.gz", p.vfa, p.affine_mm, description="hybrid phantom VFA SPGR signal",
                       sidecar={"FlipAngles_deg": list(s["vfa_deg"]), "RepetitionTimeExcitation": s["tr_s"]})
    nifti.write_series(out / "cest.nii.gz", p.cest, p.affine_mm, description="hybrid phantom iopamidol CEST",
                       sidecar={"offsets_ppm": p.offsets_ppm.tolist(), "MagneticFieldStrength": c["b0_T"],
                                "SaturationB1_T": c["b1_T"], "SaturationTime_s": c["t_sat_s"]})
    nifti.write_volume(out / "mask.nii.gz", p.labels > 0, p.affine_mm, dtype=np.uint8,
                       description="hybrid phantom tissue mask", intent_name="mask")
    nifti.write_volume(out / "labels.nii.gz", p.labels, p.affine_mm, dtype=np.uint8,
                       description="0 air 1 host 2 rim 3 core 4 necrotic", intent_name="labels")
    for key, image in p.truth.items():
        nifti.write_volume(out / "truth" / f"{key}.nii.gz", image, p.affine_mm,
                           description=f"hybrid phantom true {key}", intent_name=key)
    config = {
        "dce": {"series": "dce.nii.gz", "model": "extended_tofts", "r1_per_mM_s": s["r1_per_mM_s"],
                "n_baseline": p.n_baseline, "aif": s["aif"], "hematocrit": s["hematocrit"],
                "aif_delay_s": s["aif_delay_s"]},
        "vfa": {"series": "vfa.nii.gz"},
        "cest": {"series": "cest.nii.gz", "ratio": c["ratio"], "calibration_ph": p.calibration_ph.tolist(),
                 "calibration_ratio": p.calibration_ratio.tolist()},
        "mask": {"path": "mask.nii.gz"},
        "output": {"directory": "maps"},
    }
    path = write_toml(out / "maps.toml", config, header="hybrid maps configuration for the digital phantom "
                      "(keys and units: hybrid/config.py MapsConfig).\nPaths are relative to this file.")
    log(f"wrote dce/vfa/cest series, mask, labels, truth/ and {path.name}")
    return path
