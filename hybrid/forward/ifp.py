"""Steady interstitial fluid pressure (Baxter & Jain 1989) with DOLFINx, under MPI.

Strong form, per tissue region (SI units; lymphatics: Baxter & Jain 1990 Microvasc Res 40:246)::

    -div(K grad p) = Lp S/V (p_e - p) - LpL SL/V (p - p_L)        in the tissue
    p_e = p_v - sigma (pi_v - pi_i)
    K grad p . n   = Lp (p_e - p)          on explicit vessel walls (Krogh / vessel patch)
    p = p_far  |  -K grad p . n = h (p - p_far)  |  no flux       on the outer boundary

Coefficients are piecewise constant over the tagged regions (tumour, host) unless a field
(a DOLFINx ``Function``, e.g. sampled from an image) replaces one of them; a resolved vessel
wall takes the Lp and p_e of the cells it bounds.
Linear solver: CG preconditioned by GAMG (the PETSc in the PyPI wheel has no hypre);
any PETSc option can be overridden.

Darcy flux. The pressure is continuous Lagrange P_k, whose discrete fluid balance holds on
vertex patches, not on cells. :func:`conservative_flux` reconstructs from it a flux ``u`` in
Raviart-Thomas RT_k (continuous normal component; 1-D: continuous P_k) whose divergence equals
the fluid source of the computed pressure, projected onto DG_{k-1}, in every cell:
``u`` minimises ``||K^-1/2 (u + K grad p)||`` (plus the Robin-wall terms) under that
constraint, a mixed saddle-point problem (:data:`FLUX_PETSC_OPTIONS`). ``u . n`` is zero on no-flux
boundaries and close to ``h (p - p_far)`` (Robin) or ``Lp (p - p_e)`` (vessel walls).
A P1 copy of ``u`` (L2 projection) is kept for output only: it is not conservative.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Callable

import numpy as np
import ufl
from mpi4py import MPI

import dolfinx.fem
import dolfinx.fem.petsc
import dolfinx.mesh

from hybrid.forward.petsc_options import add_options, remove_options
from hybrid.mesh import TumourMesh, tags
from hybrid.problems.ifp import OuterBoundary, TissueProperties

__all__ = ["OuterBoundary", "IFPSolution", "solve_ifp", "conservative_flux", "project_p1", "region_coefficient",
           "solve_linear", "LinearSolveStats", "DEFAULT_PETSC_OPTIONS", "FLUX_PETSC_OPTIONS"]

DEFAULT_PETSC_OPTIONS = {
    "ksp_type": "cg",
    "pc_type": "gamg",
    "ksp_rtol": 1e-10,
    "ksp_atol": 1e-30,
    "ksp_max_it": 1000,
    "ksp_error_if_not_converged": True,
}
FLUX_PETSC_OPTIONS = {
    "direct": {"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps"},
    "fieldsplit": {
        "ksp_type": "gmres",
        "ksp_pc_side": "right",   # the tolerance then bounds the true residual, hence the cell balance
        "ksp_gmres_restart": 10,  # 10 Krylov vectors (default 30): same iterations, a third of the memory
        "ksp_rtol": 1e-12,
        "ksp_atol": 1e-30,
        "ksp_max_it": 500,
        "ksp_error_if_not_converged": True,
        "pc_type": "fieldsplit",
        "pc_fieldsplit_type": "schur",
        "pc_fieldsplit_schur_fact_type": "full",
        "pc_fieldsplit_schur_precondition": "selfp",
        "fieldsplit_flux_ksp_type": "preonly",
        "fieldsplit_flux_pc_type": "jacobi",
        "fieldsplit_multiplier_ksp_type": "preonly",
        "fieldsplit_multiplier_pc_type": "gamg",
    },
}
"""Solvers of the flux reconstruction's saddle-point system: ``direct`` (MUMPS LU on one monolithic
matrix, used on 1-D and 2-D meshes; cell balance to round-off, about 1e-12) and ``fieldsplit``
(GMRES(10) with a Schur-complement preconditioner, Jacobi on the flux block and GAMG on
B diag(M)^-1 B^T for the multiplier, on a PETSc nest of the blocks; used on 3-D meshes, where it
was measured 2.6x faster than MUMPS on 250k unknowns and needs far less memory; cell balance to
the GMRES tolerance, about 1e-11 of the largest cell source). Against a monolithic matrix with
GMRES(30), the nest (no copies of the blocks for the split) and the 10 Krylov vectors cut the
flux's extra peak memory by 35-38 % (3-D sphere in host, 1 and 2 ranks), at the same iteration
count (about 48) and CPU time within the noise (benchmarks/darcy_flux_cost.py): about 6.6 kB per
pressure DOF beyond the pressure solve. MINRES with the block-diagonal (SPD) version of this
preconditioner needed 125 iterations there and was slower."""


@dataclass
class IFPSolution:
    """The steady IFP solution and solver statistics.

    ``pressure`` [Pa]: Lagrange P_k (k = degree of the solve).
    ``fluid_source`` [1/s]: UFL expression of the net fluid gain per tissue volume,
    ``Lp S/V (p_e - p) - LpL SL/V (p - p_L)`` (+ the extra ``source``), at the computed pressure.
    ``flux`` [m/s]: Darcy flux ``u = -K grad p`` in RT_k (1-D: P_k), locally conservative:
    ``div u`` equals ``fluid_source`` projected onto DG_{k-1} in every cell (see
    :func:`conservative_flux`). Advect with this one.
    ``velocity`` [m/s]: continuous vector P1 copy of ``flux`` for output files only.
    ``coefficients``: the coefficients of the solve by name (``hydraulic_conductivity``,
    ``vascular_exchange``, ``effective_pressure``, ``lymphatic_filtration``, ``lymphatic_pressure``,
    ``filtration_coefficient``; DG0 region functions or the given fields), e.g. for the fluid
    sources a transport model derives from the same pressure.
    ``flux`` and ``velocity`` are computed on first access (collective: every rank must ask);
    ``flux_time_s`` is then the time of the reconstruction.
    ``assemble_time_s`` covers coefficients, form compilation and assembly with boundary
    conditions; ``solve_time_s`` the preconditioner set-up and Krylov iterations of the pressure solve.
    """

    pressure: dolfinx.fem.Function
    fluid_source: object
    dofs: int
    iterations: int
    solve_time_s: float
    assemble_time_s: float
    reconstruct_flux: Callable[[], dolfinx.fem.Function] = field(repr=False)
    coefficients: dict = field(default_factory=dict, repr=False)
    flux_time_s: float | None = None

    @cached_property
    def flux(self) -> dolfinx.fem.Function:
        start = time.perf_counter()
        flux = self.reconstruct_flux()
        self.flux_time_s = time.perf_counter() - start
        return flux

    @cached_property
    def velocity(self) -> dolfinx.fem.Function:
        return project_p1(self.flux, "velocity")


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
    """UFL coefficients K, Lp S/V, p_e, LpL SL/V, p_L and Lp (vessel walls): each piecewise per
    region or a given field."""
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
        "filtration_coefficient": lambda p: p.filtration_coefficient,
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
    ``lymphatic_filtration`` [1/(Pa s)], ``lymphatic_pressure`` [Pa] and, on resolved vessel walls,
    ``filtration_coefficient`` (Lp) [m/(Pa s)] by a DOLFINx Function or UFL expression. A vessel
    wall uses the Lp and p_e of the cells it bounds (region values or these fields).
    ``source`` is an optional extra volume source [1/s] (UFL), used by manufactured-solution
    tests. ``petsc_options`` update :data:`DEFAULT_PETSC_OPTIONS`; a user's ``-hybrid_ifp_*`` PETSc
    options win over both (:func:`solve_linear`).
    """
    if degree not in (1, 2, 3):
        raise ValueError(f"degree must be 1, 2 or 3, got {degree}")
    t0 = time.perf_counter()
    mesh = domain.mesh
    c = _coefficients(domain, tumour, host, fields or {})
    K, exchange = c["hydraulic_conductivity"], c["vascular_exchange"]
    wall_lp, pe = c["filtration_coefficient"], c["effective_pressure"]
    if domain.vessel_wall_tags and isinstance(wall_lp, dolfinx.fem.Function):
        if mesh.comm.allreduce(float(wall_lp.x.array.min(initial=np.inf)), op=MPI.MIN) <= 0:
            raise ValueError("filtration_coefficient (Lp) must be > 0 m/(Pa s) where vessel walls are resolved")
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", degree))
    p, q = ufl.TrialFunction(V), ufl.TestFunction(V)
    ds = ufl.Measure("ds", domain=mesh, subdomain_data=domain.facet_tags)
    # Scale so stiffness entries are O(1), like the unit diagonal of Dirichlet rows. Numbers that
    # depend on the mesh or the run enter as Constants, so the forms compile once for all meshes.
    scale = _constant(mesh, 1.0 / (tumour.hydraulic_conductivity * _mesh_size(mesh) ** (mesh.topology.dim - 2)))
    a = scale * (ufl.inner(K * ufl.grad(p), ufl.grad(q)) + (exchange + c["lymphatic_filtration"]) * p * q) * ufl.dx
    L = scale * (exchange * pe + c["lymphatic_filtration"] * c["lymphatic_pressure"]) * q * ufl.dx
    if source is not None:
        L += scale * source * q * ufl.dx
    for wall in domain.vessel_wall_tags:  # Starling flux through resolved vessel walls
        a += scale * wall_lp * p * q * ds(wall)
        L += scale * wall_lp * pe * q * ds(wall)
    bcs = []
    outer = domain.outer_tags
    if boundary.kind == "dirichlet":
        facets = np.concatenate([domain.facet_tags.find(t) for t in outer])
        dofs = dolfinx.fem.locate_dofs_topological(V, mesh.topology.dim - 1, facets)
        bcs.append(dolfinx.fem.dirichletbc(dolfinx.default_scalar_type(boundary.pressure), dofs, V))
    elif boundary.kind == "robin":
        h, p_far = _constant(mesh, boundary.robin_coefficient), _constant(mesh, boundary.pressure)
        for t in outer:
            a += scale * h * p * q * ds(t)
            L += scale * h * p_far * q * ds(t)
    pressure = dolfinx.fem.Function(V, name="pressure")
    t1 = time.perf_counter()
    stats = solve_linear(a, L, bcs, pressure, DEFAULT_PETSC_OPTIONS | (petsc_options or {}), "hybrid_ifp_")
    fluid_source = exchange * (pe - pressure) - c["lymphatic_filtration"] * (pressure - c["lymphatic_pressure"])
    if source is not None:
        fluid_source += source
    robin = [(t, h, p_far) for t in outer] if boundary.kind == "robin" else []
    robin += [(wall, wall_lp, pe) for wall in domain.vessel_wall_tags]
    no_flux = outer if boundary.kind == "no_flux" else ()
    dofs = V.dofmap.index_map.size_global * V.dofmap.index_map_bs
    return IFPSolution(pressure, fluid_source, dofs, stats.iterations, stats.solve_s, (t1 - t0) + stats.assemble_s,
                       lambda: conservative_flux(domain, pressure, K, fluid_source, robin, no_flux), c)


@dataclass(frozen=True)
class LinearSolveStats:
    """Wall times [s] of assembling (forms compiled, matrix, rhs, boundary conditions) and solving
    (preconditioner set-up + Krylov iterations), and the iteration count."""

    assemble_s: float
    solve_s: float
    iterations: int


def solve_linear(a, L, bcs, solution, options: dict, prefix: str,
                 fields: tuple[str, ...] = ()) -> LinearSolveStats:
    """Assemble ``a u = L`` with Dirichlet ``bcs`` and solve it into ``solution`` with PETSc options
    ``options`` under ``prefix``. A user's ``-prefix_*`` option (command line, PETSC_OPTIONS) wins
    over the same key of ``options``; the other keys are in PETSc's options database only for this
    solve, which leaves it as it was (:mod:`hybrid.forward.petsc_options`).

    Block systems: ``a`` a list of rows of bilinear forms (None for an empty block), ``L`` a list
    of linear forms and ``solution`` a list of Functions, one per block, named ``fields``. With
    ``pc_type = fieldsplit`` the matrix is a PETSc nest of the blocks (no monolithic copy) and
    the fields are split by block, ``fieldsplit_<name>_`` options; otherwise it is one
    monolithic matrix (e.g. for a direct solver). Matrix, vectors and solver are freed on return."""
    from petsc4py import PETSc

    t0 = time.perf_counter()
    a_form, L_form = dolfinx.fem.form(a), dolfinx.fem.form(L)
    blocked = isinstance(solution, (list, tuple))
    added = add_options(options, prefix)
    owned = []   # PETSc objects created here, freed on return
    try:
        nest = blocked and PETSc.Options().getString(prefix + "pc_type", "") == "fieldsplit"
        A = dolfinx.fem.petsc.assemble_matrix(a_form, bcs=bcs, kind="nest" if nest else None)
        owned.append(A)
        A.assemble()
        if blocked:
            vector_kind = PETSc.Vec.Type.NEST if nest else PETSc.Vec.Type.MPI
            b = dolfinx.fem.petsc.assemble_vector(L_form, kind=vector_kind)
            owned.append(b)
            dolfinx.fem.petsc.apply_lifting(b, a_form, bcs=dolfinx.fem.bcs_by_block(
                dolfinx.fem.extract_function_spaces(a_form, 1), bcs))
            for part in b.getNestSubVecs() if nest else [b]:
                part.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
            dolfinx.fem.petsc.set_bc(b, dolfinx.fem.bcs_by_block(dolfinx.fem.extract_function_spaces(L_form), bcs))
            x = dolfinx.fem.petsc.create_vector(dolfinx.fem.extract_function_spaces(L_form), kind=vector_kind)
            owned.append(x)
        else:
            b = dolfinx.fem.petsc.assemble_vector(L_form)
            owned.append(b)
            dolfinx.fem.petsc.apply_lifting(b, [a_form], bcs=[bcs])
            b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
            dolfinx.fem.petsc.set_bc(b, bcs)
            x = solution.x.petsc_vec
        t1 = time.perf_counter()
        solver = PETSc.KSP().create(A.getComm())
        owned.append(solver)
        solver.setOptionsPrefix(prefix)
        solver.setOperators(A)
        if nest:
            solver.getPC().setType("fieldsplit")
            solver.getPC().setFieldSplitIS(*zip(fields, A.getNestISs()[0]))
        solver.setFromOptions()
        solver.solve(b, x)
        iterations = solver.getIterationNumber()
        if blocked:
            dolfinx.fem.petsc.assign(x, solution)
        for function in solution if blocked else [solution]:
            function.x.scatter_forward()
    finally:
        remove_options(added)
        for petsc_object in owned:
            petsc_object.destroy()
    return LinearSolveStats(t1 - t0, time.perf_counter() - t1, iterations)


def conservative_flux(domain: TumourMesh, pressure: dolfinx.fem.Function, conductivity, fluid_source,
                      robin: list[tuple[int, object, object]], no_flux: tuple[int, ...],
                      petsc_options: dict | None = None) -> dolfinx.fem.Function:
    """Locally conservative Darcy flux [m/s] of a Lagrange P_k ``pressure`` [Pa], in RT_k.

    Finds ``u`` in RT_k (1-D: continuous P_k) and a multiplier ``lam`` in DG_{k-1} with

        (K^-1 u, v) + sum_R <u.n / h, v.n>_R + (lam, div v) = -(grad p, v) + sum_R <p - p_R, v.n>_R
        (div u, m) = (fluid_source, m)                         for all v, m,

    i.e. the flux closest to ``-K grad p`` in the K^-1-weighted norm whose divergence is the
    fluid source ``fluid_source`` [1/s] (UFL) projected onto DG_{k-1} in every cell. ``robin``
    lists (facet tag, h [m/(Pa s)], p_R [Pa]) where the outflow is ``h (p - p_R)`` (Robin outer
    boundary; vessel walls with h = Lp, p_R = p_e); ``u.n = 0`` on the ``no_flux`` facet tags;
    elsewhere (Dirichlet) ``u.n`` is free. With no free boundary the fluid source must integrate
    to zero, which the pressure solve meets to its tolerance only: the remaining mean is
    subtracted from the source (spread evenly over the volume) and the multiplier is fixed in
    one cell.
    """
    import basix.ufl

    mesh = pressure.function_space.mesh
    tdim = mesh.topology.dim
    degree = pressure.function_space.ufl_element().embedded_superdegree
    cell = mesh.basix_cell()
    flux_element = (basix.ufl.element("Lagrange", cell, degree, shape=(mesh.geometry.dim,)) if tdim == 1
                    else basix.ufl.element("RT", cell, degree))
    U = dolfinx.fem.functionspace(mesh, flux_element)
    Q = dolfinx.fem.functionspace(mesh, ("DG", degree - 1))
    fdim = tdim - 1
    free = [t for t in np.unique(domain.facet_tags.values) if t not in no_flux]
    mesh.topology.create_connectivity(fdim, tdim)
    boundary = set(dolfinx.mesh.exterior_facet_indices(mesh.topology).tolist())
    has_free = mesh.comm.allreduce(any(boundary.intersection(domain.facet_tags.find(t).tolist()) for t in free),
                                   op=MPI.LOR)
    if not has_free:
        fluid_source = fluid_source - _constant(mesh, _mean(fluid_source, mesh))
    u, v = ufl.TrialFunction(U), ufl.TestFunction(U)
    lam, m = ufl.TrialFunction(Q), ufl.TestFunction(Q)
    n = ufl.FacetNormal(mesh)
    ds = ufl.Measure("ds", domain=mesh, subdomain_data=domain.facet_tags)
    # Rows scaled by a reference conductivity so the blocks are of comparable size.
    k_ref = _constant(mesh, _mean(conductivity, mesh))
    a_flux = k_ref / conductivity * ufl.inner(u, v) * ufl.dx
    L_flux = -k_ref * ufl.inner(ufl.grad(pressure), v) * ufl.dx
    for tag, h, p_r in robin:
        a_flux += k_ref / h * ufl.dot(u, n) * ufl.dot(v, n) * ds(tag)
        L_flux += k_ref * (pressure - p_r) * ufl.dot(v, n) * ds(tag)
    # The zero multiplier block holds the unit diagonal of a pinned multiplier.
    a = [[a_flux, lam * ufl.div(v) * ufl.dx], [ufl.div(u) * m * ufl.dx, _constant(mesh, 0.0) * lam * m * ufl.dx]]
    L = [L_flux, fluid_source * m * ufl.dx]
    bcs = []
    if no_flux:
        facets = np.concatenate([domain.facet_tags.find(t) for t in no_flux])
        dofs = dolfinx.fem.locate_dofs_topological(U, fdim, facets)
        bcs.append(dolfinx.fem.dirichletbc(dolfinx.fem.Function(U), dofs))
    if not has_free:
        pinned = np.arange(1 if mesh.comm.rank == 0 else 0, dtype=np.int32)
        dofs = dolfinx.fem.locate_dofs_topological(Q, tdim, pinned)
        bcs.append(dolfinx.fem.dirichletbc(dolfinx.default_scalar_type(0.0), dofs, Q))
    flux, multiplier = dolfinx.fem.Function(U, name="flux"), dolfinx.fem.Function(Q)
    defaults = FLUX_PETSC_OPTIONS["fieldsplit" if tdim == 3 else "direct"]
    solve_linear(a, L, bcs, [flux, multiplier], defaults | (petsc_options or {}), "hybrid_flux_",
                 fields=("flux", "multiplier"))
    return flux


def project_p1(vector, name: str) -> dolfinx.fem.Function:
    """L2 projection of a vector field onto continuous vector P1 (for output files)."""
    mesh = vector.function_space.mesh
    W = dolfinx.fem.functionspace(mesh, ("Lagrange", 1, (mesh.geometry.dim,)))
    u, w = ufl.TrialFunction(W), ufl.TestFunction(W)
    mass_scale = _constant(mesh, 1.0 / _mesh_size(mesh) ** mesh.topology.dim)
    a = mass_scale * ufl.inner(u, w) * ufl.dx
    L = mass_scale * ufl.inner(vector, w) * ufl.dx
    projected = dolfinx.fem.Function(W, name=name)
    solve_linear(a, L, [], projected, {"ksp_type": "cg", "pc_type": "jacobi", "ksp_rtol": 1e-12,
                                       "ksp_atol": 1e-40, "ksp_error_if_not_converged": True}, "hybrid_velocity_")
    return projected


def _mean(coefficient, mesh) -> float:
    """Volume average of a scalar UFL coefficient over the mesh."""
    integral = lambda f: mesh.comm.allreduce(dolfinx.fem.assemble_scalar(dolfinx.fem.form(f * ufl.dx)), op=MPI.SUM)
    return integral(coefficient) / integral(dolfinx.fem.Constant(mesh, 1.0))


def _constant(mesh, value: float) -> dolfinx.fem.Constant:
    """``value`` as a form Constant: a number that varies between meshes or runs without
    changing the compiled form (a Python float would be compiled into the kernel)."""
    return dolfinx.fem.Constant(mesh, dolfinx.default_scalar_type(value))


def _mesh_size(mesh) -> float:
    """Mean cell diameter [m] over all ranks (a length scale for conditioning)."""
    local = mesh.topology.index_map(mesh.topology.dim).size_local
    h = mesh.h(mesh.topology.dim, np.arange(local, dtype=np.int32))
    total = mesh.comm.allreduce(float(h.sum()), op=MPI.SUM)
    count = mesh.comm.allreduce(local, op=MPI.SUM)
    return total / count
