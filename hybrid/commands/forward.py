"""``hybrid forward``: mesh -> IFP solve -> ``ifp.xdmf`` and ``summary.json`` (collective over ``comm``)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from mpi4py import MPI

from hybrid.collective import everywhere, on_rank0, peak_memory_mib, petsc_failure
from hybrid.config import ForwardConfig
from hybrid.mesh.geometry import DIMENSION, build_mesh, check_mesh_size
from hybrid.problems.exact import RadialSolution
from hybrid.problems.ifp import closed_form_pressure

__all__ = ["ForwardRun", "run_forward", "closed_form"]


def closed_form(config: ForwardConfig) -> RadialSolution | None:
    """Baxter-Jain closed form for this run, or None where none exists (perivascular or mask
    geometry, image fields)."""
    geometry = config.geometry
    if geometry.shape not in DIMENSION or config.images.ktrans:
        return None
    return closed_form_pressure(DIMENSION[geometry.shape], geometry.tumour_radius, config.tumour,
                                config.boundary.outer_boundary(), config.host, geometry.host_thickness)


def _solve(config: ForwardConfig, domain, fields: dict, degree: int | None = None):
    """solve_ifp for this run (``degree``: the configured one unless given); a PETSc failure (bad
    option, no convergence) as one ValueError line."""
    from petsc4py import PETSc

    from hybrid.forward import solve_ifp

    try:
        return solve_ifp(domain, config.tumour, config.boundary.outer_boundary(), config.host,
                         degree=degree or config.solver.degree, petsc_options=config.solver.petsc_options,
                         fields=fields)
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
    from hybrid.forward.sampling import nodal_samples, region_mean
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
    if geometry.rim_refinements:
        refined += (f", then {geometry.rim_refinements} parallel rim refinement(s) within "
                    f"{geometry.rim_band:g} m of the tumour surface")
    log(f"meshing {geometry.shape} ({sizes}) on rank 0{refined}")
    domain = build_mesh(config.geometry, comm)
    stages["mesh_s"] = time.perf_counter() - start
    stages.update(domain.timings)   # meshing_s (gmsh, rank 0), distribution_s, refinement_s
    memory = {"after_mesh": peak_memory_mib(comm)}
    ktrans_image = None
    if config.images.ktrans is not None:
        from hybrid.io.nifti import read_volume

        ktrans_image = everywhere(comm, lambda: read_volume(config.images.ktrans))

    def image_fields(mesh) -> tuple[dict, dict | None]:
        """The coefficient fields of ``[images]`` on ``mesh`` and their statistics (none without images)."""
        if ktrans_image is None:
            return {}, None
        from hybrid.forward.image_sampling import vascular_exchange_from_ktrans

        ktrans, affine_mm = ktrans_image
        slice_index = geometry.slice_index if mesh.dim == 2 and ktrans.shape[2] > 1 else None
        exchange, _, stats = vascular_exchange_from_ktrans(mesh, ktrans, affine_mm, config.tumour, config.host,
                                                           slice_index=slice_index,
                                                           label=f"Ktrans map {config.images.ktrans}")
        return {"vascular_exchange": exchange}, stats

    if geometry.adaptive_dofs:
        from hybrid.forward.adaptive import adapt_to_budget

        log("refining adaptively (P1 residual indicator, Doerfler marking, longest-edge bisection, guarded "
            f"smoothing) to {geometry.adaptive_dofs} P1 DOFs")
        domain = everywhere(comm, lambda: adapt_to_budget(
            domain, lambda mesh: _solve(config, mesh, image_fields(mesh)[0], degree=1), geometry.adaptive_dofs))
        stages["adaptive_s"] = domain.timings["adaptive_s"]
        memory["after_adaptive"] = peak_memory_mib(comm)
        log(f"{domain.geometry['adaptive_steps']} adaptive refinement(s) in {stages['adaptive_s']:.2f} s")
    fields, image_stats = image_fields(domain)
    if image_stats is not None:
        log(f"Lp S/V scaled by Ktrans / region mean from {config.images.ktrans.name} (tumour mean "
            f"{image_stats['mean_tumour_ktrans_per_min']:.3g} /min)")
    log(f"solving IFP with degree {config.solver.degree} on {comm.size} rank(s)")
    # PETSc errors and non-convergence arise on every rank alike, so agreeing on them cannot hang
    solution = everywhere(comm, lambda: _solve(config, domain, fields))
    stages["assemble_s"] = solution.assemble_time_s
    stages["solve_s"] = solution.solve_time_s
    memory["after_solve"] = peak_memory_mib(comm)
    log(f"{solution.dofs} dofs, {solution.iterations} CG iterations, {solution.solve_time_s:.2f} s")

    if config.output.velocity:
        t0 = time.perf_counter()
        everywhere(comm, lambda: solution.velocity)   # the conservative flux, computed on first access
        stages["flux_s"] = time.perf_counter() - t0
        memory["after_flux"] = peak_memory_mib(comm)
    t0 = time.perf_counter()
    out = Path(config.output.directory)
    written = [solution.pressure, solution.velocity] if config.output.velocity else [solution.pressure]
    try:
        fields_bytes = write_fields(out / "ifp.xdmf", domain.mesh, written)
    except RuntimeError as exc:  # HDF5 reports a full disk or quota only as a failed write or close
        raise OSError(f"could not write {out / 'ifp.xdmf'} ({exc}); check the free space and quota of "
                      "the output directory") from exc
    stages["write_s"] = time.perf_counter() - t0
    memory["after_write"] = peak_memory_mib(comm)

    coords, values = nodal_samples(solution.pressure)
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
        "p_mean_tumour_Pa": region_mean(solution.pressure, domain, tags.TUMOUR),
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
        summary["images"] = {"ktrans": config.source.get("images", {}).get("ktrans", str(config.images.ktrans)),
                             **image_stats}
    exact = closed_form(config)
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
