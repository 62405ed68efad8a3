"""Cellular uptake and kill: the SI tissue-volume El-Kareh & Secomb rate against the published
per-cell form in its own units (ng/1e5 cells, ug/mL, min), its limits (linear sink 0.53 1/s,
saturation, equilibrium partition 156), survival fraction and lethal threshold by hand."""

import math

import numpy as np
import pytest

from hybrid.problems.parameters import default
from hybrid.problems.uptake import (el_kareh_secomb_uptake, lethal_indicator, linear_uptake, ng_per_1e5_cells,
                                    survival_fraction)

PHI, RHO, MW = 0.4, 1.0e15, 543.5          # table defaults, written out: 1e9 cells/mL, g/mol


def published_rate_si(c_free, c_cell):
    """El-Kareh & Secomb per cell in their units, converted to mol/(m^3 tissue s) by hand.

    dC_I/dt = 0.28 [C_e/(C_e + 0.219) - C_I/(C_I + 1.37)] ng/(1e5 cells min), with C_e the
    interstitial-fluid concentration in ug/mL and C_I in ng/1e5 cells.
    """
    ug_per_ml = c_free / PHI * MW                   # mol/m^3 tissue -> mol/m^3 fluid -> g/m^3 = ug/mL
    ng_per_1e5 = c_cell / RHO * MW * 1e9 * 1e5      # mol/m^3 tissue -> mol/cell -> ng/cell -> ng/1e5 cells
    rate = 0.28 * (ug_per_ml / (ug_per_ml + 0.219) - ng_per_1e5 / (ng_per_1e5 + 1.37))
    return rate * 1e-9 / MW / 1e5 * RHO / 60.0      # ng/(1e5 cells min) -> mol/(m^3 tissue s)


@pytest.mark.parametrize("c_free, c_cell", [(1e-5, 0.0), (1e-3, 0.0), (1e-1, 0.0), (2e-4, 0.01),
                                            (1e-6, 0.2), (0.0, 0.05)])
def test_si_rate_equals_published_per_cell_form(c_free, c_cell):
    assert float(el_kareh_secomb_uptake(c_free, c_cell)) == pytest.approx(published_rate_si(c_free, c_cell),
                                                                          rel=1e-12, abs=1e-30)


def test_low_concentration_sink_and_saturation():
    k_lin = RHO * default("V_max") / (PHI * default("K_E"))
    assert k_lin == pytest.approx(0.533, rel=2e-3)           # ~32 1/min ~ 0.53 1/s [D]
    c = 1e-9
    assert float(el_kareh_secomb_uptake(c, 0.0)) == pytest.approx(k_lin * c, rel=1e-5)
    v_tissue = RHO * default("V_max")                        # saturated influx
    assert float(el_kareh_secomb_uptake(1e6, 0.0)) == pytest.approx(v_tissue, rel=1e-8)
    assert float(el_kareh_secomb_uptake(0.0, 1e6)) == pytest.approx(-v_tissue, rel=1e-6)   # pure efflux


@pytest.mark.parametrize("c_free", [1e-7, 1e-4, 1e-2, 1.0])
def test_equilibrium_partition(c_free):
    """Net flux vanishes where c_cell / (rho K_I) = c_free / (phi K_E); at low c the ratio is ~156."""
    partition = RHO * default("K_I") / (PHI * default("K_E"))
    assert partition == pytest.approx(156.4, rel=1e-3)       # ~156:1 [D]
    rate = el_kareh_secomb_uptake(c_free, partition * c_free)
    assert abs(float(rate)) <= 1e-15 * RHO * default("V_max")


def test_linear_uptake():
    assert linear_uptake(2e-3) == pytest.approx(0.02 * 2e-3, rel=1e-15)
    assert linear_uptake(2e-3, rate=0.5) == pytest.approx(1e-3, rel=1e-15)


def test_survival_fraction_and_lethal_threshold_by_hand():
    lethal_c_cell = default("C_I_lethal") * RHO                # 3.5 ng/1e5 cells as mol/m^3 tissue
    assert lethal_c_cell == pytest.approx(3.5e-14 / MW * 1e15, rel=1e-14)   # 0.0644 mol/m^3
    assert float(ng_per_1e5_cells(lethal_c_cell)) == pytest.approx(3.5, rel=1e-14)
    # SF = exp(-0.66 x 3.5) = 0.0993: about 90 % kill at the lethal line (table omega [R], C_I_lethal [S])
    assert float(survival_fraction(lethal_c_cell)) == pytest.approx(math.exp(-0.66 * 3.5), rel=1e-13)
    assert float(survival_fraction(0.0)) == 1.0
    indicator = lethal_indicator(np.array([0.0, 0.999, 1.0, 3.0]) * lethal_c_cell)
    np.testing.assert_array_equal(indicator, [0.0, 0.0, 1.0, 1.0])
    # half the cell density: the same tissue concentration is twice the amount per cell
    assert float(lethal_indicator(0.5 * lethal_c_cell, cell_density=RHO / 2)) == 1.0
