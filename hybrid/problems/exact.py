"""Closed-form steady interstitial fluid pressure (Baxter & Jain 1989) in 1-D, 2-D and 3-D.

Inside each region the Darcy-Starling equation with constant coefficients is the screened
Poisson equation ``K lap(p) = K lam^2 (p - p_inf)`` (Baxter & Jain 1989 Microvasc Res 37:77), with

    lam^2 = (Lp S/V + LpL SL/V) / K               [1/m^2]
    p_inf = (Lp S/V p_e + LpL SL/V p_L) / (Lp S/V + LpL SL/V)   [Pa]
    p_e   = p_v - sigma (pi_v - pi_i)             [Pa]

Radially symmetric solutions (slab x >= 0, disc/cylinder, sphere) are combinations of two
basis functions per region; :func:`radial_pressure` glues concentric regions together with
continuity of ``p`` and of the flux ``K dp/dr`` and a Dirichlet value at the outermost radius.
:func:`baxter_jain_pressure` gives the textbook single-region formulas (Baxter & Jain 1989),
used to check the general solver. Everything is SI; exponentials are scaled so that
``lam * R`` of several hundred does not overflow.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

from hybrid.problems.exchange import effective_pressure  # the one definition; re-exported here

__all__ = ["RadialRegion", "RadialSolution", "radial_pressure", "baxter_jain_pressure",
           "screening", "effective_pressure"]


def screening(K: float, LpSV: float, pe: float, LpSV_L: float = 0.0,
              pL: float = 0.0) -> tuple[float, float]:
    """Screening constant ``lam`` [1/m] and far-field pressure ``p_inf`` [Pa] of one region."""
    sink = LpSV + LpSV_L
    if sink <= 0.0:
        raise ValueError("region has no vascular or lymphatic exchange (Lp S/V + LpL SL/V = 0)")
    return float(np.sqrt(sink / K)), (LpSV * pe + LpSV_L * pL) / sink


@dataclass(frozen=True)
class RadialRegion:
    """A shell ``r_prev < r < outer_radius`` with constant coefficients (SI units)."""

    outer_radius: float   # m
    conductivity: float   # K, m^2/(Pa s)
    lam: float            # screening constant, 1/m
    p_inf: float          # Pa


def _basis(dim: int, lam: float, r: np.ndarray, a: float, b: float, regular: bool):
    """Values and r-derivatives of the homogeneous solutions on the shell [a, b].

    Scaled so that each is O(1) somewhere on [a, b] and never overflows. ``regular``
    returns the single solution that is smooth at the origin (innermost region).
    """
    lr = lam * r
    if dim == 1:
        grow = np.exp(lam * (r - b))
        if regular:  # cosh(lam r) / e^{lam b}
            mirror = np.exp(-lam * (r + b))
            return [(grow + mirror, lam * (grow - mirror))]
        decay = np.exp(-lam * (r - a))
        return [(grow, lam * grow), (decay, -lam * decay)]
    if dim == 2:
        grow_scale = np.exp(lam * (r - b))
        i0 = special.ive(0, lr) * grow_scale
        di0 = lam * special.ive(1, lr) * grow_scale
        if regular:
            return [(i0, di0)]
        decay_scale = np.exp(-lam * (r - a))
        k0 = special.kve(0, lr) * decay_scale
        dk0 = -lam * special.kve(1, lr) * decay_scale
        return [(i0, di0), (k0, dk0)]
    if dim == 3:
        if regular:  # 2 sinh(lam r) / (r e^{lam b}), finite at r = 0
            rs = np.maximum(r, 1e-300)
            small = lr < 1.0
            grow, mirror = np.exp(lam * (rs - b)), np.exp(-lam * (rs + b))
            sinh_r = np.where(small, 2.0 * np.exp(-lam * b) * np.sinh(lam * rs) / rs, (grow - mirror) / rs)
            cosh_term = lam * (grow + mirror)
            dsinh_r = np.where(small & (lr < 1e-4), 2.0 * np.exp(-lam * b) * lam**3 * rs / 3.0,
                               (cosh_term - sinh_r) / rs)
            return [(sinh_r, dsinh_r)]
        grow = np.exp(lam * (r - b)) / r
        decay = np.exp(-lam * (r - a)) / r
        return [(grow, grow * (lam - 1.0 / r)), (decay, -decay * (lam + 1.0 / r))]
    raise ValueError(f"dim must be 1, 2 or 3, got {dim}")


class RadialSolution:
    """Piecewise closed-form pressure; call ``.pressure(r)`` [Pa] or ``.velocity(r)`` [m/s]."""

    def __init__(self, dim: int, regions: list[RadialRegion], coefficients: list[np.ndarray]):
        self.dim, self.regions, self.coefficients = dim, regions, coefficients

    def _evaluate(self, r: np.ndarray, derivative: bool) -> np.ndarray:
        r = np.abs(np.asarray(r, dtype=float))
        out = np.full(r.shape, np.nan)
        inner = 0.0
        for index, (region, coeffs) in enumerate(zip(self.regions, self.coefficients)):
            last = index == len(self.regions) - 1
            inside = (r >= inner) & ((r <= region.outer_radius * (1 + 1e-12)) if last
                                     else (r < region.outer_radius))
            rr = r[inside]
            basis = _basis(self.dim, region.lam, rr, inner, region.outer_radius, index == 0)
            value = sum(c * f[1 if derivative else 0] for c, f in zip(coeffs, basis))
            if derivative:
                out[inside] = -region.conductivity * value
            else:
                out[inside] = region.p_inf + value
            inner = region.outer_radius
        return out

    def pressure(self, r) -> np.ndarray:
        """Pressure [Pa] at distance ``r`` [m] from the centre (NaN outside the domain)."""
        return self._evaluate(r, derivative=False)

    def velocity(self, r) -> np.ndarray:
        """Radial Darcy velocity ``u_r = -K dp/dr`` [m/s] at ``r`` [m]."""
        return self._evaluate(r, derivative=True)


def radial_pressure(dim: int, regions: list[RadialRegion], boundary_pressure: float,
                    robin_coefficient: float | None = None) -> RadialSolution:
    """Solve for the radial pressure in concentric regions.

    ``regions`` run from the centre outwards. At the outermost radius ``p = boundary_pressure``
    (Dirichlet), or, with ``robin_coefficient`` h [m/(Pa s)], the outflow
    ``-K dp/dr = h (p - boundary_pressure)`` (Robin).
    """
    if not regions:
        raise ValueError("need at least one region")
    radii = [reg.outer_radius for reg in regions]
    if any(b <= a for a, b in zip([0.0] + radii, radii)):
        raise ValueError(f"region radii must increase from the centre: {radii}")
    sizes = [1] + [2] * (len(regions) - 1)
    offsets = np.cumsum([0] + sizes)
    n = int(offsets[-1])
    matrix, rhs = np.zeros((n, n)), np.zeros(n)
    row, inner = 0, 0.0
    for index, region in enumerate(regions):
        b = np.array([region.outer_radius])
        here = _basis(dim, region.lam, b, inner, region.outer_radius, index == 0)
        cols = slice(offsets[index], offsets[index + 1])
        if index == len(regions) - 1:  # outer boundary: p = p_b, or K p' + h p = h p_b
            if robin_coefficient is None:
                matrix[row, cols] = [f[0][0] for f in here]
                rhs[row] = boundary_pressure - region.p_inf
            else:
                h = robin_coefficient
                matrix[row, cols] = [region.conductivity * f[1][0] + h * f[0][0] for f in here]
                rhs[row] = h * (boundary_pressure - region.p_inf)
            row += 1
            break
        nxt = regions[index + 1]
        there = _basis(dim, nxt.lam, b, region.outer_radius, nxt.outer_radius, False)
        ncols = slice(offsets[index + 1], offsets[index + 2])
        matrix[row, cols] = [f[0][0] for f in here]            # continuity of p
        matrix[row, ncols] = [-f[0][0] for f in there]
        rhs[row] = nxt.p_inf - region.p_inf
        matrix[row + 1, cols] = [region.conductivity * f[1][0] for f in here]  # of K dp/dr
        matrix[row + 1, ncols] = [-nxt.conductivity * f[1][0] for f in there]
        row += 2
        inner = region.outer_radius
    solution = np.linalg.solve(matrix, rhs)
    coefficients = [solution[offsets[i]:offsets[i + 1]] for i in range(len(regions))]
    return RadialSolution(dim, list(regions), coefficients)


def baxter_jain_pressure(dim: int, r, R: float, alpha: float, pe: float) -> np.ndarray:
    """Textbook isolated-tumour IFP with ``p(R) = 0`` (Baxter & Jain 1989 Microvasc Res 37:77, eq. 8a).

    ``alpha = R sqrt(Lp S/V / K)``. Slab: ``1 - cosh(a x)/cosh(a)``; disc:
    ``1 - I0(a r)/I0(a)``; sphere: ``1 - sinh(a r)/(r sinh a)`` (in units of R and p_e).
    """
    x = np.abs(np.asarray(r, dtype=float)) / R
    if dim == 1:
        shape = np.cosh(alpha * x) / np.cosh(alpha)
    elif dim == 2:
        shape = special.iv(0, alpha * x) / special.iv(0, alpha)
    elif dim == 3:
        xs = np.maximum(x, 1e-300)
        shape = np.where(x > 0, np.sinh(alpha * xs) / (xs * np.sinh(alpha)), alpha / np.sinh(alpha))
    else:
        raise ValueError(f"dim must be 1, 2 or 3, got {dim}")
    return pe * (1.0 - shape)
