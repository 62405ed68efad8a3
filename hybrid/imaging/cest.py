"""CEST-MRI: Z-spectrum handling, multi-pool Lorentzian fitting and ratiometric pH (acidoCEST).

Arrays of spectra are ``(..., n_offsets)`` with one 1-D ``offsets_ppm`` (ppm from water) for all
voxels; everything is vectorised over voxels. Conventions (reference imaging.md §3):

- Normalisation (``normalize``): by ``s0`` (an unsaturated image, shape ``z.shape[:-1]``) when
  given, else by the mean of the reference offsets ``|offset| >= ref_ppm`` (default 20 ppm;
  they are never fitted), else by each spectrum's maximum. The same rule serves raw signal and
  already-normalised Z.
- B0 correction: the water centre is a free parameter of the Lorentzian fit (every pool centre
  is relative to it), so spectra are B0-corrected from themselves; ``water_shift`` estimates the
  shift from the water dip (also for a separate WASSR spectrum) and ``shift_correct``
  resamples spectra onto the water frame.
- Multi-pool fit: Z(w) = c - sum_i A_i G_i^2 / (G_i^2 + 4 (w - w_i)^2) (amplitude A, FWHM G
  in ppm); the CEST effect of a pool is its fitted amplitude A, as for the ``Peak_4p2`` and
  ``Peak_5p6`` columns of the acidoCEST calibration (JCardenasRdz/acidoCEST_ML).
- Ratiometric pH: ratio = log10(A(4.2 ppm) / A(5.5 ppm)); the amplitudes scale together with
  the normalisation, so the ratio does not depend on it. ``PhCalibration`` fits pH(ratio) to
  phantoms of known pH and returns NaN outside their ratio range (no
  extrapolation); like any acidoCEST calibration it holds only for the B0, B1, saturation,
  temperature and agent it was measured with.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hybrid.imaging._lsq import batched_lm


@dataclass(frozen=True)
class LorentzPool:
    """One Lorentzian line of the fit. ``shift_ppm``: nominal centre relative to water (water
    itself: 0); the centre is free within ``shift_ppm +- shift_tol_ppm`` (for water: the B0
    search range). ``amplitude`` (fraction of the reference signal) and ``width_ppm`` (FWHM) are
    (initial, lower, upper)."""

    name: str
    shift_ppm: float
    shift_tol_ppm: float
    amplitude: tuple[float, float, float]
    width_ppm: tuple[float, float, float]


def iopamidol_fit_pools(shifts_ppm: tuple[float, float] = (4.2, 5.5), mt: bool = True,
                        b0_range_ppm: float = 1.0) -> tuple[LorentzPool, ...]:
    """Default pools: water, the two iopamidol amides at ``shifts_ppm`` (centres +-0.1 ppm around
    nominal, relative to water) and a broad MT line near -2.5 ppm (FWHM 15-100 ppm)."""
    pools = [LorentzPool("water", 0.0, b0_range_ppm, (0.8, 0.0, 1.2), (2.0, 0.05, 20.0))]
    pools += [LorentzPool(f"amide_{s:g}", s, 0.1, (0.05, 0.0, 1.0), (1.0, 0.2, 6.0)) for s in shifts_ppm]
    if mt:
        pools.append(LorentzPool("mt", -2.5, 1.0, (0.1, 0.0, 0.5), (40.0, 15.0, 100.0)))
    return tuple(pools)


@dataclass(frozen=True)
class ZFit:
    """Multi-pool fit result; arrays have the voxel shape ``z.shape[:-1]`` (+ pool axis).

    ``centre_ppm`` is absolute (water centre = B0 shift). Where ``success`` is False all
    parameters are NaN. ``rms`` is the residual RMS in units of the normalised signal."""

    names: tuple[str, ...]
    baseline: np.ndarray
    amplitude: np.ndarray
    width_ppm: np.ndarray
    centre_ppm: np.ndarray
    rms: np.ndarray
    success: np.ndarray

    def pool(self, name: str) -> int:
        """Index of pool ``name`` on the last axis of amplitude/width_ppm/centre_ppm."""
        if name not in self.names:
            raise ValueError(f"no pool {name!r} in this fit; pools are {self.names}")
        return self.names.index(name)

    @property
    def b0_shift_ppm(self) -> np.ndarray:
        """Fitted water centre (ppm): the B0 offset of each voxel."""
        return self.centre_ppm[..., self.pool("water")]


def _check(offsets_ppm, z):
    off = np.asarray(offsets_ppm, dtype=float)
    z = np.asarray(z, dtype=float)
    if off.ndim != 1 or off.size < 2:
        raise ValueError(f"offsets_ppm must be 1-D with >= 2 offsets, got shape {off.shape}")
    if not np.all(np.isfinite(off)):
        raise ValueError("offsets_ppm contains NaN/inf; give every saturation offset in ppm")
    if np.unique(off).size != off.size:
        raise ValueError("offsets_ppm has repeated offsets; average repeats before fitting")
    if z.ndim < 1 or z.shape[-1] != off.size:
        raise ValueError(f"z has shape {z.shape} but there are {off.size} offsets: the last axis "
                         "of z must run over offsets_ppm")
    return off, z


def normalize(offsets_ppm, z, s0=None, ref_ppm: float = 20.0):
    """Z-spectra normalised by ``s0`` (voxel shape), else by the mean of the reference offsets
    |offset| >= ref_ppm, else by each spectrum's maximum. Reference offsets are never part of
    the returned spectrum. Returns (offsets_ppm, z_normalised), sorted by offset."""
    off, z = _check(offsets_ppm, z)
    ref = np.abs(off) >= ref_ppm
    if (~ref).sum() < 2:
        raise ValueError(f"fewer than 2 offsets inside |offset| < ref_ppm={ref_ppm}; raise ref_ppm")
    if s0 is not None:
        scale = np.asarray(s0, dtype=float)
        if scale.shape != z.shape[:-1]:
            raise ValueError(f"s0 must have the voxel shape {z.shape[:-1]}, got {scale.shape}")
    elif ref.any():
        scale = z[..., ref].mean(axis=-1)
    else:
        scale = z.max(axis=-1)
    order = np.argsort(off[~ref])
    with np.errstate(divide="ignore", invalid="ignore"):
        zn = z[..., ~ref] / np.where(scale > 0, scale, np.nan)[..., None]
    return off[~ref][order], zn[..., order]


def water_shift(offsets_ppm, z, search_ppm: float = 1.0, window_ppm: float = 0.5):
    """Coarse B0 shift (ppm) of each spectrum: vertex of a least-squares parabola through the
    points within ``window_ppm`` of the lowest sample in |offset| <= search_ppm; NaN where no dip
    is found. Used to start the Lorentzian fit, whose water centre is the accurate B0 estimate
    (for a WASSR spectrum: ``fit_zspectrum(offsets, wassr, iopamidol_fit_pools()[:1])``)."""
    off, z = _check(offsets_ppm, z)
    near = np.abs(off) <= search_ppm
    if near.sum() < 3:
        raise ValueError(f"need >= 3 offsets within +-{search_ppm} ppm to locate the water line")
    x0 = off[np.argmin(np.where(near & ~np.isnan(z), z, np.inf), axis=-1)]
    x = off - x0[..., None]
    w = (np.abs(x) <= window_ppm) & np.isfinite(z)
    basis = np.stack([x ** 2, x, np.ones_like(x)], axis=-1) * w[..., None]
    normal = np.einsum("...ti,...tj->...ij", basis, basis)
    rhs = np.einsum("...ti,...t->...i", basis, np.where(w, z, 0.0))
    with np.errstate(all="ignore"):
        ok = np.abs(np.linalg.det(normal)) > 0
        coef = np.linalg.solve(np.where(ok[..., None, None], normal, np.eye(3)), rhs[..., None])[..., 0]
        vertex = x0 - coef[..., 1] / (2 * coef[..., 0])
    good = ok & (coef[..., 0] > 0) & (np.abs(vertex) <= search_ppm)
    return np.where(good, vertex, np.nan)


def _interp(off, z, q):
    """Linear interpolation of spectra z (..., n) sampled at sorted ``off`` at per-voxel points
    q (..., m); NaN outside the sampled range."""
    shape = np.broadcast_shapes(z.shape[:-1], q.shape[:-1])
    q = np.broadcast_to(q, shape + q.shape[-1:])
    z = np.broadcast_to(z, shape + z.shape[-1:])
    i = np.clip(np.searchsorted(off, q) - 1, 0, off.size - 2)
    t = (q - off[i]) / (off[i + 1] - off[i])
    zq = np.take_along_axis(z, i, -1) * (1 - t) + np.take_along_axis(z, i + 1, -1) * t
    return np.where((q >= off[0]) & (q <= off[-1]), zq, np.nan)


def shift_correct(offsets_ppm, z, b0_shift_ppm):
    """Resample spectra onto the water frame: z_corr(w) = z(w + shift), linear interpolation,
    NaN outside the sampled range. ``b0_shift_ppm`` broadcasts to the voxel shape."""
    off, z = _check(offsets_ppm, z)
    order = np.argsort(off)
    inverse = np.argsort(order)
    q = off + np.asarray(b0_shift_ppm, dtype=float)[..., None]
    return _interp(off[order], z[..., order], q)[..., inverse]


def mtr_asym(offsets_ppm, z, at_ppm, b0_shift_ppm=0.0):
    """MTRasym(w) = Z(-w) - Z(+w) at ``at_ppm`` (scalar or 1-D), after B0 correction by
    ``b0_shift_ppm`` (broadcasts to the voxel shape); ``z`` must be normalised (see
    ``normalize``). Returns (..., len(at_ppm)); NaN where w +- shift is outside the offsets."""
    off, z = _check(offsets_ppm, z)
    at = np.atleast_1d(np.asarray(at_ppm, dtype=float))
    order = np.argsort(off)
    shift = np.asarray(b0_shift_ppm, dtype=float)[..., None]
    return _interp(off[order], z[..., order], shift - at) - _interp(off[order], z[..., order], shift + at)


def _lorentz_model(x):
    """Model and Jacobian of Z = c - sum_i A_i L_i for parameters [c, (A, G, d)_i], where pool
    centres are d_0 (water) and d_0 + d_i (i >= 1)."""
    def model(p, jac=True):
        amp, wid = p[:, 1::3], p[:, 2::3]
        centre = p[:, 3::3].copy()
        centre[:, 1:] += centre[:, :1]
        u = x[None, None, :] - centre[:, :, None]
        g2 = wid[:, :, None] ** 2
        den = g2 + 4 * u ** 2
        line = g2 / den
        f = p[:, :1] - np.einsum("np,npt->nt", amp, line)
        if not jac:
            return f
        j = np.empty((p.shape[0], x.size, p.shape[1]))
        j[:, :, 0] = 1.0
        j[:, :, 1::3] = -line.transpose(0, 2, 1)
        j[:, :, 2::3] = -(amp[:, :, None] * 8 * wid[:, :, None] * u ** 2 / den ** 2).transpose(0, 2, 1)
        dcen = -(amp[:, :, None] * 8 * g2 * u / den ** 2).transpose(0, 2, 1)
        j[:, :, 3::3] = dcen
        j[:, :, 3] = dcen.sum(axis=-1)
        return f, j
    return model


def fit_zspectrum(offsets_ppm, z, pools: tuple[LorentzPool, ...] | None = None, *, s0=None,
                  ref_ppm: float = 20.0, max_rms: float = 0.03, max_iter: int = 300) -> ZFit:
    """Multi-pool Lorentzian fit of every spectrum in ``z`` (..., n_offsets), raw or normalised
    (see ``normalize``), by batched Levenberg-Marquardt within the pools' bounds (baseline c in
    [0, 2]). The first pool must be water (shift 0). A fit succeeds when its parameters are
    finite and the residual RMS <= ``max_rms`` (normalised units); spectra with any NaN sample
    fail."""
    pools = iopamidol_fit_pools() if pools is None else tuple(pools)
    if not pools or pools[0].shift_ppm != 0.0:
        raise ValueError("the first pool must be water with shift_ppm = 0 (its centre is the B0 shift)")
    off, zn = normalize(offsets_ppm, z, s0=s0, ref_ppm=ref_ppm)
    n_par = 1 + 3 * len(pools)
    if off.size <= n_par:
        raise ValueError(f"{off.size} offsets cannot fit {n_par} parameters; acquire more offsets "
                         "or use fewer pools")
    shape = zn.shape[:-1]
    data = zn.reshape(-1, off.size)
    finite = np.all(np.isfinite(data), axis=-1)
    def vector(i, c, sign):   # (initial, lower, upper) = (i=0, 1, 2); centre moved by sign * tol
        return [c] + [v for q in pools
                      for v in (q.amplitude[i], q.width_ppm[i], q.shift_ppm + sign * q.shift_tol_ppm)]
    init, lower, upper = vector(0, 1.0, 0), vector(1, 0.0, -1), vector(2, 2.0, 1)
    d = data[finite]
    p0 = np.tile(np.asarray(init, dtype=float), (d.shape[0], 1))
    if d.shape[0]:
        p0[:, 0] = d.max(axis=-1)
        p0[:, 1] = p0[:, 0] - d.min(axis=-1)
        w0 = water_shift(off, d, search_ppm=pools[0].shift_tol_ppm)
        p0[:, 3] = np.where(np.isfinite(w0), w0, 0.0)
    p = np.full((data.shape[0], n_par), np.nan)
    rss = np.full(data.shape[0], np.nan)
    p[finite], rss[finite] = batched_lm(_lorentz_model(off), d, p0, lower, upper, max_iter=max_iter)
    rms = np.sqrt(rss / off.size)
    ok = np.all(np.isfinite(p), axis=-1) & (rms <= max_rms)
    p[~ok] = np.nan
    centre = p[:, 3::3].copy()
    centre[:, 1:] += centre[:, :1]
    k = len(pools)
    return ZFit(names=tuple(q.name for q in pools), baseline=p[:, 0].reshape(shape),
                amplitude=p[:, 1::3].reshape(shape + (k,)), width_ppm=p[:, 2::3].reshape(shape + (k,)),
                centre_ppm=centre.reshape(shape + (k,)), rms=rms.reshape(shape), success=ok.reshape(shape))


def ph_ratio(offsets_ppm, z, *, shifts_ppm: tuple[float, float] = (4.2, 5.5), s0=None,
             ref_ppm: float = 20.0, mt: bool = True, min_amplitude: float = 0.005,
             max_rms: float = 0.03):
    """Ratiometric index log10(A1 / A2) of the CEST amplitudes at ``shifts_ppm`` (default 4.2
    and 5.5 ppm; the acidoCEST table uses 5.6) from the multi-pool fit of ``z`` (..., n_offsets),
    raw or normalised, B0-corrected from the spectrum itself. NaN where the fit failed or an
    amplitude is below ``min_amplitude`` (fraction of the reference signal)."""
    fit = fit_zspectrum(offsets_ppm, z, iopamidol_fit_pools(shifts_ppm, mt=mt), s0=s0, ref_ppm=ref_ppm,
                        max_rms=max_rms)
    a1 = fit.amplitude[..., 1]
    a2 = fit.amplitude[..., 2]
    valid = fit.success & (a1 >= min_amplitude) & (a2 >= min_amplitude)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(valid, np.log10(a1 / a2), np.nan)


@dataclass(frozen=True)
class PhCalibration:
    """pH = polyval(coef, ratio) fitted to phantoms of known pH; valid for ratios within
    ``ratio_range`` (min, max of the phantoms' ratios). ``residual_ph``: back-predicted minus
    true pH of the calibration phantoms."""

    coef: np.ndarray
    ratio_range: tuple[float, float]
    residual_ph: np.ndarray

    @classmethod
    def fit(cls, ratios, ph, degree: int = 3) -> PhCalibration:
        """Least-squares polynomial pH(ratio) of ``degree`` from phantoms of known pH; it must be
        monotone over the calibrated ratio range."""
        r = np.asarray(ratios, dtype=float).ravel()
        y = np.asarray(ph, dtype=float).ravel()
        if r.size != y.size:
            raise ValueError(f"{r.size} ratios but {y.size} pH values; give one pH per ratio")
        if not (np.all(np.isfinite(r)) and np.all(np.isfinite(y))):
            raise ValueError("calibration ratios/pH contain NaN/inf (failed fits?); remove those "
                             "phantoms before calibrating")
        if degree < 1 or np.unique(r).size < degree + 2:
            raise ValueError(f"degree {degree} needs degree >= 1 and at least {degree + 2} distinct "
                             f"ratios, got {np.unique(r).size}")
        coef = np.polyfit(r, y, degree)
        grid = np.linspace(r.min(), r.max(), 2001)
        slope = np.polyval(np.polyder(coef), grid)
        if not (np.all(slope > 0) or np.all(slope < 0)):
            raise ValueError(f"the degree-{degree} calibration is not monotone over ratios "
                             f"[{r.min():.3g}, {r.max():.3g}]; use a lower degree or more phantoms")
        return cls(coef=coef, ratio_range=(float(r.min()), float(r.max())),
                   residual_ph=np.polyval(coef, r) - y)

    def ph(self, ratios) -> np.ndarray:
        """pH for ``ratios`` (any shape); NaN for NaN ratios and outside ``ratio_range``."""
        r = np.asarray(ratios, dtype=float)
        inside = (r >= self.ratio_range[0]) & (r <= self.ratio_range[1])
        return np.where(inside, np.polyval(self.coef, np.where(inside, r, 0.0)), np.nan)


def ph_map(offsets_ppm, z, calibration: PhCalibration, **kwargs):
    """pH map and validity mask from Z-spectra (..., n_offsets): ``calibration.ph(ph_ratio(...))``;
    ``kwargs`` go to ``ph_ratio``. Invalid voxels (failed fit, ratio outside the calibration) are NaN."""
    ph = calibration.ph(ph_ratio(offsets_ppm, z, **kwargs))
    return ph, np.isfinite(ph)
