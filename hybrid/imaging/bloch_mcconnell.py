"""Bloch–McConnell simulation of CEST Z-spectra (continuous-wave saturation).

Pools: free water, any number of exchanging solute pools (full x/y/z magnetisation) and an
optional semi-solid magnetisation-transfer (MT) pool (z only, Lorentzian absorption line),
with the same equations and conventions as BMCTool (schuenke/BMCTool, ``BlochMcConnellSolver``):
pool sizes ``fraction`` are relative to water (M0_water = 1), ``k_ex`` is the rate from the
pool to water (1/s) and the back rate is ``fraction * k_ex``. Saturation is a rectangular RF
of amplitude ``b1`` (T) for ``t_sat`` (s) from full relaxation; the linear system
dM/dt = A M + C is solved exactly with the matrix exponential, vectorised over offsets.
Offsets and chemical shifts are in ppm of the water resonance; everything else is SI.

``iopamidol_pools`` gives the two amide pools of iopamidol (4.27 and 5.58 ppm) with base-catalysed
exchange k = k0 + kb * 1e7 * 10**(pH - pKw) and the k0, kb, pKw of the Pagel lab's acidoCEST
Bloch-fitting parameters (CAMEL-MartyPagel/acidoCEST_MRI_Matlab, ``update_parameters.m`` and
``acidoCEST_Pagel4_ChemicalData_20220104_FinalVer.mat`` in ``Analysis Code/``; values in
``IOPAMIDOL_AMIDES`` and ``PKW_37C``).
Defaults (9.4 T, 3 uT, 6 s, 30 mM) follow the measured acidoCEST calibration's saturation; at
9.4 T the fitted log10 ratio of the two amide effects rises monotonically over pH 6.0-7.4, while
at 7 T the 5.6 ppm line merges with water near pH 7.4.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import expm

#: gyromagnetic ratio of water protons (rad/s/T); 42.5764 MHz/T as in BMCTool and the BMsim challenge.
GAMMA_H = 267.5154109126009e6
#: proton concentration of pure water (mol/L): 2 x 55.5 M.
WATER_PROTONS_M = 111.0
#: pKw at 37 C used by the acidoCEST Bloch fitting code.
PKW_37C = 13.6


@dataclass(frozen=True)
class WaterPool:
    """Free water: relaxation times t1, t2 (s); defaults are assumed phantom values."""

    t1: float = 2.5
    t2: float = 0.5


@dataclass(frozen=True)
class ExchangePool:
    """Exchanging solute pool: chemical shift (ppm from water), size relative to water,
    exchange rate pool->water k_ex (1/s), relaxation times t1, t2 (s; defaults assumed)."""

    shift_ppm: float
    fraction: float
    k_ex: float
    t1: float = 1.0
    t2: float = 0.01


@dataclass(frozen=True)
class MTPool:
    """Semi-solid MT pool with a Lorentzian absorption line of width 1/(pi t2):
    shift (ppm), size relative to water, exchange rate pool->water (1/s), t1, t2 (s).
    Defaults are typical semi-solid values [recall], not fitted to tumour data."""

    shift_ppm: float = -2.5
    fraction: float = 0.1
    k_ex: float = 30.0
    t1: float = 1.0
    t2: float = 1.0e-5


def exchange_rate(ph, k0: float, kb: float, pkw: float = PKW_37C):
    """Base-catalysed exchange rate (1/s): k0 + kb * 1e7 * 10**(pH - pKw) (Pagel lab form)."""
    return k0 + kb * 1.0e7 * 10.0 ** (np.asarray(ph, dtype=float) - pkw)


#: iopamidol amides: (shift ppm, protons per molecule, k0 1/s, kb). Shifts/k0/kb from the
#: acidoCEST parameter file (8055 and 10525 rad/s at 300 MHz = 4.27 and 5.58 ppm; Lorentzian fits
#: of the measured spectra in tests/data/acidocest put the lines at 4.2-4.3 and 5.5-5.65 ppm);
#: proton counts (2 equivalent amides at 4.2 ppm, 1 at 5.6 ppm) are [recall] (Aime et al., MRM
#: 2005;53:830).
IOPAMIDOL_AMIDES = ((4.27, 2, 0.0, 85.0), (5.58, 1, 41.0, 693.0))


def iopamidol_pools(ph: float, concentration: float = 0.030, t1: float = 1.0, t2: float = 0.01,
                    pkw: float = PKW_37C,
                    shifts_ppm: tuple[float, float] | None = None) -> tuple[ExchangePool, ...]:
    """The two iopamidol amide pools at ``ph`` for an agent ``concentration`` in mol/L, at
    ``shifts_ppm`` (default: the measured positions in ``IOPAMIDOL_AMIDES``)."""
    if not np.isfinite(ph):
        raise ValueError(f"pH must be finite, got {ph!r}")
    if concentration <= 0:
        raise ValueError(f"concentration must be > 0 mol/L, got {concentration!r}")
    shifts = [a[0] for a in IOPAMIDOL_AMIDES] if shifts_ppm is None else shifts_ppm
    return tuple(
        ExchangePool(shift_ppm=shift, fraction=n * concentration / WATER_PROTONS_M,
                     k_ex=float(exchange_rate(ph, k0, kb, pkw)), t1=t1, t2=t2)
        for shift, (_, n, k0, kb) in zip(shifts, IOPAMIDOL_AMIDES))


def _system(dw, w1, w0, water, pools, mt):
    """A (n_off, m, m) and C (m,) of dM/dt = A M + C, relaxed state M0 (m,), index of water Mz."""
    n_p = 1 + len(pools)
    shift = np.array([0.0] + [p.shift_ppm for p in pools]) * w0
    r1 = np.array([1 / water.t1] + [1 / p.t1 for p in pools])
    r2 = np.array([1 / water.t2] + [1 / p.t2 for p in pools])
    frac = np.array([1.0] + [p.fraction for p in pools])
    k_back = np.array([0.0] + [p.k_ex for p in pools])          # pool -> water
    k_fwd = frac * k_back                                       # water -> pool
    exch = np.diag(-k_back)
    exch[0, 1:] = k_back[1:]
    exch[1:, 0] = k_fwd[1:]
    exch[0, 0] = -k_fwd.sum()
    m = 3 * n_p + (mt is not None)
    a = np.zeros((dw.size, m, m))
    idx = np.arange(n_p)
    x, y, z = idx, n_p + idx, 2 * n_p + idx
    for comp, rate in ((x, r2), (y, r2), (z, r1)):
        a[:, comp[:, None], comp[None, :]] = exch - np.diag(rate)
    d = dw[:, None] - shift[None, :]
    a[:, x, y] = d
    a[:, y, x] = -d
    a[:, y, z] = w1
    a[:, z, y] = -w1
    c = np.zeros(m)
    c[z] = r1 * frac
    m0 = np.zeros(m)
    m0[z] = frac
    if mt is not None:
        s = 3 * n_p
        dmt = dw - mt.shift_ppm * w0
        r_rf = w1 ** 2 * mt.t2 / (1 + (dmt * mt.t2) ** 2)
        a[:, s, s] = -1 / mt.t1 - mt.k_ex - r_rf
        a[:, s, z[0]] = mt.fraction * mt.k_ex
        a[:, z[0], s] = mt.k_ex
        a[:, z[0], z[0]] -= mt.fraction * mt.k_ex
        c[s] = mt.fraction / mt.t1
        m0[s] = mt.fraction
    return a, c, m0, z[0]


def z_spectrum(offsets_ppm, water: WaterPool, pools=(), mt: MTPool | None = None, *, b0: float = 9.4,
               b1: float = 3.0e-6, t_sat: float | None = 6.0, b0_shift_ppm: float = 0.0,
               gamma: float = GAMMA_H) -> np.ndarray:
    """Z = Mz_water / M0_water after CW saturation at ``offsets_ppm`` (ppm from water).

    b0 field (T), b1 RF amplitude (T), t_sat saturation time (s; None = steady state),
    b0_shift_ppm: water resonance shift (the measured water dip appears at +b0_shift_ppm).
    """
    off = np.asarray(offsets_ppm, dtype=float)
    if off.ndim != 1 or off.size == 0 or not np.all(np.isfinite(off)):
        raise ValueError("offsets_ppm must be a non-empty 1-D array of finite values (ppm)")
    if b0 <= 0 or b1 < 0 or (t_sat is not None and t_sat < 0):
        raise ValueError(f"need b0 > 0 T, b1 >= 0 T, t_sat >= 0 s or None; got {b0}, {b1}, {t_sat}")
    w0 = gamma * b0 * 1e-6                                      # rad/s per ppm
    a, c, m0, iz = _system((off - b0_shift_ppm) * w0, gamma * b1, w0, water, tuple(pools), mt)
    m_ss = np.linalg.solve(a, np.broadcast_to(-c, (off.size, c.size))[..., None])[..., 0]
    if t_sat is None:
        return m_ss[:, iz]
    m = m_ss + np.einsum("nij,nj->ni", _expm(a * t_sat), m0 - m_ss)
    return m[:, iz]


def _expm(a):
    """Batched matrix exponential by eigendecomposition (about 15x faster than scipy's
    Pade expm here), falling back to scipy.linalg.expm where the eigenvectors are ill-conditioned."""
    lam, vec = np.linalg.eig(a)
    out = np.real((vec * np.exp(lam)[:, None, :]) @ np.linalg.inv(vec))
    bad = np.linalg.cond(vec) > 1e6
    if np.any(bad):
        out[bad] = expm(a[bad])
    return out


def simulate_iopamidol(offsets_ppm, ph, *, concentration: float = 0.030, water: WaterPool = WaterPool(),
                       mt: MTPool | None = None, b0: float = 9.4, b1: float = 3.0e-6,
                       t_sat: float | None = 6.0, b0_shift_ppm=0.0, noise_sd: float = 0.0,
                       rng: np.random.Generator | None = None, shifts_ppm: tuple[float, float] | None = None):
    """Iopamidol Z-spectra for each pH in ``ph`` (any shape): returns (*ph.shape, n_offsets).

    ``b0_shift_ppm`` broadcasts against ``ph``. With ``noise_sd`` > 0 (fraction of S0), complex
    Gaussian noise is added and the magnitude taken (Rician, as in magnitude images); then
    ``rng`` (a numpy Generator) is required.
    """
    ph_arr = np.asarray(ph, dtype=float)
    shift = np.broadcast_to(np.asarray(b0_shift_ppm, dtype=float), ph_arr.shape)
    off = np.asarray(offsets_ppm, dtype=float)
    z = np.empty(ph_arr.shape + off.shape)
    for i in np.ndindex(ph_arr.shape):
        z[i] = z_spectrum(off, water, iopamidol_pools(ph_arr[i], concentration, shifts_ppm=shifts_ppm), mt,
                          b0=b0, b1=b1, t_sat=t_sat, b0_shift_ppm=shift[i])
    if noise_sd > 0:
        if rng is None:
            raise ValueError("noise_sd > 0 needs rng=np.random.default_rng(seed) for reproducibility")
        z = np.abs(z + noise_sd * (rng.standard_normal(z.shape) + 1j * rng.standard_normal(z.shape)))
    return z
