"""Closed-form IFP solutions: the general radial solver against the textbook formulas."""

import numpy as np
import pytest

from hybrid.problems.exact import RadialRegion, baxter_jain_pressure, radial_pressure, screening
from hybrid.problems.ifp import TissueProperties


@pytest.mark.parametrize("dim", [1, 2, 3])
@pytest.mark.parametrize("alpha", [1.0, 5.0, 36.8, 400.0])
def test_single_region_matches_textbook(dim, alpha):
    R, pe = 4e-3, 1530.0
    solution = radial_pressure(dim, [RadialRegion(R, 3.1e-14, alpha / R, pe)], 0.0)
    r = np.linspace(0.0, R, 2001)
    expected = baxter_jain_pressure(dim, r, R, alpha, pe) if alpha < 700 else None
    assert np.max(np.abs(solution.pressure(r) - expected)) < 1e-9 * pe


def test_sphere_outflow_velocity_bj89():
    """u(R) = (K p_e / R)(alpha coth alpha - 1) (Baxter & Jain 1989 Microvasc Res 37:77, eq. 8b)."""
    R, K, pe, alpha = 1e-2, 3.1e-14, 1530.0, 36.8
    solution = radial_pressure(3, [RadialRegion(R, K, alpha / R, pe)], 0.0)
    expected = K * pe / R * (alpha / np.tanh(alpha) - 1.0)
    assert solution.velocity(np.array([R]))[0] == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_two_region_continuity_of_pressure_and_flux(dim):
    tumour, host = TissueProperties.defaults("tumour"), TissueProperties.defaults("host")
    regions = []
    for props, outer in ((tumour, 4e-3), (host, 6e-3)):
        lam, p_inf = screening(props.hydraulic_conductivity, props.vascular_exchange, props.effective_pressure)
        regions.append(RadialRegion(outer, props.hydraulic_conductivity, lam, p_inf))
    solution = radial_pressure(dim, regions, 100.0)
    inside, outside = np.array([4e-3 * (1 - 1e-12)]), np.array([4e-3 * (1 + 1e-12)])
    assert solution.pressure(inside) == pytest.approx(solution.pressure(outside), rel=1e-8)
    assert solution.velocity(inside) == pytest.approx(solution.velocity(outside), rel=1e-6)
    assert solution.pressure(np.array([6e-3]))[0] == pytest.approx(100.0, abs=1e-9)
    # the plateau of a large tumour is p_e
    assert solution.pressure(np.array([0.0]))[0] == pytest.approx(tumour.effective_pressure, rel=1e-4)


def test_rim_thickness_from_table_defaults():
    """delta = sqrt(K / (Lp S/V)) = 272 um with the BJ89 tumour values (table K_T, Lp_T, SV_T)."""
    assert TissueProperties.defaults("tumour").rim_thickness == pytest.approx(272e-6, rel=0.01)


def test_radii_must_increase():
    with pytest.raises(ValueError, match="increase"):
        radial_pressure(2, [RadialRegion(2e-3, 1e-14, 1e3, 0), RadialRegion(1e-3, 1e-14, 1e3, 0)], 0.0)


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_robin_outer_boundary(dim):
    """-K p'(R) = h (p(R) - p_b); h -> infinity recovers the Dirichlet solution."""
    R, K, lam, pe, pb = 2e-3, 3.1e-14, 1 / 272e-6, 1530.0, 100.0
    region = [RadialRegion(R, K, lam, pe)]
    h = 1e-10
    robin = radial_pressure(dim, region, pb, robin_coefficient=h)
    edge = np.array([R])
    assert robin.velocity(edge)[0] == pytest.approx(h * (robin.pressure(edge)[0] - pb), rel=1e-10)
    stiff = radial_pressure(dim, region, pb, robin_coefficient=1e3)
    dirichlet = radial_pressure(dim, region, pb)
    r = np.linspace(0, R, 50)
    np.testing.assert_allclose(stiff.pressure(r), dirichlet.pressure(r), atol=1e-6)
