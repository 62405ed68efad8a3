"""Cellular uptake of free doxorubicin and cell kill (El-Kareh & Secomb 2000, Neoplasia 2:325).

Units (SI, per tissue volume). ``c_free`` is free extracellular drug and ``c_cell`` intracellular
drug, both in mol per m^3 of **tissue**. El-Kareh & Secomb (2000, Neoplasia 2:325) write the
membrane transport per cell, with the extracellular concentration per interstitial-fluid
volume (c_free / phi) and the intracellular amount per cell (n = c_cell / rho_c):

    dn/dt = V_max [ (c_free/phi) / (c_free/phi + K_E) - n / (n + K_I) ]          [mol/(cell s)]

Multiplied by the cell density rho_c [1/m^3] this is the tissue-volume rate used here,

    R = rho_c V_max [ c_free / (c_free + phi K_E) - c_cell / (c_cell + rho_c K_I) ]  [mol/(m^3 s)],

with ``+R`` in the intracellular and ``-R`` in the free-drug equation. V_max [mol/(cell s)],
K_E [mol/m^3 of interstitial fluid] and K_I [mol/cell] are the published 0.28 ng/(1e5 cells min),
0.219 ug/mL and 1.37 ng/1e5 cells converted with M = 543.5 g/mol (parameter table).
At low concentration the sink is ``rho_c V_max/(phi K_E) ~ 0.53 1/s`` and cells hold
``rho_c K_I/(phi K_E) ~ 156`` times the free tissue concentration [D] (tests/problems/test_uptake.py).

Kill: survival fraction SF = exp(-omega n_max) on the peak per-cell amount n_max; lethal where
n_max >= the threshold (3.5 ng/1e5 cells). The thermal dose (CEM43) is in :mod:`hybrid.problems.bioheat`.
"""

from __future__ import annotations

from hybrid.problems.namespace import Namespace, namespace_of
from hybrid.problems.parameters import default, value_or_default

__all__ = ["linear_uptake", "el_kareh_secomb_uptake", "survival_fraction", "lethal_indicator",
           "ng_per_1e5_cells"]


def linear_uptake(c_free, rate=None):
    """First-order uptake ``k c_free`` [mol/(m^3 s)]; ``rate`` k [1/s] (table ``k_up`` if None)."""
    return value_or_default(rate, "k_up") * c_free


def el_kareh_secomb_uptake(c_free, c_cell, *, interstitial_fraction=None, cell_density=None,
                           max_rate=None, extracellular_constant=None, intracellular_constant=None):
    """Net saturable, bidirectional uptake R into cells [mol/(m^3 tissue s)] (module doc).

    ``c_free``, ``c_cell`` [mol/m^3 of tissue]; ``interstitial_fraction`` phi [1],
    ``cell_density`` rho_c [1/m^3], ``max_rate`` V_max [mol/(cell s)], ``extracellular_constant``
    K_E [mol/m^3 of interstitial fluid], ``intracellular_constant`` K_I [mol/cell]; table
    defaults (phi_T, rho_c, V_max, K_E, K_I) where None. Negative R means efflux. A rational
    function: it needs no math namespace and works on numbers, arrays, tensors and UFL alike.
    """
    phi = value_or_default(interstitial_fraction, "phi_T")
    rho = value_or_default(cell_density, "rho_c")
    v_max = value_or_default(max_rate, "V_max")
    k_e = value_or_default(extracellular_constant, "K_E")
    k_i = value_or_default(intracellular_constant, "K_I")
    return rho * v_max * (c_free / (c_free + phi * k_e) - c_cell / (c_cell + rho * k_i))


def survival_fraction(peak_c_cell, *, cell_density=None, omega=None, xp: Namespace | None = None):
    """SF = exp(-omega n_max) [1] from the peak intracellular concentration [mol/m^3 of tissue];
    n_max = peak_c_cell / rho_c [mol/cell], ``omega`` [1/mol] (table ``omega`` if None)."""
    xp = xp or namespace_of(peak_c_cell, cell_density, omega)
    rho = value_or_default(cell_density, "rho_c")
    w = value_or_default(omega, "omega")
    return xp.exp(-w * peak_c_cell / rho)


def lethal_indicator(peak_c_cell, *, cell_density=None, threshold=None, xp: Namespace | None = None):
    """1 where the peak per-cell amount reaches the lethal ``threshold`` [mol/cell] (table
    ``C_I_lethal``, 3.5 ng/1e5 cells, if None), else 0; ``peak_c_cell`` [mol/m^3 of tissue]."""
    xp = xp or namespace_of(peak_c_cell, cell_density, threshold)
    rho = value_or_default(cell_density, "rho_c")
    limit = value_or_default(threshold, "C_I_lethal")
    return xp.where(peak_c_cell >= limit * rho, 1.0, 0.0)


def ng_per_1e5_cells(c_cell, cell_density=None):
    """Intracellular concentration [mol/m^3 of tissue] in the El-Kareh reporting unit ng/1e5 cells."""
    rho = value_or_default(cell_density, "rho_c")
    return c_cell / rho * default("MW_DOX") * 1e12 * 1e5   # mol/cell -> kg -> ng, per 1e5 cells
