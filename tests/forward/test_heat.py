"""Pennes bioheat solver (Pennes 1948 J Appl Physiol 1:93): steady radial closed form,
manufactured solutions with observed space and time convergence rates, the target-temperature
controller and CEM43. Collective: also run under ``mpirun -n 2``."""

import numpy as np
import pytest
import ufl
from mpi4py import MPI
from scipy import special

import hybrid.forward  # noqa: F401  (imports DOLFINx the supported way)
import dolfinx.fem
import dolfinx.mesh

from hybrid.forward.heat import BioheatProperties, BioheatSolver, PowerSchedule, TargetTemperature
from hybrid.forward.verification import unit_square_domain
from hybrid.mesh import TumourMesh, tags, tumour_mesh

pytestmark = pytest.mark.mpi
COMM = MPI.COMM_WORLD
T_A = 310.15   # K (37 C)
TISSUE = BioheatProperties(conductivity=0.5, density=1050.0, specific_heat=3600.0, perfusion=5e-3,
                           blood_density=1050.0, blood_specific_heat=3600.0)
RHO_C = TISSUE.density * TISSUE.specific_heat
W = TISSUE.perfusion_coefficient


def total(integrand) -> float:
    return COMM.allreduce(dolfinx.fem.assemble_scalar(dolfinx.fem.form(integrand)), op=MPI.SUM)


def l2_error(function, exact) -> float:
    dx = ufl.dx(metadata={"quadrature_degree": 8})
    return np.sqrt(total((function - exact) ** 2 * dx))


def rates(h, errors):
    h, e = np.asarray(h), np.asarray(errors)
    return np.log(e[:-1] / e[1:]) / np.log(h[:-1] / h[1:])


def interval_domain(n: int, length: float) -> TumourMesh:
    """``n`` cells on [0, length], all tumour; both ends tagged tumour surface."""
    mesh = dolfinx.mesh.create_interval(COMM, n, [0.0, length])
    cells = np.arange(mesh.topology.index_map(1).size_local, dtype=np.int32)
    cell_tags = dolfinx.mesh.meshtags(mesh, 1, cells, np.full(cells.size, tags.TUMOUR, dtype=np.int32))
    mesh.topology.create_connectivity(0, 1)
    ends = dolfinx.mesh.exterior_facet_indices(mesh.topology)
    facet_tags = dolfinx.mesh.meshtags(mesh, 0, ends, np.full(ends.size, tags.TUMOUR_SURFACE, dtype=np.int32))
    return TumourMesh(mesh, cell_tags, facet_tags, "interval", (tags.TUMOUR_SURFACE,))


def steady_disc_error(mesh_size: float) -> tuple[float, float]:
    """Max nodal error [K] of the steady disc with uniform Q and T = T_a on r = R, and theta(0) [K]."""
    R, Q = 1e-2, 1e5
    domain = tumour_mesh(COMM, "disc", R, 0.0, mesh_size)
    solver = BioheatSolver(domain, {tags.TUMOUR: TISSUE}, arterial_temperature=T_A, order=1,
                           heating=PowerSchedule(((0.0, np.inf, Q),)))
    solver.step(1e9)    # backward Euler with dt >> rho c / (w_b rho_b c_b): the steady state
    m = np.sqrt(W / TISSUE.conductivity)
    space = solver.temperature.function_space
    owned = space.dofmap.index_map.size_local
    r = np.linalg.norm(space.tabulate_dof_coordinates()[:owned, :2], axis=1)
    exact = T_A + Q / W * (1 - special.i0(m * r) / special.i0(m * R))
    error = COMM.allreduce(float(np.abs(solver.temperature.x.array[:owned] - exact).max()), op=MPI.MAX)
    solver.close()
    return error, Q / W * (1 - 1 / special.i0(m * R))


def test_steady_disc_matches_the_bessel_closed_form():
    """V10 (2-D): theta = Q/(w rho_b c_b) (1 - I0(m r)/I0(m R)); error falls about as h^2."""
    coarse, theta0 = steady_disc_error(1e-3)
    fine, _ = steady_disc_error(5e-4)
    assert fine < 2e-3 * theta0
    assert np.log2(coarse / fine) > 1.7


def square_space_errors(n: int) -> float:
    """L2 error [K m] of P1 BDF2 on an n x n square for an exact solution linear in time (so the
    time error vanishes and the space error remains)."""
    L, tau, theta0 = 1e-2, 600.0, 5.0
    domain = unit_square_domain(COMM, n, L)
    x = ufl.SpatialCoordinate(domain.mesh)
    shape = theta0 * ufl.sin(ufl.pi * x[0] / L) * ufl.sin(ufl.pi * x[1] / L)
    exact = lambda t: T_A + shape * (1 + t / tau)
    source = lambda t: (RHO_C * shape / tau - ufl.div(TISSUE.conductivity * ufl.grad(exact(t)))
                        + W * (exact(t) - T_A))
    solver = BioheatSolver(domain, {tags.TUMOUR: TISSUE}, arterial_temperature=T_A, order=2, extra_source=source)
    solver.temperature.interpolate(dolfinx.fem.Expression(exact(0.0), solver.temperature.function_space
                                                          .element.interpolation_points))
    for _ in range(2):
        solver.step(tau / 2)
    assert solver.solver.timings.matrix_assemblies == 2   # backward Euler start, then BDF2
    error = l2_error(solver.temperature, exact(tau))
    solver.close()
    return error


def test_manufactured_space_rate_is_two():
    sizes = [8, 16, 32]
    errors = [square_space_errors(n) for n in sizes]
    observed = rates([1 / n for n in sizes], errors)
    assert np.all(np.abs(observed - 2.0) < 0.1), observed


def interval_time_error(steps: int, order: int) -> float:
    """L2 error at t_end of P2 on [0, L] for T = T_a + theta0 4 x (L - x)/L^2 g(t) (exact in
    space, so only the time error remains)."""
    L, t_end, theta0 = 1e-2, 600.0, 5.0
    domain = interval_domain(8, L)
    x = ufl.SpatialCoordinate(domain.mesh)[0]
    shape = theta0 * 4 * x * (L - x) / L**2
    g = lambda t: 1 + ufl.sin(np.pi * t / t_end)
    dg = lambda t: np.pi / t_end * ufl.cos(np.pi * t / t_end)
    source = lambda t: (RHO_C * shape * dg(t) - ufl.div(TISSUE.conductivity * ufl.grad(shape * g(t)))
                        + W * shape * g(t))
    solver = BioheatSolver(domain, {tags.TUMOUR: TISSUE}, arterial_temperature=T_A, order=order, degree=2,
                           extra_source=source)
    space = solver.temperature.function_space
    solver.temperature.interpolate(dolfinx.fem.Expression(T_A + shape * g(0.0), space.element.interpolation_points))
    for _ in range(steps):
        solver.step(t_end / steps)
    assert solver.solver.timings.matrix_assemblies == order   # one matrix per distinct time term
    error = l2_error(solver.temperature, T_A + shape * g(t_end))
    solver.close()
    return error


@pytest.mark.parametrize("order, steps", [(1, [32, 64, 128, 256]), (2, [16, 32, 64, 128])])
def test_manufactured_time_rate_matches_the_scheme_order(order, steps):
    """Backward Euler (order 1) and BDF2 (order 2, first step backward Euler), in the asymptotic
    range of each (backward Euler: rates 1.17, 1.10, 1.06 from 8 to 64 steps; BDF2: 1.85, 1.95, 1.98)."""
    errors = [interval_time_error(n, order) for n in steps]
    observed = rates([1 / n for n in steps], errors)
    assert np.all(np.abs(observed - order) < 0.1), observed


def test_target_temperature_hold_and_cem43():
    """Hold 42 C for 30 min with insulated walls (backward Euler): the region sits on the target from the first
    heated step, the power balances perfusion (w rho_b c_b 5 K), and CEM43 = 30 min x 0.25 plus
    the trapezoidal first step (rates 0.25^6 at 37 C and 0.25 at 42 C)."""
    domain = unit_square_domain(COMM, 4, 1e-2)
    target = T_A + 5.0
    heating = TargetTemperature(target=target, start=0.0, end=1800.0, max_power=1e7)
    solver = BioheatSolver(domain, {tags.TUMOUR: TISSUE}, arterial_temperature=T_A, boundary="no_flux",
                           heating=heating, order=1)
    dt = 60.0
    records = [solver.step(dt) for _ in range(30)]
    assert all(abs(r.region_mean_temperature - target) < 1e-8 for r in records)
    assert records[-1].power == pytest.approx(W * 5.0, rel=1e-8)
    expected = 0.5 * dt / 60 * (0.25**6 + 0.25) + 29 * 0.25
    dose = solver.thermal_dose.x.array
    assert np.allclose(dose, expected, rtol=1e-8)
    after = solver.step(dt)   # heating off: the tissue cools at the perfusion rate
    assert after.power == 0.0 and after.region_mean_temperature < target
    solver.close()
