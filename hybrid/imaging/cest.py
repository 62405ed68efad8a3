"""CEST-MRI: Z-spectrum handling, multi-pool Lorentzian fitting and ratiometric pH (acidoCEST).

Arrays of spectra are ``(..., n_offsets)`` with one 1-D ``offsets_ppm`` (ppm from water) for all
voxels; everything is vectorised over voxels. Conventions (multi-pool Lorentzian fit: Zaiss et al.
2011 J Magn Reson 211:149; acidoCEST ratio: Chen et al. 2015 Mol Imaging Biol 17:488; for users:
README, "CEST pH"):

- Normalisation (``normalize``): by ``s0`` (an unsaturated image, shape ``z.shape[:-1]``) when
  given, else by the mean of the reference offsets ``|offset| >= ref_ppm`` (default 20 ppm;
  they are never fitted), else (no reference acquired, e.g. offsets only within +-15 ppm) by
  the outermost samples, and the fitted amplitudes are then taken relative to the fitted
  off-resonance baseline. The same rule serves raw signal and already-normalised Z.
- B0 correction: the water centre is a free parameter of the Lorentzian fit (every pool centre
  is relative to it), searched within +-2.5 ppm (measured phantom series drift by up to 2 ppm),
  so spectra are B0-corrected from themselves; ``water_shift`` estimates the shift from the
  water dip (also for a separate WASSR spectrum) and ``shift_correct`` resamples spectra onto
  the water frame.
- Multi-pool fit: Z(w) = c - sum_i A_i G_i^2 / (G_i^2 + 4 (w - w_i)^2) (amplitude A, FWHM G
  in ppm) with water, the iopamidol amides (4.2 and 5.6 ppm), its hydroxyl line near 1 ppm,
  a broad MT line and, for in-vivo spectra, optional APT / amine / NOE lines.
- Ratiometric pH: ratio = log10(E(4.2 ppm) / E(5.6 ppm)) of the two amide effects E: the
  fitted amplitudes (as the ``Peak_4p2`` and ``Peak_5p6`` columns of the acidoCEST calibration,
  JCardenasRdz/acidoCEST_ML), the fitted ST at the two offsets, or MTRasym there
  (``RATIO_METHODS``); the effects scale together with the normalisation, so the ratio does not
  depend on it. ``PhCalibration`` fits pH(ratio) to phantoms of known pH (degree chosen by
  leave-one-out error, which it reports) and returns NaN outside their ratio range (no
  extrapolation); like any acidoCEST calibration it holds only for the B0, B1, saturation,
  temperature and agent it was measured with.
- Two saturation powers (acquisition: the same offsets, B0 and saturation time at two B1
  amplitudes, e.g. 2 and 3 uT; the calibration phantoms acquired the same way):
  ``fit_zspectra_joint`` fits both spectra of a voxel with shared line centres (one B0 estimate
  from both; optionally each power's residuals weighted by its off-resonance noise,
  ``off_resonance_noise_sd``); ``mean_ph_ratio``, the mean of the two powers' ratios, averages
  their independent noise (``hybrid maps`` with ``[cest] series_second_power``; noise-weighted by
  default); ``b1_ratio`` is the B1-ratiometric index of one amide (Longo et al. 2014). On the measured 2/3 uT vials (four T1 series of eight) the mean ST ratio of the joint
  fit has a noise floor 5-25 % below the better single power's, a leave-one-out error of
  0.03-0.11 pH over pH 6.5-7.3 (nested 0.10-0.13) and 0.11-0.26 over pH 6.2-7.3; the 2/3 uT
  B1 ratio hardly depends on pH (the powers are too close): benchmarks/cest_ph.py. Below pH 6.5
  both amides saturate and every ratio flattens: calibrate and read over pH 6.5-7.3.
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


#: Iopamidol lines as measured (Lorentzian fits of the 25 mM, 37 C, 3 uT, 6 s phantom spectra in
#: tests/data/acidocest, free centres and widths): amides at 4.2-4.3 and 5.5-5.65 ppm from water
#: with FWHM 1.0-1.8 ppm, and a hydroxyl line near 1 ppm (FWHM about 2 ppm; the Pagel lab fits
#: lines at 0.8 and 1.8 ppm for it) that the amide-only model misses.
AMIDE_TOL_PPM = 0.2
AMIDE_WIDTH_PPM = (1.5, 0.5, 3.0)
HYDROXYL = LorentzPool("hydroxyl", 0.9, 0.5, (0.05, 0.0, 1.0), (2.0, 0.5, 4.0))
#: Endogenous in-vivo lines: amide proton transfer (APT, 3.5 ppm), amines (2.0 ppm) and relayed NOE
#: (-3.5 ppm) (standard in-vivo CEST pools, e.g. Zaiss & Bachert, Phys Med Biol 2013;58:R221 [recall]).
ENDOGENOUS = (LorentzPool("apt", 3.5, 0.2, (0.02, 0.0, 0.5), (1.5, 0.5, 4.0)),
              LorentzPool("amine", 2.0, 0.3, (0.02, 0.0, 0.5), (1.5, 0.5, 4.0)),
              LorentzPool("noe", -3.5, 0.3, (0.05, 0.0, 0.5), (3.0, 1.0, 8.0)))


def iopamidol_fit_pools(shifts_ppm: tuple[float, float] = (4.2, 5.6), mt: bool = True, *,
                        hydroxyl: bool = True, endogenous: bool = False,
                        b0_range_ppm: float = 2.5) -> tuple[LorentzPool, ...]:
    """Pools of the fit: water (centre within +-``b0_range_ppm``), the two iopamidol amides at
    ``shifts_ppm`` (+-0.2 ppm, FWHM 0.5-3 ppm), optionally the iopamidol hydroxyl line near
    1 ppm, the endogenous APT / amine / NOE lines (in-vivo spectra) and a broad MT line near
    -2.5 ppm (FWHM 15-100 ppm). The amides are always pools 1 and 2."""
    pools = [LorentzPool("water", 0.0, b0_range_ppm, (0.8, 0.0, 1.2), (2.0, 0.05, 20.0))]
    pools += [LorentzPool(f"amide_{s:g}", s, AMIDE_TOL_PPM, (0.05, 0.0, 1.0), AMIDE_WIDTH_PPM)
              for s in shifts_ppm]
    if hydroxyl:
        pools.append(HYDROXYL)
    if endogenous:
        pools += ENDOGENOUS
    if mt:
        pools.append(LorentzPool("mt", -2.5, 1.0, (0.1, 0.0, 0.5), (40.0, 15.0, 100.0)))
    return tuple(pools)


@dataclass(frozen=True)
class ZFit:
    """Multi-pool fit result; arrays have the voxel shape ``z.shape[:-1]`` (+ pool axis).

    ``centre_ppm`` is absolute (water centre = B0 shift). Where ``success`` is False all
    parameters are NaN. ``baseline`` is the fitted off-resonance level c of the normalised
    signal; ``amplitude`` and ``rms`` (residual RMS) are fractions of the reference signal, or
    of c where the spectra had no reference (see ``fit_zspectrum``)."""

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
    |offset| >= ref_ppm, else (no reference acquired) by the mean of the two lowest and two
    highest offsets, the least saturated samples. Reference offsets are never part of the
    returned spectrum. Returns (offsets_ppm, z_normalised), sorted by offset."""
    off, z = _check(offsets_ppm, z)
    ref = np.abs(off) >= ref_ppm
    if (~ref).sum() < 2:
        raise ValueError(f"fewer than 2 offsets inside |offset| < ref_ppm={ref_ppm}; raise ref_ppm")
    order = np.argsort(off[~ref])
    inner = z[..., ~ref][..., order]
    if s0 is not None:
        scale = np.asarray(s0, dtype=float)
        if scale.shape != z.shape[:-1]:
            raise ValueError(f"s0 must have the voxel shape {z.shape[:-1]}, got {scale.shape}")
    elif ref.any():
        scale = z[..., ref].mean(axis=-1)
    else:
        scale = inner[..., np.r_[0:2, -2:0]].mean(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        zn = inner / np.where(scale > 0, scale, np.nan)[..., None]
    return off[~ref][order], zn


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


def _lorentz(x, amplitude, width, centre):
    """Lorentzian line A G^2 / (G^2 + 4 (x - centre)^2) (amplitude A, FWHM G, all in ppm)."""
    return amplitude * width ** 2 / (width ** 2 + 4 * (x - centre) ** 2)


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


def _has_reference(offsets_ppm, s0, ref_ppm):
    """Whether the spectra come with an unsaturated reference (``s0`` or offsets >= ref_ppm)."""
    return s0 is not None or bool(np.any(np.abs(np.asarray(offsets_ppm, dtype=float)) >= ref_ppm))


def _coarse_b0(off, z, search_ppm):
    """Water dip of each spectrum for the start and bounds of the fit: ``water_shift`` (parabola
    vertex) where it is found, else the lowest sample within +-search_ppm."""
    near = np.abs(off) <= search_ppm
    w0 = water_shift(off, z, search_ppm=search_ppm)
    lowest = off[near][np.argmin(z[:, near], axis=-1)]
    return np.where(np.isfinite(w0), w0, lowest)


def _shared_centre_model(x, n_spectra, n_pools):
    """(model, columns) for K = ``n_spectra`` Z-spectra per voxel, concatenated along the offset
    axis, that share the pool centres: the parameters are [c_k (k < K), then per pool (A_k (k < K),
    G_k (k < K), d)], and ``columns[k]`` picks the ``_lorentz_model`` parameters
    [c_k, (A_k, G_k, d)_i] of spectrum k (K = 1 is exactly that layout)."""
    single = _lorentz_model(x)
    k, stride = n_spectra, 2 * n_spectra + 1
    columns = [np.array([s] + [k + i * stride + o for i in range(n_pools) for o in (s, k + s, 2 * k)])
               for s in range(k)]
    n_par = k + n_pools * stride

    def model(p, jac=True):
        parts = [single(p[:, cols], jac) for cols in columns]
        if not jac:
            return np.concatenate(parts, axis=1)
        j = np.zeros((p.shape[0], k * x.size, n_par))
        for s, (cols, (_, j_s)) in enumerate(zip(columns, parts)):
            j[:, s * x.size:(s + 1) * x.size, cols] = j_s
        return np.concatenate([f for f, _ in parts], axis=1), j
    return model, columns


def fit_zspectrum(offsets_ppm, z, pools: tuple[LorentzPool, ...] | None = None, *, s0=None,
                  ref_ppm: float = 20.0, max_rms: float = 0.03, max_iter: int = 300,
                  water_tol_ppm: float = 0.5) -> ZFit:
    """Multi-pool Lorentzian fit of every spectrum in ``z`` (..., n_offsets), raw or normalised
    (see ``normalize``), by batched Levenberg-Marquardt within the pools' bounds (baseline c in
    [0, 2]). The first pool must be water (shift 0): its centre (the B0 shift) is searched within
    the water pool's +-shift_tol_ppm and then fitted within +-``water_tol_ppm`` of the water dip
    found there. Without ``s0`` or reference offsets the amplitudes (and ``rms``) are fractions
    of the fitted off-resonance baseline c. A fit succeeds when its parameters are finite and the
    residual RMS <= ``max_rms`` (normalised units); spectra with any NaN sample fail."""
    return fit_zspectra_joint(offsets_ppm, (z,), pools, s0=None if s0 is None else (s0,), ref_ppm=ref_ppm,
                              max_rms=max_rms, max_iter=max_iter, water_tol_ppm=water_tol_ppm)[0]


_NOISE_FIT_TERMS = 3
"""Terms of the polynomial (a quadratic) :func:`off_resonance_noise_sd` removes from each side."""


def off_resonance_noise_sd(offsets_ppm, z, beyond_ppm: float = 8.0, ref_ppm: float = 20.0) -> np.ndarray:
    """Noise SD of each spectrum in ``z`` (..., n_offsets), raw or normalised, as a fraction of its
    off-resonance level: the residual of a least-squares quadratic in the offset fitted on each
    side to the samples at ``beyond_ppm`` <= |offset| < ``ref_ppm`` (no CEST line there; offsets
    may be uneven), root of the residual sum of squares over its degrees of freedom (n - 3 a side,
    pooled), divided by the samples' mean. The quadratic absorbs the smooth water and MT tails, so
    a noiseless spectrum gives ~0 (successive differences would report their slope and curvature
    as noise). Uses the sides with >= 4 such samples (one at least); returns the voxel shape."""
    off, z = _check(offsets_ppm, z)
    sides = [(off >= beyond_ppm) & (off < ref_ppm), (off <= -beyond_ppm) & (off > -ref_ppm)]
    sides = [side for side in sides if side.sum() >= _NOISE_FIT_TERMS + 1]
    if not sides:
        raise ValueError(f"need >= {_NOISE_FIT_TERMS + 1} offsets at {beyond_ppm:g} <= |offset| < {ref_ppm:g} ppm on "
                         "one side to estimate the noise; acquire offsets there or fit without noise weights")
    squares, dof = 0.0, 0
    for side in sides:
        x = off[side]
        basis = np.linalg.qr(np.vander((x - x.mean()) / np.ptp(x), _NOISE_FIT_TERMS))[0]   # orthonormal columns
        samples = z[..., side]
        squares = squares + np.sum((samples - (samples @ basis) @ basis.T) ** 2, axis=-1)
        dof += x.size - _NOISE_FIT_TERMS
    level = z[..., np.any(sides, axis=0)].mean(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(squares / dof) / level


def _relative_weights(noise_sd, shape, n_spec) -> np.ndarray:
    """(voxels, K) residual weights 1 / noise SD of the K spectra of each voxel, scaled to mean 1
    per voxel (only their ratio matters); equal weights where an SD is not finite and positive."""
    sd = np.stack([np.broadcast_to(np.asarray(v, dtype=float), shape).reshape(-1) for v in noise_sd], axis=1)
    if sd.shape[1] != n_spec:
        raise ValueError(f"noise_sd has {sd.shape[1]} entries for {n_spec} spectra; give one per spectrum")
    usable = np.all(np.isfinite(sd) & (sd > 0), axis=1, keepdims=True)
    inverse = 1.0 / np.where(usable, sd, 1.0)
    return inverse / inverse.mean(axis=1, keepdims=True)


def fit_zspectra_joint(offsets_ppm, spectra, pools: tuple[LorentzPool, ...] | None = None, *, s0=None,
                       ref_ppm: float = 20.0, max_rms: float = 0.03, max_iter: int = 300,
                       water_tol_ppm: float = 0.5, noise_sd=None) -> tuple[ZFit, ...]:
    """Joint multi-pool fit of K Z-spectra of the same voxels acquired at the same offsets with
    different saturation (e.g. two B1 powers, same B0): the pool centres (water = B0 shift, and
    every line's offset from it) are shared by the K spectra of a voxel, while baselines,
    amplitudes and widths (which change with power) are fitted per spectrum. ``spectra``: K
    arrays of equal shape (..., n_offsets), raw or normalised; ``s0``: None or K unsaturated
    images (voxel shape). One fit per spectrum is returned, as ``fit_zspectrum`` would (same
    options); a voxel succeeds only if every one of its K spectra fits within ``max_rms``. Sharing
    the centres removes K-1 sets of centre parameters, so the amide lines are located from
    every acquisition together (less fit noise where one power's lines are weak). ``noise_sd``:
    None (every sample weighs the same), K arrays (voxel shape) or "off_resonance" (each
    spectrum's own ``off_resonance_noise_sd``): each spectrum's residuals are weighted by 1 / its
    noise SD (relative to the voxel's other spectra), so a noisier acquisition pulls the shared
    fit less; ``rms`` stays unweighted."""
    pools = iopamidol_fit_pools() if pools is None else tuple(pools)
    if not pools or pools[0].shift_ppm != 0.0:
        raise ValueError("the first pool must be water with shift_ppm = 0 (its centre is the B0 shift)")
    spectra = [np.asarray(z, dtype=float) for z in spectra]
    if not spectra or any(z.shape != spectra[0].shape for z in spectra):
        raise ValueError(f"give one or more spectra arrays of one shape, got shapes {[z.shape for z in spectra]}")
    if isinstance(noise_sd, str):
        if noise_sd != "off_resonance":
            raise ValueError(f'noise_sd must be None, "off_resonance" or one array per spectrum, got {noise_sd!r}')
        noise_sd = [off_resonance_noise_sd(offsets_ppm, z, ref_ppm=ref_ppm) for z in spectra]
    if s0 is not None and (len(s0) != len(spectra) or any(image is None for image in s0)):
        raise ValueError(f"s0 must be None or hold one unsaturated image per spectrum ({len(spectra)})")
    normalised = [normalize(offsets_ppm, z, s0=None if s0 is None else s0[k], ref_ppm=ref_ppm)
                  for k, z in enumerate(spectra)]
    off = normalised[0][0]
    n_spec, n_pool = len(spectra), len(pools)
    model, columns = _shared_centre_model(off, n_spec, n_pool)
    n_par = n_spec + n_pool * (2 * n_spec + 1)
    if n_spec * off.size <= n_par:
        raise ValueError(f"{off.size} offsets cannot fit {n_par} parameters; acquire more offsets "
                         "or use fewer pools")
    if np.sum(np.abs(off) <= pools[0].shift_tol_ppm) < 3:
        raise ValueError(f"need >= 3 offsets within +-{pools[0].shift_tol_ppm} ppm to locate the water line")
    shape = normalised[0][1].shape[:-1]
    data = np.stack([zn.reshape(-1, off.size) for _, zn in normalised])        # (K, n, n_offsets)
    finite = np.all(np.isfinite(data), axis=(0, -1))
    d = data[:, finite]

    def vector(i, c, sign):   # (initial, lower, upper) = (i=0, 1, 2); centre moved by sign * tol
        return [c] * n_spec + [v for q in pools for v in [q.amplitude[i]] * n_spec + [q.width_ppm[i]] * n_spec
                               + [q.shift_ppm + sign * q.shift_tol_ppm]]
    p0, lower, upper = (np.tile(np.asarray(vector(i, c, sign), dtype=float), (d.shape[1], 1))
                        for i, c, sign in ((0, 1.0, 0), (1, 0.0, -1), (2, 2.0, 1)))
    water_centre = n_spec + 2 * n_spec          # the water pool's centre column
    if d.shape[1]:
        p0[:, :n_spec] = d.max(axis=-1).T
        p0[:, n_spec:2 * n_spec] = (d.max(axis=-1) - d.min(axis=-1)).T
        p0[:, water_centre] = _coarse_b0(off, d.mean(axis=0), pools[0].shift_tol_ppm)
        lower[:, water_centre] = p0[:, water_centre] - water_tol_ppm
        upper[:, water_centre] = p0[:, water_centre] + water_tol_ppm
    p = np.full((data.shape[1], n_par), np.nan)
    if noise_sd is None:
        p[finite] = batched_lm(model, np.concatenate(list(d), axis=1), p0, lower, upper, max_iter=max_iter)[0]
    else:
        weight = np.repeat(_relative_weights(noise_sd, shape, n_spec)[finite], off.size, axis=1)   # (n, K n_off)

        def weighted(q, jac, rows):
            if not jac:
                return model(q, False) * weight[rows]
            f, j = model(q, True)
            return f * weight[rows], j * weight[rows][:, :, None]
        p[finite] = batched_lm(weighted, np.concatenate(list(d), axis=1) * weight, p0, lower, upper,
                               max_iter=max_iter, row_aware=True)[0]
    residual = (model(p[finite], jac=False) - np.concatenate(list(d), axis=1)).reshape(-1, n_spec, off.size)
    rss = np.full((data.shape[1], n_spec), np.nan)
    rss[finite] = np.einsum("nkt,nkt->nk", residual, residual)
    per_spectrum = np.stack([p[:, cols] for cols in columns])        # (K, n, 1 + 3 * n_pools)
    if not _has_reference(offsets_ppm, s0, ref_ppm):   # amplitudes relative to the fitted baseline
        per_spectrum[:, :, 1::3] /= per_spectrum[:, :, :1]
        rss /= per_spectrum[:, :, 0].T ** 2
    rms = np.sqrt(rss / off.size)
    ok = np.all(np.isfinite(p), axis=-1) & np.all(rms <= max_rms, axis=-1)
    per_spectrum[:, ~ok] = np.nan
    names = tuple(q.name for q in pools)
    fits = []
    for k, q in enumerate(per_spectrum):
        centre = q[:, 3::3].copy()
        centre[:, 1:] += centre[:, :1]
        fits.append(ZFit(names=names, baseline=q[:, 0].reshape(shape),
                         amplitude=q[:, 1::3].reshape(shape + (n_pool,)),
                         width_ppm=q[:, 2::3].reshape(shape + (n_pool,)),
                         centre_ppm=centre.reshape(shape + (n_pool,)), rms=rms[:, k].reshape(shape),
                         success=ok.reshape(shape)))
    return tuple(fits)


#: ratiometric indices offered by ``ph_ratio``
RATIO_METHODS = ("amplitude", "st", "mtrasym")


def saturation_transfer(fit: ZFit, at_ppm) -> np.ndarray:
    """CEST effect of the two amide lines at ``at_ppm`` (ppm from the fitted water centre):
    ST(w) = Z_background(w) - Z_fit(w), the sum of the two fitted amide Lorentzians there
    (fraction of the reference signal). Unlike the amplitude of one line it stays positive
    wherever either amide line is present. Returns (..., len(at_ppm))."""
    at = np.atleast_1d(np.asarray(at_ppm, dtype=float))
    x = fit.b0_shift_ppm[..., None] + at
    return sum(_lorentz(x, fit.amplitude[..., k, None], fit.width_ppm[..., k, None],
                        fit.centre_ppm[..., k, None]) for k in (1, 2))


def ph_ratio(offsets_ppm, z, *, shifts_ppm: tuple[float, float] = (4.2, 5.6), method: str = "amplitude",
             s0=None, ref_ppm: float = 20.0, mt: bool = True, hydroxyl: bool = True,
             endogenous: bool = False, min_effect: float = 0.005, max_rms: float = 0.03,
             fit: ZFit | None = None):
    """Ratiometric pH index log10(E1 / E2) of the two iopamidol amide effects at ``shifts_ppm``
    (ppm from water) from the multi-pool fit of ``z`` (..., n_offsets), raw or normalised,
    B0-corrected from the spectrum itself. ``method``: "amplitude" (E = fitted Lorentzian
    amplitudes, as the acidoCEST ``Peak_4p2``/``Peak_5p6`` table), "st" (E = ST at the two
    offsets from the fitted amide lines, see ``saturation_transfer``; finite wherever both
    lines are present) or "mtrasym" (E = MTRasym of the measured spectrum at the two offsets,
    model-free, B0 from the fitted water centre). NaN where the fit failed or an effect is below
    ``min_effect`` (fraction of the reference signal). ``fit``: an existing fit of ``z`` with
    the pools these options give (e.g. one of ``fit_zspectra_joint``'s); fitted here if None."""
    if method not in RATIO_METHODS:
        raise ValueError(f"method must be one of {', '.join(RATIO_METHODS)}, got {method!r}")
    if fit is None:
        pools = iopamidol_fit_pools(shifts_ppm, mt=mt, hydroxyl=hydroxyl, endogenous=endogenous)
        fit = fit_zspectrum(offsets_ppm, z, pools, s0=s0, ref_ppm=ref_ppm, max_rms=max_rms)
    elif fit.success.shape != np.shape(z)[:-1]:
        raise ValueError(f"fit has voxel shape {fit.success.shape} but z has {np.shape(z)[:-1]}; "
                         "pass the fit of these spectra")
    if method == "amplitude":
        effect = fit.amplitude[..., 1:3]
    elif method == "st":
        effect = saturation_transfer(fit, shifts_ppm)
    else:
        off, zn = normalize(offsets_ppm, z, s0=s0, ref_ppm=ref_ppm)
        if not _has_reference(offsets_ppm, s0, ref_ppm):
            zn = zn / fit.baseline[..., None]
        effect = mtr_asym(off, zn, shifts_ppm, b0_shift_ppm=fit.b0_shift_ppm)
    valid = fit.success & np.all(effect >= min_effect, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(valid, np.log10(effect[..., 0] / effect[..., 1]), np.nan)


def mean_ph_ratio(offsets_ppm, spectra, *, method: str = "st", shifts_ppm: tuple[float, float] = (4.2, 5.6),
                  s0=None, ref_ppm: float = 20.0, mt: bool = True, hydroxyl: bool = True, endogenous: bool = False,
                  min_effect: float = 0.005, max_rms: float = 0.03, noise_weighted: bool = True,
                  fits: tuple[ZFit, ...] | None = None):
    """Multi-power ratiometric pH index: the mean over K saturation powers of ``ph_ratio``
    (``method``) of the K spectra of each voxel (``spectra``: K arrays (..., n_offsets), same
    offsets, B0 and saturation time; ``s0``: None or K unsaturated images), each ratio from the
    joint fit with shared line centres (``fit_zspectra_joint``, its residuals weighted by each
    spectrum's off-resonance noise with ``noise_weighted``; or the given ``fits``). The powers'
    noise is independent, so the mean averages it; NaN where any power's ratio is NaN. Calibrate
    with ``PhCalibration`` on phantoms acquired at the same powers. Measured (2/3 uT vials, four
    T1 series, pH 6.2-7.3, st): noise weighting changes the leave-one-out error by -0.025 to
    +0.001 pH (0.107 -> 0.105 at T1 3.4 s, 0.225 -> 0.200 at 0.86 s; benchmarks/cest_ph.py)."""
    spectra = tuple(spectra)
    if fits is None:
        pools = iopamidol_fit_pools(shifts_ppm, mt=mt, hydroxyl=hydroxyl, endogenous=endogenous)
        fits = fit_zspectra_joint(offsets_ppm, spectra, pools, s0=s0, ref_ppm=ref_ppm, max_rms=max_rms,
                                  noise_sd="off_resonance" if noise_weighted else None)
    elif len(fits) != len(spectra):
        raise ValueError(f"{len(fits)} fits for {len(spectra)} spectra; pass one fit per power")
    ratios = [ph_ratio(offsets_ppm, z, shifts_ppm=shifts_ppm, method=method, s0=None if s0 is None else s0[k],
                       ref_ppm=ref_ppm, min_effect=min_effect, fit=fit)
              for k, (z, fit) in enumerate(zip(spectra, fits))]
    return np.mean(ratios, axis=0)


def b1_ratio(offsets_ppm, z_low, z_high, *, at_ppm: float = 4.2, joint: bool = True,
             shifts_ppm: tuple[float, float] = (4.2, 5.6), s0=None, ref_ppm: float = 20.0, mt: bool = True,
             hydroxyl: bool = True, endogenous: bool = False, min_effect: float = 0.005,
             max_rms: float = 0.03, fits: tuple[ZFit, ZFit] | None = None):
    """B1-ratiometric pH index (Longo et al., J Am Chem Soc 2014;136:14333 [recall]): the ST effect
    of one amide at ``at_ppm`` (ppm from water) measured at two saturation powers,
    log10[ST_high (1 - ST_low) / (ST_low (1 - ST_high))], with ST from the fitted amide lines
    (``saturation_transfer``). ``z_low``, ``z_high``: spectra of the same voxels (..., n_offsets)
    at the same offsets, B0 and saturation time, at a low and a high B1 power (e.g. 2 and 3 uT);
    ``s0``: None or the two unsaturated images. The agent concentration cancels, so (unlike the
    two-amide ratio) one amide line suffices. ``joint``: fit the two spectra with shared line
    centres (``fit_zspectra_joint``), else separately. NaN where a fit failed or an effect is
    below ``min_effect``. ``fits``: existing (low, high) fits of the two spectra with the pools
    these options give; fitted here if None. Calibrate with ``PhCalibration`` on phantoms
    acquired at the same two powers."""
    pools = iopamidol_fit_pools(shifts_ppm, mt=mt, hydroxyl=hydroxyl, endogenous=endogenous)
    options = dict(ref_ppm=ref_ppm, max_rms=max_rms)
    if fits is not None:
        if any(fit.success.shape != np.shape(z_low)[:-1] for fit in fits):
            raise ValueError("fits must be the (low, high) fits of these spectra: voxel shapes differ")
    elif joint:
        fits = fit_zspectra_joint(offsets_ppm, (z_low, z_high), pools, s0=s0, **options)
    else:
        fits = [fit_zspectrum(offsets_ppm, z, pools, s0=s, **options)
                for z, s in zip((z_low, z_high), (None, None) if s0 is None else s0)]
    low, high = (saturation_transfer(fit, at_ppm)[..., 0] for fit in fits)
    valid = fits[0].success & fits[1].success & (low >= min_effect) & (high >= min_effect) & (high < 1) & (low < 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(valid, np.log10(high * (1 - low) / (low * (1 - high))), np.nan)


@dataclass(frozen=True)
class PhCalibration:
    """pH = polyval(coef, ratio) fitted to phantoms of known pH; valid for ratios within
    ``ratio_range`` (min, max of the phantoms' ratios). ``residual_ph``: back-predicted minus
    true pH of the calibration phantoms; ``loo_rms_ph``: leave-one-out RMS error (pH) of the
    chosen ``degree``, the error to expect on a new phantom; ``loo_rms_by_degree``: the same for
    every degree tried (NaN where that polynomial is not monotone)."""

    coef: np.ndarray
    ratio_range: tuple[float, float]
    residual_ph: np.ndarray
    degree: int
    loo_rms_ph: float
    loo_rms_by_degree: dict[int, float]

    @classmethod
    def fit(cls, ratios, ph, degree: int | None = None, max_degree: int = 3) -> PhCalibration:
        """Least-squares polynomial pH(ratio) from phantoms of known pH, monotone over the
        calibrated ratio range. ``degree=None`` takes the degree in 1..``max_degree`` (up to
        the number of phantoms less 2) with the smallest leave-one-out error among the monotone
        ones."""
        r = np.asarray(ratios, dtype=float).ravel()
        y = np.asarray(ph, dtype=float).ravel()
        if r.size != y.size:
            raise ValueError(f"{r.size} ratios but {y.size} pH values; give one pH per ratio")
        if not (np.all(np.isfinite(r)) and np.all(np.isfinite(y))):
            raise ValueError("calibration ratios/pH contain NaN/inf (failed fits?); remove those "
                             "phantoms before calibrating")
        distinct = np.unique(r).size
        if degree is None:      # every degree that leaves a point over after the one left out
            degrees = [d for d in range(1, max_degree + 1) if distinct >= d + 2] or [1]
        else:
            degrees = [degree]
        for d in degrees:
            if d < 1 or distinct < d + 2:
                raise ValueError(f"degree {d} needs degree >= 1 and at least {d + 2} distinct "
                                 f"ratios, got {distinct}")
        loo = {d: _loo_rms(r, y, d) if _monotone(np.polyfit(r, y, d), r) else np.nan for d in degrees}
        if all(np.isnan(v) for v in loo.values()):
            raise ValueError(f"no monotone calibration of degree {', '.join(map(str, degrees))} over "
                             f"ratios [{r.min():.3g}, {r.max():.3g}]; use a lower degree or more phantoms")
        best = min((d for d in degrees if np.isfinite(loo[d])), key=loo.get)
        coef = np.polyfit(r, y, best)
        return cls(coef=coef, ratio_range=(float(r.min()), float(r.max())),
                   residual_ph=np.polyval(coef, r) - y, degree=best, loo_rms_ph=float(loo[best]),
                   loo_rms_by_degree={d: float(v) for d, v in loo.items()})

    def ph(self, ratios) -> np.ndarray:
        """pH for ``ratios`` (any shape); NaN for NaN ratios and outside ``ratio_range``."""
        r = np.asarray(ratios, dtype=float)
        inside = (r >= self.ratio_range[0]) & (r <= self.ratio_range[1])
        return np.where(inside, np.polyval(self.coef, np.where(inside, r, 0.0)), np.nan)


def _monotone(coef, r) -> bool:
    """Whether polyval(coef, .) is strictly monotone over [min r, max r]."""
    slope = np.polyval(np.polyder(coef), np.linspace(r.min(), r.max(), 2001))
    return bool(np.all(slope > 0) or np.all(slope < 0))


def _loo_rms(r, y, degree) -> float:
    """Leave-one-out RMS error of the degree-``degree`` polynomial y(r)."""
    keep = ~np.eye(r.size, dtype=bool)
    errors = [np.polyval(np.polyfit(r[k], y[k], degree), r[i]) - y[i] for i, k in enumerate(keep)]
    return float(np.sqrt(np.mean(np.square(errors))))


@dataclass(frozen=True)
class CalibrationChoice:
    """pH index chosen among candidates by ``select_calibration``. ``name``: the chosen candidate;
    ``calibration``: its ``PhCalibration`` on all phantoms; ``loo_rms_by_candidate``: each
    candidate's leave-one-out error (pH) at its best degree (NaN where a ratio is non-finite or no
    calibration is monotone); ``nested_loo_rms_ph``: leave-one-out error of the whole procedure
    (choice of candidate and degree remade without the left-out phantom), the error to expect on
    a new phantom; ``nested_choices``: the candidate chosen with each phantom left out."""

    name: str
    calibration: PhCalibration
    loo_rms_by_candidate: dict[str, float]
    nested_loo_rms_ph: float
    nested_choices: tuple[str, ...]


def _best_candidate(candidates, ph, max_degree):
    """(name, PhCalibration) of the candidate with the least leave-one-out error, or None."""
    best = None
    for name, ratio in candidates.items():
        try:
            cal = PhCalibration.fit(ratio, ph, max_degree=max_degree)
        except ValueError:     # too few distinct ratios or no monotone calibration
            continue
        if best is None or cal.loo_rms_ph < best[1].loo_rms_ph:
            best = (name, cal)
    return best


def select_calibration(candidates, ph, max_degree: int = 3) -> CalibrationChoice:
    """Choose the pH index among ``candidates`` ({name: ratios of the same phantoms}, e.g. ratio
    methods or saturation powers) and its degree by the least leave-one-out error, and estimate
    the error of that choice by nested leave-one-out. The winner's own leave-one-out error is
    optimistic (it won on the same phantoms); ``nested_loo_rms_ph`` is not: each phantom is left
    out in turn, candidate and degree are chosen again on the others, and the left-out phantom
    is predicted with that calibration. Candidates with a non-finite ratio are not considered."""
    y = np.asarray(ph, dtype=float).ravel()
    ratios = {name: np.asarray(r, dtype=float).ravel() for name, r in candidates.items()}
    for name, r in ratios.items():
        if r.size != y.size:
            raise ValueError(f"candidate {name!r} has {r.size} ratios for {y.size} pH values; give "
                             "one ratio per phantom")
    finite = {name: r for name, r in ratios.items() if np.all(np.isfinite(r))}
    best = _best_candidate(finite, y, max_degree)
    if best is None:
        raise ValueError(f"no candidate of {', '.join(ratios)} gives a finite, monotone calibration; "
                         "check the fits (NaN ratios) or add phantoms")
    loo = {name: np.nan for name in ratios}
    for name, r in finite.items():
        try:
            loo[name] = PhCalibration.fit(r, y, max_degree=max_degree).loo_rms_ph
        except ValueError:
            pass
    errors, choices = [], []
    for i in range(y.size):
        keep = np.arange(y.size) != i
        inner = _best_candidate({name: r[keep] for name, r in finite.items()}, y[keep], max_degree)
        if inner is None:
            raise ValueError(f"without phantom {i} no candidate gives a monotone calibration; add phantoms")
        errors.append(np.polyval(inner[1].coef, finite[inner[0]][i]) - y[i])
        choices.append(inner[0])
    return CalibrationChoice(name=best[0], calibration=best[1], loo_rms_by_candidate=loo,
                             nested_loo_rms_ph=float(np.sqrt(np.mean(np.square(errors)))),
                             nested_choices=tuple(choices))


def ph_map(offsets_ppm, z, calibration: PhCalibration, **kwargs):
    """pH map and validity mask from Z-spectra (..., n_offsets): ``calibration.ph(ph_ratio(...))``,
    or, when ``z`` is a tuple of K such arrays at K saturation powers,
    ``calibration.ph(mean_ph_ratio(...))``; ``kwargs`` go to that function (use the same ``method``
    and pools as for the calibration). Invalid voxels (failed fit, ratio outside the calibration)
    are NaN."""
    index = mean_ph_ratio if isinstance(z, tuple) else ph_ratio
    ph = calibration.ph(index(offsets_ppm, z, **kwargs))
    return ph, np.isfinite(ph)
