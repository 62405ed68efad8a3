"""Kinetic albumin binding (hybrid.problems.binding): the rate law, its equilibrium against the
table's B_alb and delta_alb, and the well-mixed closed form against the ODE it solves."""

import numpy as np
import pytest

from hybrid.problems.binding import albumin_binding_rate, well_mixed_bound
from hybrid.problems.parameters import default


def test_table_rates_give_the_equilibrium_constants():
    """k_a / k_d is B_alb (bound per unbound in tissue); k_a / (k_a + k_d) = 0.746 is the
    plasma bound fraction delta_alb (0.75) to its two digits."""
    k_a, k_d = default("k_a"), default("k_d")
    assert k_a / k_d == pytest.approx(default("B_alb"), rel=1e-14)
    assert k_a / (k_a + k_d) == pytest.approx(default("delta_alb"), abs=5e-3)
    assert albumin_binding_rate(1.0, k_a / k_d) == pytest.approx(0.0, abs=1e-15)   # no net binding at equilibrium


def test_well_mixed_closed_form_solves_the_binding_equation():
    """C_B(t) starts at C_B0, keeps dC_B/dt = k_a (T - C_B) - k_d C_B (central differences to 1e-8
    relative) and ends at k_a/(k_a + k_d) of the total T, with relaxation rate k_a + k_d."""
    k_a, k_d, c_free0, c_bound0 = 0.5, 0.2, 2e-3, 5e-4
    total = c_free0 + c_bound0
    bound = lambda t: well_mixed_bound(c_free0, c_bound0, t, association_rate=k_a, dissociation_rate=k_d)
    assert bound(0.0) == pytest.approx(c_bound0, rel=1e-15)
    t, h = np.array([0.3, 1.0, 4.0]), 1e-4
    derivative = (bound(t + h) - bound(t - h)) / (2 * h)
    rate = albumin_binding_rate(total - bound(t), bound(t), association_rate=k_a, dissociation_rate=k_d)
    np.testing.assert_allclose(derivative, rate, rtol=1e-8)
    assert bound(200.0) == pytest.approx(k_a / (k_a + k_d) * total, rel=1e-14)
    gap = lambda t: bound(t) - k_a / (k_a + k_d) * total
    assert np.log(gap(1.0) / gap(3.0)) / 2.0 == pytest.approx(k_a + k_d, rel=1e-12)
