"""``hybrid phantom`` then ``hybrid maps`` through the console entry point (subprocess), as a
user on a fresh clone would run them; bad configurations exit 2 with one ``hybrid: error:`` line."""

import csv
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from config_keys import assert_keys_are_fields

ACIDOCEST = Path(__file__).parent / "data" / "acidocest"


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
    from hybrid.config import load_maps_config

    for name in ("dce", "vfa", "cest", "cest_2uT"):
        assert (phantom_dir / f"{name}.nii.gz").is_file() and (phantom_dir / f"{name}.json").is_file()
    for name in ("maps.toml", "maps_two_powers.toml"):
        written = phantom_dir / name
        assert_keys_are_fields(load_maps_config(written), tomllib.loads(written.read_text()), written)
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
    (lambda t: t.replace('aif = "preclinical"', 'aif = "measured"'), 'needs aif_mask and blood_t10_s'),
    (lambda t: t.replace('aif = "preclinical"', 'aif = "human"'), '[dce] aif must be one of "parker", "preclinical", '
                                                                          '"measured", got \'human\''),
    (lambda t: t.replace("[dce]", "[dce]\nblood_t10_s = 2.0"), 'apply only to aif = "measured"'),
    (lambda t: t.replace('aif = "preclinical"', 'aif = "measured"\naif_mask = "mask.nii.gz"\nblood_t10_s = 2.0'),
     '[dce] aif_delay_s applies only to aif = "parker" or "preclinical"'),
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


# ---------------------------------------------------------------- DCE: AIF choice, uncertainty

def _dce_run(phantom_dir, tmp_path, name, series=None, vfa_series=None, **dce):
    """``hybrid maps`` on the phantom's DCE (+ VFA) only, with ``dce`` keys changed (a key
    given as None is removed); returns (output directory, summary)."""
    import tomllib

    from hybrid.io.toml import write_toml

    doc = tomllib.loads((phantom_dir / "maps.toml").read_text())
    doc.pop("cest")
    doc["dce"] = {key: value for key, value in {**doc["dce"], **dce}.items() if value is not None}
    if series is not None:
        doc["dce"]["series"] = series
    if vfa_series is not None:
        doc["vfa"]["series"] = vfa_series
    write_toml(phantom_dir / f"{name}.toml", doc)
    out = tmp_path / name
    run = _hybrid("maps", str(phantom_dir / f"{name}.toml"), "--output", str(out), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    return out, json.loads((out / "summary.json").read_text())


def _volume(path):
    return np.asarray(nib.load(str(path)).dataobj)


def _rim_ktrans_error(phantom_dir, out):
    from hybrid.imaging.phantom import LABELS, REGIONS

    rim = _volume(phantom_dir / "labels.nii.gz") == LABELS["rim"]
    return abs(np.median(_volume(out / "Ktrans.nii.gz")[rim]) / REGIONS["rim"]["Ktrans"] - 1.0)


def test_maps_writes_standard_errors_and_reasons(phantom_dir, tmp_path):
    out, summary = _dce_run(phantom_dir, tmp_path, "uncertainty")
    tissue = _volume(phantom_dir / "mask.nii.gz") > 0
    for key in ("Ktrans", "ve", "vp"):
        se = _volume(out / f"{key}_se.nii.gz")
        assert nib.load(str(out / f"{key}_se.nii.gz")).get_data_dtype() == np.float32
        assert np.all(np.isnan(se[~tissue])) and np.nanmedian(se[tissue]) > 0
        assert summary["units"][f"{key}_se"] == summary["units"][key]
    reason = nib.load(str(out / "dce_reason.nii.gz"))
    assert reason.get_data_dtype() == np.uint8
    assert np.all(_volume(out / "dce_reason.nii.gz")[~tissue] == 1)
    assert np.mean(_volume(out / "dce_reason.nii.gz")[tissue] == 0) > 0.9
    assert summary["dce"]["aif"] == "preclinical" and summary["dce"]["no_physical_inverse_voxels"] == 0
    assert set(summary["dce"]["reason_codes"]) == {"1", "2", "4", "8"}


def _series_with_nan_or_zero(phantom_dir, name, frame, zero=(), nan=()):
    """The phantom's ``name`` series (NIfTI and sidecar) with ``frame`` set to 0 in the voxels
    ``zero`` and to NaN in ``nan`` ((k, 3) indices), as ``<name>_edited``; returns its file name."""
    img = nib.load(str(phantom_dir / f"{name}.nii.gz"))
    data = np.asarray(img.dataobj, dtype=np.float32)
    for voxels, value in ((zero, 0.0), (nan, np.nan)):
        for i, j, k in voxels:
            data[i, j, k, frame] = value
    nib.save(nib.Nifti1Image(data, img.affine, img.header), str(phantom_dir / f"{name}_edited.nii.gz"))
    (phantom_dir / f"{name}_edited.json").write_text((phantom_dir / f"{name}.json").read_text())
    return f"{name}_edited.nii.gz"


def test_maps_counts_signals_without_concentration(phantom_dir, tmp_path):
    """Zero DCE signal at one frame in 3 tissue voxels (E1 >= 1: no physical inverse), a NaN
    DCE sample in 2 others and a NaN VFA sample (no T10) in 1 more: all 6 have no concentration
    and no fit (reason 1); the summary counts the 3 apart from the 3 without finite input."""
    tissue = np.argwhere(_volume(phantom_dir / "mask.nii.gz") > 0)
    dce_series = _series_with_nan_or_zero(phantom_dir, "dce", 60, zero=tissue[:3], nan=tissue[3:5])
    vfa_series = _series_with_nan_or_zero(phantom_dir, "vfa", 0, nan=tissue[5:6])
    out, summary = _dce_run(phantom_dir, tmp_path, "zero", series=dce_series, vfa_series=vfa_series)
    assert summary["dce"]["no_physical_inverse_voxels"] == 3 == summary["dce"]["no_physical_inverse_samples"]
    assert summary["dce"]["nonfinite_input_voxels"] == 3
    ktrans, reason = _volume(out / "Ktrans.nii.gz"), _volume(out / "dce_reason.nii.gz")
    for i, j, k in tissue[:6]:
        assert np.isnan(ktrans[i, j, k]) and reason[i, j, k] == 1


def test_maps_aif_choices(phantom_dir, tmp_path):
    """The phantom is made with the preclinical AIF: fitting with it (as its maps.toml says)
    or with the same curve measured in an artery recovers Ktrans; parker is the human AIF."""
    from hybrid.imaging import dce
    from hybrid.imaging.phantom import DCE_SETTINGS as S

    times = np.asarray(json.loads((phantom_dir / "dce.json").read_text())["FrameTimes_s"])
    out, summary = _dce_run(phantom_dir, tmp_path, "preclinical")
    expected = dce.population_plasma_aif("preclinical", times, S["aif_delay_s"], S["hematocrit"])
    assert summary["dce"]["plasma_aif_peak_mM"] == pytest.approx(expected.max(), rel=1e-9)
    assert _rim_ktrans_error(phantom_dir, out) < 0.1

    out, summary = _dce_run(phantom_dir, tmp_path, "parker", aif="parker")
    expected = dce.population_plasma_aif("parker", times, S["aif_delay_s"], S["hematocrit"])
    assert summary["dce"]["aif"] == "parker"
    assert summary["dce"]["plasma_aif_peak_mM"] == pytest.approx(expected.max(), rel=1e-9)

    # measured: 4 air voxels become an artery whose blood (T10 2.2 s) carries the phantom's curve
    img = nib.load(str(phantom_dir / "dce.nii.gz"))
    data = np.asarray(img.dataobj, dtype=np.float64)
    artery = np.zeros(data.shape[:3], dtype=np.uint8)
    artery[:2, :2, :] = 1
    blood = dce.preclinical_aif(times, S["aif_delay_s"])
    data[artery > 0] = dce.spgr_signal(S["m0"], 1.0 / 2.2 + S["r1_per_mM_s"] * blood, S["tr_s"],
                                       S["flip_angle_deg"])
    nib.save(nib.Nifti1Image(data, img.affine), str(phantom_dir / "dce_artery.nii.gz"))
    (phantom_dir / "dce_artery.json").write_text((phantom_dir / "dce.json").read_text())
    nib.save(nib.Nifti1Image(artery, img.affine), str(phantom_dir / "artery.nii.gz"))
    out, summary = _dce_run(phantom_dir, tmp_path, "measured", series="dce_artery.nii.gz",
                            aif="measured", aif_mask="artery.nii.gz", blood_t10_s=2.2, aif_delay_s=None)
    assert summary["dce"]["aif"] == "measured"
    assert summary["dce"]["plasma_aif_peak_mM"] == pytest.approx(blood.max() / (1 - S["hematocrit"]),
                                                                 rel=1e-6)
    assert _rim_ktrans_error(phantom_dir, out) < 0.1


def test_maps_2cum_with_delay(phantom_dir, tmp_path):
    out, summary = _dce_run(phantom_dir, tmp_path, "tcum", model="2cum", fit_delay=True)
    for key in ("Fp", "PS", "vp", "delay_s", "Fp_se", "PS_se", "vp_se", "delay_s_se", "dce_reason"):
        assert (out / f"{key}.nii.gz").is_file(), key
    assert not (out / "ve.nii.gz").exists()
    assert summary["units"]["Fp"] == "mL/100mL/min"


# ---------------------------------------------------------------- CEST: calibration from vial spectra

def _measured_rows(name, t1_s=None):
    """(header, rows) of a measured acidoCEST table, verbatim; rows of one approximate T1 [s] if given."""
    with (ACIDOCEST / name).open(newline="") as stream:
        header, *rows = list(csv.reader(stream))
    return header, [row for row in rows if t1_s is None or float(row[2]) == t1_s]


def _write_table(path, header, rows):
    with path.open("w", newline="") as stream:
        csv.writer(stream).writerows([header, *rows])


def _cest_image(path, header, rows):
    """The rows' raw spectra as the voxels of a (n, 1, 1, offsets) CEST series, offsets in the sidecar."""
    from hybrid.io import nifti

    signal = np.array([row[6:] for row in rows], dtype=float)[:, None, None, :]
    nifti.write_series(path, signal, np.eye(4), description="measured acidoCEST vials",
                       sidecar={"offsets_ppm": [float(v) for v in header[6:]]})


@pytest.fixture(scope="module")
def vial_study(tmp_path_factory):
    """Measured iopamidol vials at 2 uT (tests/data/acidocest): vials.csv holds the eight 25 mM,
    T1 3.4 s vials (pH 6.23-7.28, two boxes) as calibration; cest.nii.gz has those eight as
    voxels 0-7 and, held out, the eight T1 0.86 s vials of box 4 (pH 6.26-7.32) as voxels 8-15."""
    root = tmp_path_factory.mktemp("vials")
    header, box3 = _measured_rows("Box3_37C_SatP2SatT6002_25mM_T1_3.4s.csv")
    _, box4 = _measured_rows("Box4_37C_SatP2SatT6002.csv", 3.4)
    _, held_out = _measured_rows("Box4_37C_SatP2SatT6002.csv", 0.86)
    _write_table(root / "vials.csv", header, box3 + box4)
    _cest_image(root / "cest.nii.gz", header, box3 + box4 + held_out)
    ph = np.array([float(row[0]) for row in box3 + box4 + held_out])
    return root, ph


def _cest_run(root, name, cest_keys):
    text = f'[cest]\nseries = "cest.nii.gz"\ncalibration_spectra = "vials.csv"\n{cest_keys}\n' \
           f'[output]\ndirectory = "{name}"\n'
    (root / f"{name}.toml").write_text(text)
    run = _hybrid("maps", f"{name}.toml", cwd=root)
    assert run.returncode == 0, run.stderr
    return (json.loads((root / name / "summary.json").read_text())["cest"],
            _volume(root / name / "pH.nii.gz").ravel(), text)


def test_cest_ratio_auto_from_measured_vial_spectra(vial_study):
    """[cest] ratio = "auto" with calibration_spectra on measured vials: every ratio method and
    degree is calibrated and the least leave-one-out error wins (measured: 2 uT MTRasym, cubic,
    0.08 pH); summary.json reports it with the nested leave-one-out error of the whole choice
    (0.17 pH, what a new vial sees), both as select_calibration gives them on the table. The
    pH map of the calibration vials is their pH plus the reported residuals; on the eight held-out
    vials (T1 0.86 s instead of 3.4 s) the median error is within the nested error."""
    from hybrid.config import load_maps_config
    from hybrid.imaging import cest
    from hybrid.io.zspectra import read_zspectra_csv

    root, ph = vial_study
    report, ph_map, text = _cest_run(root, "auto", 'ratio = "auto"')
    assert_keys_are_fields(load_maps_config(root / "auto.toml"), tomllib.loads(text), root / "auto.toml")
    offsets, vial_ph, _, signal = read_zspectra_csv(root / "vials.csv")
    choice = cest.select_calibration({m: cest.ph_ratio(offsets, signal, method=m) for m in cest.RATIO_METHODS},
                                     vial_ph)
    held_out_error = ph_map[8:] - ph[8:]
    print(f"\nchosen {report['chosen_ratio']} degree {report['calibration_degree']}, leave-one-out "
          f"{report['loo_rms_by_ratio']}, nested {report['nested_loo_rms_ph']:.3f} {report['nested_choices']}; "
          f"held-out errors {np.round(held_out_error, 2)}")
    assert report["ratio"] == "auto" and report["calibration_vials"] == 8
    assert (report["chosen_ratio"], report["calibration_degree"]) == (choice.name, choice.calibration.degree)
    assert report["calibration_loo_rms_ph"] == pytest.approx(choice.calibration.loo_rms_ph, rel=1e-9)
    assert report["calibration_loo_rms_ph"] == min(v for v in report["loo_rms_by_ratio"].values() if v is not None)
    assert report["nested_loo_rms_ph"] == pytest.approx(choice.nested_loo_rms_ph, rel=1e-9)
    assert report["nested_choices"] == list(choice.nested_choices)
    assert report["nested_loo_rms_ph"] > 1.5 * report["calibration_loo_rms_ph"]   # the winner is optimistic
    np.testing.assert_allclose(ph_map[:8] - ph[:8], report["calibration_residual_ph"], rtol=0, atol=1e-4)
    assert np.all(np.isfinite(held_out_error))
    assert np.median(np.abs(held_out_error)) <= report["nested_loo_rms_ph"]


def test_cest_fixed_ratio_from_measured_vial_spectra(vial_study):
    """A fixed ratio with calibration_spectra: only that method is computed, and the calibration
    (degree by leave-one-out error, or the given degree) is PhCalibration on those ratios."""
    from hybrid.imaging import cest
    from hybrid.io.zspectra import read_zspectra_csv

    root, _ = vial_study
    offsets, vial_ph, _, signal = read_zspectra_csv(root / "vials.csv")
    st = cest.ph_ratio(offsets, signal, method="st")
    for name, keys, degree in (("st", 'ratio = "st"', None), ("st_linear", 'ratio = "st"\ncalibration_degree = 1', 1)):
        report, _, _ = _cest_run(root, name, keys)
        expected = cest.PhCalibration.fit(st, vial_ph, degree)
        assert list(report["calibration_ratios"]) == ["st"] and "nested_loo_rms_ph" not in report
        assert report["calibration_degree"] == expected.degree
        assert report["calibration_loo_rms_ph"] == pytest.approx(expected.loo_rms_ph, rel=1e-9)


@pytest.mark.parametrize("keys, table, message", [
    ('ratio = "st"', "flat.csv", "flat.csv: the st ratio is not finite for the vials at pH 6.82 (failed fit or an "
                                 "amide effect below 0.5 %); remove those rows or choose another ratio"),
    ('ratio = "auto"', "flat.csv", "no candidate of amplitude, st, mtrasym gives a finite, monotone calibration"),
    ('ratio = "auto"', "missing.csv", "missing.csv"),
    ('ratio = "auto"', "cest.json", "not an acidoCEST Z-spectra table"),
])
def test_unusable_calibration_spectra_exit_2_with_one_error_line(vial_study, tmp_path, keys, table, message):
    """A vial without amide effects (its spectrum replaced by a constant) makes a fixed ratio
    unusable (named by its pH) and, with ratio = "auto", every candidate; a missing or foreign
    table is named."""
    root, _ = vial_study
    header, rows = _measured_rows("Box3_37C_SatP2SatT6002_25mM_T1_3.4s.csv")
    _, box4 = _measured_rows("Box4_37C_SatP2SatT6002.csv", 3.4)
    flat = box4[0][:6] + [box4[0][6]] * (len(header) - 6)       # pH 6.82, no saturation effect at all
    _write_table(root / "flat.csv", header, rows + [flat] + box4[1:])
    text = f'[cest]\nseries = "{root / "cest.nii.gz"}"\ncalibration_spectra = "{root / table}"\n{keys}\n' \
           '[output]\ndirectory = "maps"\n'
    (tmp_path / "bad.toml").write_text(text)
    run = _hybrid("maps", "bad.toml", cwd=tmp_path)
    errors = [line for line in run.stderr.splitlines() if line.startswith("hybrid: error:")]
    assert run.returncode == 2 and len(errors) == 1 and message in errors[0], run.stderr
    assert "Traceback" not in run.stderr and not (tmp_path / "maps").exists()


# ---------------------------------------------------------------- CEST: two saturation powers

def test_two_powers_on_the_phantom(phantom_dir):
    """``maps_two_powers.toml`` as ``hybrid phantom`` writes it: the 3 and 2 uT series fitted jointly,
    the mean ST ratio calibrated on the phantom's vial spectra at both powers (vials.csv; 30 mM in
    water, unlike the tissue). Measured on this 24x24 phantom: ROI-mean pH errors -0.020..-0.001,
    voxel RMS 0.017-0.065 (-0.022..+0.001 and 0.017-0.069 with the earlier successive-difference
    noise weights), every voxel valid; the 3 uT series alone (maps.toml, amplitude ratio)
    gives RMS 0.026-0.085 and 99.7 % valid."""
    from hybrid.imaging.phantom import LABELS, REGIONS

    run = _hybrid("maps", "ph/maps_two_powers.toml", cwd=phantom_dir.parent)
    assert run.returncode == 0, run.stderr
    assert ("CEST pH index: mean of the 3 and 2 uT st ratios (joint fit, shared line centres, residuals weighted by "
            "each power's noise)") in run.stdout
    out = phantom_dir / "maps_two_powers"
    summary = json.loads((out / "summary.json").read_text())
    report = summary["cest"]
    assert report["saturation_b1_uT"] == [3.0, 2.0] and report["calibration_vials"] == 12
    assert report["index"].startswith("mean of the 3 and 2 uT st ratios")
    assert summary["ph_valid_fraction"] > 0.95
    ph, labels = _volume(out / "pH.nii.gz"), _volume(phantom_dir / "labels.nii.gz")
    for region in ("host", "rim", "core", "necrotic"):
        error = ph[labels == LABELS[region]] - REGIONS[region]["pH"]
        print(f"\ntwo powers, {region}: ROI error {np.nanmean(error):+.3f}, voxel RMS {np.sqrt(np.nanmean(error ** 2)):.3f}")
        assert abs(np.nanmean(error)) < 0.05 and np.sqrt(np.nanmean(error ** 2)) < 0.1


@pytest.fixture(scope="module")
def two_power_vials(tmp_path_factory):
    """The vial study of ``vial_study`` at 2 and 3 uT: vials.csv holds the eight T1 3.4 s vials at
    2 uT, then the same vials at 3 uT; cest_2uT / cest_3uT.nii.gz have those eight as voxels 0-7 and
    the eight held-out T1 0.86 s vials as voxels 8-15, with SaturationB1_T in their sidecars."""
    from hybrid.io import nifti

    root = tmp_path_factory.mktemp("two_powers")
    rows, ph = {}, None
    for power in (2, 3):
        header, box3 = _measured_rows(f"Box3_37C_SatP{power}SatT6002_25mM_T1_3.4s.csv")
        _, box4 = _measured_rows(f"Box4_37C_SatP{power}SatT6002.csv", 3.4)
        _, held_out = _measured_rows(f"Box4_37C_SatP{power}SatT6002.csv", 0.86)
        rows[power] = box3 + box4
        signal = np.array([row[6:] for row in box3 + box4 + held_out], dtype=float)[:, None, None, :]
        nifti.write_series(root / f"cest_{power}uT.nii.gz", signal, np.eye(4), description="measured vials",
                           sidecar={"offsets_ppm": [float(v) for v in header[6:]], "SaturationB1_T": power * 1e-6})
        ph = np.array([float(row[0]) for row in box3 + box4 + held_out])
    _write_table(root / "vials.csv", header, rows[2] + rows[3])
    _write_table(root / "vials_2uT.csv", header, rows[2])
    _write_table(root / "vials_shuffled.csv", header, rows[2] + rows[3][::-1])
    return root, ph


def _two_power_toml(root, name, extra="", series="cest_2uT.nii.gz", second="cest_3uT.nii.gz", table="vials.csv"):
    text = (f'[cest]\nseries = "{series}"\nseries_second_power = "{second}"\ncalibration_spectra = "{table}"\n'
            f'{extra}\n[output]\ndirectory = "{name}"\n')
    (root / f"{name}.toml").write_text(text)
    return root / f"{name}.toml", text


def test_two_powers_on_measured_vials(two_power_vials):
    """Measured 2 and 3 uT vials through the CLI: the calibration is the one the library gives on
    the table (noise-weighted joint fit of both powers, mean ratio; measured: st, linear,
    leave-one-out 0.107 pH, nested 0.18 with ratio = "auto"; without noise weights 0.106 / 0.17),
    the calibration vials read back as pH + residual wherever their float32 image stays inside
    the calibrated ratio range, and the held-out vials (another T1) are read where their ratio
    falls inside it. ``noise_weighted = false`` gives the unweighted library calibration."""
    from hybrid.config import load_maps_config
    from hybrid.imaging import cest
    from hybrid.io.zspectra import read_zspectra_csv

    root, ph = two_power_vials
    toml, text = _two_power_toml(root, "auto", 'ratio = "auto"')
    assert_keys_are_fields(load_maps_config(toml), tomllib.loads(text), toml)
    run = _hybrid("maps", toml.name, cwd=root)
    assert run.returncode == 0, run.stderr
    report = json.loads((root / "auto" / "summary.json").read_text())["cest"]
    ph_map = _volume(root / "auto" / "pH.nii.gz").ravel()

    offsets, vial_ph, _, low = read_zspectra_csv(root / "vials.csv", power_uT=2)
    high = read_zspectra_csv(root / "vials.csv", power_uT=3)[3]
    ratios = {m: cest.mean_ph_ratio(offsets, (low, high), method=m) for m in cest.RATIO_METHODS}
    choice = cest.select_calibration(ratios, vial_ph)
    held_out = ph_map[8:] - ph[8:]
    print(f"\ntwo powers, measured: chosen {report['chosen_ratio']} degree {report['calibration_degree']}, "
          f"leave-one-out {report['loo_rms_by_ratio']}, nested {report['nested_loo_rms_ph']:.3f}; held-out errors "
          f"{np.round(held_out, 2)}")
    assert report["saturation_b1_uT"] == [2.0, 3.0] and report["calibration_vials"] == 8
    assert (report["chosen_ratio"], report["calibration_degree"]) == (choice.name, choice.calibration.degree)
    assert report["calibration_loo_rms_ph"] == pytest.approx(choice.calibration.loo_rms_ph, rel=1e-9)
    assert report["nested_loo_rms_ph"] == pytest.approx(choice.nested_loo_rms_ph, rel=1e-9)
    assert report["index"] == (f"mean of the 2 and 3 uT {choice.name} ratios (joint fit, shared line centres, "
                               "residuals weighted by each power's noise)")
    inside = np.isfinite(ph_map[:8])
    assert inside.sum() >= 6
    np.testing.assert_allclose(ph_map[:8][inside] - ph[:8][inside],
                               np.asarray(report["calibration_residual_ph"])[inside], rtol=0, atol=1e-3)
    assert np.isfinite(held_out).sum() >= 4
    assert np.nanmedian(np.abs(held_out)) <= report["nested_loo_rms_ph"]

    toml, text = _two_power_toml(root, "unweighted", 'ratio = "st"\nnoise_weighted = false')
    assert_keys_are_fields(load_maps_config(toml), tomllib.loads(text), toml)
    run = _hybrid("maps", toml.name, cwd=root)
    assert run.returncode == 0, run.stderr
    report = json.loads((root / "unweighted" / "summary.json").read_text())["cest"]
    unweighted = cest.PhCalibration.fit(cest.mean_ph_ratio(offsets, (low, high), noise_weighted=False), vial_ph)
    assert report["calibration_loo_rms_ph"] == pytest.approx(unweighted.loo_rms_ph, rel=1e-9)
    assert report["index"] == "mean of the 2 and 3 uT st ratios (joint fit, shared line centres)"


def _with_sidecar(root, name, source, **changes):
    """A copy of ``source`` (.nii.gz) as ``name`` with sidecar keys changed (None: removed)."""
    import shutil

    shutil.copy(root / source, root / name)
    sidecar = json.loads((root / source.replace(".nii.gz", ".json")).read_text())
    for key, value in changes.items():
        if value is None:
            sidecar.pop(key)
        else:
            sidecar[key] = value
    (root / name.replace(".nii.gz", ".json")).write_text(json.dumps(sidecar))


def _other_grid(root, name, affine_shift_mm=0.0, drop_voxel=False, drop_offset=False):
    """``cest_3uT.nii.gz`` on another grid (shifted affine, one voxel fewer) or with an offset fewer."""
    from hybrid.io import nifti

    image = nib.load(str(root / "cest_3uT.nii.gz"))
    data = np.asarray(image.dataobj)
    sidecar = json.loads((root / "cest_3uT.json").read_text())
    if drop_voxel:
        data = data[1:]
    if drop_offset:
        data = data[..., 1:]
        sidecar["offsets_ppm"] = sidecar["offsets_ppm"][1:]
    affine = image.affine.copy()
    affine[0, 3] += affine_shift_mm
    nifti.write_series(root / name, data, affine, sidecar, description="edited")


@pytest.mark.parametrize("setup, keys, message", [
    (lambda r: _with_sidecar(r, "same.nii.gz", "cest_2uT.nii.gz"), dict(second="same.nii.gz"),
     "same.nii.gz and cest_2uT.nii.gz were both saturated at 2 uT (SaturationB1_T); series_second_power must be "
     "the same offsets at another B1"),
    (lambda r: _with_sidecar(r, "no_b1.nii.gz", "cest_3uT.nii.gz", SaturationB1_T=None), dict(second="no_b1.nii.gz"),
     "no_b1.nii.gz: saturation B1 unknown; add SaturationB1_T [T] to"),
    (lambda r: _with_sidecar(r, "b1_text.nii.gz", "cest_3uT.nii.gz", SaturationB1_T="3 uT"),
     dict(second="b1_text.nii.gz"), "b1_text.json SaturationB1_T: saturation B1 [T] must be a number in (0, 0.0001)"),
    (lambda r: _other_grid(r, "offsets.nii.gz", drop_offset=True), dict(second="offsets.nii.gz"),
     "offsets.nii.gz has 80 offsets [-12, 12] ppm but cest_2uT.nii.gz has 81 [-12, 100] ppm; the two powers must be "
     "acquired at the same offsets"),
    (lambda r: _with_sidecar(r, "shifted_offsets.nii.gz", "cest_3uT.nii.gz", offsets_ppm=[100.0] + [0.1 * k for k in range(80)]),
     dict(second="shifted_offsets.nii.gz"), "the two powers must be acquired at the same offsets"),
    (lambda r: _other_grid(r, "smaller.nii.gz", drop_voxel=True), dict(second="smaller.nii.gz"),
     "smaller.nii.gz has spatial shape (15, 1, 1) but cest_2uT.nii.gz has (16, 1, 1)"),
    (lambda r: _other_grid(r, "moved.nii.gz", affine_shift_mm=2.0), dict(second="moved.nii.gz"),
     "moved.nii.gz and cest_2uT.nii.gz have different affines"),
    (None, dict(table="vials_2uT.csv"),
     "vials_2uT.csv has no spectra at saturation power 3 uT (SatPower(uT) holds 2 uT); add the calibration vials "
     "measured at 3 uT"),
    (None, dict(table="vials_shuffled.csv"), "vials_shuffled.csv: the rows at 2 uT and at 3 uT are not the same vials "
                                             "in the same order"),
    (lambda r: (r / "one.toml").write_text('[cest]\nseries = "cest_2uT.nii.gz"\ncalibration_spectra = "vials.csv"\n'
                                           'noise_weighted = true\n[output]\ndirectory = "bad"\n'),
     dict(config="one.toml"), "[cest] noise_weighted applies only to two powers; add series_second_power or remove it"),
])
def test_bad_second_power_exits_2_with_one_error_line(two_power_vials, setup, keys, message):
    root, _ = two_power_vials
    if setup is not None:
        setup(root)
    keys = dict(keys)
    config = keys.pop("config", None)
    toml = root / config if config else _two_power_toml(root, "bad", 'ratio = "st"', **keys)[0]
    run = _hybrid("maps", toml.name, cwd=root)
    errors = [line for line in run.stderr.splitlines() if line.startswith("hybrid: error:")]
    assert run.returncode == 2 and len(errors) == 1 and message in errors[0], run.stderr
    assert "Traceback" not in run.stderr and not (root / "bad").exists()


def test_one_series_takes_its_power_from_a_two_power_table(two_power_vials):
    """One series with calibration_spectra holding two powers: the rows at the series' sidecar
    SaturationB1_T are used (the same calibration as a table of that power alone); a series
    without SaturationB1_T cannot choose and is refused in one line."""
    root, _ = two_power_vials
    summaries = {}
    for name, table in (("from_both", "vials.csv"), ("from_one", "vials_2uT.csv")):
        (root / f"{name}.toml").write_text(f'[cest]\nseries = "cest_2uT.nii.gz"\ncalibration_spectra = "{table}"\n'
                                           f'ratio = "st"\n[output]\ndirectory = "{name}"\n')
        run = _hybrid("maps", f"{name}.toml", cwd=root)
        assert run.returncode == 0, run.stderr
        summaries[name] = json.loads((root / name / "summary.json").read_text())["cest"]
    assert summaries["from_both"]["calibration_ratios"] == summaries["from_one"]["calibration_ratios"]
    assert summaries["from_both"]["saturation_b1_uT"] == [2.0] and "index" not in summaries["from_both"]
    _with_sidecar(root, "no_b1.nii.gz", "cest_2uT.nii.gz", SaturationB1_T=None)
    (root / "ambiguous.toml").write_text('[cest]\nseries = "no_b1.nii.gz"\ncalibration_spectra = "vials.csv"\n'
                                         'ratio = "st"\n[output]\ndirectory = "ambiguous"\n')
    run = _hybrid("maps", "ambiguous.toml", cwd=root)
    errors = [line for line in run.stderr.splitlines() if line.startswith("hybrid: error:")]
    assert run.returncode == 2 and len(errors) == 1, run.stderr
    assert "vials.csv holds spectra at saturation powers 2, 3 uT; select one" in errors[0]
