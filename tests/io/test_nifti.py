"""NIfTI in/out: timing and offsets from sidecars or arguments, units of the affine, maps written
with the source affine, and clear ValueErrors for mismatched shapes, affines and timings."""

import json

import nibabel as nib
import numpy as np
import pytest

from hybrid.io import nifti

AFFINE = np.array([[0.0, -0.3, 0.0, 5.0], [0.25, 0.0, 0.0, -4.0], [0.0, 0.0, 1.5, 2.0], [0, 0, 0, 1.0]])


def _series(tmp_path, name, n=5, sidecar=None, shape=(4, 3, 2)):
    data = np.random.default_rng(0).random(shape + (n,))
    return nifti.write_series(tmp_path / name, data, AFFINE, sidecar or {}), data


def test_dce_times_from_sidecar_keys_and_header(tmp_path):
    path, data = _series(tmp_path, "dce.nii.gz", sidecar={"FrameTimes_s": [0, 2, 4, 6.5, 9]})
    series = nifti.read_dce_series(path)
    assert np.allclose(series.data, data.astype(np.float32)) and np.allclose(series.affine_mm, AFFINE)
    assert np.allclose(series.axis, [0, 2, 4, 6.5, 9])
    nifti.sidecar_path(path).write_text(json.dumps({"VolumeTiming": [1, 2, 3, 4, 5]}))
    assert np.allclose(nifti.read_dce_series(path).axis, [1, 2, 3, 4, 5])
    nifti.sidecar_path(path).write_text(json.dumps({"FrameInterval_s": 2.5, "FrameStart_s": 10}))
    assert np.allclose(nifti.read_dce_series(path).axis, 10 + 2.5 * np.arange(5))
    assert np.allclose(nifti.read_dce_series(path, frame_times_s=np.arange(5.0)).axis, np.arange(5.0))
    # no sidecar: the 4th zoom with its time unit (ms here)
    img = nib.Nifti1Image(data, AFFINE)
    img.header.set_xyzt_units("mm", "msec")
    img.header.set_zooms((0.25, 0.3, 1.5, 3000.0))
    nib.save(img, str(tmp_path / "hdr.nii"))
    assert np.allclose(nifti.read_dce_series(tmp_path / "hdr.nii").axis, 3.0 * np.arange(5))


def test_affine_in_metres_is_converted_to_mm(tmp_path):
    img = nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.diag([2.5e-4, 2.5e-4, 1e-3, 1]))
    img.header.set_xyzt_units("meter")
    nib.save(img, str(tmp_path / "m.nii.gz"))
    _, affine = nifti.read_volume(tmp_path / "m.nii.gz")
    assert np.allclose(affine, np.diag([0.25, 0.25, 1.0, 1.0]))


def test_cest_and_vfa_axes(tmp_path):
    path, _ = _series(tmp_path, "cest.nii.gz", n=4, sidecar={"offsets_ppm": [-300, -4.2, 4.2, 5.5]})
    assert np.allclose(nifti.read_cest_series(path).axis, [-300, -4.2, 4.2, 5.5])
    assert np.allclose(nifti.read_cest_series(path, offsets_ppm=[1, 2, 3, 4]).axis, [1, 2, 3, 4])
    path, _ = _series(tmp_path, "vfa.nii.gz", n=3, sidecar={"FlipAngles_deg": [2, 10, 20]})
    assert np.allclose(nifti.read_vfa_series(path).axis, [2, 10, 20])


def test_write_volume_keeps_affine_dtype_and_units(tmp_path):
    volume = np.arange(24, dtype=float).reshape(4, 3, 2)
    volume[0, 0, 0] = np.nan
    path = nifti.write_volume(tmp_path / "Ktrans.nii.gz", volume, AFFINE, description="Ktrans [1/min]",
                              intent_name="Ktrans [1/min]")
    img = nib.load(str(path))
    assert img.get_data_dtype() == np.float32 and np.allclose(img.affine, AFFINE)
    assert img.header.get_intent()[2] == "Ktrans [1/min]" and img.header.get_xyzt_units()[0] == "mm"
    back, affine = nifti.read_volume(path)
    assert np.isnan(back[0, 0, 0]) and np.allclose(back.ravel()[1:], volume.ravel()[1:])


@pytest.mark.parametrize("sidecar, match", [
    ({"FrameTimes_s": [0, 1, 2, 3]}, "4 frame times for 5 volumes"),
    ({"FrameTimes_s": [0, 1, 1, 2, 3]}, "strictly increasing .*frame 2"),
    ({"FrameTimes_s": [0, 2, 1, 3, 4]}, "strictly increasing"),
    ({"FrameTimes_s": [0, 1, None, 3, 4]}, "NaN"),
    ({}, "no frame timing; add FrameTimes_s"),
])
def test_dce_timing_errors(tmp_path, sidecar, match):
    path, _ = _series(tmp_path, "dce.nii.gz", sidecar=sidecar)
    with pytest.raises(ValueError, match=match):
        nifti.read_dce_series(path)


def test_shape_and_offset_errors(tmp_path):
    path, _ = _series(tmp_path, "cest.nii.gz", n=4, sidecar={"offsets_ppm": [-300, 4.2, 5.5]})
    with pytest.raises(ValueError, match="3 offsets for 4 volumes"):
        nifti.read_cest_series(path)
    with pytest.raises(ValueError, match="repeated offsets"):
        nifti.read_cest_series(path, offsets_ppm=[1, 2, 2, 3])
    nifti.sidecar_path(path).write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        nifti.read_cest_series(path)
    nifti.write_volume(tmp_path / "mask.nii.gz", np.ones((4, 3, 2)), AFFINE)
    with pytest.raises(ValueError, match="expected a 4-D image"):
        nifti.read_dce_series(tmp_path / "mask.nii.gz")
    with pytest.raises(FileNotFoundError, match="no such NIfTI file"):
        nifti.read_volume(tmp_path / "missing.nii.gz")


def test_grid_mismatch_errors():
    nifti.check_same_grid("dce", (4, 3, 2, 5), AFFINE, "mask", (4, 3, 2), AFFINE + 1e-5)
    with pytest.raises(ValueError, match=r"mask has spatial shape \(4, 3, 1\) but dce has \(4, 3, 2\)"):
        nifti.check_same_grid("dce", (4, 3, 2, 5), AFFINE, "mask", (4, 3, 1), AFFINE)
    shifted = AFFINE.copy()
    shifted[0, 3] += 0.5
    with pytest.raises(ValueError, match="different affines .*0.5 mm"):
        nifti.check_same_grid("dce", (4, 3, 2, 5), AFFINE, "mask", (4, 3, 2), shifted)
