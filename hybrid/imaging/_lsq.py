"""Batched, bound-constrained Levenberg-Marquardt: one small least-squares problem per row.

All problems advance together with numpy array operations (no Python loop over voxels).
Bounds are enforced by projecting (clipping) each trial point onto the box, then onto an
optional extra convex set (``project``), and optionally by an active set.
"""

import numpy as np


def batched_lm(model, data, p0, lower, upper, max_iter=60, rtol=1e-8, *, project=None,
               active_set=False, return_jac=False):
    """Minimise sum_t (f(p)_t - data_t)^2 independently for each row.

    ``model(p, jac=True)`` maps parameters (n, n_p) to predictions (n, n_t) and
    Jacobian (n, n_t, n_p); ``data`` is (n, n_t); ``lower``/``upper`` are box bounds of
    shape (n_p,) or (n, n_p) (one box per row). ``project(p)``, if given, maps clipped
    parameters (m, n_p) onto a further feasible set (e.g. ve + vp <= 1). With ``active_set``
    a parameter on a bound whose descent direction points outwards is held there for the
    step (fewer rejected steps when optima lie on bounds).
    Stops a row when an accepted step lowers its cost by less than ``rtol`` (relative)
    or its damping grows past 1e10. Returns (p, rss) with rss (n,), and the Jacobian at
    p (n, n_t, n_p) as a third item with ``return_jac``.
    """
    p = np.array(p0, dtype=float)
    lower = np.broadcast_to(np.asarray(lower, dtype=float), p.shape)
    upper = np.broadcast_to(np.asarray(upper, dtype=float), p.shape)

    def feasible(q, rows):
        q = np.clip(q, lower[rows], upper[rows])
        return q if project is None else project(q)

    p = feasible(p, slice(None))
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
        if active_set:   # hold parameters on a bound that descent would push outwards
            frozen = ((p[idx] <= lower[idx]) & (g > 0)) | ((p[idx] >= upper[idx]) & (g < 0))
            free = ~frozen
            h = h * (free[:, :, None] & free[:, None, :]) + frozen[:, :, None] * eye
            g = np.where(frozen, 0.0, g)
        d = np.einsum("npp->np", h)
        d = d + 1e-12 * d.max(axis=1, keepdims=True) + 1e-300
        a = h + lam[idx, None, None] * d[:, :, None] * eye
        step = np.linalg.solve(a, -g[..., None])[..., 0]
        p_try = feasible(p[idx] + step, idx)
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
    return (p, cost, jac) if return_jac else (p, cost)


def standard_errors(jac, rss, rel_floor=1e-13):
    """Asymptotic standard errors sqrt(diag((J^T J)^-1) * rss / (n_t - n_p)) per row.

    ``jac`` (n, n_t, n_p) is the Jacobian at the optimum and ``rss`` (n,) the residual sum
    of squares. Columns are scaled to unit norm before the inversion, whose eigenvalues are
    floored at ``rel_floor`` times the largest: a parameter the data cannot determine gets
    a huge standard error (inf where its Jacobian column is zero).
    """
    n_t, n_p = jac.shape[1], jac.shape[2]
    if n_t <= n_p:
        raise ValueError(f"{n_t} samples cannot give standard errors for {n_p} parameters")
    jtj = jac.transpose(0, 2, 1) @ jac
    scale = np.sqrt(np.einsum("npp->np", jtj))
    safe = np.where(scale > 0, scale, 1.0)
    w, v = np.linalg.eigh(jtj / (safe[:, :, None] * safe[:, None, :]))
    w = np.maximum(w, rel_floor * np.abs(w).max(axis=1, keepdims=True) + 1e-300)
    var = np.einsum("npk,nk->np", v * v, 1.0 / w) / safe ** 2
    se = np.sqrt(var * (rss / (n_t - n_p))[:, None])
    return np.where(scale > 0, se, np.inf)
