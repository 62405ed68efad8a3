"""Radiation dose response: log-linear factors, and the default reproduces the measured 31 % IFP fall
after 28.8 Gy (Yeo et al. 2009) in the closed-form Baxter-Jain IFP."""

import numpy as np
import pytest

from hybrid.problems.exact import baxter_jain_pressure
from hybrid.problems.exchange import effective_pressure
from hybrid.problems.ifp import TissueProperties
from hybrid.problems.radiation import RadiationResponse, dose_response, vascular_pressure_factor


def test_dose_response_is_log_linear():
    assert float(dose_response(0.0, 0.5, 28.8)) == 1.0
    assert float(dose_response(28.8, 0.5, 28.8)) == pytest.approx(0.5, rel=1e-15)
    assert float(dose_response(57.6, 0.5, 28.8)) == pytest.approx(0.25, rel=1e-14)
    # two courses multiply
    assert float(dose_response(10.0, 3.0, 28.8) * dose_response(5.0, 3.0, 28.8)) == pytest.approx(
        float(dose_response(15.0, 3.0, 28.8)), rel=1e-14)
    with pytest.raises(ValueError, match="must be > 0"):
        dose_response(2.0, 0.0, 28.8)


def test_default_reproduces_the_measured_ifp_fall_in_the_baxter_jain_sphere():
    tumour = TissueProperties.defaults("tumour")
    response = RadiationResponse.defaults()
    factors = response.factors(response.reference_dose)
    irradiated_pv = tumour.vascular_pressure * factors["vascular_pressure"]
    pe_before = tumour.effective_pressure
    pe_after = effective_pressure(irradiated_pv, tumour.reflection_coefficient, tumour.plasma_oncotic_pressure,
                                  tumour.interstitial_oncotic_pressure)
    assert pe_after == pytest.approx(0.69 * pe_before, rel=1e-12)
    # closed-form IFP of a 4 mm sphere (K and Lp S/V unchanged by default, so alpha is unchanged)
    radius = 4e-3
    alpha = radius * np.sqrt(tumour.vascular_exchange / tumour.hydraulic_conductivity)
    r = np.array([0.0, 2e-3, 3.9e-3])
    ratio = baxter_jain_pressure(3, r, radius, alpha, pe_after) / baxter_jain_pressure(3, r, radius, alpha, pe_before)
    np.testing.assert_allclose(1.0 - ratio, 0.31, rtol=1e-12)        # Yeo 2009: 29.0 -> 20.0 mmHg
    assert {k: v for k, v in factors.items() if k != "vascular_pressure"} == pytest.approx(
        dict.fromkeys(["hydraulic_conductivity", "filtration_coefficient", "vessel_permeability", "cell_density"],
                      1.0))
    assert all(float(v) == 1.0 for v in response.factors(0.0).values())


def test_calibration_follows_the_configured_vascular_pressure():
    """With p_v = 25 mmHg (common in later codes; Baxter & Jain 1989: 15.6) p_e still falls by 31 %."""
    pv = 25.0 * 133.322
    tumour = TissueProperties.defaults("tumour")
    factor = RadiationResponse.defaults(pv=pv).vascular_pressure
    oncotic = (tumour.reflection_coefficient, tumour.plasma_oncotic_pressure, tumour.interstitial_oncotic_pressure)
    assert effective_pressure(pv * factor, *oncotic) == pytest.approx(0.69 * effective_pressure(pv, *oncotic),
                                                                      rel=1e-12)
    assert factor != pytest.approx(RadiationResponse.defaults().vascular_pressure, rel=1e-3)


def test_vascular_pressure_factor_by_hand_and_refusal():
    # p_v = 2080 Pa, sigma (pi_v - pi_i) = 0.82 x 666.6 Pa: p_e = 1533.4 Pa
    pv, sigma, piv, pii = 2080.0, 0.82, 2666.44, 1999.83
    oncotic = 0.82 * (2666.44 - 1999.83)
    assert vascular_pressure_factor(0.31, pv, sigma, piv, pii) == pytest.approx(
        (0.69 * (pv - oncotic) + oncotic) / pv, rel=1e-14)
    with pytest.raises(ValueError, match="cannot be carried"):
        vascular_pressure_factor(0.5, 100.0, 0.82, 1000.0, 2000.0)   # negative oncotic term, p_e tiny
