"""Release kinetics: k(pH) and k(T) against their textbook sigmoid forms, midpoints at half
maximum, slopes at the midpoint, asymptotes, and no overflow far from the switch."""

import math

import numpy as np
import pytest

from hybrid.problems.parameters import default
from hybrid.problems.release import ph_release_rate, release_law, thermal_release_rate

K_B, K_MAX = 1.0e-6, 2.0e-4


@pytest.mark.parametrize("ph", [5.0, 6.2, 6.8, 7.0, 7.4, 8.0])
def test_ph_rate_matches_hill_form(ph):
    expected = K_B + (K_MAX - K_B) / (1.0 + 10.0 ** (2.5 * (ph - 6.7)))
    got = ph_release_rate(ph, base_rate=K_B, max_rate=K_MAX, ph_50=6.7, steepness=2.5)
    assert float(got) == pytest.approx(expected, rel=1e-13)


def test_release_law_of_the_inversion_unknowns():
    """A uniform rate is the rate; pH_50 and n give the pH law with the table's k_b and k_max."""
    assert release_law({"release_rate": 3e-5}) == 3e-5
    law = release_law({"ph_50": 6.9, "steepness": 1.5})
    ph = np.array([6.2, 6.9, 7.4])
    np.testing.assert_allclose(law(ph), ph_release_rate(ph, ph_50=6.9, steepness=1.5), rtol=1e-15)
    assert law(6.9) == pytest.approx((default("k_rel_L") + default("k_max_pH")) / 2, rel=1e-14)


def test_ph_rate_is_half_maximal_at_ph50_with_the_hill_slope():
    half = ph_release_rate(6.7, base_rate=K_B, max_rate=K_MAX, ph_50=6.7, steepness=2.5)
    assert float(half) == pytest.approx((K_B + K_MAX) / 2, rel=1e-15)
    h = 1e-5
    slope = (ph_release_rate(6.7 + h, base_rate=K_B, max_rate=K_MAX, ph_50=6.7, steepness=2.5)
             - ph_release_rate(6.7 - h, base_rate=K_B, max_rate=K_MAX, ph_50=6.7, steepness=2.5)) / (2 * h)
    assert float(slope) == pytest.approx(-(K_MAX - K_B) * 2.5 * math.log(10) / 4, rel=1e-8)


def test_ph_rate_asymptotes_and_table_defaults():
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        rates = ph_release_rate(np.array([0.0, 14.0]), base_rate=K_B, max_rate=K_MAX, ph_50=6.7, steepness=4.0)
    np.testing.assert_allclose(rates, [K_MAX, K_B], rtol=1e-14)
    assert float(ph_release_rate(default("pH_50"))) == pytest.approx(
        (default("k_rel_L") + default("k_max_pH")) / 2, rel=1e-15)
    # monotone: the more acidic, the faster (tumour pH_e 6.5-7.1 versus normal 7.4)
    assert np.all(np.diff(ph_release_rate(np.linspace(5.0, 8.0, 61))) < 0.0)


@pytest.mark.parametrize("celsius", [30.0, 37.0, 40.0, 41.3, 42.0, 45.0])
def test_thermal_rate_matches_logistic_form(celsius):
    T = 273.15 + celsius
    expected = 3e-4 + (0.05 - 3e-4) / (1.0 + math.exp(-(T - 314.45) / 0.75))
    got = thermal_release_rate(T, base_rate=3e-4, max_rate=0.05, transition=314.45, width=0.75)
    assert float(got) == pytest.approx(expected, rel=1e-13)


def test_thermal_rate_midpoint_slope_asymptotes():
    t_m, width = default("T_m"), default("dT_m")
    k_b, k_max = default("k_37_T"), default("k_max_T")
    assert float(thermal_release_rate(t_m)) == pytest.approx((k_b + k_max) / 2, rel=1e-15)
    h = 1e-5
    slope = (thermal_release_rate(t_m + h) - thermal_release_rate(t_m - h)) / (2 * h)
    assert float(slope) == pytest.approx((k_max - k_b) / (4 * width), rel=1e-8)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        far = thermal_release_rate(np.array([0.0, 273.15 + 37 - 30, 1e4]))
    np.testing.assert_allclose(far, [k_b, k_b, k_max], rtol=1e-14)
    # release within tens of seconds at 42 C, slow at 37 C (k_37 ~ 1e-4 to 1e-3 1/s) [R]
    assert math.log(2) / thermal_release_rate(273.15 + 42) < 60.0
    assert 1e-4 <= thermal_release_rate(273.15 + 37) <= 1e-3


def test_released_fraction_numpy_and_torch_agree_and_zero_total_is_nan():
    import torch

    from hybrid.problems.release import released_fraction, released_fraction_misfit

    encapsulated = np.array([0.0, 0.3, 1.0, 0.0, 2.0])
    total = np.array([0.0, 1.0, 1.0, 0.5, 4.0])
    expected = np.array([np.nan, 0.7, 0.0, 1.0, 0.5])
    with np.errstate(all="raise"):   # no division warning where total = 0
        got = released_fraction(encapsulated, total)
    np.testing.assert_allclose(got, expected, rtol=1e-15)
    enc_t = torch.tensor(encapsulated, requires_grad=True)
    tot_t = torch.tensor(total, requires_grad=True)
    got_t = released_fraction(enc_t, tot_t)
    np.testing.assert_allclose(got_t.detach().numpy(), expected, rtol=1e-15)
    assert float(released_fraction(0.0, 0.0)) != float(released_fraction(0.0, 0.0))   # NaN for a number too
    # torch: the zero-total entry gives no NaN gradient to the others (it is left out, not 0/0)
    torch.nansum(got_t).backward()
    assert torch.isfinite(enc_t.grad).all() and torch.isfinite(tot_t.grad).all()
    np.testing.assert_allclose(enc_t.grad.numpy()[1:], -1.0 / total[1:], rtol=1e-15)
    # the misfit without division is total x (fraction - observed)
    observed = np.array([0.2, 0.5, 0.1, 0.9, 0.4])
    np.testing.assert_allclose(released_fraction_misfit(encapsulated[1:], total[1:], observed[1:]),
                               total[1:] * (expected[1:] - observed[1:]), rtol=1e-14)


def test_ph_law_constants_are_the_rate_law_defaults():
    """The one table of the pH law's constants is what ph_release_rate uses when none is given."""
    from hybrid.problems.release import PH_LAW_UNITS, ph_law_constants

    constants = ph_law_constants()
    assert set(constants) == set(PH_LAW_UNITS)
    ph = np.linspace(5.5, 8.0, 11)
    np.testing.assert_allclose(ph_release_rate(ph, **constants), ph_release_rate(ph), rtol=1e-15)
    assert constants["max_rate"] > constants["base_rate"] > 0
