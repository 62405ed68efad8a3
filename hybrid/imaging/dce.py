"""DCE-MRI tracer-kinetic models and fast voxel-wise fitting.

Public units follow the OSIPI conventions: time in s, concentrations in mM, Ktrans and
PS in 1/min, Fp in mL/100 mL/min, ve and vp dimensionless, arterial delay in s.
Internally rates are in 1/s (Ktrans[1/s] = Ktrans[1/min] / 60; Fp[1/s] = Fp / 6000).

Models (Ca = plasma AIF, (x)k = convolution with exp(-k t)):
  tofts           Ct = Ktrans (Ca (x) kep),              kep = Ktrans / ve
  extended_tofts  Ct = vp Ca + Ktrans (Ca (x) kep)
  patlak          Ct = vp Ca + PS int_0^t Ca
  2cxm            Ct = Fp [E (Ca (x) K+) + (1 - E) (Ca (x) K-)]  (Sourbron & Buckley 2011)

Convolutions are exact for a piecewise-linear AIF (recursion over time vectorised over
voxels, or FFT for long uniform series). Fitting: linear least squares (Murase 2004 for
the Tofts family) for start values, then batched Levenberg-Marquardt with box bounds
over all voxels at once; the 2CXM is multi-started (3 flows x 2 PS x 2 vp) around the
extended Tofts solution and keeps the best. An arterial delay is fitted by a grid
search over AIF shifts (lowest residual per voxel).
"""

import numpy as np
from scipy import fft as sp_fft

from hybrid.imaging._lsq import batched_lm
from hybrid.imaging.aif import measured_aif, parker_aif, plasma_aif, preclinical_aif, shift_aif
from hybrid.imaging.signal import fit_t1_vfa, signal_to_concentration, spgr_signal

__all__ = [
    "parker_aif", "preclinical_aif", "plasma_aif", "measured_aif", "shift_aif",
    "spgr_signal", "signal_to_concentration", "fit_t1_vfa",
    "exp_convolve", "tofts", "extended_tofts", "patlak", "two_cxm", "MODELS", "fit",
]

MODELS = ("tofts", "extended_tofts", "patlak", "2cxm")

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
}
_BOUNDS = {
    "tofts": ([0.0, 1e-4], [5 * _PER_MIN, 1.0]),
    "extended_tofts": ([0.0, 1e-4, 0.0], [5 * _PER_MIN, 1.0, 1.0]),
    "patlak": ([0.0, 0.0], [5 * _PER_MIN, 1.0]),
    "2cxm": ([0.0, 0.0, 1e-4, 1e-4], [200 * _FP_UNIT, 5 * _PER_MIN, 1.0, 1.0]),
}
_TO_PUBLIC = {"Ktrans": 60.0, "PS": 60.0, "Fp": 6000.0, "ve": 1.0, "vp": 1.0}

_2CXM_START_FP = (5.0, 20.0, 80.0)   # multi-start flows [mL/100 mL/min]
_CHUNK = 8192              # at most this many voxels are fitted together ...
_JAC_ELEMENTS = 2 ** 22    # ... and fewer when the Jacobian would exceed this size
_FFT_MIN_STEPS = 128   # longer uniformly sampled series are convolved by FFT


def exp_convolve(t_s, x, k_per_s):
    """int_0^t x(tau) exp(-k (t - tau)) dtau for piecewise-linear x, one k per row.

    ``x`` is (n_t,) or (n, n_t), ``k_per_s`` (n,) >= 0 [1/s]; returns (n, n_t) in units
    of x times seconds. Exact recursion y[i+1] = e y[i] + A x[i] + B x[i+1], evaluated
    by FFT for long uniformly sampled series.
    """
    t = np.asarray(t_s, dtype=float)
    k = np.atleast_1d(np.asarray(k_per_s, dtype=float))
    x = np.asarray(x, dtype=float)
    dt = np.diff(t)
    uniform = np.allclose(dt, dt[0], rtol=1e-9, atol=0.0)
    u = k[:, None] * (dt[:1] if uniform else dt)      # (n, 1) or (n, n_t - 1)
    e = np.exp(-u)
    small = u < 1e-3
    us = np.where(small, 1.0, u)
    q = -np.expm1(-us) / us                           # (1 - e^-u) / u
    fa = np.where(small, 0.5 - u / 3 + u * u / 8, (q - e) / us)
    fb = np.where(small, 0.5 - u / 6 + u * u / 24, (1.0 - q) / us)
    src = (x[..., :-1] * fa + x[..., 1:] * fb) * dt   # (n, n_t - 1)
    n = t.size - 1
    if uniform and n >= _FFT_MIN_STEPS:
        # y[1:] = src (*) e^m, a causal convolution done by FFT
        nfft = sp_fft.next_fast_len(2 * n, real=True)
        kern = e ** np.arange(n)
        y = np.zeros((k.size, t.size))
        y[:, 1:] = sp_fft.irfft(sp_fft.rfft(src, nfft) * sp_fft.rfft(kern, nfft), nfft)[:, :n]
        return y
    src_t = np.ascontiguousarray(src.T)               # time-major for contiguous rows
    e_t = np.broadcast_to(e, src.shape).T
    y = np.zeros((t.size, k.size))
    for i in range(n):
        y[i + 1] = e_t[i] * y[i] + src_t[i]
    return y.T


def _conv_deriv(t, cp, k, g):
    """Forward-difference derivative of g = exp_convolve(t, cp, k) with respect to k."""
    h = 1e-6 * k + 1e-10
    return (exp_convolve(t, cp, k + h) - g) / h[:, None]


def _cumtrapz(t, x):
    return np.concatenate([[0.0], np.cumsum(0.5 * (x[1:] + x[:-1]) * np.diff(t))])


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
    (n, n_t, n_p); internal units."""
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
            g = exp_convolve(t, cp, kep)
            f = kt[:, None] * g
            if name == "extended_tofts":
                f = f + p[:, 2:3] * cp
            if not jac:
                return f
            gk = _conv_deriv(t, cp, kep, g)
            cols = [g + kep[:, None] * gk, -(kep ** 2)[:, None] * gk]
            if name == "extended_tofts":
                cols.append(np.broadcast_to(cp, f.shape))
            return f, np.stack(cols, axis=-1)
        return model

    def model(p, jac=False):
        rates = _2cxm_rates(p)
        kp, km, e = rates.T
        gp = exp_convolve(t, cp, kp)
        gm = exp_convolve(t, cp, km)
        fp = p[:, :1]
        shape = e[:, None] * gp + (1.0 - e[:, None]) * gm
        f = fp * shape
        if not jac:
            return f
        # chain rule through (K+, K-, E), whose derivatives are cheap finite differences
        d_rates = np.stack([fp * e[:, None] * _conv_deriv(t, cp, kp, gp),
                            fp * (1.0 - e[:, None]) * _conv_deriv(t, cp, km, gm),
                            fp * (gp - gm)], axis=-1)                      # (n, n_t, 3)
        h = 1e-7 * np.maximum(np.abs(p), 1e-8)
        drdp = np.empty((p.shape[0], 3, 4))
        for i in range(4):
            ph = p.copy()
            ph[:, i] += h[:, i]
            drdp[:, :, i] = (_2cxm_rates(ph) - rates) / h[:, i:i + 1]
        j = d_rates @ drdp
        j[:, :, 0] += shape
        return f, j
    return model


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


# ---- fitting ----

def _murase_init(name, t, cp, ct):
    """Linear least-squares (Murase 2004) start values in internal units, clipped."""
    icp = _cumtrapz(t, cp)
    if name == "patlak":
        x = np.stack([icp, cp], axis=1)
        p = ct @ np.linalg.pinv(x).T
    else:
        ict = np.concatenate([np.zeros((ct.shape[0], 1)),
                              np.cumsum(0.5 * (ct[:, 1:] + ct[:, :-1]) * np.diff(t), axis=1)],
                             axis=1)
        cols = [np.broadcast_to(icp, ct.shape), -ict]
        if name == "extended_tofts":
            cols.append(np.broadcast_to(cp, ct.shape))
        x = np.stack(cols, axis=-1)
        xtx = np.einsum("ntp,ntq->npq", x, x) + 1e-12 * np.eye(len(cols))
        sol = np.linalg.solve(xtx, np.einsum("ntp,nt->np", x, ct)[..., None])[..., 0]
        kep = np.clip(sol[:, 1], 1e-3 * _PER_MIN, None)
        vp = np.clip(sol[:, 2], 0.0, 1.0) if name == "extended_tofts" else 0.0
        kt = np.clip(sol[:, 0] - kep * vp, 1e-4 * _PER_MIN, 5 * _PER_MIN)
        ve = np.clip(kt / kep, 0.01, 1.0)
        p = np.stack([kt, ve, vp] if name == "extended_tofts" else [kt, ve], axis=1)
    lo, hi = _BOUNDS[name]
    return np.clip(np.nan_to_num(p), lo, hi)


def _fit_block(name, t, cp, ct, max_iter):
    """Fit one block of voxels (n, n_t) at a fixed AIF; returns (p internal, rss)."""
    lo, hi = _BOUNDS[name]
    if name != "2cxm":
        return batched_lm(_model_fn(name, t, cp), ct, _murase_init(name, t, cp, ct),
                          lo, hi, max_iter)
    kt, ve, vp = batched_lm(_model_fn("extended_tofts", t, cp), ct,
                            _murase_init("extended_tofts", t, cp, ct),
                            *_BOUNDS["extended_tofts"], max_iter)[0].T
    kt = np.maximum(kt, 1e-3 * _PER_MIN)
    model = _model_fn("2cxm", t, cp)
    best_p, best_rss = None, None
    for fp in _2CXM_START_FP:
        for ps_scale in (1.0, 3.0):
            for vp0 in (np.maximum(vp, 1e-2), np.full_like(vp, 0.1)):
                start = np.stack([np.full_like(kt, fp * _FP_UNIT), ps_scale * kt, ve, vp0], 1)
                p, rss = batched_lm(model, ct, start, lo, hi, max_iter)
                if best_p is None:
                    best_p, best_rss = p, rss
                else:
                    better = rss < best_rss
                    best_p[better], best_rss[better] = p[better], rss[better]
    return best_p, best_rss


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
    return t, ct, cp, mask


def fit(t_s, ct_mM, cp_mM, model, fit_delay=False, *, mask=None,
        delay_range_s=(-10.0, 10.0), delay_step_s=0.5, max_iter=60):
    """Voxel-wise tracer-kinetic fit.

    t_s (n_t,) [s]; ct_mM (..., n_t) tissue concentration [mM]; cp_mM (n_t,) *plasma*
    AIF [mM] (see ``plasma_aif``); model in ``MODELS``. With ``fit_delay`` the AIF is
    delayed by each value of the grid ``delay_range_s`` (step ``delay_step_s``) [s] and
    the lowest-residual fit per voxel is kept (positive delay = tissue lags the AIF).
    Voxels outside ``mask`` or with non-finite samples get NaN.

    Returns a dict of arrays with the spatial shape of ct_mM: the model's parameters
    among "Ktrans" [1/min], "ve", "vp", "PS" [1/min], "Fp" [mL/100 mL/min]; "delay_s"
    [s] (0 unless fitted); "rss" [mM^2], the residual sum of squares.
    """
    t, ct, cp, mask = _check_inputs(t_s, ct_mM, cp_mM, model, mask)
    spatial = ct.shape[:-1]
    flat = ct.reshape(-1, t.size)
    valid = np.all(np.isfinite(flat), axis=1)
    if mask is not None:
        valid &= mask.ravel()
    if fit_delay:
        lo_d, hi_d = delay_range_s
        if not (lo_d <= hi_d and delay_step_s > 0):
            raise ValueError("need delay_range_s[0] <= delay_range_s[1] and delay_step_s > 0")
        delays = np.arange(lo_d, hi_d + 0.5 * delay_step_s, delay_step_s)
    else:
        delays = np.zeros(1)
    names = _PARAMS[model]
    n = flat.shape[0]
    best_p = np.full((n, len(names)), np.nan)
    best_rss = np.full(n, np.inf)
    best_delay = np.full(n, np.nan)
    idx = np.flatnonzero(valid)
    chunk = int(np.clip(_JAC_ELEMENTS // (t.size * len(names)), 64, _CHUNK))
    for d in delays:
        cp_d = shift_aif(t, cp, d) if d else cp
        for s in range(0, idx.size, chunk):
            sel = idx[s:s + chunk]
            p, rss = _fit_block(model, t, cp_d, flat[sel], max_iter)
            better = rss < best_rss[sel]
            best_p[sel[better]] = p[better]
            best_rss[sel[better]] = rss[better]
            best_delay[sel[better]] = d
    out = {name: (best_p[:, i] * _TO_PUBLIC[name]).reshape(spatial)
           for i, name in enumerate(names)}
    out["delay_s"] = best_delay.reshape(spatial)
    out["rss"] = np.where(valid & np.isfinite(best_rss), best_rss, np.nan).reshape(spatial)
    return out
