"""Batched, bound-constrained Levenberg-Marquardt: one small least-squares problem per row.

All problems advance together with numpy array operations (no Python loop over voxels).
Bounds are enforced by projecting (clipping) each trial point onto the box, then onto an
optional extra convex set (``project``), and optionally by an active set.
"""

import numpy as np


def batched_lm(model, data, p0, lower, upper, max_iter=60, rtol=1e-8, *, project=None,
               active_set=False, return_jtj=False, row_aware=False, xtol=None):
    """Minimise sum_t (f(p)_t - data_t)^2 independently for each row.

    ``model(p, jac=True)`` maps parameters (n, n_p) to predictions (n, n_t) and
    Jacobian (n, n_t, n_p); ``data`` is (n, n_t); ``lower``/``upper`` are box bounds of
    shape (n_p,) or (n, n_p) (one box per row). ``project(p)``, if given, maps clipped
    parameters (m, n_p) onto a further feasible set (e.g. ve + vp <= 1). With ``active_set``
    a parameter on a bound whose descent direction points outwards is held there for the
    step (fewer rejected steps when optima lie on bounds). With ``row_aware`` the model is
    called as ``model(p, jac, rows)``, ``rows`` the indices of the rows of ``data`` that p
    belongs to (models that depend on the data).
    Stops a row when an accepted step lowers its cost by less than ``rtol`` (relative),
    when a step (accepted or not) changes no parameter by more than ``xtol`` (n_p,), if
    given, or when its damping grows past 1e10. Returns (p, rss) with rss (n,), and
    J^T J at p (n, n_p, n_p) (J the Jacobian) as a third item with ``return_jtj``.
    """
    call = model if row_aware else (lambda q, jac, rows: model(q, jac=jac))

    def normal_equations(q, rows):
        f, jac = call(q, True, rows)
        r = f - data[rows]
        jt = jac.transpose(0, 2, 1)
        return np.einsum("nt,nt->n", r, r), jt @ jac, (jt @ r[..., None])[..., 0]

    p, cost, jtj = levenberg_marquardt(normal_equations, p0, lower, upper, max_iter, rtol,
                                       project=project, active_set=active_set, xtol=xtol)
    return (p, cost, jtj) if return_jtj else (p, cost)


def levenberg_marquardt(normal_equations, p0, lower, upper, max_iter=60, rtol=1e-8, *,
                        project=None, active_set=False, xtol=None):
    """The loop of ``batched_lm`` (same arguments and stopping rules) on a model given by
    ``normal_equations(p, rows)`` -> (cost |r|^2 (m,), J^T J (m, n_p, n_p), J^T r (m, n_p))
    at parameters p (m, n_p) of rows ``rows``, r = f(p) - data. Returns p (n, n_p), cost
    (n,) and J^T J at p (n, n_p, n_p).
    """
    p = np.array(p0, dtype=float)
    lower = np.broadcast_to(np.asarray(lower, dtype=float), p.shape)
    upper = np.broadcast_to(np.asarray(upper, dtype=float), p.shape)

    def feasible(q, rows):
        q = np.clip(q, lower[rows], upper[rows])
        return q if project is None else project(q)

    p = feasible(p, slice(None))
    cost, hess, grad = normal_equations(p, np.arange(p.shape[0]))
    hess, grad = np.array(hess), np.array(grad)      # writable copies
    lam = np.full(p.shape[0], 1e-3)
    active = np.isfinite(cost) & (cost > 0)
    eye = np.eye(p.shape[1])
    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        h, g = hess[idx], grad[idx]
        if active_set:   # hold parameters on a bound that descent would push outwards
            frozen = ((p[idx] <= lower[idx]) & (g > 0)) | ((p[idx] >= upper[idx]) & (g < 0))
            free = ~frozen
            h = h * (free[:, :, None] & free[:, None, :]) + frozen[:, :, None] * eye
            g = np.where(frozen, 0.0, g)
        d = np.einsum("npp->np", h)
        d = d + 1e-12 * d.max(axis=1, keepdims=True) + 1e-300
        a = h + lam[idx, None, None] * d[:, :, None] * eye
        step = np.linalg.solve(a, -g[..., None])[..., 0]
        p0_idx = p[idx]
        p_try = feasible(p0_idx + step, idx)
        c_try, h_try, g_try = normal_equations(p_try, idx)
        ok = np.isfinite(c_try) & (c_try < cost[idx])
        acc = idx[ok]
        small = (cost[acc] - c_try[ok]) <= rtol * cost[acc]
        p[acc], cost[acc], hess[acc], grad[acc] = p_try[ok], c_try[ok], h_try[ok], g_try[ok]
        lam[acc] = np.maximum(lam[acc] / 3.0, 1e-7)
        rej = idx[~ok]
        lam[rej] *= 4.0
        active[acc[small]] = False
        if xtol is not None:
            active[idx[np.all(np.abs(p_try - p0_idx) <= xtol, axis=1)]] = False
        active[rej[lam[rej] > 1e10]] = False
    return p, cost, hess


def _dot(x, y):
    """Row-wise dot products of two (n, n_t) arrays."""
    return np.einsum("nt,nt->n", x, y)


def combine_columns(a, x, b, y):
    """a x + b y per row for amplitudes a, b (n,) and columns x, y (n, n_t), either of
    which may be None (zero)."""
    out = a[:, None] * x if x is not None else None
    if y is None:
        return out
    return b[:, None] * y if out is None else np.add(out, b[:, None] * y, out=out)


def nonnegative_two_column_lsq(u, v, data):
    """min |A u + B v - data|^2 over A, B >= 0, per row.

    ``u``, ``v``, ``data`` (n, n_t). The optimum is the unconstrained one where that is
    non-negative, else the better of the two one-column fits. Returns A, B (n,), the
    mask (n, 2) of the columns in use and the Gram entries (u.u, u.v, v.v) (n,) each.
    """
    uu, uv, vv, uy, vy = _dot(u, u), _dot(u, v), _dot(v, v), _dot(u, data), _dot(v, data)
    det = uu * vv - uv * uv
    with np.errstate(divide="ignore", invalid="ignore"):
        a, b = (vv * uy - uv * vy) / det, (uu * vy - uv * uy) / det
        a1, b1 = np.nan_to_num(np.maximum(uy, 0.0) / uu), np.nan_to_num(np.maximum(vy, 0.0) / vv)
    both = (det > 1e-12 * uu * vv) & (a >= 0) & (b >= 0)
    first = ~both & (a1 * uy >= b1 * vy)              # rss = |y|^2 - (A u.y + B v.y)
    second = ~both & ~first
    a = np.where(both, a, np.where(first, a1, 0.0))
    b = np.where(both, b, np.where(second, b1, 0.0))
    return a, b, np.column_stack([both | first, both | second]), (uu, uv, vv)


def batched_varpro(basis, data, theta0, lower, upper, max_iter=60, rtol=1e-8, xtol=None):
    """Separable least squares data ~ A u(theta) + B v(theta), A, B >= 0, by variable
    projection.

    ``basis(theta, rows)`` returns the columns (u, v), each (n, n_t), for nonlinear
    parameters theta (n, q) of data rows ``rows``, and their derivatives (du, dv), each
    a sequence over theta of (n, n_t) arrays (None: zero).
    The amplitudes are eliminated (``nonnegative_two_column_lsq``), so Levenberg-Marquardt
    runs on theta alone, with Kaufman's Jacobian of the projected model, J = (I - P) D
    (D = A du + B dv, P the projector onto the columns in use), whose normal equations
    are assembled from row-wise dot products: J^T J = D^T D - (P D)^T D and J^T r = D^T r
    (the residual is orthogonal to the columns in use). ``rtol``, ``xtol`` as in
    ``batched_lm``. Returns theta (n, q), A, B (n,) and rss (n,).
    """
    amplitudes = np.zeros((data.shape[0], 2))     # at the lowest cost evaluated, i.e. at
    lowest = np.full(data.shape[0], np.inf)        # the point the fit accepts last

    def normal_equations(theta, rows):
        (u, v), (du, dv) = basis(theta, rows)
        y = data[rows]
        a, b, used, (uu, uv, vv) = nonnegative_two_column_lsq(u, v, y)
        r = a[:, None] * u + b[:, None] * v - y
        cost = _dot(r, r)
        better = cost < lowest[rows]
        lowest[rows[better]] = cost[better]
        amplitudes[rows[better]] = np.column_stack([a, b])[better]
        both = used[:, 0] & used[:, 1]       # (inverse Gram matrix of the used columns)
        det = np.where(both, uu * vv - uv * uv, 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            su = np.where(used[:, 0], np.where(both, vv, 1.0) / np.where(both, det, uu), 0.0)
            sv = np.where(used[:, 1], np.where(both, uu, 1.0) / np.where(both, det, vv), 0.0)
        sx = np.where(both, -uv / det, 0.0)
        d = [combine_columns(a, du_q, b, dv_q) for du_q, dv_q in zip(du, dv)]
        ud, vd = [_dot(u, d_q) for d_q in d], [_dot(v, d_q) for d_q in d]
        n, q = theta.shape
        hess, grad = np.empty((n, q, q)), np.empty((n, q))
        for i in range(q):
            grad[:, i] = _dot(d[i], r)
            alpha, beta = su * ud[i] + sx * vd[i], sx * ud[i] + sv * vd[i]   # P d_i
            for j in range(i + 1):
                hess[:, i, j] = hess[:, j, i] = _dot(d[i], d[j]) - alpha * ud[j] - beta * vd[j]
        return cost, hess, grad

    theta, rss, _ = levenberg_marquardt(normal_equations, theta0, lower, upper, max_iter, rtol,
                                        xtol=xtol)
    return theta, amplitudes[:, 0], amplitudes[:, 1], rss


def standard_errors(jtj, rss, n_t, rel_floor=1e-13):
    """Asymptotic standard errors sqrt(diag((J^T J)^-1) * rss / (n_t - n_p)) per row.

    ``jtj`` (n, n_p, n_p) is J^T J at the optimum (J the Jacobian), ``rss`` (n,) the
    residual sum of squares of ``n_t`` samples. J^T J is scaled to unit diagonal before
    the inversion, whose eigenvalues are floored at ``rel_floor`` times the largest: a
    parameter the data cannot determine gets a huge standard error (inf where its
    Jacobian column is zero).
    """
    n_p = jtj.shape[-1]
    if n_t <= n_p:
        raise ValueError(f"{n_t} samples cannot give standard errors for {n_p} parameters")
    scale = np.sqrt(np.maximum(np.einsum("npp->np", jtj), 0.0))
    safe = np.where(scale > 0, scale, 1.0)
    w, v = np.linalg.eigh(jtj / (safe[:, :, None] * safe[:, None, :]))
    w = np.maximum(w, rel_floor * np.abs(w).max(axis=1, keepdims=True) + 1e-300)
    var = np.einsum("npk,nk->np", v * v, 1.0 / w) / safe ** 2
    se = np.sqrt(var * (rss / (n_t - n_p))[:, None])
    return np.where(scale > 0, se, np.inf)
