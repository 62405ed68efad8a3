"""Compose the stages into runs: ``hybrid forward`` (mesh -> IFP -> files) and ``hybrid demo``.

Every function here is collective over ``comm``; files are written by :mod:`hybrid.io`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from mpi4py import MPI

from hybrid.config import ForwardConfig, GeometryConfig, forward_config_from_dict
from hybrid.problems.exact import RadialRegion, RadialSolution, radial_pressure, screening

__all__ = ["build_mesh", "closed_form_pressure", "ForwardRun", "run_forward", "run_demo", "DEMO_CONFIG"]

DIMENSION = {"slab": 1, "disc": 2, "sphere": 3}

DEMO_CONFIG = {
    "geometry": {"shape": "disc", "tumour_radius": 4.0e-3, "host_thickness": 2.0e-3, "mesh_size": 1.5e-4},
    "boundary": {"far_field_pressure": 0.0},
    "output": {"directory": "results/demo"},
}
"""Built-in phantom for ``hybrid demo``: a 2-D tumour (Baxter-Jain values) in host tissue."""


def build_mesh(geometry: GeometryConfig, comm: MPI.Comm):
    """The mesh that ``geometry`` describes, distributed over ``comm``."""
    from hybrid import mesh

    if geometry.shape in DIMENSION:
        return mesh.tumour_mesh(comm, geometry.shape, geometry.tumour_radius, geometry.host_thickness,
                                geometry.mesh_size, geometry.surface_mesh_size, geometry.refinement_width)
    if geometry.shape == "krogh":
        return mesh.krogh_mesh(comm, geometry.vessel_radius, geometry.tissue_radius, geometry.mesh_size,
                               geometry.surface_mesh_size)
    return mesh.vessel_patch_mesh(comm, geometry.patch_size, geometry.vessel_radius, geometry.n_vessels,
                                  geometry.min_spacing, geometry.mesh_size, geometry.seed,
                                  geometry.surface_mesh_size)


def closed_form_pressure(config: ForwardConfig) -> RadialSolution | None:
    """Baxter-Jain closed form for this run, or None where none exists (perivascular, non-Dirichlet)."""
    geometry = config.geometry
    if geometry.shape not in DIMENSION or config.boundary.kind != "dirichlet":
        return None
    regions = []
    radius = geometry.tumour_radius
    for props, outer in ((config.tumour, radius), (config.host, radius + geometry.host_thickness)):
        if props is None:
            break
        lam, p_inf = screening(props.hydraulic_conductivity, props.vascular_exchange, props.effective_pressure,
                               props.lymphatic_filtration, props.lymphatic_pressure)
        regions.append(RadialRegion(outer, props.hydraulic_conductivity, lam, p_inf))
    return radial_pressure(DIMENSION[geometry.shape], regions, config.boundary.pressure)


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


@dataclass
class ForwardRun:
    """What a forward run produced: the summary.json content and the live FEM objects."""

    summary: dict
    domain: object                 # hybrid.mesh.TumourMesh
    solution: object               # hybrid.forward.IFPSolution
    exact: RadialSolution | None   # closed form, where one exists


def run_forward(config: ForwardConfig, comm: MPI.Comm = MPI.COMM_WORLD, log=None) -> ForwardRun:
    """Mesh, solve the IFP problem, write ``ifp.xdmf`` and ``summary.json``."""
    from hybrid.forward import solve_ifp
    from hybrid.io.fields import write_fields
    from hybrid.io.summary import software_versions, write_summary
    from hybrid.mesh import tags

    log = log or (lambda message: None)
    stages: dict[str, float] = {}
    start = time.perf_counter()
    log(f"meshing {config.geometry.shape} (mesh_size {config.geometry.mesh_size:g} m, "
        f"surface {config.geometry.surface_mesh_size:g} m) on rank 0")
    domain = build_mesh(config.geometry, comm)
    stages["mesh_s"] = time.perf_counter() - start
    log(f"solving IFP with degree {config.solver.degree} on {comm.size} rank(s)")
    solution = solve_ifp(domain, config.tumour, config.boundary, config.host, degree=config.solver.degree,
                         petsc_options=config.solver.petsc_options)
    stages["assemble_s"] = solution.assemble_time_s
    stages["solve_s"] = solution.solve_time_s
    log(f"{solution.dofs} dofs, {solution.iterations} CG iterations, {solution.solve_time_s:.2f} s")

    t0 = time.perf_counter()
    out = Path(config.output_directory)
    write_fields(out / "ifp.xdmf", domain.mesh, [solution.pressure, solution.velocity])
    stages["write_s"] = time.perf_counter() - t0

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
        "outputs": {"fields": str(out / "ifp.xdmf")},
    }
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
    write_summary(out / "summary.json", summary, comm)
    return ForwardRun(summary, domain, solution, exact)


def run_demo(output_directory: Path, comm: MPI.Comm = MPI.COMM_WORLD, log=None) -> ForwardRun:
    """The built-in phantom: 2-D tumour in host tissue -> IFP fields, summary and a figure."""
    from hybrid.report.figures import plot_radial_pressure

    document = {**DEMO_CONFIG, "output": {"directory": str(output_directory)}}
    config = forward_config_from_dict(document, "built-in demo")
    run = run_forward(config, comm, log)
    coords, values = nodal_samples(run.solution.pressure, comm)
    gathered = comm.gather((coords, values), root=0)
    if comm.rank == 0:
        xy = np.concatenate([c for c, _ in gathered])[:, :2]
        p = np.concatenate([v for _, v in gathered])
        figure = Path(output_directory) / "ifp_demo.png"
        plot_radial_pressure(xy, p, run.exact, config.geometry.tumour_radius, figure)
        log(f"wrote {figure}")
    return run
