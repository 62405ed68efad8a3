"""MRI signal models for DCE: spoiled gradient echo (SPGR), signal -> concentration, VFA T1.

Units: times (TR, T1) in s, R1 in 1/s, flip angles in degrees, relaxivity r1 in 1/(mM s),
concentrations in mM. T2* decay is neglected (TE -> 0), as in the OSIPI references.
"""

import numpy as np

from hybrid.imaging._lsq import batched_lm

__all__ = ["spgr_signal", "signal_to_concentration", "fit_t1_vfa"]


def spgr_signal(m0, r1_per_s, tr_s, flip_angle_deg):
    """Steady-state SPGR signal M0 sin(a) (1 - E1) / (1 - cos(a) E1), E1 = exp(-TR R1).

    Arguments broadcast against each other (e.g. r1 (..., n_t) with scalar angle, or
    m0/r1 (..., 1) with angles (n_fa,)).
    """
    a = np.deg2rad(np.asarray(flip_angle_deg, dtype=float))
    e1 = np.exp(-np.asarray(tr_s, dtype=float) * np.asarray(r1_per_s, dtype=float))
    return np.asarray(m0, dtype=float) * np.sin(a) * (1.0 - e1) / (1.0 - np.cos(a) * e1)


def signal_to_concentration(signal, *, t10_s, r1_per_mM_s, tr_s, flip_angle_deg,
                            n_baseline, baseline_start=1):
    """Concentration [mM] from SPGR signal (..., n_t) by analytic inversion.

    The pre-contrast signal is the mean of frames ``baseline_start .. n_baseline - 1``
    (0-based). The default ``baseline_start=1`` discards frame 0, which is often not at
    steady state: this is the OSIPI SI-to-concentration convention, so ``n_baseline``
    counts all pre-contrast frames including the discarded one. ``t10_s`` [s] is the
    pre-contrast T1 (scalar or spatial array); R1(t) = R10 + r1 C(t). Samples whose
    signal has no physical inverse give NaN: E1 = exp(-TR R1) outside (0, 1), i.e. the
    signal at or above the SPGR maximum M0 sin(a) (E1 <= 0) or at or below zero, which
    would need R1 <= 0 (E1 >= 1); also non-finite signals or baselines.
    """
    s = np.asarray(signal, dtype=float)
    if s.ndim < 1 or s.shape[-1] < 2:
        raise ValueError("signal must be (..., n_t) with at least 2 time points")
    if not 0 <= baseline_start < n_baseline <= s.shape[-1]:
        raise ValueError(f"need 0 <= baseline_start ({baseline_start}) < n_baseline "
                         f"({n_baseline}) <= n_t ({s.shape[-1]})")
    if r1_per_mM_s <= 0 or tr_s <= 0:
        raise ValueError("r1_per_mM_s and tr_s must be positive (units 1/(mM s) and s)")
    t10 = np.asarray(t10_s, dtype=float)[..., None]
    a = np.deg2rad(float(flip_angle_deg))
    r10 = 1.0 / t10
    e10 = np.exp(-tr_s * r10)
    s_pre = s[..., baseline_start:n_baseline].mean(axis=-1, keepdims=True)
    m0 = s_pre * (1.0 - np.cos(a) * e10) / (np.sin(a) * (1.0 - e10))
    x = s / (m0 * np.sin(a))
    with np.errstate(divide="ignore", invalid="ignore"):
        e1 = (1.0 - x) / (1.0 - x * np.cos(a))
        physical = (e1 > 0) & (e1 < 1)
        r1 = np.where(physical, -np.log(np.where(physical, e1, 0.5)) / tr_s, np.nan)
    return (r1 - r10) / r1_per_mM_s


def _vfa_inputs(signals, flip_angles_deg, tr_s):
    s = np.asarray(signals, dtype=float)
    fa = np.asarray(flip_angles_deg, dtype=float)
    if fa.ndim != 1 or fa.size < 2 or s.ndim < 1 or s.shape[-1] != fa.size:
        raise ValueError(f"signals (..., n_fa) last axis {s.shape[-1:]} must match "
                         f"{fa.size} flip angles (>= 2 distinct angles needed)")
    if np.unique(fa).size < 2:
        raise ValueError("VFA T1 needs at least two distinct flip angles")
    if np.ndim(tr_s) != 0 or not float(tr_s) > 0:
        raise ValueError("tr_s must be one positive repetition time in seconds")
    return s, np.deg2rad(fa), float(tr_s)


def _despot1(s, a, tr):
    """Linear VFA fit S/sin a = E1 S/tan a + M0 (1 - E1); returns (E1, M0)."""
    y = s / np.sin(a)
    x = s / np.tan(a)
    xm = x.mean(axis=-1, keepdims=True)
    ym = y.mean(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        e1 = ((x - xm) * (y - ym)).sum(-1) / ((x - xm) ** 2).sum(-1)
        m0 = (ym[..., 0] - e1 * xm[..., 0]) / (1.0 - e1)
    return e1, m0


def fit_t1_vfa(signals, flip_angles_deg, tr_s, method="linear"):
    """Variable-flip-angle T1 map: returns (t1_s [s], m0 [signal units]).

    ``signals`` (..., n_fa) SPGR signals at ``flip_angles_deg`` (n_fa,) [deg], one
    ``tr_s`` [s]. ``method="linear"`` is DESPOT1 (Deoni 2003); ``"nonlinear"`` refines
    it by least squares on the SPGR equation (batched Levenberg-Marquardt over voxels).
    Voxels with non-finite data or no physical solution (E1 outside (0, 1)) give NaN.
    """
    if method not in ("linear", "nonlinear"):
        raise ValueError(f"method must be 'linear' or 'nonlinear', got {method!r}")
    s, a, tr = _vfa_inputs(signals, flip_angles_deg, tr_s)
    shape = s.shape[:-1]
    s2 = s.reshape(-1, a.size)
    e1, m0 = _despot1(s2, a, tr)
    ok = np.all(np.isfinite(s2), axis=-1) & (e1 > 0) & (e1 < 1) & np.isfinite(m0)
    if method == "nonlinear" and ok.any():
        sv = s2[ok]

        def model(p, jac=True):
            """SPGR signals for p = (M0, E1) and the analytic Jacobian."""
            m, e = p[:, :1], p[:, 1:]
            den = 1.0 - np.cos(a) * e
            f = m * np.sin(a) * (1.0 - e) / den
            dm = np.sin(a) * (1.0 - e) / den
            de = m * np.sin(a) * (np.cos(a) - 1.0) / den ** 2
            return f, np.stack([dm, de], axis=-1)

        p0 = np.stack([m0[ok], e1[ok]], axis=-1)
        lo = np.array([0.0, 1e-12])
        hi = np.array([np.inf, 1.0 - 1e-12])
        p, _ = batched_lm(model, sv, p0, lo, hi)
        m0[ok], e1[ok] = p[:, 0], p[:, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = np.where(ok, -tr / np.log(np.where(ok, e1, 0.5)), np.nan)
    m0 = np.where(ok, m0, np.nan)
    return t1.reshape(shape), m0.reshape(shape)
