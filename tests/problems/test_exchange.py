"""Transvascular exchange: Starling flux by hand, the Patlak Peclet factor against x/expm1(x), its
limits Pe -> 0 and Pe -> +-inf, the equivalent Patlak form, and Ktrans -> PS (Renkin-Crone)."""

import math

import numpy as np
import pytest

from hybrid.problems.exchange import (diffusive_exchange_rate, effective_pressure, kedem_katchalsky_flux,
                                      ktrans_to_permeability_surface, peclet_factor, starling_fluid_flux)
from hybrid.problems.parameters import MMHG_TO_PA, default


def test_effective_pressure_and_starling_flux_by_hand():
    pe = effective_pressure(default("pv_T"), default("sigma_T"), default("piv_T"), default("pii_T"))
    assert pe / MMHG_TO_PA == pytest.approx(15.6 - 0.82 * (20 - 15), rel=1e-14)   # 11.5 mmHg (BJ89 values)
    exchange = default("Lp_T") * default("SV_T")                                   # 4.2e-7 1/(Pa s)
    assert starling_fluid_flux(0.0, exchange, pe) == pytest.approx(4.2e-7 * 11.5 * MMHG_TO_PA, rel=1e-12)
    assert starling_fluid_flux(pe, exchange, pe) == 0.0
    assert starling_fluid_flux(2 * pe, exchange, pe) < 0.0                          # reabsorption


@pytest.mark.parametrize("pe", np.concatenate([-np.logspace(-8, math.log10(700), 40),
                                               np.logspace(-8, math.log10(700), 40)]))
def test_peclet_factor_matches_x_over_expm1(pe):
    """Both sides of the series switch (|Pe| = 1e-2) and the far tails, to a few ulp."""
    assert float(peclet_factor(pe)) == pytest.approx(pe / math.expm1(pe), rel=5e-15)


def test_peclet_factor_limits():
    assert float(peclet_factor(0.0)) == 1.0
    assert float(peclet_factor(1e4)) == 0.0            # e^-10000 underflows: pure convection
    assert float(peclet_factor(-1e4)) == 1e4           # ~|Pe| for Pe -> -inf
    with np.errstate(over="raise", divide="raise", invalid="raise"):   # no overflow, no 0/0
        peclet_factor(np.array([-1e6, -1.0, 0.0, 1e-12, 1.0, 1e6]))


def test_kedem_katchalsky_limits_and_equivalent_form():
    cp, ci, sigma = 1.0e-3, 4.0e-4, 0.2
    ps = default("P_F") * default("SV_T")                # 0.0534 1/s
    # Pe -> 0 (no fluid flux): pure diffusion P S/V (c_p - c_i)
    assert float(kedem_katchalsky_flux(cp, ci, 0.0, sigma, ps)) == pytest.approx(ps * (cp - ci), rel=1e-15)
    # Pe -> +inf (P S/V -> 0 with filtration): pure convection phi_V (1 - sigma) c_p
    phi_v = 6.4e-4
    assert float(kedem_katchalsky_flux(cp, ci, phi_v, sigma, 1e-9)) == pytest.approx(phi_v * (1 - sigma) * cp,
                                                                                     rel=1e-12)
    # Pe -> -inf (reabsorption, P S/V -> 0): the returning fluid carries c_i
    assert float(kedem_katchalsky_flux(cp, ci, -phi_v, sigma, 1e-9)) == pytest.approx(-phi_v * (1 - sigma) * ci,
                                                                                      rel=1e-12)
    # exactly zero permeability: the same limits without a division by zero
    assert float(kedem_katchalsky_flux(cp, ci, phi_v, sigma, 0.0)) == phi_v * (1 - sigma) * cp
    assert float(kedem_katchalsky_flux(cp, ci, -phi_v, sigma, 0.0)) == -phi_v * (1 - sigma) * ci
    # intermediate Pe: equivalent form P S/V Pe (c_p e^Pe - c_i) / (e^Pe - 1) [D]
    for phi in (-0.05, -3e-3, 1e-4, 6.4e-4, 0.02, 0.1):
        pe = phi * (1 - sigma) / ps
        expected = ps * pe * (cp * math.exp(pe) - ci) / math.expm1(pe)
        assert float(kedem_katchalsky_flux(cp, ci, phi, sigma, ps)) == pytest.approx(expected, rel=1e-13)


def test_no_net_flux_at_equilibrium_without_filtration():
    assert float(kedem_katchalsky_flux(1e-3, 1e-3, 0.0, 0.0, 0.05)) == 0.0
    assert float(diffusive_exchange_rate(0.0, 0.0)) == 0.0


def test_ktrans_to_permeability_surface():
    assert ktrans_to_permeability_surface(0.6) == pytest.approx(0.01, rel=1e-15)   # 0.6 /min -> 0.01 /s
    np.testing.assert_allclose(ktrans_to_permeability_surface(np.array([0.0, 0.3])), [0.0, 0.005], rtol=1e-15)
    # Renkin-Crone: Ktrans = Fp (1 - exp(-PS/Fp)) is recovered from the returned PS
    ktrans, flow = 0.3, 0.5
    ps_per_min = ktrans_to_permeability_surface(ktrans, flow) * 60.0
    assert flow * -math.expm1(-ps_per_min / flow) == pytest.approx(ktrans, rel=1e-14)
    assert ps_per_min > ktrans                                            # flow-limited: PS > Ktrans
    # large plasma flow: back to the permeability-limited PS = Ktrans
    assert ktrans_to_permeability_surface(ktrans, 1e6) == pytest.approx(ktrans / 60.0, rel=1e-6)
