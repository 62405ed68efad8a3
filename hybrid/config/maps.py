"""``hybrid maps`` configuration (quantitative MRI): keys and units in :class:`MapsConfig`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hybrid.config.validate import (REQUIRED, ConfigError, OutputConfig, choice, integer, number, numbers,
                                    optional_number, output_from_table, read_toml, relative_path, spec_of, take_keys)

__all__ = ["DceMapsConfig", "VfaConfig", "CestMapsConfig", "MaskConfig", "MapsConfig", "maps_config_from_dict",
           "load_maps_config"]

DCE_MODELS = ("tofts", "extended_tofts", "patlak", "2cxm", "2cum")
CEST_RATIOS = ("amplitude", "st", "mtrasym")        # hybrid.imaging.cest.RATIO_METHODS
AUTO = "auto"
"""``[cest] ratio`` / ``calibration_degree`` value: chosen by leave-one-out error on the calibration."""
DCE_AIFS = ("parker", "preclinical", "measured")


@dataclass(frozen=True)
class DceMapsConfig:
    """``[dce]`` of a maps configuration (see :class:`MapsConfig`)."""

    series: Path
    r1_per_mM_s: float
    n_baseline: int
    model: str = "extended_tofts"
    tr_s: float | None = None
    flip_angle_deg: float | None = None
    t10_s: float | None = None
    hematocrit: float = 0.42
    aif_delay_s: float = 0.0
    fit_delay: bool = False
    aif: str = "parker"
    aif_mask: Path | None = None
    blood_t10_s: float | None = None
    blood_r1_per_mM_s: float | None = None


@dataclass(frozen=True)
class VfaConfig:
    """``[vfa]`` of a maps configuration (see :class:`MapsConfig`)."""

    series: Path
    tr_s: float | None = None


@dataclass(frozen=True)
class CestMapsConfig:
    """``[cest]`` of a maps configuration (see :class:`MapsConfig`). The calibration is either
    ``calibration_ph`` with ``calibration_ratio`` or ``calibration_spectra`` (with ``ratio`` and
    ``calibration_degree`` possibly "auto"). With ``series_second_power`` the pH index is the mean
    of the two powers' ratios from a joint fit (``hybrid.imaging.cest.mean_ph_ratio``)."""

    series: Path
    series_second_power: Path | None = None
    calibration_ph: tuple[float, ...] | None = None
    calibration_ratio: tuple[float, ...] | None = None
    calibration_spectra: Path | None = None
    calibration_degree: int | str = AUTO
    shifts_ppm: tuple[float, float] = (4.2, 5.6)
    mt: bool = True
    ratio: str = "amplitude"
    hydroxyl: bool = True
    endogenous: bool = False
    noise_weighted: bool = True


@dataclass(frozen=True)
class MaskConfig:
    """``[mask]`` of a maps configuration (see :class:`MapsConfig`)."""

    path: Path


@dataclass(frozen=True)
class MapsConfig:
    """Everything ``hybrid maps`` needs. Every ``[section] key`` is the field ``config.section.key``;
    relative paths are relative to the configuration file.

    Keys (units)::

        [dce]                          # optional; needs [vfa] or t10_s
        series = "dce.nii.gz"          # 4-D SPGR series, time last; frame times from the sidecar
                                       # dce.json (FrameTimes_s | VolumeTiming | FrameInterval_s, s)
        model = "extended_tofts"       # tofts | extended_tofts | patlak | 2cxm | 2cum
        r1_per_mM_s = 4.0              # contrast-agent relaxivity [1/(mM s)]
        n_baseline = 12                # pre-contrast frames, frame 0 included (it is discarded)
        tr_s = 5e-3                    # excitation TR [s]; default: sidecar RepetitionTimeExcitation
        flip_angle_deg = 20.0          # [deg]; default: sidecar FlipAngle
        t10_s = 1.5                    # pre-contrast T1 [s] for every voxel, when there is no [vfa]
        aif = "parker"                 # parker (human, Parker 2006) | preclinical (rodent,
                                       # McGrath 2009 model B) | measured (arterial ROI)
        hematocrit = 0.42              # AIF blood -> plasma: Cp = Cb / (1 - hematocrit)
        aif_delay_s = 30.0             # bolus arrival of a population AIF [s]
        aif_mask = "aif_mask.nii.gz"   # measured: arterial ROI (> 0), on the DCE grid
        blood_t10_s = 1.9              # measured: pre-contrast T1 of blood [s]
        blood_r1_per_mM_s = 4.0        # measured: relaxivity in blood; default r1_per_mM_s
        fit_delay = false              # also fit a per-voxel delay (-10..10 s)
        [vfa]                          # optional: T1 map from variable flip angles
        series = "vfa.nii.gz"          # 4-D, flip angles from sidecar FlipAngles_deg [deg]
        tr_s = 5e-3                    # [s]; default: sidecar RepetitionTimeExcitation
        [cest]                         # optional: pH_e from iopamidol CEST
        series = "cest.nii.gz"         # 4-D, one volume per offset (sidecar offsets_ppm, ppm);
                                       # offsets |x| >= 20 ppm are the S0 reference; sidecar
                                       # SaturationB1_T [T]: needed with series_second_power or a
                                       # calibration_spectra table holding several powers
        series_second_power = "cest_2uT.nii.gz"  # optional: the same offsets at another B1 (its
                                       # sidecar SaturationB1_T); both spectra of a voxel are fitted
                                       # jointly (shared line centres) and the pH index is the mean
                                       # of the two powers' ratios; calibration_spectra must then
                                       # hold the vials at both powers (rows in the same vial order)
        noise_weighted = true          # with series_second_power: weight each power's residuals in
                                       # the joint fit by 1 / its noise SD (quadratic-fit residual at |offset| 8-20 ppm)
        calibration_ph = [6.2, ...]    # calibration vials: pH ...
        calibration_ratio = [-0.45, ...]  # ... and their ratio (same `ratio` method and pools)
        calibration_spectra = "vials.csv" # or: the vials' Z-spectra, one row each with its pH
                                       # (acidoCEST table, hybrid.io.zspectra), acquired like the
                                       # series; their ratios are computed here
        calibration_degree = "auto"    # polynomial degree of pH(ratio), or "auto": 1-3 by
                                       # leave-one-out error (reported in summary.json)
        ratio = "amplitude"            # amplitude | st | mtrasym: log10 of the 4.2/5.6 ppm effects,
                                       # or "auto" (needs calibration_spectra): every method and
                                       # degree is calibrated, the least leave-one-out error wins;
                                       # summary.json reports it and the nested leave-one-out
                                       # error of the whole choice (what a new vial would see)
        shifts_ppm = [4.2, 5.6]        # amide lines [ppm from water]
        mt = true                      # fit a broad MT line too
        hydroxyl = true                # fit the iopamidol hydroxyl line near 1 ppm
        endogenous = false             # fit APT (3.5), amine (2.0) and NOE (-3.5 ppm) lines (in vivo)
        [mask]
        path = "mask.nii.gz"           # optional: fit voxels where mask > 0 (default: all)
        [output]
        directory = "maps"             # NIfTI maps, maps.png, summary.json

    At least one of [dce] and [cest] is required. All images must share the grid (shape, affine).
    """

    dce: DceMapsConfig | None
    vfa: VfaConfig | None
    cest: CestMapsConfig | None
    mask: MaskConfig | None
    output: OutputConfig
    source: dict


def _dce_maps(table: dict, base: Path) -> DceMapsConfig:
    spec = spec_of(DceMapsConfig)
    v = take_keys(table, "dce", spec)
    choice("dce", "model", v["model"], DCE_MODELS)
    if not 0.0 <= number("dce", "hematocrit", v["hematocrit"]) < 1.0:
        raise ConfigError(f"[dce] hematocrit must be in [0, 1), got {v['hematocrit']!r}")
    choice("dce", "fit_delay", v["fit_delay"], (True, False))
    choice("dce", "aif", v["aif"], DCE_AIFS)
    measured = ("aif_mask", "blood_t10_s", "blood_r1_per_mM_s")
    if v["aif"] == "measured":
        missing = [key for key in measured[:2] if v[key] is None]
        if missing:
            raise ConfigError(f"[dce] aif = \"measured\" needs {' and '.join(missing)} (the arterial "
                              "ROI mask and the pre-contrast T1 of blood [s])")
        if "aif_delay_s" in table:
            raise ConfigError('[dce] aif_delay_s applies only to aif = "parker" or "preclinical" (aif is '
                              "'measured', whose arrival is in its samples)")
    else:
        given = [key for key in measured if v[key] is not None]
        if given:
            raise ConfigError(f"[dce] {', '.join(given)} apply only to aif = \"measured\" "
                              f"(aif is {v['aif']!r})")
    return DceMapsConfig(
        series=relative_path(base, "dce", "series", v["series"]),
        r1_per_mM_s=number("dce", "r1_per_mM_s", v["r1_per_mM_s"], positive=True),
        n_baseline=integer("dce", "n_baseline", v["n_baseline"], 2),
        model=v["model"],
        tr_s=optional_number("dce", "tr_s", v["tr_s"], positive=True),
        flip_angle_deg=optional_number("dce", "flip_angle_deg", v["flip_angle_deg"], positive=True),
        t10_s=optional_number("dce", "t10_s", v["t10_s"], positive=True),
        hematocrit=float(v["hematocrit"]),
        aif_delay_s=number("dce", "aif_delay_s", v["aif_delay_s"]),
        fit_delay=v["fit_delay"],
        aif=v["aif"],
        aif_mask=None if v["aif_mask"] is None else relative_path(base, "dce", "aif_mask", v["aif_mask"]),
        blood_t10_s=optional_number("dce", "blood_t10_s", v["blood_t10_s"], positive=True),
        blood_r1_per_mM_s=optional_number("dce", "blood_r1_per_mM_s", v["blood_r1_per_mM_s"],
                                           positive=True))


def _cest_calibration(v: dict, base: Path) -> tuple:
    """(calibration_ph, calibration_ratio, calibration_spectra, calibration_degree) of the ``[cest]``
    keys ``v``: one of the two calibrations, consistent with ``ratio``."""
    degree = v["calibration_degree"]
    if degree != AUTO:
        degree = integer("cest", "calibration_degree", degree, 1)
    if v["calibration_spectra"] is not None:
        given = [key for key in ("calibration_ph", "calibration_ratio") if v[key] is not None]
        if given:
            raise ConfigError(f"[cest] {' and '.join(given)} cannot be combined with calibration_spectra (the "
                              "table's pH column and its spectra give them); keep one of the two calibrations")
        if v["ratio"] == AUTO and degree != AUTO:
            raise ConfigError(f'[cest] ratio = "auto" chooses the degree too; remove calibration_degree = '
                              f'{degree} or set it to "auto"')
        return None, None, relative_path(base, "cest", "calibration_spectra", v["calibration_spectra"]), degree
    if v["ratio"] == AUTO:
        raise ConfigError('[cest] ratio = "auto" needs calibration_spectra = "vials.csv" (the Z-spectra of '
                          "the calibration vials, from which every ratio method is computed)")
    missing = [key for key in ("calibration_ph", "calibration_ratio") if v[key] is None]
    if missing:
        raise ConfigError(f"[cest] missing {' and '.join(missing)}: give the calibration vials' pH and "
                          'ratio, or their Z-spectra as calibration_spectra = "vials.csv"')
    ph = numbers("cest", "calibration_ph", v["calibration_ph"])
    ratio = numbers("cest", "calibration_ratio", v["calibration_ratio"])
    if len(ph) != len(ratio):
        raise ConfigError(f"[cest] calibration_ph has {len(ph)} values but calibration_ratio has "
                          f"{len(ratio)}; give one ratio per calibration pH")
    return ph, ratio, None, degree


def _cest_maps(table: dict, base: Path) -> CestMapsConfig:
    v = take_keys(table, "cest", spec_of(CestMapsConfig))
    default = isinstance(v["shifts_ppm"], tuple)
    shifts = numbers("cest", "shifts_ppm", list(v["shifts_ppm"]) if default else v["shifts_ppm"])
    if len(shifts) != 2 or shifts[0] == shifts[1]:
        raise ConfigError(f"[cest] shifts_ppm must be two different offsets [ppm], e.g. [4.2, 5.6], "
                          f"got {list(shifts)}")
    if "noise_weighted" in table and v["series_second_power"] is None:
        raise ConfigError("[cest] noise_weighted applies only to two powers; add series_second_power or remove it")
    for key in ("mt", "hydroxyl", "endogenous", "noise_weighted"):
        choice("cest", key, v[key], (True, False))
    choice("cest", "ratio", v["ratio"], CEST_RATIOS + (AUTO,))
    ph, ratio, spectra, degree = _cest_calibration(v, base)
    second = v["series_second_power"]
    return CestMapsConfig(relative_path(base, "cest", "series", v["series"]),
                          None if second is None else relative_path(base, "cest", "series_second_power", second),
                          ph, ratio, spectra, degree, shifts, v["mt"], v["ratio"], v["hydroxyl"], v["endogenous"],
                          v["noise_weighted"])


def maps_config_from_dict(data: dict, base: Path = Path("."), origin: str = "<config>") -> MapsConfig:
    """Validate a parsed maps TOML document; relative paths are taken relative to ``base``."""
    try:
        top = take_keys(data, "top level", {"dce": None, "vfa": None, "cest": None, "mask": None,
                                        "output": REQUIRED})
        if top["dce"] is None and top["cest"] is None:
            raise ConfigError("give at least one of [dce] and [cest]")
        dce = None if top["dce"] is None else _dce_maps(top["dce"], base)
        vfa = None
        if top["vfa"] is not None:
            values = take_keys(top["vfa"], "vfa", spec_of(VfaConfig))
            vfa = VfaConfig(relative_path(base, "vfa", "series", values["series"]),
                            optional_number("vfa", "tr_s", values["tr_s"], positive=True))
        if dce is not None and vfa is None and dce.t10_s is None:
            raise ConfigError("[dce] needs a pre-contrast T1: give t10_s [s] or a [vfa] series")
        mask = None
        if top["mask"] is not None:
            path = take_keys(top["mask"], "mask", spec_of(MaskConfig))["path"]
            mask = MaskConfig(relative_path(base, "mask", "path", path))
        return MapsConfig(dce, vfa, None if top["cest"] is None else _cest_maps(top["cest"], base), mask,
                          output_from_table(top["output"], base), data)
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None


def load_maps_config(path: str | Path) -> MapsConfig:
    """Read and validate a ``hybrid maps`` TOML file (keys: :class:`MapsConfig`)."""
    path = Path(path)
    return maps_config_from_dict(read_toml(path), path.parent, str(path))
