"""``hybrid maps``: DCE/VFA/CEST NIfTI series -> parameter maps, figure and summary (serial numpy;
no DOLFINx)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
from mpi4py import MPI

from hybrid.imaging.chunks import fit_in_chunks
from hybrid.io.zspectra import POWER_TOL_UT
from hybrid.records import ParameterMaps, VoxelGrid

__all__ = ["run_maps", "MAP_UNITS"]

MAP_UNITS = {"Ktrans": "1/min", "ve": "fraction", "vp": "fraction", "PS": "1/min", "Fp": "mL/100mL/min",
             "delay_s": "s", "rss": "mM^2", "T1": "s", "pH": "pH", "ph_valid": "0/1"}
MAP_UNITS.update({f"{key}_se": MAP_UNITS[key] for key in ("Ktrans", "ve", "vp", "PS", "Fp", "delay_s")})
MAP_UNITS["dce_reason"] = "bit flags (hybrid.imaging.dce.REASONS)"
FLAG_MAPS = ("ph_valid", "dce_reason")
"""Maps of flags (uint8), not of quantities."""
DCE_CHUNK = 4096   # voxels per DCE fit call (one progress line each)
CEST_CHUNK = 512   # voxels per CEST fit call


def _setting(config_value, sidecar: dict, key: str, what: str, series: Path, upper: float = math.inf) -> float:
    """A config value, else the sidecar's ``key`` (a number in (0, upper)), else a ValueError
    naming both."""
    from hybrid.io.nifti import sidecar_path

    if config_value is not None:
        return float(config_value)
    if key in sidecar:
        return _sidecar_number(sidecar, key, what, series, upper)
    raise ValueError(f"{what} unknown: set it in the configuration or add {key} to the sidecar of {series}")


def _sidecar_number(sidecar: dict, key: str, what: str, series: Path, upper: float = math.inf) -> float:
    """The sidecar's ``key``: a number in (0, upper), else a ValueError naming the sidecar."""
    from hybrid.io.nifti import sidecar_path

    value = sidecar[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < upper:
        raise ValueError(f"{sidecar_path(series)} {key}: {what} must be a number in (0, {upper:g}), got {value!r}")
    return float(value)


SATURATION_B1_KEY = "SaturationB1_T"
"""CEST sidecar key of the saturation B1 amplitude [T]."""
MAX_B1_T = 1e-4
"""Upper bound of a plausible saturation B1 [T] (100 uT)."""


def _saturation_b1_uT(series, path: Path, required_for: str | None) -> float | None:
    """Saturation B1 [uT] of a CEST series from its sidecar; None where the sidecar has none and
    ``required_for`` is None, else a ValueError saying what needs it."""
    from hybrid.io.nifti import sidecar_path

    if SATURATION_B1_KEY in series.metadata:
        return 1e6 * _sidecar_number(series.metadata, SATURATION_B1_KEY, "saturation B1 [T]", path, MAX_B1_T)
    if required_for is None:
        return None
    raise ValueError(f"{path}: saturation B1 unknown; add {SATURATION_B1_KEY} [T] to {sidecar_path(path)} "
                     f"({required_for})")


def _check_signal(series: Path, data: np.ndarray, warnings: list[str]) -> None:
    """ValueError if the series has no usable signal in the mask (``data``: (voxels, volumes));
    voxels whose series is all zero or not finite are counted in ``warnings``."""
    usable = np.isfinite(data).all(axis=1) & (np.abs(data) > 0).any(axis=1)
    if not usable.any():
        raise ValueError(f"{series}: no voxel of the mask has a finite, non-zero signal; nothing to fit "
                         "(check the image and the mask)")
    if not usable.all():
        warnings.append(f"{series}: {int((~usable).sum())} of {usable.size} voxels in the mask have an all-zero "
                        "or non-finite series")


REQUIRED_MAPS = ("Ktrans", "T1")
"""Maps that cannot be NaN in every voxel of the mask: a DCE or VFA fit that failed everywhere."""


def _check_maps(maps: dict[str, np.ndarray], mask: np.ndarray, warnings: list[str]) -> dict[str, int]:
    """Voxels of the mask where each map is NaN (its fit failed); ValueError if a map of
    ``REQUIRED_MAPS`` failed everywhere, a warning for any map that failed somewhere."""
    failed = {key: int(np.isnan(image[mask]).sum()) for key, image in maps.items()
              if np.issubdtype(image.dtype, np.floating)}
    for key, count in failed.items():
        if key in REQUIRED_MAPS and count == int(mask.sum()):
            raise ValueError(f"{key}: the fit failed in every voxel of the mask (all NaN); check the series, "
                             "their sidecars (TR, flip angle, timing) and the configuration")
        if count:
            warnings.append(f"{key}: NaN in {count} of {int(mask.sum())} voxels of the mask")
    return failed


def _pools(settings) -> dict:
    """The ``ph_ratio`` options of ``[cest]`` other than the ratio method (lines fitted)."""
    return {"shifts_ppm": settings.shifts_ppm, "mt": settings.mt, "hydroxyl": settings.hydroxyl,
            "endogenous": settings.endogenous}


def _index_options(settings) -> dict:
    """The options of ``[cest]`` for ``cest.ph_map`` other than the ratio method: ``_pools``, and
    ``noise_weighted`` for two powers (``cest.mean_ph_ratio``)."""
    if settings.series_second_power is None:
        return _pools(settings)
    return {**_pools(settings), "noise_weighted": settings.noise_weighted}


def _finite_or_none(values: dict) -> dict:
    """``values`` with string keys and None for NaN (JSON has no NaN)."""
    return {str(key): float(v) if np.isfinite(v) else None for key, v in values.items()}


def _vial_spectra(path: Path, powers_uT: tuple) -> tuple:
    """(offsets [ppm], pH, spectra) of the calibration table ``path`` at ``powers_uT`` (one power,
    None for a table of one power, or two powers): spectra is one (vials, offsets) array, or a
    tuple of one per power whose rows must be the same vials in the same order."""
    from hybrid.io.zspectra import read_zspectra_csv

    tables = [read_zspectra_csv(path, power_uT=power) for power in powers_uT]
    offsets, ph, t1, _ = tables[0]
    for power, (_, ph_other, t1_other, _) in zip(powers_uT[1:], tables[1:]):
        if ph_other.shape != ph.shape or np.any(ph_other != ph) or np.any(t1_other != t1):
            raise ValueError(f"{path}: the rows at {powers_uT[0]:g} uT and at {power:g} uT are not the same vials in "
                             f"the same order (pH {', '.join(f'{v:g}' for v in ph)} against "
                             f"{', '.join(f'{v:g}' for v in ph_other)}); list each vial once per power, same order")
    if len(tables) == 1:
        return offsets, ph, tables[0][3]
    return offsets, ph, tuple(table[3] for table in tables)


def _ph_calibration(settings, log, powers_uT: tuple) -> tuple:
    """(ratio method, PhCalibration, summary record) of ``[cest]``: from the vials' pH and ratio,
    or from their Z-spectra (``calibration_spectra``) at ``powers_uT`` (see ``_vial_spectra``),
    where ``ratio = "auto"`` calibrates every method and degree and keeps the least leave-one-out
    error (``cest.select_calibration``; the record adds the nested leave-one-out error of that
    choice). With two powers the ratio of a vial is the mean of its two powers' ratios from their
    joint fit (``cest.mean_ph_ratio``), as for the voxels."""
    from hybrid.config.maps import AUTO
    from hybrid.imaging import cest

    degree = None if settings.calibration_degree == AUTO else settings.calibration_degree
    method, report = settings.ratio, {"ratio": settings.ratio}
    if settings.calibration_spectra is None:
        calibration = cest.PhCalibration.fit(settings.calibration_ratio, settings.calibration_ph, degree)
        report["calibration_vials"] = len(settings.calibration_ph)
    else:
        path = settings.calibration_spectra
        offsets, ph, signal = _vial_spectra(path, powers_uT)
        methods = cest.RATIO_METHODS if method == AUTO else (method,)
        index = cest.mean_ph_ratio if isinstance(signal, tuple) else cest.ph_ratio
        ratios = {name: index(offsets, signal, method=name, **_index_options(settings)) for name in methods}
        report.update({"calibration_spectra": str(path), "calibration_vials": int(ph.size),
                       "calibration_ph_range": [float(ph.min()), float(ph.max())],
                       "calibration_ratios": {name: [float(v) if np.isfinite(v) else None for v in r]
                                              for name, r in ratios.items()}})
        if method == AUTO:
            choice = cest.select_calibration(ratios, ph)
            method, calibration = choice.name, choice.calibration
            report.update({"chosen_ratio": method,
                           "loo_rms_by_ratio": _finite_or_none(choice.loo_rms_by_candidate),
                           "nested_loo_rms_ph": choice.nested_loo_rms_ph,
                           "nested_choices": list(choice.nested_choices)})
            log(f"pH ratio chosen by leave-one-out error on {ph.size} vials: {method}; nested leave-one-out "
                f"error of the choice {choice.nested_loo_rms_ph:.3f} pH")
        else:
            failed = ph[~np.isfinite(ratios[method])]
            if failed.size:
                raise ValueError(f"{path}: the {method} ratio is not finite for the vials at pH "
                                 f"{', '.join(f'{v:g}' for v in failed)} (failed fit or an amide effect below "
                                 "0.5 %); remove those rows or choose another ratio")
            calibration = cest.PhCalibration.fit(ratios[method], ph, degree)
    report.update({"calibration_degree": calibration.degree, "calibration_loo_rms_ph": calibration.loo_rms_ph,
                   "calibration_residual_ph": calibration.residual_ph.tolist(),   # fitted - true, per vial
                   # None where that degree is not monotone
                   "calibration_loo_rms_by_degree": _finite_or_none(calibration.loo_rms_by_degree)})
    log(f"pH calibration ({method}): degree {calibration.degree}, leave-one-out error "
        f"{calibration.loo_rms_ph:.3f} pH")
    return method, calibration, report


def _check_same_offsets(path_a: Path, offsets_a: np.ndarray, path_b: Path, offsets_b: np.ndarray) -> None:
    """ValueError unless two CEST series were saturated at the same offsets [ppm] (1e-6 ppm)."""
    if offsets_a.shape != offsets_b.shape or not np.allclose(offsets_a, offsets_b, rtol=0.0, atol=1e-6):
        raise ValueError(f"{path_b} has {offsets_b.size} offsets {_span(offsets_b)} but {path_a} has {offsets_a.size} "
                         f"{_span(offsets_a)}; the two powers must be acquired at the same offsets (sidecar offsets_ppm)")


def _span(offsets: np.ndarray) -> str:
    """'[min, max] ppm' of an offset list."""
    return f"[{offsets.min():g}, {offsets.max():g}] ppm"


def _cest_powers_uT(settings, series, second_series) -> tuple:
    """Saturation powers [uT] of the CEST series (sidecar SaturationB1_T): (b1,) for one series (None
    if its sidecar has none), (b1, b1_second) with ``series_second_power``, which must differ."""
    if second_series is None:
        return (_saturation_b1_uT(series, settings.series, None),)
    need = "needed to pair each series with its calibration vials"
    powers = (_saturation_b1_uT(series, settings.series, need),
              _saturation_b1_uT(second_series, settings.series_second_power, need))
    if abs(powers[0] - powers[1]) <= POWER_TOL_UT:
        raise ValueError(f"{settings.series_second_power} and {settings.series} were both saturated at {powers[0]:g} uT "
                         f"({SATURATION_B1_KEY}); series_second_power must be the same offsets at another B1")
    return powers


def run_maps(config, log=None) -> dict:
    """``hybrid maps``: DCE/VFA/CEST NIfTI series -> parameter maps (NIfTI, source affine),
    ``maps.png`` and ``summary.json`` in ``config.output.directory``; returns the summary.

    Maps (float32, NaN outside the mask or where a fit failed): the DCE model's parameters
    (Ktrans [1/min], ve, vp, PS [1/min], Fp [mL/100 mL/min]), rss [mM^2], delay_s [s] with
    fit_delay, T1 [s] with [vfa], pH and ph_valid (uint8) with [cest] (from one series, or from
    two saturation powers with ``series_second_power``)."""
    from hybrid.imaging import cest, dce
    from hybrid.io import nifti
    from hybrid.io.summary import software_versions, write_summary

    log = log or (lambda message: None)
    start = time.perf_counter()
    stages: dict[str, float] = {}
    grid: tuple[str, tuple, np.ndarray] | None = None

    def on_grid(name: str, data: np.ndarray, affine: np.ndarray) -> None:
        nonlocal grid
        if grid is None:
            grid = (name, data.shape[:3], affine)
        else:
            nifti.check_same_grid(grid[0], grid[1], grid[2], name, data.shape, affine)

    dce_series = cest_series = vfa_series = None
    if config.dce is not None:
        dce_series = nifti.read_dce_series(config.dce.series)
        on_grid(str(config.dce.series), dce_series.data, dce_series.affine_mm)
    if config.vfa is not None:
        vfa_series = nifti.read_vfa_series(config.vfa.series)
        on_grid(str(config.vfa.series), vfa_series.data, vfa_series.affine_mm)
    second_series = None
    if config.cest is not None:
        cest_series = nifti.read_cest_series(config.cest.series)
        on_grid(str(config.cest.series), cest_series.data, cest_series.affine_mm)
        if config.cest.series_second_power is not None:
            second_series = nifti.read_cest_series(config.cest.series_second_power)
            on_grid(str(config.cest.series_second_power), second_series.data, second_series.affine_mm)
            _check_same_offsets(config.cest.series, cest_series.axis, config.cest.series_second_power,
                                second_series.axis)
        powers_uT = _cest_powers_uT(config.cest, cest_series, second_series)
    shape, affine = grid[1], grid[2]
    if config.mask is not None:
        mask_data, mask_affine = nifti.read_volume(config.mask.path)
        on_grid(str(config.mask.path), mask_data, mask_affine)
        mask = mask_data > 0
    else:
        mask = np.ones(shape, dtype=bool)
    n = int(mask.sum())
    log(f"{n} voxels in the mask of a {shape} grid")
    if n == 0:
        raise ValueError(f"{config.mask.path}: the mask selects no voxel (no value > 0)")
    warnings: list[str] = []
    for path, series in ((config.dce and config.dce.series, dce_series), (config.vfa and config.vfa.series, vfa_series),
                         (config.cest and config.cest.series, cest_series),
                         (config.cest and config.cest.series_second_power, second_series)):
        if series is not None:
            _check_signal(path, series.data[mask], warnings)
    maps: dict[str, np.ndarray] = {}

    def put(values: dict[str, np.ndarray]) -> None:
        for key, flat in values.items():
            image = np.full(shape, np.nan)
            image[mask] = flat
            maps[key] = image

    t10 = dce_report = None
    if vfa_series is not None:
        t0 = time.perf_counter()
        tr = _setting(config.vfa.tr_s, vfa_series.metadata, "RepetitionTimeExcitation", "VFA TR [s]",
                      config.vfa.series)
        t1, _ = dce.fit_t1_vfa(vfa_series.data[mask], vfa_series.axis, tr)
        put({"T1": t1})
        t10 = t1
        stages["vfa_s"] = time.perf_counter() - t0
        log(f"T1 from {vfa_series.axis.size} flip angles: median {np.nanmedian(t1):.3g} s")
    if dce_series is not None:
        t0 = time.perf_counter()
        settings = config.dce
        tr = _setting(settings.tr_s, dce_series.metadata, "RepetitionTimeExcitation", "DCE TR [s]", settings.series)
        fa = _setting(settings.flip_angle_deg, dce_series.metadata, "FlipAngle", "DCE flip angle [deg]",
                      settings.series, 180.0)
        signal, t10_s = dce_series.data[mask], settings.t10_s if t10 is None else t10
        conc = dce.signal_to_concentration(signal, t10_s=t10_s, r1_per_mM_s=settings.r1_per_mM_s, tr_s=tr,
                                           flip_angle_deg=fa, n_baseline=settings.n_baseline)
        finite_input = np.isfinite(signal).all(axis=1) & np.isfinite(t10_s)   # else NaN concentration
        no_inverse = ~np.isfinite(conc) & finite_input[:, None]   # E1 outside (0, 1), or a zero baseline
        times = dce_series.axis
        if settings.aif == "measured":
            aif_mask, aif_affine = nifti.read_volume(settings.aif_mask)
            on_grid(str(settings.aif_mask), aif_mask, aif_affine)
            cp = dce.plasma_aif_from_blood_signal(
                dce_series.data, aif_mask > 0, t10_s=settings.blood_t10_s, tr_s=tr, flip_angle_deg=fa,
                r1_per_mM_s=settings.blood_r1_per_mM_s or settings.r1_per_mM_s, n_baseline=settings.n_baseline,
                hct=settings.hematocrit)
        else:
            cp = dce.population_plasma_aif(settings.aif, times, settings.aif_delay_s, settings.hematocrit)
        log(f"DCE AIF: {settings.aif}, plasma peak {cp.max():.3g} mM")
        fitted = fit_in_chunks(f"DCE {settings.model}", n, DCE_CHUNK,
                          lambda part: dce.fit(times, conc[part], cp, settings.model, settings.fit_delay), log)
        if not settings.fit_delay:
            fitted.pop("delay_s")
        reason = fitted.pop("reason")
        put(fitted)
        maps["dce_reason"] = np.full(shape, 1, dtype=np.uint8)   # 1: not fitted (outside the mask)
        maps["dce_reason"][mask] = reason
        dce_report = {"aif": settings.aif, "plasma_aif_peak_mM": float(cp.max()),
                      "no_physical_inverse_voxels": int(no_inverse.any(axis=1).sum()),
                      "no_physical_inverse_samples": int(no_inverse.sum()),
                      "nonfinite_input_voxels": int((~finite_input).sum()),
                      "reason_counts": {str(bit): int(((reason & bit) > 0).sum()) for bit in dce.REASONS},
                      "reason_codes": {str(bit): text for bit, text in dce.REASONS.items()}}
        stages["dce_s"] = time.perf_counter() - t0
    cest_report = None
    if cest_series is not None:
        t0 = time.perf_counter()
        settings = config.cest
        method, calibration, cest_report = _ph_calibration(settings, log, powers_uT)
        cest_report["saturation_b1_uT"] = [None if p is None else float(p) for p in powers_uT]
        spectra = [series.data[mask] for series in (cest_series, second_series) if series is not None]
        if second_series is not None:
            weighting = ", residuals weighted by each power's noise" if settings.noise_weighted else ""
            cest_report["index"] = (f"mean of the {powers_uT[0]:g} and {powers_uT[1]:g} uT {method} ratios "
                                    f"(joint fit, shared line centres{weighting})")
            log(f"CEST pH index: {cest_report['index']}")

        def fit_ph(part):
            z = spectra[0][part] if len(spectra) == 1 else tuple(s[part] for s in spectra)
            ph, valid = cest.ph_map(cest_series.axis, z, calibration, method=method, **_index_options(settings))
            return {"pH": ph, "ph_valid": valid}

        put(fit_in_chunks("CEST pH", n, CEST_CHUNK, fit_ph, log))
        maps["ph_valid"] = np.nan_to_num(maps["ph_valid"]).astype(np.uint8)
        stages["cest_s"] = time.perf_counter() - t0

    failed_voxels = _check_maps(maps, mask, warnings)
    for warning in warnings:
        log(f"warning: {warning}")
    out = Path(config.output.directory)
    fitted = ParameterMaps(VoxelGrid(affine, shape), mask, maps, {key: MAP_UNITS.get(key, "") for key in maps})
    outputs = _write_maps(fitted, out)
    stages["total_s"] = time.perf_counter() - start
    summary = {
        "command": "maps",
        "configuration": config.source,
        "versions": software_versions(),
        "grid_shape": list(shape),
        "affine_mm": affine,
        "voxels_fitted": n,
        "wall_time_s": stages,
        "median_in_mask": {key: float(np.nanmedian(image[mask])) if np.isfinite(image[mask]).any() else None
                           for key, image in fitted.images.items() if key not in FLAG_MAPS},
        "ph_valid_fraction": float(maps["ph_valid"][mask].mean()) if "ph_valid" in maps else None,
        "dce": dce_report,
        "cest": cest_report,
        "failed_voxels": failed_voxels,
        "warnings": warnings,
        "units": MAP_UNITS,
        "outputs": outputs,
    }
    write_summary(out / "summary.json", summary, MPI.COMM_SELF)
    log(f"wrote {len(maps)} maps, {outputs['figure']} and summary.json")
    return summary


def _write_maps(fitted: ParameterMaps, out: Path) -> dict[str, str]:
    """Each map as ``<name>.nii.gz`` (float32, flags uint8, source affine, unit in the header) and
    the overview figure ``maps.png`` in ``out``; the file names, relative to ``out``, by map."""
    from hybrid.io import nifti
    from hybrid.io.outputs import naming
    from hybrid.report.figures import plot_maps_overview

    outputs = {}
    for key, image in fitted.images.items():
        unit = fitted.units[key]
        dtype = np.uint8 if key in FLAG_MAPS else np.float32
        nifti.write_volume(out / f"{key}.nii.gz", image, fitted.grid.affine_mm, dtype=dtype,
                           description=f"hybrid maps: {key} [{unit}]", intent_name=f"{key} [{unit}]")
        outputs[key] = f"{key}.nii.gz"
    figure = out / "maps.png"
    with naming(figure):
        plot_maps_overview({key: (image, fitted.units[key]) for key, image in fitted.images.items()}, figure)
    outputs["figure"] = figure.name
    return outputs
