"""IFP coupling to transport (issue 6, items 1-3): host lymphatic drainage with the table defaults,
the locally conservative Darcy flux (surface outflow against the closed form, cell-wise fluid balance),
and vessel walls that take the coefficients of the region they bound. Also under ``mpirun -n 2``."""

import numpy as np
import pytest
import ufl
from mpi4py import MPI
from scipy import special

import hybrid.forward  # noqa: F401  (imports DOLFINx the supported way)
import dolfinx.fem
import dolfinx.mesh

from hybrid.forward import solve_ifp
from hybrid.mesh import TumourMesh, krogh_mesh, tags, tumour_mesh, vessel_patch_mesh
from hybrid.problems.exact import radial_pressure
from hybrid.problems.ifp import OuterBoundary, TissueProperties
from hybrid.problems.parameters import MMHG_TO_PA

pytestmark = pytest.mark.mpi
COMM = MPI.COMM_WORLD
TUMOUR = TissueProperties.defaults("tumour")
HOST = TissueProperties.defaults("host")


def total(form) -> float:
    return COMM.allreduce(dolfinx.fem.assemble_scalar(dolfinx.fem.form(form)), op=MPI.SUM)


def refined_disc(R, host_thickness, mesh_size):
    delta = TUMOUR.rim_thickness
    return tumour_mesh(COMM, "disc", R, host_thickness, mesh_size, surface_mesh_size=delta / 4,
                       refinement_width=2 * delta)


def radial_exact(regions_props, radii, boundary_pressure=0.0, dim=2):
    regions = [props.radial_region(outer) for props, outer in zip(regions_props, radii)]
    return radial_pressure(dim, regions, boundary_pressure)


def cell_balance(solution) -> float:
    """max over cells of |int_T (div u - fluid source)| relative to the largest |int_T source|."""
    mesh = solution.pressure.function_space.mesh
    test = ufl.TestFunction(dolfinx.fem.functionspace(mesh, ("DG", 0)))
    residual = dolfinx.fem.assemble_vector(
        dolfinx.fem.form((ufl.div(solution.flux) - solution.fluid_source) * test * ufl.dx)).array
    size = dolfinx.fem.assemble_vector(dolfinx.fem.form(abs(solution.fluid_source) * test * ufl.dx)).array
    worst = COMM.allreduce(float(np.abs(residual).max(initial=0.0)), op=MPI.MAX)
    return worst / COMM.allreduce(float(size.max(initial=0.0)), op=MPI.MAX)


# ---- 1. host lymphatics ---------------------------------------------------------------------------

def test_table_defaults_drain_the_host_and_keep_the_tumour_alymphatic():
    """With the defaults and a no-flux outer boundary, host IFP several host rim widths from a 4 mm
    disc settles at the lymph-drained far-field value (1.30 mmHg), not at p_e,N = 6.5 mmHg."""
    assert TUMOUR.lymphatic_filtration == 0.0
    assert HOST.lymphatic_filtration == pytest.approx(7.5e-8, rel=0.01)
    R, H = 4e-3, 2.5e-3
    domain = refined_disc(R, H, 3e-4)
    solution = solve_ifp(domain, TUMOUR, OuterBoundary("no_flux"), HOST)
    space = solution.pressure.function_space
    owned = space.dofmap.index_map.size_local
    r = np.linalg.norm(space.tabulate_dof_coordinates()[:owned, :2], axis=1)
    far = solution.pressure.x.array[:owned][r > R + 6 * HOST.rim_thickness]
    low = COMM.allreduce(float(far.min(initial=np.inf)), op=MPI.MIN) / MMHG_TO_PA
    high = COMM.allreduce(float(far.max(initial=-np.inf)), op=MPI.MAX) / MMHG_TO_PA
    p_inf = HOST.radial_region(R + H).p_inf
    assert p_inf / MMHG_TO_PA == pytest.approx(1.30, abs=0.01)
    assert p_inf / MMHG_TO_PA - 0.02 < low <= high < p_inf / MMHG_TO_PA + 0.05
    assert high < 0.25 * HOST.effective_pressure / MMHG_TO_PA


# ---- 2. conservative Darcy flux ---------------------------------------------------------------------

def test_tumour_surface_outflow_matches_the_closed_form():
    """Outflow 2 pi R u(R) through the surface of an isolated disc, from the conservative flux."""
    R = 3e-3
    domain = refined_disc(R, 0.0, 2.5e-4)
    solution = solve_ifp(domain, TUMOUR, OuterBoundary("dirichlet", 0.0))
    n = ufl.FacetNormal(domain.mesh)
    ds = ufl.Measure("ds", domain=domain.mesh, subdomain_data=domain.facet_tags)
    expected = 2 * np.pi * R * radial_exact([TUMOUR], [R]).velocity(np.array([R]))[0]
    assert total(ufl.dot(solution.flux, n) * ds(tags.TUMOUR_SURFACE)) == pytest.approx(expected, rel=0.01)
    assert cell_balance(solution) < 1e-9


def test_margin_outflow_of_a_tumour_in_host_matches_the_closed_form():
    """Outflow through the tumour/host interface (an interior surface) = integral of div u over the
    tumour, against the two-region closed form with the default host lymphatics."""
    R, H = 3e-3, 1.5e-3
    domain = refined_disc(R, H, 2.5e-4)
    solution = solve_ifp(domain, TUMOUR, OuterBoundary("dirichlet", 0.0), HOST)
    dx = ufl.Measure("dx", domain=domain.mesh, subdomain_data=domain.cell_tags)
    expected = 2 * np.pi * R * radial_exact([TUMOUR, HOST], [R, R + H]).velocity(np.array([R]))[0]
    assert total(ufl.div(solution.flux) * dx(tags.TUMOUR)) == pytest.approx(expected, rel=0.01)
    assert cell_balance(solution) < 1e-9


def test_sphere_outflow_and_balance_with_the_iterative_flux_solver():
    """3-D meshes use the GMRES + Schur fieldsplit solver: outflow 4 pi R^2 u(R) within 1 %, cell
    balance to its tolerance."""
    R, delta = 1.2e-3, TUMOUR.rim_thickness
    domain = tumour_mesh(COMM, "sphere", R, 0.0, 2e-4, surface_mesh_size=delta / 4, refinement_width=2 * delta)
    solution = solve_ifp(domain, TUMOUR, OuterBoundary("dirichlet", 0.0))
    n = ufl.FacetNormal(domain.mesh)
    ds = ufl.Measure("ds", domain=domain.mesh, subdomain_data=domain.facet_tags)
    expected = 4 * np.pi * R**2 * radial_exact([TUMOUR], [R], dim=3).velocity(np.array([R]))[0]
    assert total(ufl.dot(solution.flux, n) * ds(tags.TUMOUR_SURFACE)) == pytest.approx(expected, rel=0.01)
    assert cell_balance(solution) < 1e-9


def test_sphere_in_host_with_no_flux_boundary_pins_the_multiplier_in_the_block_solver():
    """3-D, no free boundary: the pinned multiplier sits in the zero diagonal block of the nest
    matrix of the fieldsplit solver; balance in every cell, u.n = 0 outside."""
    delta = TUMOUR.rim_thickness
    domain = tumour_mesh(COMM, "sphere", 1.2e-3, 0.6e-3, 2.5e-4, surface_mesh_size=delta / 2,
                         refinement_width=2 * delta)
    solution = solve_ifp(domain, TUMOUR, OuterBoundary("no_flux"), HOST)
    assert cell_balance(solution) < 1e-9
    n = ufl.FacetNormal(domain.mesh)
    ds = ufl.Measure("ds", domain=domain.mesh, subdomain_data=domain.facet_tags)
    dx = ufl.Measure("dx", domain=domain.mesh, subdomain_data=domain.cell_tags)
    leak = total(abs(ufl.dot(solution.flux, n)) * ds(tags.OUTER_BOUNDARY))
    assert leak < 1e-12 * abs(total(ufl.div(solution.flux) * dx(tags.TUMOUR)))


@pytest.mark.parametrize("degree", [1, 2])
def test_cellwise_balance_with_no_flux_boundary(degree):
    """No free boundary (the multiplier is pinned in one cell): balance in every cell, u.n = 0 outside."""
    R, H = 2e-3, 1e-3
    domain = refined_disc(R, H, 3e-4)
    solution = solve_ifp(domain, TUMOUR, OuterBoundary("no_flux"), HOST, degree=degree)
    assert solution.flux.function_space.ufl_element().embedded_superdegree >= degree
    assert cell_balance(solution) < 1e-9
    n = ufl.FacetNormal(domain.mesh)
    ds = ufl.Measure("ds", domain=domain.mesh, subdomain_data=domain.facet_tags)
    leak = total(abs(ufl.dot(solution.flux, n)) * ds(tags.OUTER_BOUNDARY))
    dx = ufl.Measure("dx", domain=domain.mesh, subdomain_data=domain.cell_tags)
    tumour_outflow = abs(total(ufl.div(solution.flux) * dx(tags.TUMOUR)))
    assert leak < 1e-12 * tumour_outflow


def test_cellwise_balance_with_vessel_walls_and_robin_outer_boundary():
    """Explicit vessel walls (Robin, h = Lp) and a Robin outer boundary: cell balance, and the
    flux through walls and boundary equals their Robin fluxes in total."""
    tissue = TissueProperties(**{**TUMOUR.__dict__, "lymphatic_filtration": 1e-6})
    domain = vessel_patch_mesh(COMM, 300e-6, 8e-6, 4, 60e-6, mesh_size=15e-6, seed=1, wall_mesh_size=4e-6)
    h, p_far = 1e-9, 100.0
    solution = solve_ifp(domain, tissue, OuterBoundary("robin", p_far, h))
    assert cell_balance(solution) < 1e-9
    n = ufl.FacetNormal(domain.mesh)
    ds = ufl.Measure("ds", domain=domain.mesh, subdomain_data=domain.facet_tags)
    p = solution.pressure
    walls = ds(tuple(domain.vessel_wall_tags))
    flux_walls = total(ufl.dot(solution.flux, n) * walls)
    robin_walls = total(tissue.filtration_coefficient * (p - tissue.effective_pressure) * walls)
    assert flux_walls == pytest.approx(robin_walls, rel=1e-8)
    outer = ds(domain.outer_tags[0])
    assert total(ufl.dot(solution.flux, n) * outer) == pytest.approx(total(h * (p - p_far) * outer), rel=1e-8)


def test_p1_velocity_is_the_output_copy_of_the_flux():
    domain = refined_disc(2e-3, 0.0, 3e-4)
    solution = solve_ifp(domain, TUMOUR, OuterBoundary("dirichlet", 0.0))
    difference = total(ufl.inner(solution.velocity - solution.flux, solution.velocity - solution.flux) * ufl.dx)
    size = total(ufl.inner(solution.flux, solution.flux) * ufl.dx)
    assert solution.velocity.function_space.ufl_element().embedded_superdegree == 1
    assert 0 < difference < 0.05 * size


# ---- 3. vessel walls take the coefficients of their region ----------------------------------------------

def krogh_exact(K, Lp, pe, lymphatic, rv, rt):
    """p = A I0(lam r) + B K0(lam r); p'(rt) = 0; K p'(rv) = -Lp (pe - p(rv))."""
    lam = np.sqrt(lymphatic / K)
    i0, k0 = special.i0(lam * rv), special.k0(lam * rv)
    di0, dk0 = lam * special.i1(lam * rv), -lam * special.k1(lam * rv)
    matrix = np.array([[lam * special.i1(lam * rt), -lam * special.k1(lam * rt)],
                       [K * di0 - Lp * i0, K * dk0 - Lp * k0]])
    A, B = np.linalg.solve(matrix, [0.0, -Lp * pe])
    return lambda r: A * special.i0(lam * r) + B * special.k0(lam * r)


def max_relative_error(function, exact) -> float:
    space = function.function_space
    owned = space.dofmap.index_map.size_local
    r = np.linalg.norm(space.tabulate_dof_coordinates()[:owned, :2], axis=1)
    values = function.x.array[:owned]
    error = COMM.allreduce(float(np.abs(values - exact(r)).max(initial=0.0)), op=MPI.MAX)
    return error / COMM.allreduce(float(np.abs(values).max(initial=0.0)), op=MPI.MAX)


RV, RT = 10e-6, 120e-6
WALL = dict(hydraulic_conductivity=3.1e-14, vessel_surface_density=0.0, plasma_oncotic_pressure=2670.0,
            interstitial_oncotic_pressure=2000.0, reflection_coefficient=0.82, lymphatic_filtration=1.0e-5,
            lymphatic_pressure=0.0)


@pytest.fixture(scope="module")
def krogh():
    return krogh_mesh(COMM, RV, RT, mesh_size=4e-6, wall_mesh_size=1e-6)


def test_vessel_wall_in_host_cells_uses_the_host_coefficients(krogh):
    """A Krogh cylinder whose tissue is tagged host: the wall takes the host's Lp and p_e."""
    tumour = TissueProperties(filtration_coefficient=2.1e-11, vascular_pressure=2080.0, **WALL)
    host = TissueProperties(filtration_coefficient=4.0e-12, vascular_pressure=3000.0, **WALL)
    tdim = krogh.mesh.topology.dim
    cells = krogh.cell_tags.indices
    as_host = dolfinx.mesh.meshtags(krogh.mesh, tdim, cells, np.full(cells.size, tags.HOST, dtype=np.int32))
    domain = TumourMesh(krogh.mesh, as_host, krogh.facet_tags, krogh.shape, krogh.outer_tags,
                        krogh.vessel_wall_tags, krogh.geometry)
    solution = solve_ifp(domain, tumour, OuterBoundary("no_flux"), host, degree=2)
    exact = krogh_exact(host.hydraulic_conductivity, host.filtration_coefficient, host.effective_pressure,
                        host.lymphatic_filtration, RV, RT)
    assert max_relative_error(solution.pressure, exact) < 0.005
    assert cell_balance(solution) < 1e-9


def test_vessel_wall_honours_field_overrides(krogh):
    """Lp and p_e given as fields replace the region values on the wall as well."""
    tissue = TissueProperties(filtration_coefficient=2.1e-11, vascular_pressure=2080.0, **WALL)
    space = dolfinx.fem.functionspace(krogh.mesh, ("DG", 0))
    lp, pe = dolfinx.fem.Function(space), dolfinx.fem.Function(space)
    lp.x.array[:], pe.x.array[:] = 7.0e-12, 900.0
    solution = solve_ifp(krogh, tissue, OuterBoundary("no_flux"), degree=2,
                         fields={"filtration_coefficient": lp, "effective_pressure": pe})
    exact = krogh_exact(tissue.hydraulic_conductivity, 7.0e-12, 900.0, tissue.lymphatic_filtration, RV, RT)
    assert max_relative_error(solution.pressure, exact) < 0.005
