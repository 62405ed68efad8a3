"""Steady interstitial fluid pressure (Baxter & Jain 1989) with DOLFINx, under MPI.

Strong form, per tissue region (SI units; ``shared/reference/physics.md`` §1.1)::

    -div(K grad p) = Lp S/V (p_e - p) - LpL SL/V (p - p_L)        in the tissue
    p_e = p_v - sigma (pi_v - pi_i)
    K grad p . n   = Lp (p_e - p)          on explicit vessel walls (Krogh / vessel patch)
    p = p_far  |  -K grad p . n = h (p - p_far)  |  no flux       on the outer boundary

The Darcy velocity ``u = -K grad p`` [m/s] is L2-projected onto continuous P1 for output.
Coefficients are piecewise constant over the tagged regions (tumour, host) unless a field
(a DOLFINx ``Function``, e.g. sampled from an image) replaces one of them.
Linear solver: CG preconditioned by GAMG (the PETSc in the PyPI wheel has no hypre);
any PETSc option can be overridden.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import ufl
from mpi4py import MPI

import dolfinx.fem
import dolfinx.fem.petsc

from hybrid.mesh import TumourMesh, tags
from hybrid.problems.ifp import OuterBoundary, TissueProperties

__all__ = ["OuterBoundary", "IFPSolution", "solve_ifp", "darcy_velocity", "region_coefficient", "solve_linear",
           "LinearSolveStats", "DEFAULT_PETSC_OPTIONS"]

DEFAULT_PETSC_OPTIONS = {
    "ksp_type": "cg",
    "pc_type": "gamg",
    "ksp_rtol": 1e-10,
    "ksp_atol": 1e-30,
    "ksp_max_it": 1000,
    "ksp_error_if_not_converged": True,
}


@dataclass
class IFPSolution:
    """Pressure [Pa] (degree of the solve), P1 Darcy velocity [m/s] and solver statistics:
    ``assemble_time_s`` covers coefficients, form compilation and assembly with boundary
    conditions; ``solve_time_s`` the preconditioner set-up and Krylov iterations."""

    pressure: dolfinx.fem.Function
    velocity: dolfinx.fem.Function
    dofs: int
    iterations: int
    solve_time_s: float
    assemble_time_s: float


def region_coefficient(domain: TumourMesh, values: dict[int, float], name: str) -> dolfinx.fem.Function:
    """A DG0 function equal to ``values[tag]`` on the cells of each region tag."""
    space = dolfinx.fem.functionspace(domain.mesh, ("DG", 0))
    coefficient = dolfinx.fem.Function(space, name=name)
    coefficient.x.array[:] = np.nan
    for tag, value in values.items():
        cells = domain.cell_tags.find(tag)
        coefficient.x.array[space.dofmap.list[cells].ravel()] = value
    coefficient.x.scatter_forward()
    local = space.dofmap.index_map.size_local
    if np.isnan(coefficient.x.array[:local]).any():
        raise ValueError(f"{name}: some cells carry no region tag (expected tags {sorted(values)})")
    return coefficient


def _coefficients(domain: TumourMesh, tumour: TissueProperties, host: TissueProperties | None,
                  fields: dict[str, dolfinx.fem.Function]) -> dict[str, object]:
    """UFL coefficients K, Lp S/V, p_e, LpL SL/V, p_L: each piecewise per region or a given field."""
    regions = {tags.TUMOUR: tumour}
    if host is not None and tags.HOST in domain.cell_tags.values:
        regions[tags.HOST] = host
    explicit_vessels = bool(domain.vessel_wall_tags)
    if explicit_vessels:  # vessels are resolved: no volume-averaged Starling source
        regions = {tag: replace(props, vessel_surface_density=0.0) for tag, props in regions.items()}
    per_region = {
        "hydraulic_conductivity": lambda p: p.hydraulic_conductivity,
        "vascular_exchange": lambda p: p.vascular_exchange,
        "effective_pressure": lambda p: p.effective_pressure,
        "lymphatic_filtration": lambda p: p.lymphatic_filtration,
        "lymphatic_pressure": lambda p: p.lymphatic_pressure,
    }
    unknown = set(fields) - set(per_region)
    if unknown:
        raise ValueError(f"unknown coefficient fields {sorted(unknown)}; allowed: {sorted(per_region)}")
    return {
        name: fields[name] if name in fields
        else region_coefficient(domain, {t: get(p) for t, p in regions.items()}, name)
        for name, get in per_region.items()
    }


def solve_ifp(domain: TumourMesh, tumour: TissueProperties, boundary: OuterBoundary,
              host: TissueProperties | None = None, *, degree: int = 1,
              petsc_options: dict | None = None,
              fields: dict[str, dolfinx.fem.Function] | None = None,
              source=None) -> IFPSolution:
    """Solve the steady Darcy-Starling problem on ``domain`` (see the module docstring).

    ``fields`` may replace any of the region coefficients ``hydraulic_conductivity`` [m^2/(Pa s)],
    ``vascular_exchange`` (Lp S/V) [1/(Pa s)], ``effective_pressure`` [Pa],
    ``lymphatic_filtration`` [1/(Pa s)], ``lymphatic_pressure`` [Pa] by a DOLFINx Function or UFL
    expression.
    ``source`` is an optional extra volume source [1/s] (UFL), used by manufactured-solution
    tests. ``petsc_options`` update :data:`DEFAULT_PETSC_OPTIONS`.
    """
    if degree not in (1, 2, 3):
        raise ValueError(f"degree must be 1, 2 or 3, got {degree}")
    t0 = time.perf_counter()
    mesh = domain.mesh
    c = _coefficients(domain, tumour, host, fields or {})
    K, exchange = c["hydraulic_conductivity"], c["vascular_exchange"]
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", degree))
    p, q = ufl.TrialFunction(V), ufl.TestFunction(V)
    ds = ufl.Measure("ds", domain=mesh, subdomain_data=domain.facet_tags)
    # Scale so stiffness entries are O(1), like the unit diagonal of Dirichlet rows.
    scale = 1.0 / (tumour.hydraulic_conductivity * _mesh_size(mesh) ** (mesh.topology.dim - 2))
    a = scale * (ufl.inner(K * ufl.grad(p), ufl.grad(q)) + (exchange + c["lymphatic_filtration"]) * p * q) * ufl.dx
    L = scale * (exchange * c["effective_pressure"] + c["lymphatic_filtration"] * c["lymphatic_pressure"]) * q * ufl.dx
    if source is not None:
        L += scale * source * q * ufl.dx
    for wall in domain.vessel_wall_tags:  # Starling flux through resolved vessel walls
        a += scale * tumour.filtration_coefficient * p * q * ds(wall)
        L += scale * tumour.filtration_coefficient * tumour.effective_pressure * q * ds(wall)
    bcs = []
    outer = domain.outer_tags
    if boundary.kind == "dirichlet":
        facets = np.concatenate([domain.facet_tags.find(t) for t in outer])
        dofs = dolfinx.fem.locate_dofs_topological(V, mesh.topology.dim - 1, facets)
        bcs.append(dolfinx.fem.dirichletbc(dolfinx.default_scalar_type(boundary.pressure), dofs, V))
    elif boundary.kind == "robin":
        h = boundary.robin_coefficient
        for t in outer:
            a += scale * h * p * q * ds(t)
            L += scale * h * boundary.pressure * q * ds(t)
    pressure = dolfinx.fem.Function(V, name="pressure")
    t1 = time.perf_counter()
    stats = solve_linear(a, L, bcs, pressure, DEFAULT_PETSC_OPTIONS | (petsc_options or {}), "hybrid_ifp_")
    velocity = darcy_velocity(pressure, K)
    dofs = V.dofmap.index_map.size_global * V.dofmap.index_map_bs
    return IFPSolution(pressure, velocity, dofs, stats.iterations, stats.solve_s,
                       (t1 - t0) + stats.assemble_s)


@dataclass(frozen=True)
class LinearSolveStats:
    """Wall times [s] of assembling (forms compiled, matrix, rhs, boundary conditions) and solving
    (preconditioner set-up + Krylov iterations), and the iteration count."""

    assemble_s: float
    solve_s: float
    iterations: int


def solve_linear(a, L, bcs, solution: dolfinx.fem.Function, options: dict, prefix: str) -> LinearSolveStats:
    """Assemble ``a u = L`` with Dirichlet ``bcs`` and solve it into ``solution`` with PETSc options
    ``options`` (under ``prefix``, so a user's -prefix_ksp_* options also apply)."""
    from petsc4py import PETSc

    t0 = time.perf_counter()
    a_form, L_form = dolfinx.fem.form(a), dolfinx.fem.form(L)
    A = dolfinx.fem.petsc.assemble_matrix(a_form, bcs=bcs)
    A.assemble()
    b = dolfinx.fem.petsc.assemble_vector(L_form)
    dolfinx.fem.petsc.apply_lifting(b, [a_form], bcs=[bcs])
    b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
    dolfinx.fem.petsc.set_bc(b, bcs)
    t1 = time.perf_counter()
    solver = PETSc.KSP().create(solution.function_space.mesh.comm)
    solver.setOptionsPrefix(prefix)
    database = PETSc.Options()
    for key, value in options.items():
        database[prefix + key] = value
    try:
        solver.setOperators(A)
        solver.setFromOptions()
        solver.solve(b, solution.x.petsc_vec)
        solution.x.scatter_forward()
        iterations = solver.getIterationNumber()
    finally:
        for key in options:
            database.delValue(prefix + key)
        for petsc_object in (solver, A, b):
            petsc_object.destroy()
    return LinearSolveStats(t1 - t0, time.perf_counter() - t1, iterations)


def darcy_velocity(pressure: dolfinx.fem.Function, conductivity) -> dolfinx.fem.Function:
    """L2 projection of ``u = -K grad p`` [m/s] onto continuous vector P1."""
    mesh = pressure.function_space.mesh
    W = dolfinx.fem.functionspace(mesh, ("Lagrange", 1, (mesh.geometry.dim,)))
    u, w = ufl.TrialFunction(W), ufl.TestFunction(W)
    mass_scale = 1.0 / _mesh_size(mesh) ** mesh.topology.dim
    a = mass_scale * ufl.inner(u, w) * ufl.dx
    L = mass_scale * ufl.inner(-conductivity * ufl.grad(pressure), w) * ufl.dx
    velocity = dolfinx.fem.Function(W, name="velocity")
    solve_linear(a, L, [], velocity, {"ksp_type": "cg", "pc_type": "jacobi", "ksp_rtol": 1e-12,
                                      "ksp_atol": 1e-40, "ksp_error_if_not_converged": True}, "hybrid_velocity_")
    return velocity


def _mesh_size(mesh) -> float:
    """Mean cell diameter [m] over all ranks (a length scale for conditioning)."""
    local = mesh.topology.index_map(mesh.topology.dim).size_local
    h = mesh.h(mesh.topology.dim, np.arange(local, dtype=np.int32))
    total = mesh.comm.allreduce(float(h.sum()), op=MPI.SUM)
    count = mesh.comm.allreduce(local, op=MPI.SUM)
    return total / count
