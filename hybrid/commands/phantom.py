"""``hybrid phantom``: the digital MRI phantom as NIfTI series with sidecars, truth maps and a
ready ``maps.toml`` (serial numpy; no DOLFINx)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

__all__ = ["run_phantom"]


def run_phantom(output_directory: Path, log=None, *, shape=(64, 64, 2), voxel_mm=(0.25, 0.25, 1.0),
                seed: int = 0) -> Path:
    """``hybrid phantom``: write the digital phantom's DCE, VFA and CEST series (NIfTI + JSON
    sidecars; CEST at 3 uT as cest.nii.gz and at 2 uT as cest_2uT.nii.gz), the calibration vials'
    spectra at both powers (vials.csv, acidoCEST layout), mask.nii.gz, labels.nii.gz, the true maps
    under truth/, a ready ``maps.toml`` (pH from the 3 uT series) and ``maps_two_powers.toml``
    (CEST only: pH from both powers, calibrated on vials.csv), paths relative to them; returns
    the path of maps.toml."""
    from hybrid.imaging import phantom
    from hybrid.io import nifti
    from hybrid.io.toml import write_toml
    from hybrid.io.zspectra import write_zspectra_csv

    log = log or (lambda message: None)
    out = Path(output_directory)
    t0 = time.perf_counter()
    p = phantom.make_phantom(shape, voxel_mm, seed=seed)
    log(f"phantom {p.labels.shape} built in {time.perf_counter() - t0:.1f} s (seed {seed})")
    s, c = phantom.DCE_SETTINGS, phantom.CEST_SETTINGS
    nifti.write_series(out / "dce.nii.gz", p.dce, p.affine_mm, description="hybrid phantom DCE SPGR signal",
                       sidecar={"FrameTimes_s": p.frame_times_s.tolist(), "RepetitionTimeExcitation": s["tr_s"],
                                "FlipAngle": s["flip_angle_deg"], "ContrastAgentRelaxivity_per_mM_s": s["r1_per_mM_s"]})
    nifti.write_series(out / "vfa.nii.gz", p.vfa, p.affine_mm, description="hybrid phantom VFA SPGR signal",
                       sidecar={"FlipAngles_deg": list(s["vfa_deg"]), "RepetitionTimeExcitation": s["tr_s"]})
    for name, signal, b1 in (("cest", p.cest, c["b1_T"]), ("cest_2uT", p.cest_second_power, c["b1_second_T"])):
        nifti.write_series(out / f"{name}.nii.gz", signal, p.affine_mm,
                           description=f"hybrid phantom iopamidol CEST {1e6 * b1:g} uT",
                           sidecar={"offsets_ppm": p.offsets_ppm.tolist(), "MagneticFieldStrength": c["b0_T"],
                                    "SaturationB1_T": b1, "SaturationTime_s": c["t_sat_s"]})
    vial_water_t1_s = c["vial_water_t1_t2_s"][0]
    write_zspectra_csv(out / "vials.csv", p.offsets_ppm, p.calibration_ph, p.vial_spectra,
                       concentration_mM=1e3 * c["concentration_M"], t1_s=vial_water_t1_s, temperature_C=37.0,
                       power_uT=[1e6 * c["b1_T"], 1e6 * c["b1_second_T"]], saturation_time_ms=1e3 * c["t_sat_s"])
    nifti.write_volume(out / "mask.nii.gz", p.labels > 0, p.affine_mm, dtype=np.uint8,
                       description="hybrid phantom tissue mask", intent_name="mask")
    nifti.write_volume(out / "labels.nii.gz", p.labels, p.affine_mm, dtype=np.uint8,
                       description="0 air 1 host 2 rim 3 core 4 necrotic", intent_name="labels")
    for key, image in p.truth.items():
        nifti.write_volume(out / "truth" / f"{key}.nii.gz", image, p.affine_mm,
                           description=f"hybrid phantom true {key}", intent_name=key)
    config = {
        "dce": {"series": "dce.nii.gz", "model": "extended_tofts", "r1_per_mM_s": s["r1_per_mM_s"],
                "n_baseline": p.n_baseline, "aif": s["aif"], "hematocrit": s["hematocrit"],
                "aif_delay_s": s["aif_delay_s"]},
        "vfa": {"series": "vfa.nii.gz"},
        "cest": {"series": "cest.nii.gz", "ratio": c["ratio"], "calibration_ph": p.calibration_ph.tolist(),
                 "calibration_ratio": p.calibration_ratio.tolist()},
        "mask": {"path": "mask.nii.gz"},
        "output": {"directory": "maps"},
    }
    path = write_toml(out / "maps.toml", config, header="hybrid maps configuration for the digital phantom "
                      "(keys and units: hybrid/config/maps.py MapsConfig).\nPaths are relative to this file.")
    two_powers = {"cest": {"series": "cest.nii.gz", "series_second_power": "cest_2uT.nii.gz",
                           "calibration_spectra": "vials.csv", "ratio": "st"},
                  "mask": {"path": "mask.nii.gz"}, "output": {"directory": "maps_two_powers"}}
    write_toml(out / "maps_two_powers.toml", two_powers, header="hybrid maps configuration for the digital "
               "phantom's CEST at two saturation powers (3 and 2 uT).\nPaths are relative to this file.")
    log(f"wrote dce/vfa/cest series (3 and 2 uT), vials.csv, mask, labels, truth/, {path.name} and "
        "maps_two_powers.toml")
    return path
