"""DCE-MRI tracer-kinetic models and fast voxel-wise fitting.

Public units follow the OSIPI conventions: time in s, concentrations in mM, Ktrans and
PS in 1/min, Fp in mL/100 mL/min, ve and vp dimensionless, arterial delay in s.
Internally rates are in 1/s (Ktrans[1/s] = Ktrans[1/min] / 60; Fp[1/s] = Fp / 6000).

Models (Ca = plasma AIF, (x)k = convolution with exp(-k t)):
  tofts           Ct = Ktrans (Ca (x) kep),              kep = Ktrans / ve
  extended_tofts  Ct = vp Ca + Ktrans (Ca (x) kep)
  patlak          Ct = vp Ca + PS int_0^t Ca
  2cxm            Ct = Fp [E (Ca (x) K+) + (1 - E) (Ca (x) K-)]  (Sourbron & Buckley 2011)
  2cum            Ct = Fp [E int_0^t Ca + (1 - E) (Ca (x) 1/Tp)],  E = PS / (Fp + PS),
                  Tp = vp / (Fp + PS)  (the 2CXM with ve -> infinity; Sourbron & Buckley 2013)

Convolutions are exact for a piecewise-linear AIF (recursion over time vectorised over
voxels, or FFT for long uniform series). Fitting (``fit``): every model has an exact
linear integral form (Murase 2004 for the Tofts family; Flouri et al., MRM 2016;76:998 for
the 2CXM and 2CUM), solved by linear least squares for all voxels -- and, with
``fit_delay``, for every AIF shift of the delay grid at once; for the Tofts models and
Patlak the shift with the lowest linear residual (refined by a parabola) and the linear
solution start one batched Levenberg-Marquardt fit over all voxels, with the delay as a
free parameter. The 2CXM and 2CUM are fitted by variable projection (``_fit_varpro``):
for fixed rates of their impulse response they are linear in two amplitudes, so
Levenberg-Marquardt runs over the rates (and the delay) alone, the amplitudes solved in
each evaluation, from the best point of a grid over the rates (2CUM with delay: over
rates and grid delays; 2CXM with delay: at the linear solution's delay). On a uniform
time grid a delayed AIF's convolutions are windows of one convolution of the AIF
(``_delayed_convolutions``). Box bounds and ve + vp <= 1 are enforced by projection.
Where the solution is outside the bounds, the 2CXM and 2CUM continue with the bounded
model, refitted from three flows where needed, and the lowest residual is kept. Standard
errors come from the Jacobian at the optimum; parameters the data cannot determine are
NaN with a reason code (``REASONS``).
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import fft as sp_fft

from hybrid.imaging._lsq import (batched_lm, batched_varpro, combine_columns,
                                 nonnegative_two_column_lsq, standard_errors)
from hybrid.imaging.aif import (measured_aif, parker_aif, plasma_aif, plasma_aif_from_blood_signal,
                                population_plasma_aif, preclinical_aif, shift_aif)
from hybrid.imaging.signal import fit_t1_vfa, signal_to_concentration, spgr_signal

__all__ = [
    "parker_aif", "preclinical_aif", "plasma_aif", "measured_aif", "shift_aif",
    "population_plasma_aif", "plasma_aif_from_blood_signal",
    "spgr_signal", "signal_to_concentration", "fit_t1_vfa",
    "exp_convolve", "tofts", "extended_tofts", "patlak", "two_cxm", "two_cum", "MODELS",
    "REASONS", "fit",
]

MODELS = ("tofts", "extended_tofts", "patlak", "2cxm", "2cum")

_PER_MIN = 1.0 / 60.0          # 1/min -> 1/s
_FP_UNIT = 1.0 / 6000.0        # mL/100 mL/min -> 1/s

# Internal parameter vectors (rates in 1/s) and their box bounds (OSIPI test bounds:
# Ktrans, PS 0-5 /min; ve, vp 0-1; Fp 0-200 mL/100 mL/min). Volume fractions that
# divide a rate have a small positive floor.
_PARAMS = {
    "tofts": ("Ktrans", "ve"),
    "extended_tofts": ("Ktrans", "ve", "vp"),
    "patlak": ("PS", "vp"),
    "2cxm": ("Fp", "PS", "ve", "vp"),
    "2cum": ("Fp", "PS", "vp"),
}
_BOUNDS = {
    "tofts": ([0.0, 1e-4], [5 * _PER_MIN, 1.0]),
    "extended_tofts": ([0.0, 1e-4, 0.0], [5 * _PER_MIN, 1.0, 1.0]),
    "patlak": ([0.0, 0.0], [5 * _PER_MIN, 1.0]),
    "2cxm": ([0.0, 0.0, 1e-4, 1e-4], [200 * _FP_UNIT, 5 * _PER_MIN, 1.0, 1.0]),
    "2cum": ([0.0, 0.0, 1e-4], [200 * _FP_UNIT, 5 * _PER_MIN, 1.0]),
}
_TO_PUBLIC = {"Ktrans": 60.0, "PS": 60.0, "Fp": 6000.0, "ve": 1.0, "vp": 1.0}

_START_FP = (5.0, 20.0, 80.0)   # extra 2CXM/2CUM start flows [mL/100 mL/min]
_RATE_GRID = np.geomspace(1e-3, 10.0, 25)   # 2CXM/2CUM start rates [1/s], ratio 1.47
_GRID_RATES = np.concatenate([[0.0], _RATE_GRID])   # with 0: the integral of the AIF
_START_STEPS = (1, 2)   # delayed 2CUM start grid: every grid rate, every 2nd grid delay
_VARPRO_RTOL = {False: 1e-6, True: 1e-5}   # 2CXM/2CUM (without, with delay) converged:
_VARPRO_XTOL = (1e-4, 1e-3, 1e-2)   # relative cost decrease below rtol, or steps below these
                                    # in each ln k (without, with delay) and in the delay [s]
_CHUNK = 8192              # at most this many voxels are fitted together ...
_JAC_ELEMENTS = 2 ** 23    # ... and fewer when the Jacobian would exceed this size
_FFT_MIN_STEPS = 128   # longer uniformly sampled series of ...
_FFT_MAX_ROWS = 32     # ... fewer rows are convolved by FFT (the recursion vectorises better)


def exp_convolve(t_s, x, k_per_s, deriv=False):
    """int_0^t x(tau) exp(-k (t - tau)) dtau for piecewise-linear x, one k per row.

    ``x`` is (n_t,) or (n, n_t), ``k_per_s`` (n,) >= 0 [1/s]; returns (n, n_t) in units
    of x times seconds, and with ``deriv`` also its derivative with respect to k (same
    recursion, differentiated). Exact recursion y[i+1] = e y[i] + A x[i] + B x[i+1],
    run time-major (one vector operation over all rows per time step; the result is
    transposed once at the end), or by FFT for a few rows of a long uniform series.
    """
    t = np.asarray(t_s, dtype=float)
    k = np.atleast_1d(np.asarray(k_per_s, dtype=float))
    x = np.asarray(x, dtype=float)
    xt = x[:, None] if x.ndim == 1 else np.ascontiguousarray(x.T)   # (n_t, 1 or n)
    dt = np.diff(t)
    uniform = np.allclose(dt, dt[0], rtol=1e-9, atol=0.0)
    step = (dt[:1] if uniform else dt)[:, None]
    u = step * k                                      # (1, n) or (n_t - 1, n)
    e = np.exp(-u)
    small = u < 1e-3
    us = np.where(small, 1.0, u)
    q = -np.expm1(-us) / us                           # (1 - e^-u) / u
    fa = np.where(small, 0.5 - u / 3 + u * u / 8, (q - e) / us)
    fb = np.where(small, 0.5 - u / 6 + u * u / 24, (1.0 - q) / us)
    n = t.size - 1

    def source(wa, wb):
        """(n_t, rows) time-major: 0, then x[i] wa + x[i+1] wb for each step."""
        out = np.empty((t.size, k.size))
        out[0] = 0.0
        np.multiply(xt[:-1], wa, out=out[1:])
        out[1:] += xt[1:] * wb
        return out

    y = source(fa * step, fb * step)                  # time-major: contiguous rows
    if deriv:                                         # d/dk = dt d/du
        dfa = np.where(small, -1 / 3 + u / 4 - u * u / 10, (2 * e - 2 * q + e * us) / us ** 2)
        dfb = np.where(small, -1 / 6 + u / 12 - u * u / 40, (2 * q - e - 1) / us ** 2)
        dy = source(dfa * step * step, dfb * step * step)
        de = -step * e
    if uniform and n >= _FFT_MIN_STEPS and k.size < _FFT_MAX_ROWS:
        # y[1:] = src (*) e^m along time, a causal convolution done by FFT
        nfft = sp_fft.next_fast_len(2 * n, real=True)
        m = np.arange(n)[:, None]
        kern = sp_fft.rfft(e ** m, nfft, axis=0)
        spec = sp_fft.rfft(y[1:], nfft, axis=0)
        if deriv:
            dkern = sp_fft.rfft(-m * dt[0] * e ** m, nfft, axis=0)
            dy[1:] = sp_fft.irfft(sp_fft.rfft(dy[1:], nfft, axis=0) * kern + spec * dkern,
                                  nfft, axis=0)[:n]
        y[1:] = sp_fft.irfft(spec * kern, nfft, axis=0)[:n]
    else:
        carry = np.empty(k.size)
        for i in range(n):
            j = 0 if uniform else i
            if deriv:
                np.multiply(dy[i], e[j], out=carry)
                dy[i + 1] += carry
                np.multiply(y[i], de[j], out=carry)
                dy[i + 1] += carry
            np.multiply(y[i], e[j], out=carry)
            y[i + 1] += carry
    if deriv:
        return np.ascontiguousarray(y.T), np.ascontiguousarray(dy.T)
    return np.ascontiguousarray(y.T)


def _cumtrapz(t, x):
    """Running trapezoidal integral of x (..., n_t) over t, starting at 0."""
    steps = np.cumsum(0.5 * (x[..., 1:] + x[..., :-1]) * np.diff(t), axis=-1)
    return np.concatenate([np.zeros(x.shape[:-1] + (1,)), steps], axis=-1)


def _2cxm_rates(p):
    """K+, K- [1/s] and E of the 2CXM impulse response for p = (fp, ps, ve, vp)."""
    fp, ps, ve, vp = p.T
    a = (fp + ps) / vp + ps / ve
    c = fp * ps / (ve * vp)
    root = np.sqrt(np.maximum(a * a - 4.0 * c, 0.0))
    kp = 0.5 * (a + root)
    km = 2.0 * c / (a + root + 1e-300)
    e = (fp / vp - km) / np.maximum(kp - km, 1e-300)
    return np.stack([kp, km, e], axis=1)


def _model_fn(name, t, cp):
    """Return model(p, jac) -> Ct (n, n_t), and with ``jac`` also the Jacobian
    (n, n_t, n_p) (Tofts models and Patlak; the 2CXM and 2CUM are differentiated through
    their variable-projection basis, ``_separable_model_fn``); internal units. ``cp`` is
    one AIF (n_t,) or one per row (n, n_t)."""
    if name == "patlak":
        icp = _cumtrapz(t, cp)

        def model(p, jac=False):
            f = p[:, :1] * icp + p[:, 1:] * cp
            if not jac:
                return f
            return f, np.broadcast_to(np.stack([icp, cp], axis=-1), f.shape + (2,))
        return model

    if name in ("tofts", "extended_tofts"):
        def model(p, jac=False):
            kt, ve = p[:, 0], p[:, 1]
            kep = kt / ve
            g = exp_convolve(t, cp, kep, deriv=jac)
            g, gk = g if jac else (g, None)
            f = kt[:, None] * g
            if name == "extended_tofts":
                f = f + p[:, 2:3] * cp
            if not jac:
                return f
            cols = [g + kep[:, None] * gk, -(kep ** 2)[:, None] * gk]
            if name == "extended_tofts":
                cols.append(np.broadcast_to(cp, f.shape))
            return f, np.stack(cols, axis=-1)
        return model

    if name == "2cum":
        icp = _cumtrapz(t, cp)

        def model(p, jac=False):
            _no_jacobian(name, jac)
            fp, ps, vp = p.T
            flow = np.maximum(fp + ps, 1e-12)
            g = exp_convolve(t, cp, flow / vp)
            return (fp * ps / flow)[:, None] * icp + (fp * fp / flow)[:, None] * g
        return model

    def model(p, jac=False):
        _no_jacobian(name, jac)
        kp, km, e = _2cxm_rates(p).T
        n = p.shape[0]
        g = exp_convolve(t, cp if cp.ndim == 1 else np.concatenate([cp, cp]),
                         np.concatenate([kp, km]))                  # K+ rows, then K- rows
        return p[:, :1] * (g[n:] + e[:, None] * (g[:n] - g[n:]))
    return model


def _no_jacobian(name, jac):
    """Refuse a Jacobian request for the 2CXM/2CUM forward model."""
    if jac:
        raise ValueError(f"the {name} Jacobian comes from its variable-projection basis: use "
                         "_separable_model_fn")


# ---- forward models (public units; parameters broadcast over leading axes) ----

def _forward(name, t_s, cp_mM, delay_s, values):
    t = np.asarray(t_s, dtype=float)
    cp = shift_aif(t, cp_mM, delay_s) if delay_s else np.asarray(cp_mM, dtype=float)
    arrays = np.broadcast_arrays(*[np.asarray(v, dtype=float) for v in values])
    shape = arrays[0].shape
    p = np.stack([a.ravel() / _TO_PUBLIC[n] for a, n in zip(arrays, _PARAMS[name])], axis=1)
    return _model_fn(name, t, cp)(p).reshape(shape + (t.size,))


def tofts(t_s, cp_mM, Ktrans, ve, delay_s=0.0):
    """Standard Tofts tissue concentration [mM]; Ktrans [1/min], ve [-], t [s]."""
    return _forward("tofts", t_s, cp_mM, delay_s, (Ktrans, ve))


def extended_tofts(t_s, cp_mM, Ktrans, ve, vp, delay_s=0.0):
    """Extended Tofts tissue concentration [mM]; Ktrans [1/min], ve, vp [-]."""
    return _forward("extended_tofts", t_s, cp_mM, delay_s, (Ktrans, ve, vp))


def patlak(t_s, cp_mM, PS, vp, delay_s=0.0):
    """Patlak tissue concentration [mM]; PS [1/min], vp [-]."""
    return _forward("patlak", t_s, cp_mM, delay_s, (PS, vp))


def two_cxm(t_s, cp_mM, Fp, PS, ve, vp, delay_s=0.0):
    """2CXM tissue concentration [mM]; Fp [mL/100 mL/min], PS [1/min], ve, vp [-]."""
    return _forward("2cxm", t_s, cp_mM, delay_s, (Fp, PS, ve, vp))


def two_cum(t_s, cp_mM, Fp, PS, vp, delay_s=0.0):
    """2CUM tissue concentration [mM]; Fp [mL/100 mL/min], PS [1/min], vp [-]."""
    return _forward("2cum", t_s, cp_mM, delay_s, (Fp, PS, vp))


# ---- fitting ----

#: bit flags of the reason map returned by ``fit`` (0 = every parameter estimated)
REASONS = {
    1: "not fitted: outside the mask or a non-finite concentration sample",
    2: "not identifiable: a parameter's standard error exceeds half its allowed range (the "
       "fitted delay: half its search range), or ve where the exchange (Ktrans; PS in the "
       "2CXM) is below 2 standard errors; it is NaN",
    4: "at a bound: a parameter sits on an artificial limit (Ktrans or PS 5 /min, Fp 200 "
       "mL/100 mL/min, ve or vp 1, or the ve/vp floor 1e-4); it is NaN. A fitted delay on "
       "an end of its search range leaves every parameter NaN (the AIF is misplaced)",
    8: "on the volume limit: ve + vp = 1 (values kept)",
}
_NOT_FITTED, _UNIDENTIFIABLE, _AT_BOUND, _VOLUME_LIMIT = 1, 2, 4, 8
_HALF_RANGE = {name: 0.5 * (hi - lo) for model in _PARAMS
               for name, lo, hi in zip(_PARAMS[model], *_BOUNDS[model])}
_EXCHANGE = {"tofts": "Ktrans", "extended_tofts": "Ktrans", "2cxm": "PS"}


def _lls_columns(name, t, cp, ct):
    """Regressors of the exact linear integral form Ct = sum_j x_j R_j of each model.

    Returns (aif (..., n_t, k_a), tissue (n, n_t, k_t)): AIF columns from Cp (one set per
    AIF row of ``cp``) and tissue columns from the measured Ct (one set per voxel).
    """
    icp = _cumtrapz(t, cp)
    ict = _cumtrapz(t, ct)
    if name == "patlak":                          # Ct = PS int Cp + vp Cp
        return np.stack([icp, cp], -1), np.zeros(ct.shape + (0,))
    if name == "tofts":                           # Ct = Ktrans int Cp - kep int Ct
        return icp[..., None], ict[..., None]
    if name == "extended_tofts":                  # + (Ktrans + kep vp) int Cp + vp Cp
        return np.stack([icp, cp], -1), ict[..., None]
    iicp = _cumtrapz(t, icp)                      # 2CUM: Ct = Fp int Cp + d iint Cp - a int Ct
    if name == "2cum":
        return np.stack([icp, iicp], -1), ict[..., None]
    return np.stack([icp, iicp], -1), np.stack([ict, _cumtrapz(t, ict)], -1)   # 2CXM: - b iint Ct


def _lls_solve(aif, tissue, ct):
    """Least squares of ct (n, n_t) on [aif_d | tissue_n] for every AIF set d (D, n_t, k_a).

    Returns coefficients (n, D, k_a + k_t) and the residual sum of squares (n, D). The
    normal equations are assembled with matrix products over (voxels x AIF sets).
    """
    n, k_a, k_t, n_d = ct.shape[0], aif.shape[-1], tissue.shape[-1], aif.shape[0]
    k = k_a + k_t
    a = np.empty((n, n_d, k, k))
    b = np.empty((n, n_d, k))
    a[:, :, :k_a, :k_a] = np.einsum("dti,dtj->dij", aif, aif)[None]
    b[:, :, :k_a] = np.tensordot(ct, aif, axes=([1], [1]))
    for j in range(k_t):
        a[:, :, :k_a, k_a + j] = np.tensordot(tissue[..., j], aif, axes=([1], [1]))
        a[:, :, k_a + j, :k_a] = a[:, :, :k_a, k_a + j]
        b[:, :, k_a + j] = np.einsum("nt,nt->n", tissue[..., j], ct)[:, None]
        for i in range(k_t):
            a[:, :, k_a + i, k_a + j] = np.einsum("nt,nt->n", tissue[..., i], tissue[..., j])[:, None]
    diag = np.einsum("ndii->ndi", a)
    a += (1e-12 * diag.max(axis=-1) + 1e-300)[..., None, None] * np.eye(k)
    x = np.linalg.solve(a, b[..., None])[..., 0]
    rss = np.einsum("nt,nt->n", ct, ct)[:, None] - np.einsum("ndi,ndi->nd", b, x)
    return x, rss


def _lls_params(name, x):
    """Model parameters (internal units) from linear coefficients, clipped to the bounds,
    and whether each row was admissible (finite and inside the bounds) before clipping."""
    lo, hi = _BOUNDS[name]
    with np.errstate(divide="ignore", invalid="ignore"):
        if name == "patlak":
            p = x[:, :2]
        elif name in ("tofts", "extended_tofts"):
            kep = np.maximum(-x[:, -1], 1e-3 * _PER_MIN)
            vp = np.clip(x[:, 1], 0.0, 1.0) if name == "extended_tofts" else 0.0
            kt = np.clip(x[:, 0] - kep * vp, 1e-4 * _PER_MIN, hi[0])
            ve = np.clip(kt / kep, 0.01, 1.0)
            p = np.stack([kt, ve, vp] if name == "extended_tofts" else [kt, ve], axis=1)
        else:
            fp, delta, alpha = x[:, 0], x[:, 1], -x[:, 2]
            beta = -x[:, 3] if name == "2cxm" else 0.0
            total = delta / fp                    # PS/vp + PS/ve
            vp = fp / (alpha - total)
            w = beta / (alpha - total)            # PS/ve
            ps = (total - w) * vp
            if name == "2cum":
                p = np.stack([fp, ps, vp], axis=1)
            else:
                p = np.stack([fp, ps, np.clip(ps / w, 0.01, 1.0), vp], axis=1)
    default = 0.5 * (np.asarray(lo) + np.minimum(hi, 1.0))
    admissible = np.all(np.isfinite(p) & (p >= lo) & (p <= hi), axis=1)
    p = np.where(np.isfinite(p), p, default)
    return np.clip(p, lo, hi), admissible


def _shift_rows(t, c, delays, deriv=False):
    """c (n_t,) delayed by each of ``delays`` (n,) [s]: (n, n_t), linear interpolation
    (c held constant outside t); with ``deriv`` also its derivative with respect to the
    delay [c/s], exact for the interpolant (at knots: one-sided, for a growing delay)."""
    tq = t[None, :] - delays[:, None]
    shifted = np.interp(tq.ravel(), t, c).reshape(tq.shape)
    if not deriv:
        return shifted
    segment = np.ceil(np.interp(tq, t, np.arange(t.size))).astype(int) - 1   # t[j] < tq <= t[j+1]
    j = np.clip(segment, 0, t.size - 2)
    rate = np.diff(c) / np.diff(t)
    inside = (tq > t[0]) & (tq <= t[-1])
    return shifted, np.where(inside, -rate[j], 0.0)


def _delayed_model_fn(name, t, cp):
    """Model of parameters (model..., delay [s]) with a per-voxel delayed AIF. The models
    are linear in the AIF, so d Ct / d delay is the model applied to d AIF / d delay."""

    def model(p, jac=False):
        if not jac:
            return _model_fn(name, t, _shift_rows(t, cp, p[:, -1]))(p[:, :-1])
        cp_d, slope = _shift_rows(t, cp, p[:, -1], deriv=True)
        f, j = _model_fn(name, t, cp_d)(p[:, :-1], jac=True)
        return f, np.concatenate([j, _model_fn(name, t, slope)(p[:, :-1])[..., None]], axis=-1)
    return model


def _volume_projection(name):
    """Projection onto ve + vp <= 1 (Euclidean, then re-clipped at the ve floor), or None."""
    names = _PARAMS[name]
    if "ve" not in names or "vp" not in names:
        return None
    i_e, i_p = names.index("ve"), names.index("vp")
    ve_floor = _BOUNDS[name][0][i_e]

    def project(p):
        excess = np.maximum(p[:, i_e] + p[:, i_p] - 1.0, 0.0)
        ve = np.maximum(p[:, i_e] - 0.5 * excess, ve_floor)
        p[:, i_p] = np.minimum(p[:, i_p], 1.0 - ve)
        p[:, i_e] = np.minimum(ve, 1.0 - p[:, i_p])
        return p
    return project


def _parabola_minimum(values, grid):
    """Per row of ``values`` (n, m) on the uniform ``grid`` (m,): the grid point of the
    lowest value, refined by a parabola through its neighbours (by at most half a step),
    and the parabola's minimum value (the grid minimum where there is no parabola)."""
    i = np.argmin(values, axis=1)
    rows = np.arange(values.shape[0])
    best, low = grid[i].astype(float), values[rows, i]
    if grid.size < 3:
        return best, low
    inner = np.flatnonzero((i > 0) & (i < grid.size - 1))
    j = i[inner]
    r0, r1, r2 = values[inner, j - 1], values[inner, j], values[inner, j + 1]
    curv = r0 - 2 * r1 + r2
    with np.errstate(divide="ignore", invalid="ignore"):
        off = np.clip(np.where((curv > 0) & np.isfinite(curv), 0.5 * (r0 - r2) / curv, 0.0),
                      -0.5, 0.5)
        low[inner] = np.where(off != 0.0, r1 - 0.25 * (r0 - r2) * off, r1)
    best[inner] += off * (grid[1] - grid[0])
    return best, low


def _rate_grid_search(name, t, cp, ct):
    """Best pair of impulse-response rates per voxel on the 2CXM/2CUM rate grid.

    With its rates fixed, Ct = A (Cp (x) K+) + B (Cp (x) K-) (2CXM; the 2CUM has K+ = 0,
    i.e. A int Cp) is linear in A = Fp E >= 0 and B = Fp (1 - E) >= 0, so each grid pair
    is a 2 x 2 least-squares problem per voxel, all solved from the Gram matrix of the
    grid convolutions. Returns K+, K- [1/s], A, B [1/s] of the best pair and its residual
    sum of squares less sum(ct^2) [mM^2] (inf where no pair has A >= 0, B > 0), and that
    residual for every pair (n, n_pairs; 2CUM: in the order of ``_RATE_GRID``).
    """
    g = exp_convolve(t, cp, _GRID_RATES)                 # (m, n_t); row 0 is int Cp
    gram = g @ g.T                   # projections: voxels last (long inner loops), and not by
    proj = np.einsum("mt,nt->mn", g, ct)   # threaded BLAS (per-group calls of a delayed 2CXM)
    if name == "2cum":
        i, j = np.zeros(_RATE_GRID.size, dtype=int), np.arange(1, _GRID_RATES.size)
    else:
        i, j = np.triu_indices(_GRID_RATES.size, 1)[::-1]   # K+ = rates[i] > K- = rates[j]
        i, j = i[j > 0], j[j > 0]
    a, b, rss = _pair_rss(*(x[:, None] for x in (gram[i, i], gram[j, j], gram[i, j])),
                          proj[i], proj[j])
    pick = np.argmin(rss, axis=0)
    rows = np.arange(proj.shape[1])
    rates = _GRID_RATES
    return (rates[i[pick]], rates[j[pick]], a[pick, rows], b[pick, rows], rss[pick, rows],
            rss.T)


def _pair_rss(sii, sjj, sij, ri, rj):
    """Ct ~ A x_i + B x_j for pairs of grid convolutions x_i, x_j with Gram entries sii,
    sjj, sij and projections ri = ct.x_i, rj = ct.x_j (broadcasting arrays): amplitudes
    A, B and residual sum of squares less sum(ct^2) [mM^2], inf where A < 0 or B <= 0."""
    det = sii * sjj - sij * sij
    with np.errstate(divide="ignore", invalid="ignore"):
        cj, cij, ci = (np.where(det > 0, c / det, np.nan) for c in (sjj, sij, sii))
    a = cj * ri - cij * rj
    b = ci * rj - cij * ri
    rss = a * ri
    rss += b * rj
    return a, b, np.where((a >= 0) & (b > 0), -rss, np.inf)


def _from_rates(name, kp, km, a, b):
    """2CXM/2CUM parameters (n, n_p) (internal units) of the impulse response
    Ct = A (Cp (x) K+) + B (Cp (x) K-) (the 2CUM: K+ = 0, i.e. A int Cp), A, B [1/s] >= 0,
    K+ >= K- [1/s]; NaN or inf where no parameters give that response."""
    fp = a + b
    with np.errstate(divide="ignore", invalid="ignore"):
        if name == "2cum":                               # Tp = vp / (Fp + PS) = 1 / K-
            ps = a * fp / b
            return np.stack([fp, ps, (fp + ps) / km], axis=1)
        s = km + a / fp * (kp - km)                      # Fp / vp (invert _2cxm_rates)
        w = kp * km / s                                  # PS / ve
        vp = fp / s
        ps = vp * (kp + km - s - w)
        return np.stack([fp, ps, ps / w, vp], axis=1)


def _delayed_convolutions(t, cp, delay_range):
    """For a uniformly sampled ``t``: functions of per-row delays d (n,) [s] within
    ``delay_range`` [s] giving Cp_d (x) k and int Cp_d (Cp_d the AIF delayed by d, as
    ``_shift_rows``) with their derivatives, from convolutions of one AIF extended (held
    values) over the delays, no per-row AIF: on a uniform grid the recursion is shift
    invariant, so a delay of (j + w) samples is the window j..j + n_t of the extended
    result blended with weight w, less its decayed start value (zero where the window
    starts before the AIF rises). Exact for the piecewise-linear interpolant.

    Returns ``convolve(k, d)`` -> (y, dy/dk, dy/dd) and ``integral(d)`` -> (u, du/dd),
    each (n, n_t), or None where ``t`` is not uniform.
    """
    step = np.diff(t)
    if not np.allclose(step, step[0], rtol=1e-9, atol=0.0):
        return None
    dt = step[0]
    before = int(np.ceil(max(delay_range[1], 0.0) / dt)) + 1
    after = int(np.ceil(max(-delay_range[0], 0.0) / dt)) + 1
    t_ext = t[0] + dt * np.arange(-before, t.size + after)
    x_ext = np.interp(t_ext, t, cp)
    i_ext = _cumtrapz(t_ext, x_ext)
    since = t - t[0]

    def windows(d):
        """Start sample j (n,) and weight w (n, 1) of each delay: Cp_d[i] =
        (1 - w) x_ext[j + i] + w x_ext[j + 1 + i]; on a knot, w = 1 (the segment below:
        the derivative is the one of a growing delay, as ``_shift_rows``)."""
        q = before - d / dt
        j = np.clip(np.ceil(q).astype(int) - 1, 0, before + after - 1)
        return j, (q - j)[:, None]

    def blend(y, j, w):
        """(n, n_t) blend of the windows of the rows y (n, N) (or of one row y (N,)) and
        the difference of their two samples."""
        win = sliding_window_view(y, t.size + 1, axis=-1)
        span = win[np.arange(j.size), j] if y.ndim == 2 else win[j]      # (n, n_t + 1)
        diff = span[:, 1:] - span[:, :-1]
        span = span[:, :-1]
        span += w * diff
        return span, diff

    def integral(d):
        j, w = windows(d)
        u, diff = blend(i_ext, j, w)
        return u - u[:, :1], (diff[:, :1] - diff) / dt

    def convolve(k, d):
        j, w = windows(d)
        y_ext, yk_ext = exp_convolve(t_ext, x_ext, k, deriv=True)
        y, y_d = blend(y_ext, j, w)
        y_k, _ = blend(yk_ext, j, w)
        y_d *= -1.0 / dt
        rows = np.flatnonzero((y[:, 0] != 0.0) | (y_k[:, 0] != 0.0) | (y_d[:, 0] != 0.0))
        if rows.size:          # input before t[0] in the window: remove its decayed part
            decay = np.exp(-k[rows, None] * since)
            y0, yk0, yd0 = y[rows, :1], y_k[rows, :1], y_d[rows, :1]
            y_k[rows] -= decay * (yk0 - since * y0)
            y[rows] -= decay * y0
            y_d[rows] -= decay * yd0
        return y, y_k, y_d
    return convolve, integral


def _impulse_basis(name, t, cp, delay_range=None):
    """Basis of the 2CXM/2CUM for ``batched_varpro``: Ct = A u + B v with u = Cp_d (x) k1
    (the 2CUM: int Cp_d) and v = Cp_d (x) k2, Cp_d the AIF delayed by d (within
    ``delay_range`` [s], if given) or the AIF itself; theta = (ln k1 (2CXM only), ln k2
    [ln 1/s], d [s] (with ``delay_range`` only)). The derivatives in d are the basis of the
    AIF's derivative in d. ``basis(theta, rows)`` -> ((u, v), (du, dv)) as ``batched_varpro``
    wants; without a delay, ``basis(theta, rows, deriv=False)`` -> (u, v)."""
    icp = _cumtrapz(t, cp)
    delayed = delay_range is not None
    shifted = _delayed_convolutions(t, cp, delay_range) if delayed else None

    def basis(theta, rows, deriv=True):
        n = theta.shape[0]
        n_k = 1 if name == "2cum" else 2
        k = np.exp(theta[:, :n_k]).T.ravel()          # (2CXM: k1 rows, then k2 rows)
        if not (deriv or delayed):                    # the columns (u, v) alone
            g = exp_convolve(t, cp, k)
            return (np.broadcast_to(icp, g.shape), g) if name == "2cum" else (g[:n], g[n:])
        if shifted is not None:
            d = theta[:, -1]
            g, g_k, g_d = shifted[0](k, np.tile(d, n_k))
        elif delayed:
            cp_d, slope = _shift_rows(t, cp, theta[:, -1], deriv=True)
            g, g_k = exp_convolve(t, np.tile(cp_d, (n_k, 1)), k, deriv=True)
            g_d = exp_convolve(t, np.tile(slope, (n_k, 1)), k)
        else:
            g, g_k = exp_convolve(t, cp, k, deriv=True)
        g_k *= k[:, None]                             # d/d ln k
        if name == "2cum":
            if not delayed:
                return (np.broadcast_to(icp, g.shape), g), ((None,), (g_k,))
            if shifted is not None:
                u, u_d = shifted[1](theta[:, -1])
            else:
                u, u_d = _cumtrapz(t, cp_d), _cumtrapz(t, slope)
            return (u, g), ((None, u_d), (g_k, g_d))
        du, dv = (g_k[:n], None), (None, g_k[n:])
        if delayed:
            du, dv = du + (g_d[:n],), dv + (g_d[n:],)
        return (g[:n], g[n:]), (du, dv)
    return basis


def _2cum_start(t, cp, ct, delays=None):
    """2CUM start theta (ln k [ln 1/s]) (n, 1): the rate grid's residual refined by a
    parabola in ln k; with the delay grid ``delays`` [s], theta (ln k, d) (n, 2): the best
    point of a coarser grid over rates and delays (``_START_STEPS``), refined by the
    quadratic through its 3 x 3 neighbourhood (else by a parabola in each direction)."""
    log_rates = np.log(_RATE_GRID)
    if delays is None:
        return _parabola_minimum(_rate_grid_search("2cum", t, cp, ct)[-1], log_rates)[0][:, None]
    n = ct.shape[0]
    rates = np.arange(0, _RATE_GRID.size, _START_STEPS[0])
    at = delays[::_START_STEPS[1]]
    cols = np.concatenate([[0], 1 + rates])                 # of _GRID_RATES (0: int Cp)
    g = np.stack([exp_convolve(t, shift_aif(t, cp, d) if d else cp, _GRID_RATES[cols])
                  for d in at])                             # (delays, rates, n_t)
    gram = g @ g.transpose(0, 2, 1)
    proj = (g.reshape(-1, t.size) @ ct.T).reshape(at.size, cols.size, n)   # (voxels last)
    rss = _pair_rss(gram[:, :1, :1], np.einsum("djj->dj", gram)[:, 1:, None],
                    gram[:, 1:, :1], proj[:, :1], proj[:, 1:])[2]    # (delays, rates, n)
    i_d, i_k = np.divmod(np.argmin(rss.reshape(-1, n), axis=0), rates.size)
    rows = np.arange(n)
    log_k = _parabola_minimum(rss[i_d, :, rows], log_rates[rates])[0]
    d0 = _parabola_minimum(rss[:, i_k, rows].T, at)[0]
    # where the best point is inside the grid: the minimum of the quadratic through its
    # 3 x 3 neighbourhood (the rate and the delay are correlated), if within one step
    inner = np.flatnonzero((i_d > 0) & (i_d < at.size - 1) & (i_k > 0) & (i_k < rates.size - 1))
    near = rss[i_d[inner, None, None] + np.arange(-1, 2)[:, None],
               i_k[inner, None, None] + np.arange(-1, 2), inner[:, None, None]]   # (m, 3, 3)
    with np.errstate(divide="ignore", invalid="ignore"):     # (inf: no admissible pair)
        grad = 0.5 * np.stack([near[:, 2, 1] - near[:, 0, 1], near[:, 1, 2] - near[:, 1, 0]], 1)
        hxx = near[:, 2, 1] - 2 * near[:, 1, 1] + near[:, 0, 1]
        hyy = near[:, 1, 2] - 2 * near[:, 1, 1] + near[:, 1, 0]
        hxy = 0.25 * (near[:, 2, 2] - near[:, 2, 0] - near[:, 0, 2] + near[:, 0, 0])
        det = hxx * hyy - hxy * hxy
        step_d = -(hyy * grad[:, 0] - hxy * grad[:, 1]) / det
        step_k = -(hxx * grad[:, 1] - hxy * grad[:, 0]) / det
    fits = (hxx > 0) & (det > 0) & (np.abs(step_d) <= 1) & (np.abs(step_k) <= 1)
    rows = inner[fits]
    if rows.size:
        d0[rows] = at[i_d[rows]] + step_d[fits] * (at[1] - at[0])
        log_k[rows] = log_rates[rates][i_k[rows]] + step_k[fits] * (
            log_rates[rates[1]] - log_rates[rates[0]])
    return np.column_stack([log_k, d0])


def _2cxm_start(t, aif_shifts, ct, pick, lls_start):
    """2CXM start theta (ln K+, ln K-) [ln 1/s] (n, 2): the best rate-grid pair at the AIF
    ``aif_shifts[pick]`` of each voxel (the linear solution's grid delay); the rates of
    the linear solution ``lls_start`` where no pair fits."""
    rates = _2cxm_rates(lls_start)[:, :2]
    for s in np.unique(pick):
        rows = np.flatnonzero(pick == s)
        kp, km, _, _, rss, _ = _rate_grid_search("2cxm", t, aif_shifts[s], ct[rows])
        fits = np.isfinite(rss)
        rates[rows[fits]] = np.column_stack([kp, km])[fits]
    return np.log(np.maximum(rates, 1e-2 * _RATE_GRID[0]))


def _separable(name, p, delayed):
    """The 2CXM/2CUM parameters p (n, n_p [+ 1 delay]) (internal units) as amplitudes and
    basis parameters of ``_impulse_basis``: (A, B, theta) (n, 2 + n_theta)."""
    if name == "2cum":
        fp, ps, vp = p[:, :3].T
        flow = np.maximum(fp + ps, 1e-12)
        rates = np.column_stack([fp * ps / flow, fp * fp / flow, np.log(flow / vp)])
    else:
        kp, km, e = _2cxm_rates(p[:, :4]).T
        rates = np.column_stack([p[:, 0] * e, p[:, 0] * (1.0 - e),
                                 np.log(np.maximum(kp, 1e-300)), np.log(np.maximum(km, 1e-300))])
    return np.column_stack([rates, p[:, -1]]) if delayed else rates


def _separable_parts(name, basis, p, delayed):
    """Ct (n, n_t) of the 2CXM/2CUM at p (n, n_p [+ 1]) from its ``_impulse_basis``, the
    columns [u, v, A du + B dv] (n, n_t) each of its Jacobian in (A, B, theta), and
    C = d(A, B, theta)/dp (n, 2 + n_theta, n_p [+ 1]) (finite differences of the closed
    form ``_separable``): the Jacobian in p is the columns times C."""
    q = _separable(name, p, delayed)
    a, b, theta = q[:, 0], q[:, 1], q[:, 2:]
    (u, v), (du, dv) = basis(theta, None)
    cols = [u, v] + [combine_columns(a, du_i, b, dv_i) for du_i, dv_i in zip(du, dv)]
    h = 1e-7 * np.maximum(np.abs(p), 1e-8)
    chain = np.empty((p.shape[0], q.shape[1], p.shape[1]))
    for i in range(p.shape[1]):
        step = p.copy()
        step[:, i] += h[:, i]
        chain[:, :, i] = (_separable(name, step, delayed) - q) / h[:, i:i + 1]
    return a[:, None] * u + b[:, None] * v, cols, chain


def _separable_model(name, basis, p, delayed):
    """Ct (n, n_t) of the 2CXM/2CUM at p (n, n_p [+ 1]) and J^T J (n, n_p [+ 1], n_p [+ 1])
    of its Jacobian J = [u, v, A du + B dv] C (``_separable_parts``): C^T G C with G the
    Gram matrix of the columns (row-wise dot products)."""
    f, cols, chain = _separable_parts(name, basis, p, delayed)
    gram = np.empty((p.shape[0], len(cols), len(cols)))
    for i, x in enumerate(cols):
        for j in range(i + 1):
            gram[:, i, j] = gram[:, j, i] = np.einsum("nt,nt->n", x, cols[j])
    return f, chain.transpose(0, 2, 1) @ gram @ chain


def _separable_cost(basis, theta, ct):
    """Residual sum of squares (n,) [mM^2] of the best Ct = A u + B v, A, B >= 0, for the
    basis parameters theta (n, q) of an undelayed ``_impulse_basis``."""
    u, v = basis(theta, None, deriv=False)
    a, b = nonnegative_two_column_lsq(u, v, ct)[:2]
    r = a[:, None] * u + b[:, None] * v - ct
    return np.einsum("nt,nt->n", r, r)


def _separable_model_fn(name, basis, delayed):
    """``model(p, jac)`` of the 2CXM/2CUM (parameters (model..., [delay])) evaluated from
    its ``_impulse_basis``, as ``_model_fn`` / ``_delayed_model_fn``."""

    def model(p, jac=False):
        f, cols, chain = _separable_parts(name, basis, p, delayed)
        return (f, np.stack(cols, axis=-1) @ chain) if jac else f
    return model


def _fit_varpro(name, t, cp, ct, delays, theta, max_iter, fallback=None):
    """2CXM/2CUM by variable projection (``batched_varpro``) from ``theta``; ``delays``
    is the delay grid [s] (the delay is fitted, last in theta) or None.

    Ct = A u + B v (``_impulse_basis``) with A, B >= 0: Levenberg-Marquardt runs over the
    rates (and the delay) alone, the amplitudes being solved in each evaluation, so the flow
    cannot drift along its valley with the delay. Where the solution's parameters are not
    inside the bounds (a flow above 200 mL/100 mL/min; a response no 2CXM gives, e.g. one
    exponential, which variable projection cannot leave: an unused column's rate has no
    gradient), ``_refine`` continues with the bounded model and a third of the iterations,
    from the solution or from the ``fallback`` start, if given, whichever fits better:
    ``fallback(rows)`` -> (p (m, n_p [+ 1]), admissible (m,)) for those rows. Returns p
    (n, n_p [+ 1 delay]) internal units, rss (n,) and J^T J at p (J the Jacobian).
    """
    delayed = delays is not None
    n_k = 1 if name == "2cum" else 2
    lo_k, hi_k = np.log(_RATE_GRID[0]) - 2.0, np.log(_RATE_GRID[-1]) + 2.0
    lo, hi, xtol = [lo_k] * n_k, [hi_k] * n_k, [_VARPRO_XTOL[delayed]] * n_k
    if delayed:
        lo, hi, xtol = lo + [delays[0]], hi + [delays[-1]], xtol + [_VARPRO_XTOL[2]]
    basis = _impulse_basis(name, t, cp, (delays[0], delays[-1]) if delayed else None)
    theta, a, b, _ = batched_varpro(basis, ct, theta, lo, hi,
                                    max_iter, _VARPRO_RTOL[delayed], xtol)
    k = np.exp(theta[:, :n_k])
    if name == "2cum":
        kp, km = np.zeros(ct.shape[0]), k[:, 0]
    else:                                     # order the pair: K+ >= K-
        swap = k[:, 0] < k[:, 1]
        kp, km = np.where(swap, k[:, 1], k[:, 0]), np.where(swap, k[:, 0], k[:, 1])
        a, b = np.where(swap, b, a), np.where(swap, a, b)
    p = _from_rates(name, kp, km, a, b)
    lo, hi = (np.asarray(bound, dtype=float) for bound in _BOUNDS[name])
    if delayed:
        p = np.column_stack([p, theta[:, -1]])
        lo, hi = np.append(lo, delays[0]), np.append(hi, delays[-1])
    inside = np.all(np.isfinite(p) & (p >= lo) & (p < hi), axis=1)
    project = _volume_projection(name)
    if project is not None:                   # and ve + vp <= 1
        inside &= np.all(project(p.copy()) == p, axis=1)
    model = _separable_model_fn(name, basis, delayed)
    rss, jtj = np.empty(ct.shape[0]), np.empty((ct.shape[0], p.shape[1], p.shape[1]))
    f, jtj[inside] = _separable_model(name, basis, p[inside], delayed)
    rss[inside] = np.sum((f - ct[inside]) ** 2, axis=1)
    rest = np.flatnonzero(~inside)
    if rest.size:
        start = np.clip(np.where(np.isfinite(p[rest]), p[rest], 0.5 * (lo + np.minimum(hi, 1.0))),
                        lo, hi)
        if project is not None:
            start = project(start)
        admissible = np.zeros(rest.size, bool)
        if fallback is not None:
            other, other_ok = fallback(rest)
            cost = [np.sum((model(q) - ct[rest]) ** 2, axis=1) for q in (start, other)]
            use = cost[1] < cost[0]
            start[use], admissible[use] = other[use], other_ok[use]
        p[rest], rss[rest], jtj[rest] = _refine(name, ct[rest], start, admissible, model, lo, hi,
                                                max_iter // 3)
    return p, rss, jtj


def _fit_block(name, t, cp, ct, delays, max_iter):
    """Fit one block of voxels (n, n_t). ``delays`` is None (no delay) or the delay grid;
    the 2CXM and 2CUM are fitted by variable projection (``_fit_varpro``).

    Returns (p (n, n_p [+1 delay]) internal units, rss (n,), J^T J at p)."""
    if name == "2cum" and delays is not None:
        return _fit_varpro(name, t, cp, ct, delays, _2cum_start(t, cp, ct, delays), max_iter)
    aif_shifts = [cp] if delays is None else [shift_aif(t, cp, d) if d else cp for d in delays]
    aif, tissue = _lls_columns(name, t, np.stack(aif_shifts), ct)
    x, lls_rss = _lls_solve(aif, tissue, ct)
    lo, hi = (np.asarray(b, dtype=float) for b in _BOUNDS[name])
    if delays is None:
        start, admissible = _lls_params(name, x[:, 0])
        if name in ("2cxm", "2cum"):     # per voxel the better of the rate grid's start
            theta = (_2cum_start(t, cp, ct) if name == "2cum" else       # and the linear one
                     _2cxm_start(t, aif_shifts, ct, np.zeros(ct.shape[0], dtype=int), start))
            linear = _separable(name, start, False)[:, 2:]
            rows = np.flatnonzero(admissible)
            costs = [_separable_cost(_impulse_basis(name, t, cp), q[rows], ct[rows])
                     for q in (theta, linear)]
            use = rows[costs[1] < costs[0]]
            theta[use] = linear[use]
            return _fit_varpro(name, t, cp, ct, None, theta, max_iter,
                               lambda rows: (start[rows], admissible[rows]))
        model = _model_fn(name, t, cp)
    else:
        d0, _ = _parabola_minimum(lls_rss, delays)
        pick = np.argmin(np.abs(delays[None, :] - d0[:, None]), axis=1)
        start, admissible = _lls_params(name, x[np.arange(x.shape[0]), pick])
        if name == "2cxm":
            theta = np.column_stack([_2cxm_start(t, aif_shifts, ct, pick, start), d0])
            start = np.column_stack([start, d0])
            return _fit_varpro(name, t, cp, ct, delays, theta, max_iter,
                               lambda rows: (start[rows], admissible[rows]))
        start = np.column_stack([start, d0])
        model = _delayed_model_fn(name, t, cp)
        lo, hi = np.append(lo, delays[0]), np.append(hi, delays[-1])
    return _refine(name, ct, start, admissible, model, lo, hi, max_iter)


def _refine(name, ct, start, admissible, model, lo, hi, max_iter):
    """Bounded Levenberg-Marquardt of ``model`` from ``start``; for the 2CXM and 2CUM,
    where the start was not ``admissible`` or the fit ends on a bound, also from other
    flows, keeping the lowest residual. Returns (p, rss, J^T J at p)."""
    lm = dict(rtol=1e-6, project=_volume_projection(name), active_set=True, return_jtj=True)
    best = batched_lm(model, ct, start, lo, hi, max_iter, **lm)
    if name in ("2cxm", "2cum"):
        on_limit = np.any(_at_limit(name, best[0]), axis=1)
        rows = np.flatnonzero(~admissible | on_limit)
        if rows.size:                     # one batch: every extra flow for every row
            extra = np.tile(start[rows], (len(_START_FP), 1))
            extra[:, 0] = np.repeat(np.asarray(_START_FP) * _FP_UNIT, rows.size)
            trial = batched_lm(model, np.tile(ct[rows], (len(_START_FP), 1)), extra, lo, hi,
                               max_iter // 3, **lm)
            pick = np.argmin(trial[1].reshape(len(_START_FP), rows.size), axis=0)
            pick = pick * rows.size + np.arange(rows.size)
            keep = trial[1][pick] < best[1][rows]
            for held, new in zip(best, trial):
                held[rows[keep]] = new[pick[keep]]
    return best


def _at_limit(name, p):
    """(n, n_params) True where a model parameter sits on an artificial limit: an upper
    bound or a positive floor (a rate or volume of 0 is a physical value, not a limit)."""
    lo, hi = (np.asarray(b) for b in _BOUNDS[name])
    q = p[:, :lo.size]
    return (np.isclose(q, hi, rtol=1e-6, atol=0.0)
            | ((lo > 0) & np.isclose(q, lo, rtol=1e-6, atol=0.0)))


def _judge(name, p, se, reason, delays=None):
    """NaN and reason bits for parameters that are not estimates (internal units, in place).

    ``delays`` is the delay grid [s] where the delay was fitted (last in p and se). A delay
    within its convergence step ``_VARPRO_XTOL[2]`` [s] of an end of the grid sits on a
    bound, and the model parameters fitted with it are biased by the misplaced AIF: the
    whole row is NaN. A delay whose standard error exceeds half the grid's range is NaN."""
    if delays is not None and delays[-1] > delays[0]:
        ends_s = np.abs(p[:, -1:] - delays[[0, -1]])
        at_end = np.any(ends_s <= _VARPRO_XTOL[2], axis=1)
        vague = ~(se[:, -1] <= 0.5 * (delays[-1] - delays[0]))
        reason[at_end] |= _AT_BOUND
        reason[vague] |= _UNIDENTIFIABLE
        p[at_end] = np.nan
        p[vague, -1] = np.nan
    names = _PARAMS[name]
    at_limit = _at_limit(name, p)
    for i, key in enumerate(names):
        limit = at_limit[:, i]
        vague = ~(se[:, i] <= _HALF_RANGE[key])
        reason[limit] |= _AT_BOUND
        reason[vague] |= _UNIDENTIFIABLE
        p[limit | vague, i] = np.nan
    if name in _EXCHANGE:
        k = names.index(_EXCHANGE[name])
        leak = ~(p[:, k] >= 2.0 * se[:, k])
        i_e = names.index("ve")
        reason[leak & np.isfinite(p[:, i_e])] |= _UNIDENTIFIABLE
        p[leak, i_e] = np.nan
    if "ve" in names and "vp" in names:
        total = p[:, names.index("ve")] + p[:, names.index("vp")]
        reason[np.isclose(total, 1.0, rtol=1e-9, atol=0.0)] |= _VOLUME_LIMIT


def _check_inputs(t_s, ct_mM, cp_mM, model, mask):
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose one of {MODELS}")
    t = np.asarray(t_s, dtype=float)
    if t.ndim != 1 or t.size < 3 or not np.all(np.isfinite(t)) or np.any(np.diff(t) <= 0):
        raise ValueError("t_s must be a 1-D, strictly increasing array of >= 3 finite "
                         "times in seconds")
    cp = np.asarray(cp_mM, dtype=float)
    if cp.shape != t.shape or not np.all(np.isfinite(cp)):
        raise ValueError(f"cp_mM must be a finite plasma AIF of shape {t.shape} (mM), got "
                         f"shape {cp.shape}")
    ct = np.asarray(ct_mM, dtype=float)
    if ct.ndim < 1 or ct.shape[-1] != t.size:
        raise ValueError(f"ct_mM must have shape (..., {t.size}) with time last, got "
                         f"{ct.shape}")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != ct.shape[:-1]:
            raise ValueError(f"mask shape {mask.shape} must equal the spatial shape "
                             f"{ct.shape[:-1]} of ct_mM")
    n_p = len(_PARAMS[model])
    if t.size <= n_p + 1:
        raise ValueError(f"the {model} model needs more than {n_p + 1} time points, got {t.size}")
    return t, ct, cp, mask


def fit(t_s, ct_mM, cp_mM, model, fit_delay=False, *, mask=None,
        delay_range_s=(-10.0, 10.0), delay_step_s=0.5, max_iter=60):
    """Voxel-wise tracer-kinetic fit.

    t_s (n_t,) [s]; ct_mM (..., n_t) tissue concentration [mM]; cp_mM (n_t,) *plasma*
    AIF [mM] (see ``plasma_aif``); model in ``MODELS``. With ``fit_delay`` the arterial
    delay (positive = tissue lags the AIF) is fitted within ``delay_range_s`` [s]: chosen
    on the grid of step ``delay_step_s`` by the linear residual, then refined with the
    other parameters. Voxels outside ``mask`` or with non-finite samples are not fitted.

    Returns a dict of arrays with the spatial shape of ct_mM: the model's parameters
    among "Ktrans" [1/min], "ve", "vp", "PS" [1/min], "Fp" [mL/100 mL/min] and their
    standard errors "<name>_se" (same unit); "delay_s" [s] (0 unless fitted, then with
    "delay_s_se"); "rss" [mM^2], the residual sum of squares; "reason" (uint8 bit flags,
    ``REASONS``). Parameters that are not estimates (not identifiable, at an artificial
    bound) are NaN, every parameter where a fitted delay is on an end of its search range
    (unless that range is one value: then the delay is given, its "delay_s_se" 0 and the other
    standard errors those of the model at that delay), so let the range extend beyond the delays
    expected (a range starting at 0 s makes voxels with no delay NaN); ve + vp <= 1 always holds.
    """
    t, ct, cp, mask = _check_inputs(t_s, ct_mM, cp_mM, model, mask)
    spatial = ct.shape[:-1]
    flat = ct.reshape(-1, t.size)
    valid = np.all(np.isfinite(flat), axis=1)
    if mask is not None:
        valid &= mask.ravel()
    delays = None
    if fit_delay:
        lo_d, hi_d = delay_range_s
        if not (lo_d <= hi_d and delay_step_s > 0):
            raise ValueError("need delay_range_s[0] <= delay_range_s[1] and delay_step_s > 0")
        delays = np.arange(lo_d, hi_d + 0.5 * delay_step_s, delay_step_s)
    names = _PARAMS[model] + (("delay_s",) if fit_delay else ())
    n = flat.shape[0]
    p_all = np.full((n, len(names)), np.nan)
    se_all = np.full((n, len(names)), np.nan)
    rss_all = np.full(n, np.nan)
    reason = np.full(n, _NOT_FITTED, dtype=np.uint8)
    idx = np.flatnonzero(valid)
    chunk = int(np.clip(_JAC_ELEMENTS // (t.size * len(names)), 64, _CHUNK))
    for s in range(0, idx.size, chunk):
        sel = idx[s:s + chunk]
        p, rss, jtj = _fit_block(model, t, cp, flat[sel], delays, max_iter)
        if delays is not None and delays.size == 1:   # a range of one value: the delay is given, not fitted
            se = np.concatenate([standard_errors(jtj[:, :-1, :-1], rss, t.size), np.zeros((sel.size, 1))], axis=1)
        else:
            se = standard_errors(jtj, rss, t.size)
        code = np.zeros(sel.size, dtype=np.uint8)
        failed = ~np.isfinite(rss)
        code[failed] |= _NOT_FITTED
        p[failed] = np.nan
        _judge(model, p, se, code, delays)
        se[np.isnan(p)] = np.nan
        p_all[sel], se_all[sel], rss_all[sel], reason[sel] = p, se, rss, code
    out = {}
    for i, name in enumerate(names):
        unit = _TO_PUBLIC.get(name, 1.0)
        out[name] = (p_all[:, i] * unit).reshape(spatial)
        out[f"{name}_se"] = (se_all[:, i] * unit).reshape(spatial)
    if not fit_delay:
        out["delay_s"] = np.where(valid, 0.0, np.nan).reshape(spatial)
    out["rss"] = rss_all.reshape(spatial)
    out["reason"] = reason.reshape(spatial)
    return out
