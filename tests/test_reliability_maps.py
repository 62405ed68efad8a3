"""Issue 7, ``hybrid maps``: damaged images, degenerate series and bad sidecar values are refused
with one line that names the file (and key) before anything is fitted or written.

Before the fix: a .nii.gz with 64 zeroed bytes was fitted silently (exit 0), a truncated one gave
a traceback, all-zero series and FlipAngle = 0 gave all-NaN maps with exit 0, negative flip angles
and shifts_ppm = [4.2, 4.2] were accepted, a string TR said only "could not convert string to
float: 'a'", and an output path that is a file was found only after the whole fit."""

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from cli_helpers import assert_one_error, run_hybrid, small_phantom
from hybrid.io import nifti


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """A small digital phantom fitted with DCE and VFA only (the failures come first)."""
    return small_phantom(tmp_path_factory.mktemp("phantom")).parent


@pytest.fixture
def copy(phantom, tmp_path):
    """A fresh copy of the phantom for one test to damage."""
    target = tmp_path / "ph"
    shutil.copytree(phantom, target)
    return target


def zero_bytes(path):
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)
    path.write_bytes(data)


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("ranks", [1, 2])
@pytest.mark.parametrize("damage, message", [(zero_bytes, "damaged or truncated gzip data (CRC check failed"),
                                             (truncate, "damaged or truncated gzip data (Compressed file ended")])
def test_damaged_gzip_is_refused_with_the_file_name(copy, damage, message, ranks):
    damage(copy / "dce.nii.gz")
    with pytest.raises(ValueError, match=r"dce.nii.gz: damaged or truncated gzip data"):
        nifti.read_dce_series(copy / "dce.nii.gz")
    result = run_hybrid("maps", copy / "maps.toml", ranks=ranks, timeout=90)
    line = assert_one_error(result, message)
    assert str(copy / "dce.nii.gz") in line
    assert not (copy / "maps").exists()


def zero_series(path):
    image = nib.load(str(path))
    nib.save(nib.Nifti1Image(np.zeros(image.shape, np.float32), image.affine, image.header), str(path))


def set_sidecar(name, key, value):
    def edit(directory):
        path = directory / name
        document = json.loads(path.read_text())
        document[key] = value(document[key]) if callable(value) else value
        path.write_text(json.dumps(document))
    return edit


@pytest.mark.parametrize("edit, message", [
    (lambda d: zero_series(d / "dce.nii.gz"), "dce.nii.gz: no voxel of the mask has a finite, non-zero signal"),
    (lambda d: zero_series(d / "vfa.nii.gz"), "vfa.nii.gz: no voxel of the mask has a finite, non-zero signal"),
    (set_sidecar("dce.json", "FlipAngle", 0), "dce.json FlipAngle: DCE flip angle [deg] must be a number in (0, 180), got 0"),
    (set_sidecar("vfa.json", "FlipAngles_deg", lambda angles: [-angles[0], *angles[1:]]),
     "vfa.json FlipAngles_deg: flip angles [deg] must lie in (0, 180)"),
    (set_sidecar("dce.json", "RepetitionTimeExcitation", "a"),
     "dce.json RepetitionTimeExcitation: DCE TR [s] must be a number in (0, inf), got 'a'"),
    (set_sidecar("dce.json", "RepetitionTimeExcitation", -0.005),
     "dce.json RepetitionTimeExcitation: DCE TR [s] must be a number in (0, inf), got -0.005"),
    (set_sidecar("dce.json", "FrameTimes_s", lambda times: ["a", *times[1:]]), "dce.json FrameTimes_s: frame times must be numbers"),
])
def test_degenerate_series_and_sidecar_values_are_refused(copy, edit, message):
    edit(copy)
    result = run_hybrid("maps", copy / "maps.toml")
    assert_one_error(result, message)
    assert "voxels (" not in result.stdout   # refused before any fit
    assert not (copy / "maps").exists()


@pytest.mark.parametrize("line, message", [
    ("shifts_ppm = 4.2", "[cest] shifts_ppm must be a non-empty list of numbers"),
    ("shifts_ppm = [4.2, 4.2]", "[cest] shifts_ppm must be two different offsets"),
])
def test_cest_shifts_are_checked_when_the_configuration_is_read(copy, line, message):
    (copy / "cest.toml").write_text(f'[cest]\nseries = "cest.nii.gz"\ncalibration_ph = [6.5, 7.0]\n'
                                    f'calibration_ratio = [0.1, 0.3]\n{line}\n[output]\ndirectory = "maps"\n')
    assert_one_error(run_hybrid("maps", copy / "cest.toml"), message)


def test_output_path_that_is_a_file_is_refused_before_the_fit(copy):
    (copy / "maps").write_text("not a directory")
    result = run_hybrid("maps", copy / "maps.toml")
    assert_one_error(result, "output directory")
    assert "is an existing file, not a directory" in result.stderr
    assert "voxels (" not in result.stdout
    assert (copy / "maps").read_text() == "not a directory"


def test_partly_failed_fits_are_counted_in_the_summary(copy):
    """A few voxels without signal: the run succeeds, logs a warning and counts them."""
    image = nib.load(str(copy / "dce.nii.gz"))
    data = np.asarray(image.dataobj).copy()
    mask = np.asarray(nib.load(str(copy / "mask.nii.gz")).dataobj) > 0
    dead = np.argwhere(mask)[:3]
    data[tuple(dead.T)] = 0.0
    nib.save(nib.Nifti1Image(data, image.affine, image.header), str(copy / "dce.nii.gz"))
    result = run_hybrid("maps", copy / "maps.toml", timeout=300)
    assert result.returncode == 0, result.stderr
    assert "warning: " in result.stdout
    summary = json.loads((copy / "maps" / "summary.json").read_text())
    assert any("3 of" in warning and "dce.nii.gz" in warning for warning in summary["warnings"])
    assert summary["failed_voxels"]["Ktrans"] >= 3
    assert summary["outputs"]["Ktrans"] == "Ktrans.nii.gz"


def test_a_dce_or_vfa_fit_that_failed_everywhere_is_refused():
    from hybrid.commands.maps import _check_maps

    mask = np.ones((4, 4, 1), bool)
    nan = np.full(mask.shape, np.nan)
    with pytest.raises(ValueError, match="Ktrans: the fit failed in every voxel of the mask"):
        _check_maps({"Ktrans": nan, "ve": np.zeros(mask.shape)}, mask, [])
    warnings: list[str] = []
    partly = np.where(np.arange(16).reshape(mask.shape) < 5, np.nan, 1.0)
    assert _check_maps({"T1": partly, "pH": nan}, mask, warnings) == {"T1": 5, "pH": 16}
    assert warnings == ["T1: NaN in 5 of 16 voxels of the mask", "pH: NaN in 16 of 16 voxels of the mask"]


@pytest.mark.parametrize("ranks", [1, 2])
def test_two_power_cest_runs_and_refuses_equal_powers(copy, ranks):
    """``maps_two_powers.toml`` of the phantom (3 and 2 uT, vials.csv) runs on 1 and 2 ranks; the same
    configuration with both series saturated at 3 uT is refused in one line before any fit."""
    result = run_hybrid("maps", copy / "maps_two_powers.toml", ranks=ranks, timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads((copy / "maps_two_powers" / "summary.json").read_text())
    assert summary["cest"]["saturation_b1_uT"] == [3.0, 2.0] and summary["ph_valid_fraction"] > 0.9
    set_sidecar("cest_2uT.json", "SaturationB1_T", 3.0e-6)(copy)
    shutil.rmtree(copy / "maps_two_powers")
    result = run_hybrid("maps", copy / "maps_two_powers.toml", ranks=ranks)
    assert_one_error(result, "cest_2uT.nii.gz and")
    assert "were both saturated at 3 uT" in result.stderr and "voxels (" not in result.stdout
    assert not (copy / "maps_two_powers").exists()
