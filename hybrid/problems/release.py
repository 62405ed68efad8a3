"""Release rate of doxorubicin from liposomes, k_rel [1/s].

The release term is ``-k_rel C_L`` in the liposome equation and ``+k_rel C_L`` in the free-drug
equation (for thermosensitive liposomes also inside heated vessels). Three rate laws:

- non-triggered (baseline leakage): a constant, table symbol ``k_rel_L``;
- pH-sensitive: ``k(pH) = k_b + (k_max - k_b) / (1 + 10^{n (pH - pH_50)})`` (Hill / Henderson-
  Hasselbalch sigmoid; k(pH_50) is halfway between k_b and k_max);
- thermosensitive: ``k(T) = k_b + (k_max - k_b) / (1 + exp(-(T - T_m)/dT))``, T in kelvin.

The released fraction of the drug in a volume, what MRI-visible liposomes whose relaxivity
changes on release report, is :func:`released_fraction`; :func:`released_fraction_misfit` is its
data misfit written without the division (for training a PINN).

Both sigmoids are written with tanh (:func:`~hybrid.problems.namespace.logistic`), so no
backend overflows far from the switch. Defaults are order-of-magnitude values [R] from the
parameter table; treat them as inverse-problem unknowns.
"""

from __future__ import annotations

import math

from hybrid.problems.namespace import LN10, Namespace, logistic, namespace_of
from hybrid.problems.parameters import default, value_or_default

__all__ = ["PH_LAW_UNITS", "ph_law_constants", "ph_release_rate", "release_law", "thermal_release_rate",
           "intravascular_released_fraction", "released_fraction", "released_fraction_misfit"]


PH_LAW_UNITS = {"ph_50": "1", "steepness": "1", "base_rate": "1/s", "max_rate": "1/s"}
"""Units of the pH law's constants, by :func:`ph_release_rate` keyword."""

_PH_LAW_SYMBOLS = {"ph_50": "pH_50", "steepness": "n_pH", "base_rate": "k_rel_L", "max_rate": "k_max_pH"}


def ph_law_constants() -> dict[str, float]:
    """The pH law's table constants by :func:`ph_release_rate` keyword (units ``PH_LAW_UNITS``)."""
    return {name: default(symbol) for name, symbol in _PH_LAW_SYMBOLS.items()}


def ph_release_rate(ph, *, base_rate=None, max_rate=None, ph_50=None, steepness=None,
                    xp: Namespace | None = None):
    """Release rate [1/s] of pH-sensitive liposomes at extracellular ``ph`` [1].

    ``base_rate`` k_b at neutral pH and ``max_rate`` k_max at acidic pH [1/s], midpoint
    ``ph_50`` and Hill ``steepness`` n [1]; table defaults ``k_rel_L``, ``k_max_pH``,
    ``pH_50``, ``n_pH`` where None.
    """
    xp = xp or namespace_of(ph, base_rate, max_rate, ph_50, steepness)
    k_b = value_or_default(base_rate, "k_rel_L")
    k_max = value_or_default(max_rate, "k_max_pH")
    ph_50 = value_or_default(ph_50, "pH_50")
    n = value_or_default(steepness, "n_pH")
    # 1 / (1 + 10^{n (pH - pH_50)}) = logistic(-n ln10 (pH - pH_50))
    return k_b + (k_max - k_b) * logistic(-n * LN10 * (ph - ph_50), xp)


def release_law(values: dict):
    """The release rate of an inversion's unknowns ``values`` (names other than the release law's
    are ignored): a uniform ``"release_rate"`` [1/s] as given, else k(pH) [1/s], :func:`ph_release_rate`
    with the given ``"ph_50"`` and ``"steepness"`` (floats, or DOLFINx Constants to change later) and
    the table's other constants; None without any of the three (the formulation's own law)."""
    law = {name: value for name, value in values.items() if name in ("release_rate", "ph_50", "steepness")}
    if not law:
        return None
    if "release_rate" in law:
        return law["release_rate"]
    return lambda ph: ph_release_rate(ph, **law)


def thermal_release_rate(temperature, *, base_rate=None, max_rate=None, transition=None, width=None,
                         xp: Namespace | None = None):
    """Release rate [1/s] of thermosensitive liposomes at ``temperature`` [K].

    ``base_rate`` k_b (leakage far below T_m, ~ the rate at 37 C) and ``max_rate`` k_max [1/s],
    switch midpoint ``transition`` T_m and ``width`` dT [K]; table defaults ``k_37_T``, ``k_max_T``,
    ``T_m``, ``dT_m`` where None.
    """
    xp = xp or namespace_of(temperature, base_rate, max_rate, transition, width)
    k_b = value_or_default(base_rate, "k_37_T")
    k_max = value_or_default(max_rate, "k_max_T")
    t_m = value_or_default(transition, "T_m")
    d_t = value_or_default(width, "dT_m")
    return k_b + (k_max - k_b) * logistic((temperature - t_m) / d_t, xp)


def intravascular_released_fraction(rate, transit_time=None, xp: Namespace | None = None):
    """Fraction [1] of the encapsulated drug a liposome releases while its blood passes through
    the (heated) tissue: ``1 - exp(-k tau)`` for the release ``rate`` k [1/s] (e.g.
    :func:`thermal_release_rate` of the tissue temperature, blood taken at tissue temperature)
    and the vascular ``transit_time`` tau [s] (table ``tau_v`` if None). The released drug adds
    to the local plasma free drug (intravascular release of thermosensitive liposomes, Manzoor et al.
    2012 Cancer Res 72:5566)."""
    xp = xp or namespace_of(rate, transit_time)
    return 1.0 - xp.exp(-rate * value_or_default(transit_time, "tau_v"))


def released_fraction(encapsulated, total, xp: Namespace | None = None):
    """Released fraction [1] of the drug: (total - encapsulated) / total, i.e. every form but the
    liposomal one (free, cell-bound, albumin-bound) over all of it, for ``encapsulated`` and
    ``total`` drug in the same unit (e.g. mol/m^3 of tissue, point values or voxel means). NaN
    where ``total`` <= 0 (no drug, e.g. before injection); no division warning there, and in
    torch no NaN gradient flows into the finite entries."""
    xp = xp or namespace_of(encapsulated, total)
    has_drug = total > 0
    safe_total = xp.where(has_drug, total, 1.0)
    return xp.where(has_drug, 1.0 - encapsulated / safe_total, math.nan)


def released_fraction_misfit(encapsulated, total, observed_fraction):
    """``total`` x (:func:`released_fraction` - ``observed_fraction``) = (total - encapsulated) -
    observed x total, in the unit of the drug: the released-fraction misfit without the division,
    so it stays bounded where the predicted ``total`` is near zero (PINN training)."""
    return (total - encapsulated) - observed_fraction * total
