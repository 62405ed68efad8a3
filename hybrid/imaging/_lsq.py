"""Batched, bound-constrained Levenberg-Marquardt: one small least-squares problem per row.

All problems advance together with numpy array operations (no Python loop over voxels).
Bounds are enforced by projecting (clipping) each trial point onto the box.
"""

import numpy as np


def batched_lm(model, data, p0, lower, upper, max_iter=60, rtol=1e-8):
    """Minimise sum_t (f(p)_t - data_t)^2 independently for each row.

    ``model(p, jac=True)`` maps parameters (n, n_p) to predictions (n, n_t) and
    Jacobian (n, n_t, n_p); ``data`` is (n, n_t); ``lower``/``upper`` are (n_p,) box bounds.
    Stops a row when an accepted step lowers its cost by less than ``rtol`` (relative)
    or its damping grows past 1e10. Returns (p, rss) with rss (n,).
    """
    lower = np.asarray(lower, dtype=float)
    upper = np.asarray(upper, dtype=float)
    p = np.clip(np.asarray(p0, dtype=float), lower, upper)
    f, jac = model(p, jac=True)
    jac = np.array(jac)  # writable copy (models may return broadcast views)
    r = f - data
    cost = np.einsum("nt,nt->n", r, r)
    lam = np.full(p.shape[0], 1e-3)
    active = np.isfinite(cost) & (cost > 0)
    eye = np.eye(p.shape[1])
    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        ja, ra = jac[idx], r[idx]
        jt = ja.transpose(0, 2, 1)
        h = jt @ ja
        g = (jt @ ra[..., None])[..., 0]
        d = np.einsum("npp->np", h)
        d = d + 1e-12 * d.max(axis=1, keepdims=True) + 1e-300
        a = h + lam[idx, None, None] * d[:, :, None] * eye
        step = np.linalg.solve(a, -g[..., None])[..., 0]
        p_try = np.clip(p[idx] + step, lower, upper)
        f_try, j_try = model(p_try, jac=True)
        r_try = f_try - data[idx]
        c_try = np.einsum("nt,nt->n", r_try, r_try)
        ok = np.isfinite(c_try) & (c_try < cost[idx])
        acc = idx[ok]
        small = (cost[acc] - c_try[ok]) <= rtol * cost[acc]
        p[acc], r[acc], jac[acc], cost[acc] = p_try[ok], r_try[ok], j_try[ok], c_try[ok]
        lam[acc] = np.maximum(lam[acc] / 3.0, 1e-7)
        rej = idx[~ok]
        lam[rej] *= 4.0
        active[acc[small]] = False
        active[rej[lam[rej] > 1e10]] = False
    return p, cost
