"""Exposure and cell kill (issue 8 point 6, hybrid/forward/exposure.py): AUC of fields constant and
linear in time, lethal fraction and mean survival of a manufactured peak field, and the penetration
half-distance of the steady Krogh solution against the Bessel closed form. Collective: also under
``mpirun -n 2``."""

import math

import numpy as np
import pytest
from mpi4py import MPI

import hybrid.forward  # noqa: F401  (imports DOLFINx the supported way)
import dolfinx.fem

from hybrid.forward.exposure import Exposure, distance_profile
from hybrid.forward.verification import unit_square_domain
from hybrid.mesh import krogh_mesh
from hybrid.problems.krogh import half_distance, krogh_concentration
from hybrid.problems.parameters import default
from test_transport import KROGH, krogh_solver   # the Krogh case verified there

pytestmark = pytest.mark.mpi
COMM = MPI.COMM_WORLD
SIDE = 1e-3   # m (unit_square_domain)


def square_exposure(n: int, initial_free: float = 0.0, **options):
    """Exposure on an n x n square with C_F = ``initial_free`` and C_I = 0 at t = 0."""
    domain = unit_square_domain(COMM, n, SIDE)
    space = dolfinx.fem.functionspace(domain.mesh, ("Lagrange", 1))
    free, cell = dolfinx.fem.Function(space), dolfinx.fem.Function(space)
    free.x.array[:] = initial_free
    return domain, free, cell, Exposure(domain, free, cell, **options)


def test_auc_of_constant_and_linear_fields_is_exact():
    """C_F = 2.5 held for T = 47.5 s in unequal steps: AUC = 2.5 T at every node and as the tumour
    mean; C_I = a t: AUC = a T^2 / 2 (trapezoidal rule exact), peak = a T."""
    domain, free, cell, exposure = square_exposure(4, initial_free=2.5)
    a, t = 0.01, 0.0
    for dt in (10.0, 30.0, 7.5):
        t += dt
        cell.x.array[:] = a * t
        exposure.accumulate(dt)
    assert np.allclose(exposure.fields["auc_free_drug"].x.array, 2.5 * t, rtol=1e-14)
    assert np.allclose(exposure.fields["auc_cell_drug"].x.array, a * t**2 / 2, rtol=1e-14)
    numbers = exposure.summary()
    assert numbers["mean_auc_free_drug_mol_s_m3"] == pytest.approx(2.5 * t, rel=1e-12)
    assert numbers["mean_auc_cell_drug_mol_s_m3"] == pytest.approx(a * t**2 / 2, rel=1e-12)
    assert numbers["peak_cell_drug_max_mol_m3"] == pytest.approx(a * t, rel=1e-14)
    assert numbers["tumour_volume"] == pytest.approx(SIDE**2, rel=1e-12)
    assert numbers["exposure_time_s"] == t


def lethal_numbers(n: int):
    """Peak C_I rising linearly in x from 0 to 2 x the lethal amount: lethal where x >= SIDE/2 ...
    shifted to x >= 0.3 SIDE (not on mesh lines) by the threshold; returns the summary."""
    rho, lethal = default("rho_c"), default("C_I_lethal")
    threshold = 0.3 * 2.0 * lethal   # reached at x = 0.3 SIDE
    domain, free, cell, exposure = square_exposure(n, lethal_amount=threshold)
    cell.interpolate(lambda x: 2.0 * lethal * rho * x[0] / SIDE)
    exposure.accumulate(1.0)
    return exposure.summary()


def test_lethal_fraction_and_survival_of_a_manufactured_peak_field():
    """Lethal fraction -> 0.7 as h -> 0 (indicator cut inside cells); the mean survival fraction
    equals the integral of exp(-omega n_max(x)) over the square (P1 interpolation of a linear field
    is exact)."""
    errors = [abs(lethal_numbers(n)["lethal_fraction"] - 0.7) for n in (8, 32)]
    assert errors[1] < errors[0] or errors[1] < 1e-12
    assert errors[1] < 2e-3
    numbers = lethal_numbers(8)
    b = default("omega") * 2.0 * default("C_I_lethal")   # SF = exp(-b x / SIDE)
    assert numbers["mean_survival_fraction"] == pytest.approx((1 - math.exp(-b)) / b, rel=1e-6)
    assert numbers["lethal_amount_ng_per_1e5_cells"] == pytest.approx(0.3 * 2.0 * 3.5, rel=1e-12)



def test_region_numbers_come_from_the_region_only():
    """Slab |x| < R in a host shell R < |x| < R + H with C_I = |x| for 1 s: the tumour's peak is
    R (its interface nodes), not the host's R + H; the host's numbers cover the host only (volume
    2 H, mean cell AUC (R + H/2) / 2 s)."""
    from hybrid.mesh import tags, tumour_mesh

    R, H = 1e-3, 5e-4
    domain = tumour_mesh(COMM, "slab", R, H, 1e-4)
    space = dolfinx.fem.functionspace(domain.mesh, ("Lagrange", 1))
    free, cell = dolfinx.fem.Function(space), dolfinx.fem.Function(space)
    regions = {region: Exposure(domain, free, cell, region=region) for region in (tags.TUMOUR, tags.HOST)}
    cell.interpolate(lambda x: np.abs(x[0]))
    for exposure in regions.values():
        exposure.accumulate(1.0)
    tumour, host = regions[tags.TUMOUR].summary(), regions[tags.HOST].summary()
    assert tumour["peak_cell_drug_max_mol_m3"] == pytest.approx(R, rel=1e-12)
    assert host["peak_cell_drug_max_mol_m3"] == pytest.approx(R + H, rel=1e-12)
    assert tumour["tumour_volume"] == pytest.approx(2 * R, rel=1e-12)
    assert host["host_volume"] == pytest.approx(2 * H, rel=1e-12)
    assert host["mean_auc_cell_drug_mol_s_m3"] == pytest.approx((R + H / 2) / 2, rel=1e-12)
    with pytest.raises(ValueError, match="no host cells"):
        Exposure(*square_exposure(2)[:3], region=tags.HOST).summary()


def test_half_distance_of_the_steady_krogh_profile():
    """Steady free drug on the Krogh annulus (4 um cells): the distance profile follows the Bessel
    closed form and its half-distance matches the closed form's."""
    mesh_size = 4e-6
    domain, solver = krogh_solver(mesh_size)
    for _ in range(3):
        solver.step(1e5)
    free = solver.species()[1]
    distance, profile = distance_profile(domain, free, mesh_size)
    solver.close()
    exact = krogh_concentration(KROGH["r_vessel"] + distance, **KROGH)
    assert distance[0] == 0.0 and np.all(np.diff(distance) > 0)
    assert np.abs(profile - exact).max() < 2e-3 * exact[0]
    fine = np.linspace(KROGH["r_vessel"], KROGH["r_tissue"], 20001)
    expected = half_distance(fine, krogh_concentration(fine, **KROGH))
    measured = half_distance(distance, profile)
    print(f"half-distance: closed form {expected * 1e6:.3f} um, FEM profile {measured * 1e6:.3f} um")
    assert measured == pytest.approx(expected, rel=0.01)


def test_distal_mean_on_the_krogh_annulus():
    """Mean over the tissue farther than 50 um from the vessel wall: 1 for an indicator that is 1
    there; for the wall distance itself the area-weighted mean over 60 um < r < 120 um."""
    from hybrid.forward.exposure import distal_mean, nearest_vessel_distance

    domain = krogh_mesh(COMM, KROGH["r_vessel"], KROGH["r_tissue"], 2e-6, wall_mesh_size=1e-6)
    space = dolfinx.fem.functionspace(domain.mesh, ("Lagrange", 1))
    gap = dolfinx.fem.Function(space)
    gap.interpolate(lambda x: nearest_vessel_distance(domain, x.T))
    indicator = dolfinx.fem.Function(space)
    indicator.x.array[:] = gap.x.array > 30e-6
    assert distal_mean(domain, indicator, 50e-6) == 1.0
    inner, outer = KROGH["r_vessel"] + 50e-6, KROGH["r_tissue"]
    exact = ((outer**3 - inner**3) / 3 - KROGH["r_vessel"] * (outer**2 - inner**2) / 2) / ((outer**2 - inner**2) / 2)
    assert distal_mean(domain, gap, 50e-6) == pytest.approx(exact, rel=1e-2)
