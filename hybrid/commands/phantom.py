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
    sidecars), mask.nii.gz, labels.nii.gz, the true maps under truth/, and a ready ``maps.toml``
    (paths relative to it); returns the path of maps.toml."""
    from hybrid.imaging import phantom
    from hybrid.io import nifti
    from hybrid.io.toml import write_toml

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
    nifti.write_series(out / "cest.nii.gz", p.cest, p.affine_mm, description="hybrid phantom iopamidol CEST",
                       sidecar={"offsets_ppm": p.offsets_ppm.tolist(), "MagneticFieldStrength": c["b0_T"],
                                "SaturationB1_T": c["b1_T"], "SaturationTime_s": c["t_sat_s"]})
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
    log(f"wrote dce/vfa/cest series, mask, labels, truth/ and {path.name}")
    return path
