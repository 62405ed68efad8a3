"""Closed-form steady Krogh-cylinder concentration with a first-order sink (SI units).

Annulus ``R_c <= r <= R_t`` around one vessel, ``D (c'' + c'/r) = k c``, no flux at ``R_t`` and at
the vessel wall either a Robin condition ``-D c'(R_c) = P (c_v - c(R_c))`` (permeable wall) or a
Dirichlet value ``c(R_c) = c_v``. With ``lam = sqrt(k/D)`` and ``g = I0(lam r) + beta K0(lam r)``,
``beta = I1(lam R_t)/K1(lam R_t)``: Robin ``c = A g``, ``A = P c_v / (P g(R_c) - D g'(R_c))``;
Dirichlet ``c = c_v g / g(R_c)``. SI units; exponentially scaled Bessel functions keep
``lam R_t`` of several hundred finite.
"""

from __future__ import annotations

import numpy as np
from scipy import special

__all__ = ["krogh_concentration", "half_distance"]


def _shape(r, lam: float, r_tissue: float):
    """g(r) and g'(r), both times exp(-lam R_t) (a common factor that cancels in the formulas)."""
    r = np.asarray(r, dtype=float)
    ratio = special.ive(1, lam * r_tissue) / special.kve(1, lam * r_tissue)   # beta exp(-2 lam R_t)
    grow, decay = np.exp(lam * (r - r_tissue)), np.exp(lam * (r_tissue - r))
    g = special.ive(0, lam * r) * grow + ratio * special.kve(0, lam * r) * decay
    dg = lam * (special.ive(1, lam * r) * grow - ratio * special.kve(1, lam * r) * decay)
    return g, dg


def krogh_concentration(r, *, diffusivity: float, sink_rate: float, r_vessel: float, r_tissue: float,
                        vessel_concentration: float, permeability: float | None = None):
    """Steady concentration [mol/m^3] at radii ``r`` [m] (module formula). ``diffusivity`` D
    [m^2/s], ``sink_rate`` k [1/s] > 0, ``permeability`` P [m/s] of the wall (None: Dirichlet
    wall), ``vessel_concentration`` c_v [mol/m^3]."""
    if not sink_rate > 0:
        raise ValueError(f"the Krogh closed form needs a first-order sink rate > 0 1/s, got {sink_rate}")
    lam = np.sqrt(sink_rate / diffusivity)
    g, _ = _shape(r, lam, r_tissue)
    g_c, dg_c = _shape(r_vessel, lam, r_tissue)
    if permeability is None:
        return vessel_concentration * g / g_c
    return permeability * vessel_concentration * g / (permeability * g_c - diffusivity * dg_c)


def half_distance(radii, concentration) -> float:
    """Distance [m] from the innermost radius at which a decreasing radial profile falls to half
    its value there (linear interpolation; NaN if it never does)."""
    radii, concentration = np.asarray(radii, float), np.asarray(concentration, float)
    half = 0.5 * concentration[0]
    below = np.nonzero(concentration <= half)[0]
    if below.size == 0:
        return float("nan")
    i = below[0]
    r = np.interp(half, [concentration[i], concentration[i - 1]], [radii[i], radii[i - 1]])
    return float(r - radii[0])
