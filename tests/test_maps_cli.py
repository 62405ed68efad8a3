"""``hybrid phantom`` then ``hybrid maps`` through the console entry point (subprocess), as a
user on a fresh clone would run them; bad configurations exit 2 with one ``hybrid: error:`` line."""

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest


def _hybrid(*args, cwd):
    return subprocess.run([sys.executable, "-m", "hybrid", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    run = _hybrid("phantom", "ph", "--shape", "24", "24", "1", "--voxel-mm", "0.625", "0.625", "1.0", cwd=root)
    assert run.returncode == 0, run.stderr
    assert "hybrid maps" in run.stdout
    return root / "ph"


def test_phantom_then_maps(phantom_dir):
    for name in ("dce", "vfa", "cest"):
        assert (phantom_dir / f"{name}.nii.gz").is_file() and (phantom_dir / f"{name}.json").is_file()
    run = _hybrid("maps", "ph/maps.toml", cwd=phantom_dir.parent)
    assert run.returncode == 0, run.stderr
    assert "DCE extended_tofts:" in run.stdout and "100 %" in run.stdout
    out = phantom_dir / "maps"
    source = nib.load(str(phantom_dir / "dce.nii.gz")).affine
    for name in ("Ktrans", "ve", "vp", "rss", "T1", "pH", "ph_valid"):
        img = nib.load(str(out / f"{name}.nii.gz"))
        assert img.shape == (24, 24, 1) and np.allclose(img.affine, source)
    assert nib.load(str(out / "Ktrans.nii.gz")).get_data_dtype() == np.float32
    assert (out / "maps.png").stat().st_size > 10_000
    summary = json.loads((out / "summary.json").read_text())
    assert summary["units"]["Ktrans"] == "1/min" and summary["ph_valid_fraction"] > 0.9


def test_output_override(phantom_dir, tmp_path):
    run = _hybrid("maps", str(phantom_dir / "maps.toml"), "--output", str(tmp_path / "elsewhere"), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "elsewhere" / "pH.nii.gz").is_file()


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("[dce]", "[dce]\ncolour = 1"), "[dce] unknown key(s) colour"),
    (lambda t: t.replace("n_baseline = 12", "n_baseline = 'twelve'"), "[dce] n_baseline must be an integer"),
    (lambda t: t.replace('series = "cest.nii.gz"', 'series = "nope.nii.gz"'), "nope.nii.gz: no such NIfTI file"),
    (lambda t: t.replace('path = "mask.nii.gz"', 'path = "labels_small.nii.gz"'), "different affines"),
    (lambda t: t.replace("calibration_ph = [6.2, ", "calibration_ph = ["), "give one ratio per calibration pH"),
])
def test_bad_config_exits_2_with_one_error_line(phantom_dir, tmp_path, edit, message):
    shifted = nib.load(str(phantom_dir / "mask.nii.gz"))
    affine = shifted.affine.copy()
    affine[0, 3] += 1.0
    nib.save(nib.Nifti1Image(np.asarray(shifted.dataobj), affine), str(phantom_dir / "labels_small.nii.gz"))
    text = edit((phantom_dir / "maps.toml").read_text())
    bad = phantom_dir / "bad.toml"
    bad.write_text(text)
    run = _hybrid("maps", str(bad), "--output", str(tmp_path), cwd=tmp_path)
    errors = [line for line in run.stderr.splitlines() if line.startswith("hybrid: error:")]
    assert run.returncode == 2 and len(errors) == 1 and message in errors[0], run.stderr
    assert "Traceback" not in run.stderr
