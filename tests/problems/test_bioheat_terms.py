"""Pennes source terms and CEM43 thermal dose by hand (Pennes 1948; Sapareto & Dewey 1984)."""

import math

import numpy as np
import pytest

from hybrid.problems.bioheat import (CEM43_REFERENCE_K, cem43_rate, heating_power_for, penetration_constant,
                                     pennes_source, perfusion_coefficient, volumetric_heat_capacity)

T_A = 310.15


def test_perfusion_terms_by_hand():
    w = perfusion_coefficient()
    assert w == pytest.approx(9.0e-3 * 1050.0 * 3617.0, rel=1e-15)          # 34181.65 W/(m^3 K)
    assert float(pennes_source(T_A)) == pytest.approx(550.0, rel=1e-15)      # only metabolic heat at T_a
    assert float(pennes_source(T_A + 5.0, external_heat=1e5)) == pytest.approx(-5 * w + 550.0 + 1e5, rel=1e-14)
    assert volumetric_heat_capacity() == pytest.approx(1045.0 * 3600.0, rel=1e-15)
    assert penetration_constant() == pytest.approx(math.sqrt(w / 0.527), rel=1e-15)


def test_heating_power_for_five_kelvin_matches_physics_reference():
    """Perfusion-dominated estimate Q = dT omega_b rho_b c_b [D]: +5 K needs ~4e4 / 1e5 / 2e5 W/m^3 at
    omega_b = 0.002 / 0.005 / 0.01 1/s, the usual clinical SAR range of 40-200 W/kg."""
    for omega, reference in [(0.002, 4e4), (0.005, 1e5), (0.01, 2e5)]:
        power = heating_power_for(5.0, perfusion_coefficient(omega))
        assert power == pytest.approx(omega * 1050.0 * 3617.0 * 5.0, rel=1e-15)
        assert power == pytest.approx(reference, rel=0.06)


def test_cem43_rate_and_dose():
    celsius = np.array([37.0, 42.0, 43.0, 44.0, 45.0])
    np.testing.assert_allclose(cem43_rate(273.15 + celsius), [0.25 ** 6, 0.25, 1.0, 2.0, 4.0], rtol=1e-12)
    # 60 min at 42 C -> CEM43 = 60 x 0.25 = 15 min (Sapareto & Dewey 1984) [D]
    assert 60.0 * 60.0 * float(cem43_rate(273.15 + 42.0)) / 60.0 == pytest.approx(15.0, rel=1e-12)
    # continuous at 43 C from both sides
    below, above = cem43_rate(CEM43_REFERENCE_K - 1e-9), cem43_rate(CEM43_REFERENCE_K + 1e-9)
    assert float(below) == pytest.approx(1.0, rel=1e-8) and float(above) == pytest.approx(1.0, rel=1e-8)
