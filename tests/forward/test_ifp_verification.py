"""IFP solver against closed forms (Baxter & Jain 1989, 1990; :mod:`hybrid.problems.exact`) and
manufactured solutions with observed convergence rates. Collective: also run under
``mpirun -n 2``."""

import numpy as np
import pytest
import ufl
from mpi4py import MPI

import hybrid.forward  # noqa: F401  (imports DOLFINx the supported way)
import dolfinx.fem
from scipy import special

from hybrid.forward import solve_ifp
from hybrid.forward.sampling import nodal_samples
from hybrid.forward.verification import convergence_study
from hybrid.mesh import krogh_mesh, tags, tumour_mesh, vessel_patch_mesh
from hybrid.problems.exact import RadialRegion, baxter_jain_pressure, radial_pressure
from hybrid.problems.ifp import OuterBoundary, TissueProperties

pytestmark = pytest.mark.mpi
COMM = MPI.COMM_WORLD
TUMOUR = TissueProperties.defaults("tumour")   # BJ89: delta = 272 um, p_e = 1530 Pa
HOST = TissueProperties.defaults("host")


def max_nodal_error(function, exact, dim) -> float:
    x, values = nodal_samples(function)
    error = np.abs(values - exact(np.linalg.norm(x[:, :dim], axis=1)))
    return COMM.allreduce(float(error.max(initial=0.0)), op=MPI.MAX)


def surface_refined(shape, R, host_thickness, mesh_size):
    delta = TUMOUR.rim_thickness
    return tumour_mesh(COMM, shape, R, host_thickness, mesh_size, surface_mesh_size=min(mesh_size, delta / 4),
                       refinement_width=2 * delta)


@pytest.mark.parametrize("shape, dim, R, mesh_size", [
    ("slab", 1, 4e-3, 1.5e-4),
    ("disc", 2, 4e-3, 2.5e-4),
    ("sphere", 3, 1.2e-3, 2.0e-4),
])
def test_isolated_tumour_matches_baxter_jain(shape, dim, R, mesh_size):
    """V1/V2: p = p_e (1 - shape(alpha r/R)), max error below 1 % of p_e with the rim refinement."""
    domain = surface_refined(shape, R, 0.0, mesh_size)
    solution = solve_ifp(domain, TUMOUR, OuterBoundary("dirichlet", 0.0))
    alpha = R / TUMOUR.rim_thickness
    pe = TUMOUR.effective_pressure
    error = max_nodal_error(solution.pressure, lambda r: baxter_jain_pressure(dim, r, R, alpha, pe), dim)
    assert error < 0.01 * pe
    assert solution.iterations < 30


@pytest.mark.parametrize("shape, dim, mesh_size", [("disc", 2, 2.5e-4), ("sphere", 3, 2.5e-4)])
def test_tumour_in_host_with_lymphatics_two_region(shape, dim, mesh_size):
    """V3 + V4: discontinuous K and sources, lymphatic drainage in the host, flux continuity."""
    R, H = 1.2e-3 if dim == 3 else 3e-3, 1.0e-3
    host = TissueProperties(**{**HOST.__dict__, "lymphatic_filtration": 2.0e-8, "lymphatic_pressure": -100.0})
    domain = surface_refined(shape, R, H, mesh_size)
    solution = solve_ifp(domain, TUMOUR, OuterBoundary("dirichlet", 50.0), host)
    exact = radial_pressure(dim, [TUMOUR.radial_region(R), host.radial_region(R + H)], 50.0)
    assert max_nodal_error(solution.pressure, exact.pressure, dim) < 0.01 * TUMOUR.effective_pressure


@pytest.mark.parametrize("shape, dim", [("slab", 1), ("disc", 2)])
def test_robin_outer_boundary_matches_closed_form(shape, dim):
    """-K dp/dn = h (p - p_far) on the surface, h ~ K / delta so both terms matter."""
    R, h, p_far = 3e-3, 1e-10, 200.0
    domain = surface_refined(shape, R, 0.0, 2.5e-4)
    solution = solve_ifp(domain, TUMOUR, OuterBoundary("robin", p_far, h))
    exact = radial_pressure(dim, [RadialRegion(R, TUMOUR.hydraulic_conductivity, 1 / TUMOUR.rim_thickness,
                                               TUMOUR.effective_pressure)], p_far, robin_coefficient=h)
    assert max_nodal_error(solution.pressure, exact.pressure, dim) < 0.01 * TUMOUR.effective_pressure


def test_krogh_robin_vessel_wall_with_lymphatic_sink():
    """V5-like: Starling flux through the wall, lymphatic sink, no flux at r_t (Bessel I0/K0 form)."""
    rv, rt = 10e-6, 120e-6
    tissue = TissueProperties(hydraulic_conductivity=3.1e-14, filtration_coefficient=2.1e-11,
                              vessel_surface_density=0.0, vascular_pressure=2080.0,
                              plasma_oncotic_pressure=2670.0, interstitial_oncotic_pressure=2000.0,
                              reflection_coefficient=0.82, lymphatic_filtration=1.0e-5, lymphatic_pressure=0.0)
    domain = krogh_mesh(COMM, rv, rt, mesh_size=4e-6, wall_mesh_size=1e-6)
    solution = solve_ifp(domain, tissue, OuterBoundary("no_flux"), degree=2)
    K, Lp, pe = tissue.hydraulic_conductivity, tissue.filtration_coefficient, tissue.effective_pressure
    lam = np.sqrt(tissue.lymphatic_filtration / K)
    # p = A I0(lam r) + B K0(lam r);  p'(rt) = 0;  K p'(rv) = -Lp (pe - p(rv))
    i0, k0 = special.i0(lam * rv), special.k0(lam * rv)
    di0, dk0 = lam * special.i1(lam * rv), -lam * special.k1(lam * rv)
    matrix = np.array([[lam * special.i1(lam * rt), -lam * special.k1(lam * rt)],
                       [K * di0 - Lp * i0, K * dk0 - Lp * k0]])
    A, B = np.linalg.solve(matrix, [0.0, -Lp * pe])
    exact = lambda r: A * special.i0(lam * r) + B * special.k0(lam * r)
    scale = COMM.allreduce(float(np.abs(nodal_samples(solution.pressure)[1]).max(initial=0)), op=MPI.MAX)
    assert max_nodal_error(solution.pressure, exact, 2) < 0.005 * scale


def test_vessel_patch_conserves_fluid(global_integral):
    """Fluid entering through every vessel wall leaves through lymphatics (no-flux patch edges)."""
    tissue = TissueProperties(**{**TUMOUR.__dict__, "lymphatic_filtration": 1e-6})
    domain = vessel_patch_mesh(COMM, 300e-6, 8e-6, 4, 60e-6, mesh_size=12e-6, seed=1, wall_mesh_size=3e-6)
    solution = solve_ifp(domain, tissue, OuterBoundary("no_flux"))
    p = solution.pressure
    ds = ufl.Measure("ds", domain=domain.mesh, subdomain_data=domain.facet_tags)
    inflow = sum(tissue.filtration_coefficient * (tissue.effective_pressure - p) * ds(t)
                 for t in domain.vessel_wall_tags)
    drained = tissue.lymphatic_filtration * (p - tissue.lymphatic_pressure) * ufl.dx
    total_in, total_out = global_integral(inflow), global_integral(drained)
    assert total_in > 0
    assert total_out == pytest.approx(total_in, rel=1e-8)


@pytest.mark.parametrize("degree", [1, 2])
def test_manufactured_convergence_rates(degree):
    """Observed L2 and H1 rates between the two finest meshes within 0.1 of theory."""
    study = convergence_study(COMM, degree, sizes=(16, 32, 64))
    assert abs(study["l2_rate"][-1] - (degree + 1)) < 0.1, study
    assert abs(study["h1_rate"][-1] - degree) < 0.1, study


def test_spatially_varying_fields_replace_region_coefficients():
    """Coefficient fields (as sampled from an image): a variable K(x) and Lp S/V(x) field on a
    manufactured solution converge at the P1 rates, and constant fields reproduce the region solve."""
    from hybrid.forward.verification import unit_square_domain

    def solve(n, constant=False):
        domain = unit_square_domain(COMM, n)
        x = ufl.SpatialCoordinate(domain.mesh)
        side = 1e-3
        space = dolfinx.fem.functionspace(domain.mesh, ("Lagrange", 2))
        K, exchange = dolfinx.fem.Function(space), dolfinx.fem.Function(space)
        if constant:
            K.x.array[:], exchange.x.array[:] = TUMOUR.hydraulic_conductivity, TUMOUR.vascular_exchange
        else:
            K.interpolate(lambda X: TUMOUR.hydraulic_conductivity * (1 + 0.5 * np.sin(3 * X[0] / side)))
            exchange.interpolate(lambda X: TUMOUR.vascular_exchange * (1 + X[1] / side))
        exact = 1000.0 * ufl.sin(ufl.pi * x[0] / side) * ufl.sin(ufl.pi * x[1] / side)
        source = -ufl.div(K * ufl.grad(exact)) + exchange * (exact - TUMOUR.effective_pressure)
        fields = {"hydraulic_conductivity": K, "vascular_exchange": exchange}
        solution = solve_ifp(domain, TUMOUR, OuterBoundary("dirichlet", 0.0), fields=fields, source=source)
        error = dolfinx.fem.form((solution.pressure - exact) ** 2 * ufl.dx(metadata={"quadrature_degree": 6}))
        return solution, np.sqrt(COMM.allreduce(dolfinx.fem.assemble_scalar(error), op=MPI.SUM))

    (_, coarse), (_, fine) = solve(32), solve(64)
    assert abs(np.log2(coarse / fine) - 2.0) < 0.1
    with_fields, _ = solve(16, constant=True)
    domain = unit_square_domain(COMM, 16)
    x = ufl.SpatialCoordinate(domain.mesh)
    exact = 1000.0 * ufl.sin(ufl.pi * x[0] / 1e-3) * ufl.sin(ufl.pi * x[1] / 1e-3)
    source = (-ufl.div(TUMOUR.hydraulic_conductivity * ufl.grad(exact))
              + TUMOUR.vascular_exchange * (exact - TUMOUR.effective_pressure))
    regions = solve_ifp(domain, TUMOUR, OuterBoundary("dirichlet", 0.0), source=source)
    np.testing.assert_allclose(with_fields.pressure.x.array, regions.pressure.x.array, rtol=1e-7, atol=1e-6)


def test_unknown_field_name_is_rejected():
    from hybrid.forward.verification import unit_square_domain

    domain = unit_square_domain(COMM, 4)
    with pytest.raises(ValueError, match="unknown coefficient fields"):
        solve_ifp(domain, TUMOUR, OuterBoundary(), fields={"permeability": None})


def test_petsc_options_override_the_default_solver():
    """A direct solve (MUMPS LU) through petsc_options gives the CG+GAMG answer in one iteration."""
    from hybrid.forward.verification import unit_square_domain

    domain = unit_square_domain(COMM, 16)
    default = solve_ifp(domain, TUMOUR, OuterBoundary())
    direct = solve_ifp(domain, TUMOUR, OuterBoundary(),
                       petsc_options={"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps"})
    assert default.iterations > 1 and direct.iterations == 1
    np.testing.assert_allclose(direct.pressure.x.array, default.pressure.x.array, rtol=1e-7, atol=1e-6)
