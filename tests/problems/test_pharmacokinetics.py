"""Plasma pharmacokinetics: dose conversion by hand, infusion closed form against a numerical
convolution (scipy quad), AUC and half-lives against the table sources."""

import math

import numpy as np
import pytest
from scipy import integrate

from hybrid.problems.parameters import default
from hybrid.problems.pharmacokinetics import PlasmaCurve, dose_amount

HOUR = 3600.0


def test_dose_amount_by_hand():
    # 25 mg/m^2 x 1.73 m^2 = 43.25 mg; / 543.5 g/mol = 7.9577e-5 mol
    assert dose_amount(25.0, "mg/m^2") == pytest.approx(43.25e-3 / 543.5, rel=1e-14)
    # 5 mg/kg for a 20 g mouse = 0.1 mg = 1.8399e-7 mol
    assert dose_amount(5.0, "mg/kg", body_mass=0.02) == pytest.approx(0.1e-3 / 543.5, rel=1e-14)


@pytest.mark.parametrize("dose, unit, message", [(1.0, "mg", "dose unit"), (-1.0, "mg/kg", ">= 0"),
                                                 (1.0, "mg/kg", "body mass")])
def test_dose_amount_refuses_bad_input(dose, unit, message):
    with pytest.raises(ValueError, match=message):
        dose_amount(dose, unit, body_mass=0.0 if message == "body mass" else None)


def test_free_drug_reproduces_the_source_auc_and_half_lives():
    """The slow amplitude was derived from AUC = 1.0 mg h/L at 25 mg/m^2 (Drummond 1999 Table 4)."""
    curve = PlasmaCurve.free_doxorubicin(dose_amount(25.0, "mg/m^2"))
    auc_mg_h_per_l = curve.area_under_curve * default("MW_DOX") * 1e6 / 1e3 / HOUR   # mol s/m^3 -> mg h/L
    assert auc_mg_h_per_l == pytest.approx(1.0, rel=1e-12)
    assert curve.rates == pytest.approx((math.log(2) / (0.07 * HOUR), math.log(2) / (8.7 * HOUR)), rel=1e-14)
    # terminal phase: the curve halves every 8.7 h once the 4 min phase is gone
    assert curve(48 * HOUR) / curve(48 * HOUR - 8.7 * HOUR) == pytest.approx(0.5, rel=1e-9)
    # peak after a bolus: amount x (A_F1 + A_F2)
    assert curve(0.0) == pytest.approx(dose_amount(25.0, "mg/m^2") * (74.6 + default("A_F2")), rel=1e-14)


@pytest.mark.parametrize("t", [0.0, 120.0, 1799.0, 1800.0, 1801.0, 7200.0, 2 * 86400.0])
def test_infusion_equals_the_numerical_convolution_of_the_bolus_curve(t):
    duration, amount = 1800.0, 8.0e-5
    bolus = PlasmaCurve.free_doxorubicin(amount)
    infusion = PlasmaCurve.free_doxorubicin(amount, infusion_duration=duration)
    # infusion at rate 1/T of the dose over [0, T]: c(t) = 1/T int_0^min(t,T) c_bolus(t - s) ds
    reference, _ = integrate.quad(lambda s: float(bolus(t - s)) / duration, 0.0, min(t, duration),
                                  epsabs=0.0, epsrel=1e-13, limit=200)
    assert float(infusion(t)) == pytest.approx(reference, rel=1e-11)


def test_infusion_keeps_the_dose_auc_and_lowers_the_peak():
    amount = 8.0e-5
    bolus = PlasmaCurve.free_doxorubicin(amount)
    infusion = PlasmaCurve.free_doxorubicin(amount, infusion_duration=HOUR)
    area, _ = integrate.quad(lambda t: float(infusion(t)), 0.0, 60 * 8.7 * HOUR, points=[HOUR], limit=400,
                             epsrel=1e-12)
    assert area == pytest.approx(bolus.area_under_curve, rel=1e-9)
    assert infusion.area_under_curve == bolus.area_under_curve
    times = np.linspace(0.0, 3 * HOUR, 2001)
    assert infusion(times).max() < 0.2 * bolus(times).max()


def test_equal_mg_per_kg_doses_give_equal_free_drug_concentrations():
    human = PlasmaCurve.free_doxorubicin(dose_amount(5.0, "mg/kg"))
    mouse = PlasmaCurve.free_doxorubicin(dose_amount(5.0, "mg/kg", body_mass=0.02), body_mass=0.02)
    assert mouse.amplitudes == pytest.approx(human.amplitudes, rel=1e-14)
    # the human table patient: 5 mg/kg x 70 kg = 350 mg, c(0) = 350 mg x (A_F1 + A_F2)
    assert human(0.0) == pytest.approx(0.35 / 543.5 * (74.6 + default("A_F2")), rel=1e-14)   # 0.35 g


def test_liposomes_start_at_dose_over_volume_and_halve_per_half_life():
    amount = dose_amount(50.0, "mg/m^2")             # 86.5 mg
    curve = PlasmaCurve.liposomal(amount)
    c0 = 86.5e-3 / 543.5 / 4.0e-3                     # over V_d = 4 L: 0.0397884 mol/m^3
    assert curve(0.0) == pytest.approx(c0, rel=1e-14)
    assert curve(45 * HOUR) == pytest.approx(c0 / 2, rel=1e-14)
    mouse = PlasmaCurve.liposomal(dose_amount(5.0, "mg/kg", body_mass=0.02), half_life=20 * HOUR, body_mass=0.02)
    assert mouse(20 * HOUR) == pytest.approx(mouse(0.0) / 2, rel=1e-14)


def test_constant_curve_and_refusals():
    curve = PlasmaCurve.constant(1.0e-3)
    np.testing.assert_array_equal(curve(np.array([0.0, 10.0, 1e7])), 1.0e-3)
    assert curve.area_under_curve == math.inf
    with pytest.raises(ValueError, match="infusion needs decay rates"):
        PlasmaCurve((1.0,), (0.0,), infusion_duration=60.0)
    with pytest.raises(ValueError, match="as many amplitudes as rates"):
        PlasmaCurve((1.0, 2.0), (0.1,))
