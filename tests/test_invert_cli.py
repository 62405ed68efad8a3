"""``hybrid invert``: files and keys, one-line config errors, --resume, no DOLFINx import, a
small disc IFP twin (closed-form Baxter-Jain map, 5 % noise) recovered through the command line,
the release kind on a tiny ``hybrid synthesize`` twin (tests/release_twin.py), its weak residual
form (``[training] residual_form = "weak"``) and where it is refused, and the TOML key = field rule
on the examples.

Measured (slow test; 600 Adam + 200 L-BFGS, 2048 points, float64; 492 s on the shared 2-core box
under load from other jobs): rim thickness +3.0 %, p_e +1.3 %, K +6.2 % (Lp S/V known), the same
as tests/inverse/test_twin_2d.py's Python-API run with the same seed and settings."""

import json
import math
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import assert_one_error, run_hybrid
from config_keys import assert_keys_are_fields
from hybrid.config.invert import load_invert_config
from hybrid.io.nifti import write_volume
from release_twin import FAST, SLOW, TRUE_RELEASE_RATE, invert_config, write_release_twin

sys.path.insert(0, str(Path(__file__).parent / "inverse"))
import twins  # noqa: E402  (tests/inverse/twins.py: the shared closed-form twins)

nib = pytest.importorskip("nibabel")

R, K, LPSV, PE = twins.R, twins.K, twins.LPSV, twins.PE   # rim sqrt(K / Lp S/V) = 0.459 mm

CONFIG = """
[data]
observations = "ifp.nii.gz"
noise_sd = {noise_sd}
truth = "truth.json"
[problem]
kind = "ifp"
radius = {radius}
vascular_exchange = {lpsv}
[unknowns.conductivity]
lower = {k_lower}
upper = 1e-11
[unknowns.effective_pressure]
lower = 0.0
upper = 5000.0
log = false
[training]
adam_steps = {adam}
lbfgs_steps = {lbfgs}
collocation_points = {points}
dtype = "float64"
seed = 0
threads = 1
ensemble = {ensemble}
{checkpoint}
[output]
directory = "unused"
"""


def _write_twin(directory):
    """The 2-D disc IFP twin of tests/inverse/twins.py (partial-volume edge voxels, NaN where a
    voxel sees no tissue, 5 % noise) as a NIfTI map, with a truth.json in synthesize's format."""
    observations, _ = twins.disc_ifp_observations(noise=0.05)
    grid = observations.grid
    write_volume(directory / "ifp.nii.gz", observations.values[..., 0], grid.affine_mm)
    value = lambda v, unit: {"value": v, "unit": unit}
    truth = {"parameters": {
        "tumour": {"hydraulic_conductivity": value(K, "m^2/(Pa s)"), "lymphatic_filtration": value(0.0, "1/(Pa s)"),
                   "lymphatic_pressure": value(0.0, "Pa")},
        "tumour_derived": {"vascular_exchange_LpSV": value(LPSV, "1/(Pa s)"), "effective_pressure": value(PE, "Pa")}}}
    (directory / "truth.json").write_text(json.dumps(truth))
    return grid


def _config(directory, name="invert.toml", adam=20, lbfgs=0, points=256, ensemble=1, checkpoint="",
            k_lower=1e-14):
    path = directory / name
    path.write_text(CONFIG.format(noise_sd=0.05 * PE, radius=R, lpsv=LPSV, k_lower=k_lower, adam=adam, lbfgs=lbfgs,
                                  points=points, ensemble=ensemble, checkpoint=checkpoint))
    return path


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    directory = tmp_path_factory.mktemp("invert")
    grid = _write_twin(directory)
    return directory, grid


def test_files_keys_and_ensemble_spread(twin):
    directory, grid = twin
    out = directory / "ensemble"
    result = run_hybrid("invert", _config(directory, ensemble=2), "--output", out)
    assert result.returncode == 0, result.stderr
    assert "step 20/20" in result.stdout and "rim_thickness" in result.stdout
    summary = json.loads((out / "inversion.json").read_text())
    estimates = summary["estimates"]
    assert set(estimates) == {"conductivity", "effective_pressure", "rim_thickness"}
    for name, unit in (("conductivity", "m^2/(Pa s)"), ("effective_pressure", "Pa"), ("rim_thickness", "m")):
        entry = estimates[name]
        assert entry["unit"] == unit and len(entry["members"]) == 2
        assert entry["spread"] == pytest.approx(np.std(entry["members"], ddof=1))
        assert entry["relative_error"] == pytest.approx(abs(entry["estimate"] - entry["truth"]) / entry["truth"])
    assert estimates["rim_thickness"]["truth"] == pytest.approx(math.sqrt(K / LPSV))
    training = summary["training"]
    assert training["device"] == "cpu" and training["dtype"] == "float64" and training["seconds"] > 0
    assert [m["history"][-1]["step"] for m in training["members"]] == [20, 20]
    image = nib.load(str(out / "ifp.nii.gz"))
    data = np.asarray(image.get_fdata())
    assert data.shape == grid.shape and np.allclose(image.affine, grid.affine_mm)
    observed = np.asarray(nib.load(str(directory / "ifp.nii.gz")).get_fdata())
    assert np.array_equal(np.isnan(data), np.isnan(observed))   # same voxels see tissue
    spread = np.asarray(nib.load(str(out / "ifp_spread.nii.gz")).get_fdata())   # two members differ somewhere
    assert np.array_equal(np.isnan(spread), np.isnan(observed)) and np.nanmax(spread) > 0 and np.nanmin(spread) >= 0


def test_a_field_unknown_is_written_as_a_map_with_its_spread(twin):
    """[unknowns.conductivity] field = true: K(x) is a bounded network; conductivity.nii.gz (ensemble
    mean, voxel means like the data) and its spread on the observation grid, inversion.json's
    ``fields`` entry against the uniform truth; no scalar K and no rim thickness among the estimates."""
    directory, grid = twin
    config = _config(directory, "field.toml", ensemble=2)
    config.write_text(config.read_text().replace("upper = 1e-11\n", "upper = 1e-11\nfield = true\n", 1))
    out = directory / "field"
    result = run_hybrid("invert", config, "--output", out)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "inversion.json").read_text())
    assert set(summary["estimates"]) == {"effective_pressure"}
    entry = summary["fields"]["conductivity"]
    observed = np.isnan(np.asarray(nib.load(str(directory / "ifp.nii.gz")).get_fdata()))
    field = np.asarray(nib.load(str(out / "conductivity.nii.gz")).get_fdata())
    spread = np.asarray(nib.load(str(out / "conductivity_spread.nii.gz")).get_fdata())
    assert field.shape == grid.shape and np.array_equal(np.isnan(field), observed)
    assert np.nanmin(field) >= 1e-14 and np.nanmax(field) <= 1e-11 and np.nanmax(spread) > 0
    assert entry["unit"] == "m^2/(Pa s)" and entry["truth"] == K
    assert entry["mean"] == pytest.approx(float(np.nanmean(field)), rel=1e-5)   # float32 map
    values = field[np.isfinite(field)]
    assert entry["relative_l2"] == pytest.approx(np.linalg.norm(values - K) / (K * np.sqrt(values.size)), rel=1e-4)


@pytest.mark.parametrize("edit, message", [
    (lambda text: text.replace("upper = 1e-11\n", "upper = 1e-11\nfield = true\ninitial = 1e-12\n", 1),
     "[unknowns.conductivity] initial applies to a scalar unknown"),
    (lambda text: text.replace("log = false\n", "log = false\nfield = yes\n", 1), "field"),
    (lambda text: text.replace("[unknowns.effective_pressure]", "[unknowns.lymphatic_pressure]\nlower = -1e3\n"
                               "upper = 1e3\nlog = false\nfield = true\n[unknowns.effective_pressure]")
     .replace("[problem]\n", "[problem]\nlymphatic_filtration = 1e-7\n"), "field = true is for conductivity"),
    (lambda text: text.replace("upper = 1e-11\n", "upper = 1e-11\nlog = false\n", 1),
     "[unknowns.conductivity] is a positive coefficient: it is learned in log space")],
    ids=["initial", "not a boolean", "lymphatic pressure", "linear conductivity"])
def test_bad_field_keys_give_one_error_line(twin, edit, message):
    directory, _ = twin
    config = _config(directory, "bad_field.toml")
    config.write_text(edit(config.read_text()))
    assert_one_error(run_hybrid("invert", config, "--output", directory / "bad_field"), message)


def test_an_unknown_whose_truth_is_zero_gets_an_absolute_error(twin):
    """The tumour's lymphatic pressure is 0 in truth.json: no relative error, an absolute one
    (p_e known, lymphatics given so that p_L acts; a reporting check, 5 steps)."""
    directory, _ = twin
    config = _config(directory, "zero.toml", adam=5)
    text = config.read_text().replace("[unknowns.effective_pressure]\nlower = 0.0\nupper = 5000.0\nlog = false\n",
                                      "[unknowns.lymphatic_pressure]\nlower = -1000.0\nupper = 1000.0\nlog = false\n")
    config.write_text(text.replace("[problem]\n", f"[problem]\neffective_pressure = {PE}\nlymphatic_filtration = {LPSV}\n"))
    out = directory / "zero"
    result = run_hybrid("invert", config, "--output", out)
    assert result.returncode == 0, result.stderr
    entry = json.loads((out / "inversion.json").read_text())["estimates"]["lymphatic_pressure"]
    assert entry["truth"] == 0.0 and entry["relative_error"] is None
    assert entry["absolute_error"] == pytest.approx(abs(entry["estimate"]))
    assert not (out / "ifp_spread.nii.gz").exists()   # one member: no spread


_PL_UNKNOWN = "[unknowns.lymphatic_pressure]\nlower = -1e3\nupper = 1e3\nlog = false\n"
_UNSEPARABLE = {   # case -> (edit of the twin's config, the error)
    "K and Lp S/V": (lambda text: text.replace(f"vascular_exchange = {LPSV}\n", "").replace(
        "[training]", "[unknowns.vascular_exchange]\nlower = 1e-8\nupper = 1e-5\n[training]"),
        "determines only the rim thickness sqrt(K / (Lp S/V + LpL SL/V)), not conductivity and vascular_exchange"),
    "p_e and p_L": (lambda text: text.replace("[problem]\n", "[problem]\nlymphatic_filtration = 1e-7\n").replace(
        "[training]", _PL_UNKNOWN + "[training]"), "determines only the plateau"),
    "p_L without lymphatics": (lambda text: text.replace(
        "[unknowns.effective_pressure]\nlower = 0.0\nupper = 5000.0\nlog = false\n", _PL_UNKNOWN).replace(
        "[problem]\n", f"[problem]\neffective_pressure = {PE}\n"), "has no effect without lymphatics")}


@pytest.mark.parametrize("case", list(_UNSEPARABLE))
def test_unknowns_a_steady_map_cannot_separate_are_refused(twin, case):
    directory, _ = twin
    edit, message = _UNSEPARABLE[case]
    config = _config(directory, "unseen.toml")
    config.write_text(edit(config.read_text()))
    result = run_hybrid("invert", config, "--output", directory / "unseen")
    assert_one_error(result, message)
    assert not (directory / "unseen").exists()


def test_bad_bound_gives_one_error_line(twin):
    directory, _ = twin
    result = run_hybrid("invert", _config(directory, "bad.toml", k_lower=1e-10), "--output", directory / "bad")
    assert_one_error(result, "[unknowns.conductivity] needs lower < upper")
    assert not (directory / "bad").exists()


def test_resume_continues_from_checkpoint(twin, tmp_path):
    directory, _ = twin
    checkpoint = f'checkpoint = "{tmp_path / "state.pt"}"'
    first = run_hybrid("invert", _config(directory, "first.toml", adam=20, checkpoint=checkpoint),
                       "--output", tmp_path / "first")
    assert first.returncode == 0, first.stderr
    more = _config(directory, "more.toml", adam=40, checkpoint=checkpoint)
    resumed = run_hybrid("invert", more, "--output", tmp_path / "resumed", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed member seed 0 at step 20" in resumed.stdout
    history = json.loads((tmp_path / "resumed" / "inversion.json").read_text())["training"]["members"][0]["history"]
    assert history[-1]["step"] == 40 and history[0]["step"] <= 20   # the first run's records are kept


def test_invert_never_imports_dolfinx():
    code = ("import sys, hybrid.cli, hybrid.commands.invert, hybrid.config.invert; "
            "assert not any(m.split('.')[0] in ('dolfinx', 'dolfinx_solver', 'petsc4py', 'ufl') for m in sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.slow
def test_disc_twin_recovered_through_the_cli(twin):
    directory, _ = twin
    out = directory / "converged"
    result = run_hybrid("invert", _config(directory, "converge.toml", adam=600, lbfgs=200, points=2048),
                        "--output", out, timeout=900)
    assert result.returncode == 0, result.stderr
    estimates = json.loads((out / "inversion.json").read_text())["estimates"]
    print({name: entry["relative_error"] for name, entry in estimates.items()})
    assert estimates["rim_thickness"]["relative_error"] < 0.05
    assert estimates["effective_pressure"]["relative_error"] < 0.03


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("name", ["invert_disc.toml", "invert_release.toml", "invert_ph_release.toml"])
def test_example_keys_are_fields(name):
    path = EXAMPLES / name
    assert_keys_are_fields(load_invert_config(path), tomllib.loads(path.read_text()), path)


@pytest.fixture(scope="module")
def release_twin(tmp_path_factory):
    directory = tmp_path_factory.mktemp("release")
    write_release_twin(directory)
    return directory


def test_release_kind_files_and_keys(release_twin):
    config = invert_config(release_twin)
    assert_keys_are_fields(load_invert_config(config), tomllib.loads(config.read_text()), config)
    out = release_twin / "inverted"
    result = run_hybrid("invert", config, "--output", out, timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "inversion.json").read_text())
    assert summary["problem"] == "release" and set(summary["estimates"]) == {"release_rate"}
    entry = summary["estimates"]["release_rate"]
    assert entry["unit"] == "1/s" and entry["truth"] == pytest.approx(TRUE_RELEASE_RATE, rel=1e-9)
    assert entry["relative_error"] == pytest.approx(abs(entry["estimate"] - entry["truth"]) / entry["truth"])
    assert summary["frames"] == {"times_s": [-60.0, 1200.0, 2400.0, 3600.0], "trained": [False, True, False, True],
                                 "held_out": [False, False, True, False]}
    held = summary["held_out_prediction"]
    assert [h["time_s"] for h in held] == [2400.0]
    assert set(held[0]) == {"time_s", "total_drug", "released_fraction"}
    assert summary["training"]["members"][0]["history"][-1]["step"] == 3
    observed = nib.load(str(release_twin / "synth" / "observations.nii.gz"))
    for name in ("total_drug", "liposomal_drug", "free_drug", "cell_drug", "released_fraction"):
        image = nib.load(str(out / f"{name}.nii.gz"))
        assert image.shape == observed.shape[:3] + (3,) and np.allclose(image.affine, observed.affine)
        assert json.loads((out / f"{name}.json").read_text())["FrameTimes_s"] == [1200.0, 2400.0, 3600.0]
    assert (out / "networks" / "seed0.pt").is_file()


@pytest.mark.parametrize("held_out, message", [
    ("1800.0", "1800 s is not a frame time after injection"),
    ("-60.0", "-60 s is not a frame time after injection"),
    ("1200.0, 2400.0, 3600.0", "no frame after injection is left to train on")])
def test_release_bad_held_out_times_give_one_error_line(release_twin, held_out, message):
    out = release_twin / "bad_held_out"
    result = run_hybrid("invert", invert_config(release_twin, "bad.toml", held_out=held_out), "--output", out)
    assert_one_error(result, message)
    assert not out.exists()


def test_release_refuses_field_unknowns(release_twin):
    path = release_twin / "field_keys.toml"
    path.write_text(invert_config(release_twin).read_text().replace("upper = 1.0e-3\n", "upper = 1.0e-3\nfield = true\n"))
    assert_one_error(run_hybrid("invert", path), 'field = true is for conductivity, vascular_exchange, '
                                                 'effective_pressure of kind "ifp", not release_rate of kind "release"')


def test_release_refuses_ifp_keys_and_unknowns(release_twin):
    path = release_twin / "ifp_keys.toml"
    path.write_text(invert_config(release_twin).read_text().replace('kind = "release"',
                                                                      'kind = "release"\nconductivity = 1e-13'))
    assert_one_error(run_hybrid("invert", path), "release kind takes its known coefficients from [problem] transport")
    path.write_text(invert_config(release_twin).read_text().replace("[unknowns.release_rate]",
                                                                      "[unknowns.conductivity]"))
    assert_one_error(run_hybrid("invert", path), "are not unknowns of the release problem")


PH_UNKNOWNS = """[unknowns.ph_50]
lower = 6.0
upper = 7.6
log = false
"""


def test_release_refuses_mixed_or_misplaced_ph_law_unknowns(release_twin):
    """pH_50 / steepness and a uniform release rate are alternatives; the pH law needs pH-sensitive
    liposomes in the transport configuration; a pH map belongs to the release kind."""
    text = invert_config(release_twin).read_text()
    path = release_twin / "ph_keys.toml"
    path.write_text(text.replace("[unknowns.release_rate]", PH_UNKNOWNS + "[unknowns.release_rate]"))
    assert_one_error(run_hybrid("invert", path), "declare either [unknowns.release_rate]")
    liposomal = release_twin / "liposomal.toml"
    liposomal.write_text((release_twin / "synthesize.toml").read_text().replace('"ph_sensitive"', '"liposomal"'))
    path.write_text(text.replace('transport = "synthesize.toml"', 'transport = "liposomal.toml"')
                    .replace("[unknowns.release_rate]\nlower = 1.0e-7\nupper = 1.0e-3\n", PH_UNKNOWNS))
    out = release_twin / "ph_law_liposomal"
    assert_one_error(run_hybrid("invert", path, "--output", out), "need [drug] formulation = \"ph_sensitive\"")
    assert not out.exists()
    path.write_text(CONFIG.format(noise_sd=0.0, radius=R, lpsv=LPSV, k_lower=1e-14, adam=1, lbfgs=0, points=8,
                                  ensemble=1, checkpoint="").replace("[data]", '[data]\nph_map = "ph.nii.gz"'))
    assert_one_error(run_hybrid("invert", path), "[data] released_fraction, held_out_times and ph_map belong to")


def test_release_on_a_synthesized_ph_map_requires_the_map(release_twin):
    """A synthesize configuration with [observation.ph_map] made its data on that map: without
    [data] ph_map the inversion would use the uniform [release] ph, so loading refuses it."""
    from hybrid.config.validate import ConfigError

    mapped = release_twin / "synthesize_ph_map.toml"
    mapped.write_text((release_twin / "synthesize.toml").read_text()
                      + "\n[observation.ph_map]\ncore = 6.4\nrim = 7.2\nvoxel_size_mm = 0.1\n")
    text = invert_config(release_twin).read_text().replace('transport = "synthesize.toml"',
                                                          'transport = "synthesize_ph_map.toml"')
    path = release_twin / "ph_map_missing.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"\[data\] ph_map is required.*truth/ph.nii.gz"):
        load_invert_config(path)
    path.write_text(text.replace("[data]", '[data]\nph_map = "synth/truth/ph.nii.gz"'))
    assert load_invert_config(path).data.ph_map == release_twin / "synth" / "truth" / "ph.nii.gz"
    assert load_invert_config(invert_config(release_twin)).data.ph_map is None   # no map synthesized: uniform pH


def test_a_ktrans_map_scales_the_pinns_exchange_as_the_fems(tmp_path):
    """A twin whose transport has a [tissue] ktrans_map (rim 3x core, NaN beyond 0.9 mm): the release
    kind takes it in (no longer refused) and scales P S/V and the flow's Lp S/V by Ktrans over the
    region mean; inversion.json says so with the mean, which matches the region mean over the map's
    voxels inside the disc (the FEM's is over its cells: tests/inverse/test_maps.py)."""
    from hybrid.records import VoxelGrid

    grid = VoxelGrid.regular([-0.95e-3, -0.95e-3, 0.0], [0.1e-3, 0.1e-3, 1e-3], (20, 20, 1))
    centres = grid.centres_m()
    r = np.hypot(centres[..., 0], centres[..., 1])
    ktrans = np.where(r > 0.6e-3, 0.3, 0.1)
    ktrans[r > 0.9e-3] = np.nan
    write_volume(tmp_path / "ktrans.nii.gz", ktrans, grid.affine_mm)
    write_release_twin(tmp_path, FAST, extra='[tissue]\nktrans_map = "ktrans.nii.gz"\n')
    out = tmp_path / "inverted"
    result = run_hybrid("invert", invert_config(tmp_path), "--output", out, timeout=300)
    assert result.returncode == 0, result.stderr
    record = json.loads((out / "inversion.json").read_text())["ktrans_map"]
    assert record["map"].endswith("ktrans.nii.gz") and set(record["region_mean_per_min"]) == {"tumour"}
    voxels = ktrans[(r <= 1e-3) & np.isfinite(ktrans)]
    mean = record["region_mean_per_min"]["tumour"]
    assert mean == pytest.approx(voxels.mean(), rel=0.05)
    # the problem's equations: P S/V of both carriers and the flow's Lp S/V times Ktrans / mean, 1 without a value
    import torch
    from hybrid.commands.invert import build_problems, load_transport, observation_records, release_physics

    config = load_invert_config(invert_config(tmp_path))
    [problem] = build_problems(config, observation_records(config)[1])
    physics = release_physics(load_transport(config.problem.transport), 1e-3)
    x = torch.tensor([[0.0, 0.0], [0.75, 0.0], [0.0, 0.97]], dtype=torch.float64)   # core, rim, beyond the map
    expected = np.array([float(np.float32(0.1)) / mean, float(np.float32(0.3)) / mean, 1.0])   # a float32 NIfTI
    for exchange, name in zip(problem._exchanges(x), ("exchange_lipo", "exchange_free")):
        np.testing.assert_allclose(exchange.permeability_surface.numpy(),
                                   physics[name]["permeability_surface"] * expected, rtol=1e-12)
    np.testing.assert_allclose(problem.flow.coefficient("vascular_exchange", x).numpy(),
                               physics["flow"]["vascular_exchange"] * expected, rtol=1e-12)
    plain = invert_config(tmp_path, "plain.toml")
    (tmp_path / "plain_synthesize.toml").write_text((tmp_path / "synthesize.toml").read_text().replace(
        '[tissue]\nktrans_map = "ktrans.nii.gz"\n', ""))
    plain.write_text(plain.read_text().replace('transport = "synthesize.toml"', 'transport = "plain_synthesize.toml"'))
    result = run_hybrid("invert", plain, "--output", tmp_path / "plain", timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "plain" / "inversion.json").read_text())["ktrans_map"] is None


def test_release_truth_values_need_the_unknowns(release_twin):
    """A release truth has the rate or the pH law: which truths to read is the caller's choice."""
    from hybrid.commands.invert import truth_values

    truth = release_twin / "synth" / "truth.json"
    with pytest.raises(ValueError, match="needs the unknowns' names"):
        truth_values(truth, "release")
    assert truth_values(truth, "release", ["release_rate"]) == {"release_rate": pytest.approx(TRUE_RELEASE_RATE,
                                                                                               rel=1e-9)}


@pytest.mark.slow
def test_release_twin_recovered_through_the_cli(tmp_path):
    """The SLOW twin of tests/release_twin.py (1 mm disc without flow, k_rel 5.06e-5 1/s, total drug
    and released fraction at 1, 2 and 4 h with 5 % noise; 3 h held out) to convergence.
    Measured (3000 Adam + 500 L-BFGS steps, 256 points, float64, one torch thread; 300 s training on
    the shared 2-core box at load 5): k_rel 4.648e-5 1/s, -8.1 %; after 1500 + 200 steps it was
    still -29.5 % (k_rel rises through the whole run)."""
    write_release_twin(tmp_path, SLOW)
    config = invert_config(tmp_path, adam=3000, lbfgs=500, points=256, held_out="10800.0", balance="all")
    result = run_hybrid("invert", config, "--output", tmp_path / "inverted", timeout=3000)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "inverted" / "inversion.json").read_text())
    entry = summary["estimates"]["release_rate"]
    print(entry, summary["held_out_prediction"])
    assert entry["relative_error"] < 0.12   # measured 8.1 %


WEAK = """[training]
residual_form = "weak"
weak_cells = 8
weak_time_cells = 4
weak_gauss = 2
weak_subdivisions = 2
"""


def _weak_config(directory, name="weak.toml", points=64):
    """The twin's invert configuration in ``directory`` with the weak form's keys."""
    path = directory / name
    path.write_text(invert_config(directory, name, points=points).read_text().replace("[training]\n", WEAK))
    return path


@pytest.fixture(scope="module")
def still_release_twin(tmp_path_factory):
    """The fast release twin without flow (its weak loss then has no pointwise term at all)."""
    directory = tmp_path_factory.mktemp("still_release")
    write_release_twin(directory, FAST | {"flow": "none"})
    return directory


def test_release_weak_form_through_the_cli(still_release_twin):
    """residual_form = "weak" reaches the Trainer: the weak loss does not depend on the collocation
    points, so two runs with different numbers of them give the same estimate (the strong form's
    would differ), and inversion.json records the weak settings."""
    config = _weak_config(still_release_twin)
    loaded = load_invert_config(config)
    assert_keys_are_fields(loaded, tomllib.loads(config.read_text()), config)
    assert (loaded.training.residual_form, loaded.training.weak_cells, loaded.training.weak_time_cells,
            loaded.training.weak_gauss, loaded.training.weak_subdivisions,
            loaded.training.weak_time_subdivisions) == ("weak", 8, 4, 2, 2, 1)
    estimates = []
    for points in (16, 64):
        out = still_release_twin / f"weak_{points}"
        result = run_hybrid("invert", _weak_config(still_release_twin, f"weak_{points}.toml", points), "--output",
                            out, timeout=300)
        assert result.returncode == 0, result.stderr
        summary = json.loads((out / "inversion.json").read_text())
        settings = summary["training"]["settings"]
        assert (settings["residual_form"], settings["weak_cells"], settings["weak_subdivisions"],
                settings["collocation_points"]) == ("weak", 8, 2, points)
        assert summary["training"]["members"][0]["history"][-1]["step"] == 3
        estimates.append(summary["estimates"]["release_rate"]["estimate"])
    assert estimates[0] == estimates[1]
    strong = still_release_twin / "strong"
    result = run_hybrid("invert", invert_config(still_release_twin, "strong.toml", points=16), "--output", strong,
                        timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads((strong / "inversion.json").read_text())["estimates"]["release_rate"]["estimate"] \
        != estimates[0]


@pytest.mark.parametrize("change, message", [
    (('residual_form = "weak"', 'residual_form = "mixed"'), 'residual_form must be "strong" or "weak"'),
    (("weak_cells = 8", "weak_cells = 1"), "[training] weak_cells must be an integer >= 2"),
    (("weak_gauss = 2", "weak_gauss = 0"), "[training] weak_gauss must be an integer >= 1"),
    (("weak_subdivisions = 2", "weak_subdivisions = 0"), "[training] weak_subdivisions must be an integer >= 1"),
    (('residual_form = "weak"', 'residual_form = "strong"'), 'weak_cells, weak_time_cells, weak_gauss, '
                                                             'weak_subdivisions apply to residual_form = "weak" only')])
def test_weak_form_bad_keys_give_one_error_line(still_release_twin, change, message):
    assert_config_change_refused(_weak_config(still_release_twin), change, message)


def assert_config_change_refused(config: Path, change: tuple[str, str], message: str) -> None:
    """``config`` with ``change`` applied is refused with one error line holding ``message``, and
    writes nothing."""
    path = config.with_name(f"bad_{config.name}")
    path.write_text(config.read_text().replace(*change))
    out = config.with_name(f"bad_{config.stem}_out")
    assert_one_error(run_hybrid("invert", path, "--output", out), message)
    assert not out.exists()


def test_weak_form_with_darcy_flow_and_refused_for_the_ifp_kind(release_twin, twin):
    """The fast twin has Darcy flow: the weak form takes its advection by parts and keeps the
    pressure's pointwise terms, so the collocation points matter again (they carry the pressure);
    kind "ifp" has no drug equations to weaken."""
    estimates = []
    for points in (16, 64):
        out = release_twin / f"weak_flow_{points}"
        result = run_hybrid("invert", _weak_config(release_twin, f"weak_flow_{points}.toml", points), "--output", out,
                            timeout=300)
        assert result.returncode == 0, result.stderr
        summary = json.loads((out / "inversion.json").read_text())
        assert summary["training"]["settings"]["residual_form"] == "weak"
        terms = summary["training"]["members"][0]["history"][-1]["terms"]
        assert {"pde_lipo", "pde_free", "pde_ifp"} <= set(terms)
        estimates.append(summary["estimates"]["release_rate"]["estimate"])
    assert estimates[0] != estimates[1]
    directory, _ = twin
    path = _config(directory, "weak_ifp.toml")
    path.write_text(path.read_text().replace("[training]\n", '[training]\nresidual_form = "weak"\n'))
    assert_one_error(run_hybrid("invert", path), 'not to kind "ifp"')


WARM = """[training]
warm_start = "fem"
warm_start_adam_steps = {adam}
warm_start_lbfgs_steps = {lbfgs}
warm_start_points = {points}
"""


def _warm_config(directory, name="warm.toml", adam=1000, lbfgs=300, points=1024, checkpoint=""):
    """The twin's invert configuration in ``directory`` with a FEM warm start (a short fit)."""
    path = directory / name
    text = invert_config(directory, name).read_text()
    path.write_text(text.replace("[training]\n", WARM.format(adam=adam, lbfgs=lbfgs, points=points) + checkpoint))
    return path


def test_release_warm_start_through_the_cli(still_release_twin, tmp_path):
    """warm_start = "fem": the FEM at the start value (release_rate 1e-5 1/s, the geometric mean of
    the bounds) and the networks fitted to it before the 3 training steps; inversion.json records
    the fit. Measured (1000 Adam + 300 L-BFGS, 1024 points, float64, one thread; 15 s at load 3.6):
    relative L2 1.68 / 1.49 / 12.3 % for C_L / C_F / C_I (the cell drug converges slowest: 33 %
    after 600 + 300 on 512 points; 3.5 % after the default 4000 + 1000 on 2048 points on the twin
    with flow); the bounds are 3 and 2 times those. A resumed member skips the warm start."""
    config = _warm_config(still_release_twin, checkpoint=f'checkpoint = "{tmp_path / "state.pt"}"\n')
    loaded = load_invert_config(config)
    assert_keys_are_fields(loaded, tomllib.loads(config.read_text()), config)
    out = still_release_twin / "warm"
    result = run_hybrid("invert", config, "--output", out, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "warm start: FEM at the initial values release_rate = 1e-05" in result.stdout
    summary = json.loads((out / "inversion.json").read_text())
    assert summary["training"]["settings"]["warm_start"] == "fem"
    [record] = summary["training"]["warm_start"]
    assert record["seed"] == 0 and record["start"] == {"release_rate": pytest.approx(1e-5, rel=1e-9)}
    assert record["snapshots"] == 7 and record["fem_seconds"] > 0 and record["fit_seconds"] > 0   # every 600 s step
    assert record["fit"] == {"adam_steps": 1000, "lbfgs_steps": 300, "points": 1024}
    bounds = {"liposomal_drug": 0.05, "free_drug": 0.05, "cell_drug": 0.25}
    assert set(record["relative_l2"]) == set(bounds)
    assert all(math.isfinite(error) and error < bounds[name] for name, error in record["relative_l2"].items())
    resumed = run_hybrid("invert", config, "--output", tmp_path / "resumed", "--resume", timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "warm start skipped for member seed 0" in resumed.stdout and "warm start: FEM" not in resumed.stdout
    assert json.loads((tmp_path / "resumed" / "inversion.json").read_text())["training"]["warm_start"] == []


@pytest.mark.parametrize("change, message", [
    (('warm_start = "fem"', 'warm_start = "truth"'), 'warm_start must be "none" (untrained networks) or "fem"'),
    (('warm_start = "fem"', 'warm_start = "none"'), "warm_start_adam_steps, warm_start_lbfgs_steps, "
                                                    'warm_start_points apply to warm_start = "fem" only'),
    (("warm_start_points = 1024", "warm_start_points = 0"), "[training] warm_start_points must be an integer >= 1"),
    (('kind = "release"', 'kind = "coupled"'), 'warm_start = "fem" is built for kind "release" only, not '
                                               '"coupled"')])
def test_warm_start_bad_keys_give_one_error_line(still_release_twin, change, message):
    assert_config_change_refused(_warm_config(still_release_twin), change, message)


def test_warm_start_refused_for_the_ifp_kind(twin):
    directory, _ = twin
    path = _config(directory, "warm_ifp.toml")
    path.write_text(path.read_text().replace("[training]\n", '[training]\nwarm_start = "fem"\n'))
    assert_one_error(run_hybrid("invert", path), 'warm_start = "fem" is built for kind "release" only, not "ifp"')


def test_warm_start_without_dolfinx_says_what_to_do(still_release_twin):
    """On a node without the FEM stack (a GPU node), the FEM warm start is refused at once with one
    line, not with a ModuleNotFoundError after the first member has trained."""
    code = "import sys; sys.modules['dolfinx'] = None; from hybrid.cli import main; sys.exit(main(sys.argv[1:]))"
    out = still_release_twin / "no_dolfinx"
    result = subprocess.run([sys.executable, "-c", code, "invert", str(_warm_config(still_release_twin)), "--output",
                             str(out)], capture_output=True, text=True, timeout=120)
    assert_one_error(result, 'warm_start = "fem" solves the forward problem with DOLFINx, which this Python does not '
                             'have')
    assert not out.exists()


def test_network_learning_rate_key(still_release_twin):
    """``[training] learning_rate`` (the networks' Adam rate, e.g. 1e-4 after a warm start,
    benchmarks/pinn_release_warmstart.py) reaches the training settings; zero is refused."""
    path = still_release_twin / "learning_rate.toml"
    path.write_text(invert_config(still_release_twin).read_text().replace("[training]\n",
                                                                           "[training]\nlearning_rate = 1e-4\n"))
    assert load_invert_config(path).training.learning_rate == 1e-4
    path.write_text(path.read_text().replace("learning_rate = 1e-4", "learning_rate = 0"))
    with pytest.raises(ValueError, match="learning_rate"):
        load_invert_config(path)


def test_residual_weight_key(still_release_twin):
    """``[training] residual_weight`` (fixed weight of the residual terms, balance "none") reaches the
    training settings; with a balancing mode, or zero, it is refused."""
    path = still_release_twin / "residual_weight.toml"
    text = invert_config(still_release_twin).read_text()
    path.write_text(re.sub(r'balance = "\w+"\n', "", text).replace(
        "[training]\n", '[training]\nbalance = "none"\nresidual_weight = 10.0\n'))
    assert load_invert_config(path).training.residual_weight == 10.0
    path.write_text(path.read_text().replace('balance = "none"', 'balance = "residuals"'))
    with pytest.raises(ValueError, match='residual_weight applies to balance = "none"'):
        load_invert_config(path)
    path.write_text(path.read_text().replace('balance = "residuals"', 'balance = "none"').replace("10.0", "0"))
    with pytest.raises(ValueError, match="residual_weight must be > 0"):
        load_invert_config(path)


def test_unknown_weights_key(still_release_twin):
    """``[training] unknown_weights = "unit"`` (the unknowns follow the unweighted loss terms,
    benchmarks/pinn_release_unit.py) reaches the training: inversion.json records it, and with no
    Adam steps the L-BFGS iterations leave the release rate at its start (the geometric mean of
    its bounds); other values are refused."""
    path = still_release_twin / "unknown_weights.toml"
    path.write_text(invert_config(still_release_twin, adam=0, lbfgs=4).read_text().replace(
        "[training]\n", '[training]\nunknown_weights = "unit"\n'))
    assert load_invert_config(path).training.unknown_weights == "unit"
    out = still_release_twin / "unit_weights"
    result = run_hybrid("invert", path, "--output", out, timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "inversion.json").read_text())
    assert summary["training"]["settings"]["unknown_weights"] == "unit"
    assert summary["training"]["members"][0]["history"][-1]["phase"] == "lbfgs"
    assert summary["estimates"]["release_rate"]["estimate"] == pytest.approx(math.sqrt(1e-7 * 1e-3), rel=1e-12)
    path.write_text(path.read_text().replace('"unit"', '"balanced"'))   # the same L-BFGS moves it (measured 7e-4)
    result = run_hybrid("invert", path, "--output", still_release_twin / "balanced_weights", timeout=300)
    assert result.returncode == 0, result.stderr
    moved = json.loads((still_release_twin / "balanced_weights" / "inversion.json").read_text())
    assert moved["estimates"]["release_rate"]["estimate"] != pytest.approx(math.sqrt(1e-7 * 1e-3), rel=1e-6)
    path.write_text(path.read_text().replace('"balanced"', '"equal"'))
    with pytest.raises(ValueError, match="unknown_weights"):
        load_invert_config(path)


def test_warm_start_under_mpirun(still_release_twin):
    """``hybrid invert`` trains on rank 0 only; the warm start's FEM stack must still be imported on
    every rank (PETSc initialises collectively): before the fix rank 0 waited for ever there."""
    out = still_release_twin / "warm_two_ranks"
    path = _warm_config(still_release_twin, "warm_two_ranks.toml", adam=5, lbfgs=0, points=64)
    result = run_hybrid("invert", path, "--output", out, ranks=2, timeout=300)
    assert result.returncode == 0, result.stderr
    [record] = json.loads((out / "inversion.json").read_text())["training"]["warm_start"]
    assert record["fit"] == {"adam_steps": 5, "lbfgs_steps": 0, "points": 64}
