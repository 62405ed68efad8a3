"""``hybrid validate``: cross-validation of an IFP inversion against the FEM, on a synthetic
``hybrid invert`` output written from the Baxter-Jain closed form, so the expected errors are
known: the exact map agrees with the FEM up to discretisation and interpolation, a map scaled by
1.1 is 10 % off, and recovered coefficients equal to the truth reproduce the true FEM field.
The release kind on the tiny ``hybrid synthesize`` twin of tests/release_twin.py: the true k_rel
reproduces the held-out noise-free frame, a wrong one misses it (serial and 2 ranks). pH-triggered
release (synthesize with a synthetic pH_e map -> invert pH_50 and steepness -> validate): the
pipeline runs and flags identifiability; the FEM at the true pH law on the inversion's pH map
reproduces the held-out truth, pH_50 0.3 lower misses it."""

import json
import math

import numpy as np
import pytest

import tomllib

from cli_helpers import assert_one_error, run_hybrid, run_hybrid_failing_on_rank0
from config_keys import assert_keys_are_fields
from hybrid.config.crossval import load_crossval_config
from hybrid.io.nifti import write_volume
from hybrid.problems.exact import baxter_jain_pressure
from hybrid.problems.ifp import TissueProperties
from release_twin import TRUE_RELEASE_RATE, invert_config, write_release_twin
from validate_helpers import VALIDATE as RELEASE_VALIDATE, validate_with_estimates

R, K, LPSV, PE = 2e-3, 4.0e-13, 1.9e-6, 1500.0   # rim sqrt(K / Lp S/V) = 0.459 mm

INVERT = """
[data]
observations = "truth/ifp.nii.gz"
truth = "truth.json"
points_per_axis = 3
[problem]
kind = "ifp"
radius = {radius}
vascular_exchange = {lpsv}
[unknowns.conductivity]
lower = 1e-14
upper = 1e-11
[unknowns.effective_pressure]
lower = 0.0
upper = 5000.0
log = false
[output]
directory = "unused"
"""

VALIDATE = """
[inversion]
config = "invert.toml"
directory = "{inversion}"
[geometry]
shape = "disc"
tumour_radius = {radius}
mesh_size = 2.0e-4
[output]
directory = "unused"
"""


def _closed_form(x, y, conductivity=K):
    """Baxter-Jain IFP [Pa] of the disc at (x, y) [m]; NaN outside the disc."""
    r = np.hypot(x, y)
    p = baxter_jain_pressure(2, np.minimum(r, R), R, R * math.sqrt(LPSV / conductivity), PE)
    return np.where(r <= R, p, np.nan)


def _grid(voxel):
    """Shape and affine [mm] of a one-slice grid of ``voxel`` [m] covering the disc."""
    n = int(round(2 * R / voxel))
    affine = np.diag([voxel * 1e3, voxel * 1e3, 1.0, 1.0])
    affine[:2, 3] = (-R + voxel / 2) * 1e3
    return (n, n, 1), affine


def _centres(shape, affine):
    i, j = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    return (affine[0, 0] * i + affine[0, 3]) * 1e-3, (affine[1, 1] * j + affine[1, 3]) * 1e-3


def _write_truth(directory):
    """truth.json (synthesize's tumour table) and truth/ifp.nii.gz (closed form, voxel means by the
    3 x 3 midpoint rule over the sub-points inside the disc, NaN where none is)."""
    defaults = TissueProperties.defaults("tumour")
    oncotic = defaults.reflection_coefficient * (defaults.plasma_oncotic_pressure
                                                 - defaults.interstitial_oncotic_pressure)
    tumour = {"hydraulic_conductivity": K, "filtration_coefficient": LPSV / defaults.vessel_surface_density,
              "vessel_surface_density": defaults.vessel_surface_density, "vascular_pressure": PE + oncotic,
              "plasma_oncotic_pressure": defaults.plasma_oncotic_pressure,
              "interstitial_oncotic_pressure": defaults.interstitial_oncotic_pressure,
              "reflection_coefficient": defaults.reflection_coefficient, "lymphatic_filtration": 0.0,
              "lymphatic_pressure": 0.0}
    (directory / "truth.json").write_text(json.dumps({"parameters": {"tumour": {
        name: {"value": value, "unit": "SI"} for name, value in tumour.items()}}}))
    voxel = 2.5e-4
    shape, affine = _grid(voxel)
    x, y = _centres(shape, affine)
    offsets = (np.arange(3) - 1) * voxel / 3
    samples = np.stack([_closed_form(x + dx, y + dy) for dx in offsets for dy in offsets])
    finite = np.isfinite(samples)
    counts = finite.sum(axis=0)
    total = np.where(finite, samples, 0.0).sum(axis=0)
    image = np.where(counts > 0, total / np.maximum(counts, 1), np.nan)
    (directory / "truth").mkdir()
    write_volume(directory / "truth" / "ifp.nii.gz", image[..., None], affine)


def _write_inversion(directory, name, scale=1.0, conductivity=K):
    """A `hybrid invert` output: inversion.json with the given K (p_e, Lp S/V true) and an
    ifp.nii.gz of the closed form at K, times ``scale``, at the centres of 0.05 mm voxels."""
    out = directory / name
    out.mkdir()
    known = {"vascular_exchange": LPSV, "lymphatic_filtration": 0.0, "lymphatic_pressure": 0.0}
    inversion = {"command": "invert", "problem": "ifp",
                 "known": {key: {"value": value, "unit": "SI"} for key, value in known.items()},
                 "estimates": {"conductivity": {"estimate": conductivity, "unit": "m^2/(Pa s)"},
                               "effective_pressure": {"estimate": PE, "unit": "Pa"},
                               "rim_thickness": {"estimate": math.sqrt(conductivity / LPSV), "unit": "m"}}}
    (out / "inversion.json").write_text(json.dumps(inversion))
    shape, affine = _grid(5e-5)
    write_volume(out / "ifp.nii.gz", scale * _closed_form(*_centres(shape, affine), conductivity)[..., None], affine)
    return out


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    directory = tmp_path_factory.mktemp("validate")
    _write_truth(directory)
    (directory / "invert.toml").write_text(INVERT.format(radius=R, lpsv=LPSV))
    return directory


def _validate(directory, inversion, name, ranks=1, radius=R):
    config = directory / f"{name}.toml"
    config.write_text(VALIDATE.format(inversion=inversion, radius=radius))
    out = directory / f"{name}_out"
    return run_hybrid("validate", config, "--output", out, ranks=ranks, timeout=300), out


def _report(out):
    return json.loads((out / "validation.json").read_text())


def test_exact_map_agrees_with_the_fem_and_the_truth(twin):
    _write_inversion(twin, "exact")
    result, out = _validate(twin, "exact", "exact")
    assert result.returncode == 0, result.stderr
    report = _report(out)
    print(json.dumps({k: report[k] for k in ("pinn_vs_fem", "truth", "truth_image_prediction")}, indent=1))
    # measured 1.07 %: the map's 0.05 mm voxels across the 0.46 mm rim (steepest at the edge)
    assert report["pinn_vs_fem"]["relative_l2"] < 0.015
    assert 0 < report["pinn_vs_fem"]["voxel_map_floor"] < 0.05
    assert report["truth"]["fem_recovered_vs_fem_truth"]["relative_l2"] < 1e-6   # same coefficients, same mesh
    assert report["truth_image_prediction"]["relative_l2"] < 0.01
    assert report["recovered_coefficients"]["conductivity"] == {"value": K, "unit": "m^2/(Pa s)"}
    assert report["held_out"]["available"] is False and "release kind" in report["held_out"]["note"]
    assert report["identifiability"] == {"available": False,
                                         "note": "[data] noise_sd is 0: no noise scale for the Fisher information"}


def test_map_scaled_by_1_1_is_10_percent_off(twin):
    _write_inversion(twin, "scaled", scale=1.1)
    result, out = _validate(twin, "scaled", "scaled")
    assert result.returncode == 0, result.stderr
    assert _report(out)["pinn_vs_fem"]["relative_l2"] == pytest.approx(0.10, abs=0.01)


def test_wrong_conductivity_shows_against_the_truth(twin):
    """K x 1.44 (rim x 1.2): the map agrees with its own FEM, but both miss the truth."""
    _write_inversion(twin, "wrong_k", conductivity=1.44 * K)
    result, out = _validate(twin, "wrong_k", "wrong_k")
    assert result.returncode == 0, result.stderr
    report = _report(out)
    print(report["truth"], report["truth_image_prediction"])
    assert report["pinn_vs_fem"]["relative_l2"] < 0.015
    assert report["truth"]["fem_recovered_vs_fem_truth"]["relative_l2"] > 0.03
    assert report["truth_image_prediction"]["relative_l2"] > 0.03


def _with_conductivity_field(directory, name, values, voxel=5e-5):
    """The exact inversion with K as a field unknown: the map ``values`` [m^2/(Pa s)] (NaN outside
    the disc) on a grid of ``voxel`` [m] (the IFP map's by default) as conductivity.nii.gz,
    inversion.json's ``fields`` entry."""
    out = _write_inversion(directory, name)
    summary = json.loads((out / "inversion.json").read_text())
    del summary["estimates"]["conductivity"], summary["estimates"]["rim_thickness"]
    finite = values[np.isfinite(values)]
    summary["fields"] = {"conductivity": {"file": "conductivity.nii.gz", "unit": "m^2/(Pa s)",
                                          "mean": float(finite.mean())}}
    (out / "inversion.json").write_text(json.dumps(summary))
    shape, affine = _grid(voxel)
    write_volume(out / "conductivity.nii.gz", values.reshape(shape), affine)
    return out


def test_a_conductivity_field_enters_the_fem_re_solve(twin):
    """A recovered K field (kind "ifp", field = true) is interpolated onto the mesh for the re-solve:
    uniform at the truth it is the truth's FEM; 1.44 K in the outer half of the disc moves the
    pressure in the rim, and the map (the closed form at K) no longer matches."""
    shape, affine = _grid(5e-5)
    x, y = _centres(shape, affine)
    inside = np.hypot(x, y) <= R
    uniform = np.where(inside, K, np.nan)[..., None]
    result, out = _validate(twin, _with_conductivity_field(twin, "field_exact", uniform).name, "field_exact")
    assert result.returncode == 0, result.stderr
    report = _report(out)
    assert report["truth"]["fem_recovered_vs_fem_truth"]["relative_l2"] < 1e-6
    assert report["recovered_coefficients"]["conductivity"]["field"] == "conductivity.nii.gz"
    outer = np.where(np.hypot(x, y) > R / 2, 1.44 * K, K)[..., None]
    result, out = _validate(twin, _with_conductivity_field(twin, "field_outer", np.where(inside[..., None], outer,
                                                                                          np.nan)).name, "field_outer")
    assert result.returncode == 0, result.stderr
    assert _report(out)["truth"]["fem_recovered_vs_fem_truth"]["relative_l2"] > 0.03


def _field_identifiability_twin(twin, noise_sd):
    """An exact inversion with K a field unknown on the IFP data's 0.25 mm grid (uniform at the
    truth), p_e known, and an invert configuration that declares ``noise_sd`` [Pa]."""
    shape, affine = _grid(2.5e-4)
    x, y = _centres(shape, affine)
    out = twin / "field_ident"
    if not out.exists():
        _with_conductivity_field(twin, "field_ident", np.where(np.hypot(x, y) <= R, K, np.nan)[..., None], voxel=2.5e-4)
    text = INVERT.format(radius=R, lpsv=LPSV).replace('truth = "truth.json"\n', f'truth = "truth.json"\nnoise_sd = {noise_sd}\n')
    text = text.replace("[unknowns.effective_pressure]\nlower = 0.0\nupper = 5000.0\nlog = false\n", "")
    (twin / "invert_field_ident.toml").write_text(text.replace("[problem]\n", f"[problem]\neffective_pressure = {PE}\n")
                                                 .replace("upper = 1e-11\n", "upper = 1e-11\nfield = true\n"))
    return out, shape, affine, np.hypot(x, y)


def test_a_conductivity_field_is_identified_voxel_by_voxel_only_near_the_edge(twin):
    """Per-voxel identifiability of a field unknown (kind "ifp"): every finite voxel of the K map is a
    variable of the FEM Fisher information. K acts on the pressure only within a few rim widths
    lambda = sqrt(K / Lp S/V) of the edge, so at 0.15 Pa noise (1e-4 of p_e) the voxels within one
    lambda of the edge are identified to 5 % and none deeper than 3.5 lambda is (measured: median
    Cramer-Rao sd of ln K 0.8 / 2.3 / 5.2 / 18 % at 0-1 / 1-2 / 2-3 / 3-4 lambda; 164 of 208 voxels
    identified); the maps written say so, and 2 ranks give the serial map."""
    from hybrid.io.nifti import read_volume

    _, shape, _, radius = _field_identifiability_twin(twin, 0.15)
    config = twin / "field_ident.toml"
    config.write_text(VALIDATE.format(inversion="field_ident", radius=R).replace(
        'config = "invert.toml"', 'config = "invert_field_ident.toml"'))
    out = twin / "field_ident_out"
    result = run_hybrid("validate", config, "--output", out, timeout=300)
    assert result.returncode == 0, result.stderr
    report = _report(out)["identifiability"]
    field = report["fields"]["conductivity"]
    inside = radius <= R
    assert report["available"] and report["unknowns"] == {}
    assert field["voxels"] == inside.sum() and report["fem_solves"] == 2 * inside.sum()
    sd, _ = read_volume(out / "conductivity_cramer_rao_sd.nii.gz")
    identified, _ = read_volume(out / "conductivity_identified.nii.gz")
    depth = (R - radius) / math.sqrt(K / LPSV)
    assert np.isnan(sd[~inside, 0]).all() and np.isfinite(sd[inside, 0]).all()
    assert (sd[inside & (depth < 1), 0] <= 0.05).all()
    assert (sd[inside & (depth > 3.5), 0] > 0.05).all()
    assert np.isnan(identified[inside & (depth > 3.5), 0]).all()
    assert identified[inside & (depth < 1), 0] == pytest.approx(K, rel=1e-6)
    assert field["identifiable_voxels"] == int(np.isfinite(identified).sum())
    assert field["against_truth"]["median_relative_error_identifiable"] == pytest.approx(0.0, abs=1e-6)
    medians = [np.median(sd[inside & (depth >= lo) & (depth < lo + 1), 0]) for lo in range(4)]
    assert medians == sorted(medians)   # the deeper, the less the map says about K
    print(field, medians)
    result = run_hybrid("validate", config, "--output", twin / "field_ident_mpi", ranks=2, timeout=300)
    assert result.returncode == 0, result.stderr
    two, _ = read_volume(twin / "field_ident_mpi" / "conductivity_cramer_rao_sd.nii.gz")
    np.testing.assert_allclose(two[inside], sd[inside], rtol=1e-4)


def test_scalar_unknowns_of_an_ifp_map_get_their_cramer_rao_sd(twin):
    """Kind "ifp" with ``[data] noise_sd`` 15 Pa (1 % of p_e): K and p_e of the 2 mm disc are both
    identified (measured: Cramer-Rao sd of ln K 1.2 %, of p_e 4.8 Pa), no field maps written."""
    _write_inversion(twin, "scalar_ident")
    (twin / "invert_noise.toml").write_text(INVERT.format(radius=R, lpsv=LPSV).replace(
        'truth = "truth.json"\n', 'truth = "truth.json"\nnoise_sd = 15.0\n'))
    config = twin / "scalar_ident.toml"
    config.write_text(VALIDATE.format(inversion="scalar_ident", radius=R).replace('config = "invert.toml"',
                                                                                 'config = "invert_noise.toml"'))
    out = twin / "scalar_ident_out"
    result = run_hybrid("validate", config, "--output", out, timeout=300)
    assert result.returncode == 0, result.stderr
    report = _report(out)["identifiability"]
    print(report["unknowns"])
    assert report["fields"] == {} and report["fem_solves"] == 4
    assert set(report["unknowns"]) == {"conductivity", "effective_pressure"}
    assert all(entry["identifiable"] for entry in report["unknowns"].values())
    assert report["unknowns"]["conductivity"]["variable"] == "ln conductivity"
    assert 0.005 < report["unknowns"]["conductivity"]["cramer_rao_sd"] < 0.03
    assert 2.0 < report["unknowns"]["effective_pressure"]["cramer_rao_sd"] < 10.0   # Pa
    assert sorted(path.name for path in out.iterdir()) == ["validation.json"]


def _fem_disc():
    """The twin's disc meshed for the FEM (serial), its Dirichlet edge p = 0 and its five IFP
    coefficients [SI]."""
    from mpi4py import MPI

    from hybrid.config.geometry import GeometryConfig
    from hybrid.mesh.geometry import build_mesh
    from hybrid.problems.ifp import OuterBoundary
    domain = build_mesh(GeometryConfig(shape="disc", mesh_size=2e-4, tumour_radius=R).resolved(math.sqrt(K / LPSV)),
                        MPI.COMM_SELF)
    coefficients = {"conductivity": K, "vascular_exchange": LPSV, "effective_pressure": PE,
                    "lymphatic_filtration": 0.0, "lymphatic_pressure": 0.0}
    return domain, OuterBoundary("dirichlet", 0.0), coefficients


def test_the_voxels_of_a_field_add_up_to_the_uniform_unknown_and_hide_the_plateau():
    """The per-voxel variables of a field unknown (:func:`hybrid.commands.crossval.ifp_identifiability`)
    against the same unknown as one scalar, at 1 % noise (15 Pa): varying every voxel alike is the
    uniform field, so 1^T F 1 of the voxels' Fisher information equals the scalar's F_KK, and their
    cross terms with p_e agree (to the central differences' error). With K free voxel by voxel, the
    plateau p_e is no longer identified (on this 2 mm disc of 4.4 rim widths lower K anywhere raises
    the pressure towards p_e), while with K uniform it is (Cramer-Rao sd 4.8 Pa, 0.3 %)."""
    from hybrid.commands.crossval import _solve, ifp_identifiability
    from hybrid.forward.image_sampling import observe_on_grid

    domain, boundary, coefficients = _fem_disc()
    shape, affine = _grid(2.5e-4)
    image = observe_on_grid(_solve(domain, boundary, coefficients), shape, affine)
    x, y = _centres(shape, affine)
    field = {"conductivity": (np.where(np.hypot(x, y) <= R, K, np.nan)[..., None], affine)}
    logs = {"conductivity": True, "effective_pressure": False}

    def fisher(analysis):
        return analysis.directions @ np.diag(analysis.singular_values ** 2) @ analysis.directions.T

    values, voxels, per_voxel = ifp_identifiability(domain, boundary, coefficients, logs, field, image, affine, 15.0)
    _, _, uniform = ifp_identifiability(domain, boundary, coefficients, logs, {}, image, affine, 15.0)
    names = list(values)
    assert names[0] == "effective_pressure" and names[1:] == voxels["conductivity"]
    assert len(names) == 1 + np.isfinite(field["conductivity"][0]).sum()
    ones = np.r_[0.0, np.ones(len(names) - 1)]
    f_voxels, f_uniform = fisher(per_voxel), fisher(uniform)
    assert ones @ f_voxels @ ones == pytest.approx(f_uniform[0, 0], rel=1e-3)
    assert ones @ f_voxels[:, 0] == pytest.approx(f_uniform[0, 1], rel=1e-3)
    assert f_voxels[0, 0] == pytest.approx(f_uniform[1, 1], rel=1e-6)
    assert uniform.standard_errors[1] < 0.01 * PE
    assert not per_voxel.standard_errors[0] < 0.05 * PE


def test_a_zero_valued_linear_unknown_is_not_identifiable_rather_than_a_crash():
    """A linear unknown (p_e, p_L [Pa]) or field voxel at exactly 0: no relative precision to claim,
    so "not identifiable" (relative sd inf), not a ZeroDivisionError after all the FEM solves."""
    from hybrid.commands.crossval import _unknown_identifiability, identifiability_spread
    entry = _unknown_identifiability("effective_pressure", 0.0, 3.0, False)
    assert entry["cramer_rao_relative_sd"] == math.inf and entry["identifiable"] is False
    assert identifiability_spread("lymphatic_pressure", 0.0, 1.0, False)[0] == math.inf


def test_each_voxel_variable_is_its_own_voxel():
    """The variable named NAME[i,j,k] varies voxel (i, j, k) of the map: on a map that is not
    symmetric (K doubled for x > R/3), the Fisher information of two mirror voxels, (i, j) and
    (j, i), matches |J|^2 of that very voxel varied by hand (the same central difference), and the
    two differ, so a transposed or shuffled order would fail."""
    from hybrid.commands.crossval import _solve, fill_nan_nearest, ifp_identifiability
    from hybrid.forward.image_sampling import observe_on_grid, sample_image
    from hybrid.validation.classical import IDENTIFIABILITY_STEP

    domain, boundary, coefficients = _fem_disc()
    shape, affine = _grid(5e-4)
    x, y = _centres(shape, affine)
    volume = np.where(np.hypot(x, y) <= R, np.where(x > R / 3, 2 * K, K), np.nan)[..., None]
    image = observe_on_grid(_solve(domain, boundary, coefficients), shape, affine)
    values, _, analysis = ifp_identifiability(domain, boundary, coefficients, {"conductivity": True},
                                              {"conductivity": (volume, affine)}, image, affine, 15.0)
    fisher = analysis.directions @ np.diag(analysis.singular_values ** 2) @ analysis.directions.T
    names = list(values)

    def by_hand(i, j):
        columns = []
        for sign in (1, -1):
            varied = volume.copy()
            varied[i, j, 0] *= math.exp(sign * IDENTIFIABILITY_STEP)
            field = sample_image(domain, fill_nan_nearest(varied), affine)   # as the re-solve reads the map
            columns.append(observe_on_grid(_solve(domain, boundary, coefficients | {"conductivity": field}), shape,
                                           affine))
        column = (columns[0] - columns[1])[np.isfinite(image)] / (2 * IDENTIFIABILITY_STEP) / 15.0
        return float(column @ column)

    i, j = 6, 1   # an edge voxel in the doubled half (x > R/3); its mirror (1, 6) is not
    assert np.isfinite(volume[i, j, 0]) and np.isfinite(volume[j, i, 0]) and volume[i, j, 0] != volume[j, i, 0]
    first, mirror = (fisher[names.index(f"conductivity[{a},{b},0]"), names.index(f"conductivity[{a},{b},0]")]
                     for a, b in ((i, j), (j, i)))
    assert first == pytest.approx(by_hand(i, j), rel=1e-6) and mirror == pytest.approx(by_hand(j, i), rel=1e-6)
    assert abs(first / mirror - 1) > 0.05


def test_two_ranks_give_the_serial_numbers(twin):
    serial = twin / "exact_out"
    if not serial.exists():
        _write_inversion(twin, "exact")
        assert _validate(twin, "exact", "exact")[0].returncode == 0
    result, out = _validate(twin, "exact", "exact_mpi", ranks=2)
    assert result.returncode == 0, result.stderr
    one, two = _report(serial), _report(out)
    assert two["fem"]["nodes"] == one["fem"]["nodes"]
    assert two["pinn_vs_fem"]["relative_l2"] == pytest.approx(one["pinn_vs_fem"]["relative_l2"], rel=1e-4)
    assert two["truth_image_prediction"]["relative_l2"] == pytest.approx(
        one["truth_image_prediction"]["relative_l2"], rel=1e-4)


def test_radius_mismatch_gives_one_error_line(twin):
    result, out = _validate(twin, "exact", "bad", radius=3e-3)
    assert_one_error(result, "tumour_radius 0.003 m must equal the invert [problem] radius")
    assert not out.exists()


@pytest.mark.parametrize("adaptive_dofs", [3000, 0])
def test_validate_refuses_adaptive_dofs(twin, adaptive_dofs):
    """``[geometry] adaptive_dofs`` refines ``hybrid forward``'s mesh only: ``hybrid validate``
    refuses it (any value) in one line instead of ignoring it, and writes nothing."""
    config = twin / "adaptive.toml"
    config.write_text(VALIDATE.format(inversion="exact", radius=R).replace(
        "mesh_size = 2.0e-4", f"mesh_size = 2.0e-4\nadaptive_dofs = {adaptive_dofs}"))
    result = run_hybrid("validate", config, "--output", twin / "adaptive_out")
    assert_one_error(result, "[geometry] adaptive_dofs is used by hybrid forward only; remove it")
    assert not (twin / "adaptive_out").exists()


def test_validate_never_imports_torch():
    """FEM code never imports torch (tests/test_layering.py): the command loads it only inside the
    functions that evaluate trained networks."""
    import subprocess
    import sys

    code = "import sys, hybrid.commands.crossval, hybrid.config.crossval; sys.exit('torch' in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_ifp_networks_evaluated_at_the_nodes(twin):
    """A (short) real inversion keeps its networks; validate evaluates them at the P1 nodes."""
    config = twin / "invert_networks.toml"
    config.write_text(INVERT.format(radius=R, lpsv=LPSV).replace('truth = "truth.json"\n', "")
                      + "[training]\nadam_steps = 5\nlbfgs_steps = 0\ncollocation_points = 64\n")
    inverted = run_hybrid("invert", config, "--output", twin / "networks_run", timeout=300)
    assert inverted.returncode == 0, inverted.stderr
    path = twin / "networks.toml"
    path.write_text(VALIDATE.format(inversion="networks_run", radius=R).replace("invert.toml", "invert_networks.toml"))
    result = run_hybrid("validate", path, "--output", twin / "networks_out", timeout=300)
    assert result.returncode == 0, result.stderr
    at_nodes = _report(twin / "networks_out")["pinn_vs_fem"]["network_at_nodes"]
    assert at_nodes["members"] == 1 and 0 < at_nodes["relative_l2"] < 10


@pytest.fixture(scope="module")
def release_twin(tmp_path_factory):
    directory = tmp_path_factory.mktemp("validate_release")
    write_release_twin(directory)
    result = run_hybrid("invert", invert_config(directory), "--output", directory / "inverted", timeout=300)
    assert result.returncode == 0, result.stderr
    return directory


@pytest.mark.parametrize("ranks", [1, 2])
def test_release_true_rate_predicts_the_held_out_frame_and_a_wrong_one_does_not(release_twin, ranks):
    right = validate_with_estimates(release_twin, {"release_rate": TRUE_RELEASE_RATE}, "true_rate", ranks)
    wrong = validate_with_estimates(release_twin, {"release_rate": 3 * TRUE_RELEASE_RATE}, "wrong_rate", ranks)
    assert right["recovered"]["release_rate"]["value"] == TRUE_RELEASE_RATE
    assert [f["time_s"] for f in right["pinn_vs_fem"]["frames"]] == [1200.0, 2400.0, 3600.0]
    for frame in right["pinn_vs_fem"]["frames"]:
        assert set(frame["relative_l2"]) == {"liposomal_drug", "free_drug", "cell_drug", "total_drug"}
    held, missed = right["held_out"]["frames"], wrong["held_out"]["frames"]
    assert [h["time_s"] for h in held] == [2400.0]
    print({q: (held[0][q]["against_truth"], missed[0][q]["against_truth"])
           for q in ("total_drug", "released_fraction")})
    # the FEM at the true rate is the synthesize run itself (same mesh and steps): float32 images only
    for quantity in ("total_drug", "released_fraction"):
        assert held[0][quantity]["against_truth"]["fem"] < 1e-4
        assert missed[0][quantity]["against_truth"]["fem"] > 0.05
    assert held[0]["total_drug"]["fem"]["relative_l2"] < missed[0]["total_drug"]["fem"]["relative_l2"]
    if ranks == 2:
        serial = _report(release_twin / "true_rate_1_out")
        assert right["fem"]["nodes"] == serial["fem"]["nodes"]
        for one, two in zip(serial["pinn_vs_fem"]["frames"], right["pinn_vs_fem"]["frames"]):
            for name, value in one["relative_l2"].items():
                assert two["relative_l2"][name] == pytest.approx(value, rel=1e-6)


TRUE_LIPOSOME_PERMEABILITY = 2.0e-10   # m/s: the table's P_L, the twin's truth
PERMEABILITY_UNKNOWN = """[unknowns.vessel_permeability]
lower = 1.0e-11
upper = 1.0e-8
"""


@pytest.fixture(scope="module")
def permeability_twin(tmp_path_factory):
    """The release twin inverted with the liposomes' vessel permeability unknown beside k_rel (3 steps)."""
    directory = tmp_path_factory.mktemp("validate_permeability")
    write_release_twin(directory)
    config = invert_config(directory)
    config.write_text(config.read_text().replace("[training]", PERMEABILITY_UNKNOWN + "[training]"))
    result = run_hybrid("invert", config, "--output", directory / "inverted", timeout=300)
    assert result.returncode == 0, result.stderr
    return directory


def test_vessel_permeability_unknown_reaches_the_fem(permeability_twin):
    """An unknown P_L [m/s] beside k_rel: inversion.json has its estimate, unit and truth (truth.json's
    carriers.liposome.vessel_permeability); validate re-solves the FEM with it (at the true values the
    FEM is the synthesize run: the held-out frame to float32 images; at 100x P_L it misses) and judges
    its identifiability by FEM runs at perturbed values."""
    summary = json.loads((permeability_twin / "inverted" / "inversion.json").read_text())
    entry = summary["estimates"]["vessel_permeability"]
    assert entry["unit"] == "m/s" and entry["truth"] == pytest.approx(TRUE_LIPOSOME_PERMEABILITY, rel=1e-12)
    assert 1.0e-11 < entry["estimate"] < 1.0e-8
    truth = {"release_rate": TRUE_RELEASE_RATE, "vessel_permeability": TRUE_LIPOSOME_PERMEABILITY}
    right = validate_with_estimates(permeability_twin, truth, "true_values")
    wrong = validate_with_estimates(permeability_twin, truth | {"vessel_permeability": 100 * TRUE_LIPOSOME_PERMEABILITY},
                                    "wrong_permeability")
    assert right["recovered"]["vessel_permeability"] == {"value": TRUE_LIPOSOME_PERMEABILITY, "unit": "m/s",
                                                         "identifiable": right["recovered"]["vessel_permeability"]
                                                         ["identifiable"]}
    assert set(right["identifiability"]["unknowns"]) == {"release_rate", "vessel_permeability"}
    assert right["identifiability"]["unknowns"]["vessel_permeability"]["cramer_rao_sd"] > 0
    for quantity in ("total_drug", "released_fraction"):
        assert right["held_out"]["frames"][0][quantity]["against_truth"]["fem"] < 1e-4
    assert wrong["held_out"]["frames"][0]["total_drug"]["against_truth"]["fem"] > 0.05   # measured 0.41
    # on this 1-h twin with Darcy flow the liposomes cross the wall by solvent drag: 3x P_L moves the
    # held-out total drug by 2.5e-4 (noise 2 %), and the Fisher information says so
    assert right["identifiability"]["unknowns"]["vessel_permeability"]["identifiable"] is False
    assert right["identifiability"]["unknowns"]["release_rate"]["identifiable"] is True


@pytest.mark.parametrize("ranks", [1, 2])
def test_classical_fit_beside_the_pinn(release_twin, ranks):
    """[classical] fit = true: the FEM least squares of k_rel from the invert run's start (the
    geometric mean of the bounds, 1e-5 1/s) on the trained frames lands on the truth within its
    Cramer-Rao sd (2 % noise: measured 0.5 %), beside the (3-step) PINN's estimate and time; on two
    ranks every rank takes the same steps (the serial estimate to 1e-6)."""
    config = release_twin / "classical.toml"
    config.write_text(RELEASE_VALIDATE.format(inversion="inverted") + "[classical]\nfit = true\nmax_fem_runs = 30\n")
    out = release_twin / f"classical_{ranks}_out"
    result = run_hybrid("validate", config, "--output", out, ranks=ranks, timeout=600)
    assert result.returncode == 0, result.stderr
    if ranks == 2:
        serial = _report(release_twin / "classical_1_out")["classical"]["estimates"]["release_rate"]
        assert _report(out)["classical"]["estimates"]["release_rate"] == pytest.approx(serial, rel=1e-6)
    report = _report(out)["classical"]
    assert report["start"] == {"release_rate": pytest.approx(1e-5, rel=1e-12)} and 4 <= report["fem_runs"] <= 30 + 2
    assert report["noise_assumed"] is False
    sd = report["cramer_rao_sd"]["release_rate"]
    assert sd["of"] == "ln release_rate" and 0 < sd["value"] < 0.02
    error = report["relative_errors"]["classical"]["release_rate"]
    assert abs(error) < 3 * sd["value"], (error, sd)
    assert report["pinn"]["training_seconds"] > 0 and "release_rate" in report["relative_errors"]["pinn"]
    assert "classical: release_rate = " in result.stdout


@pytest.mark.parametrize("target", ["hybrid.validation.classical.release_images",
                                    "hybrid.validation.classical.fit_images"])
def test_a_failure_on_one_rank_in_the_fem_analyses_ends_every_rank(release_twin, target):
    """A failure on rank 0 alone inside the identifiability's or the classical fit's FEM runs: exit 2,
    one error line, no output left. Before, rank 0 waited in the transport solver's collective close
    (a finally block) while rank 1 went on with FEM runs: the job hung."""
    config = release_twin / "classical_fail.toml"
    config.write_text(RELEASE_VALIDATE.format(inversion="inverted") + "[classical]\nfit = true\nmax_fem_runs = 8\n")
    out = release_twin / "rank0_failure_out"
    result = run_hybrid_failing_on_rank0(target, "validate", config, "--output", out, directory=release_twin)
    assert_one_error(result, "injected failure on rank 0")
    assert not out.exists()


@pytest.mark.parametrize("target", ["hybrid.validation.classical.central_jacobian",
                                    "hybrid.commands.crossval.write_volume"])
def test_a_failure_on_one_rank_in_the_field_identifiability_ends_every_rank(twin, target):
    """Kind "ifp" with a field unknown: a failure on rank 0 alone as the per-voxel FEM solves start,
    or in writing the identifiability maps, ends both ranks with one error line and no output."""
    _field_identifiability_twin(twin, 0.15)
    config = twin / "field_fail.toml"
    config.write_text(VALIDATE.format(inversion="field_ident", radius=R).replace(
        'config = "invert.toml"', 'config = "invert_field_ident.toml"'))
    out = twin / "field_fail_out"
    result = run_hybrid_failing_on_rank0(target, "validate", config, "--output", out, directory=twin)
    assert_one_error(result, "injected failure on rank 0")
    assert not out.exists()


def test_classical_fit_of_the_ifp_kind(twin):
    """Kind "ifp": the FEM least squares of K and p_e on the IFP map (closed-form voxel means without
    noise: a residual scale, no noise, so no Cramer-Rao sd) lands on the truth up to the FEM's own
    discretisation error, which halves with the mesh (measured K -3.0 % / -1.6 %, p_e -0.65 % /
    -0.35 % at 0.2 / 0.1 mm), although the PINN estimate it is reported beside is 44 % off in K; a
    field unknown cannot be fitted so."""
    out_inversion = _write_inversion(twin, "classical_ifp", conductivity=1.44 * K)
    config = twin / "classical_ifp.toml"
    errors = {}
    for mesh in ("2.0e-4", "1.0e-4"):
        config.write_text(VALIDATE.format(inversion=out_inversion.name, radius=R).replace(
            "mesh_size = 2.0e-4", f"mesh_size = {mesh}") + "[classical]\nfit = true\n")
        result = run_hybrid("validate", config, "--output", twin / f"classical_ifp_{mesh}")
        assert result.returncode == 0, result.stderr
        report = _report(twin / f"classical_ifp_{mesh}")["classical"]
        errors[mesh] = report["relative_errors"]["classical"]
        assert report["relative_errors"]["pinn"]["conductivity"] == pytest.approx(0.44)
        assert report["noise_assumed"] is True
        assert report["cramer_rao_sd"] == {"conductivity": None, "effective_pressure": None}
    for name in ("conductivity", "effective_pressure"):
        assert abs(errors["1.0e-4"][name]) < 0.6 * abs(errors["2.0e-4"][name]), (name, errors)
    assert abs(errors["1.0e-4"]["conductivity"]) < 0.02 and abs(errors["1.0e-4"]["effective_pressure"]) < 0.005
    field = twin / "invert_field.toml"
    field.write_text((twin / "invert.toml").read_text().replace("upper = 1e-11\n", "upper = 1e-11\nfield = true\n"))
    config.write_text(config.read_text().replace('config = "invert.toml"', 'config = "invert_field.toml"'))
    assert_one_error(run_hybrid("validate", config), "[classical] fit fits scalar unknowns; conductivity is a field")


def test_held_out_series_are_read_once_and_each_frame_from_its_own_time(release_twin, tmp_path, monkeypatch):
    """Two held-out frames (20 and 40 min): each PINN map series and truth series is read once per
    validate run, not once per frame, and each frame's PINN-against-truth error is that of its own
    frames in the files (relative l2 over the voxels finite in both)."""
    from collections import Counter
    from pathlib import Path

    from mpi4py import MPI

    import hybrid.commands.crossval as crossval
    from hybrid.io.nifti import read_dce_series

    config = invert_config(release_twin, "invert_two_held.toml", held_out="1200.0, 2400.0")
    inverted = release_twin / "inverted_two_held"
    result = run_hybrid("invert", config, "--output", inverted, timeout=300)
    assert result.returncode == 0, result.stderr
    validate = release_twin / "validate_two_held.toml"
    validate.write_text(RELEASE_VALIDATE.format(inversion=inverted.name).replace("invert.toml", config.name))
    reads = Counter()

    def counted(path):
        reads[Path(path).relative_to(release_twin).as_posix()] += 1
        return read_dce_series(path)
    monkeypatch.setattr(crossval, "read_dce_series", counted)
    report = crossval.run_crossval(load_crossval_config(validate), tmp_path, MPI.COMM_WORLD, lambda line: None)
    quantities = ("total_drug", "released_fraction")
    assert reads == {f"{folder}/{quantity}.nii.gz": 1 for folder in (inverted.name, "synth/truth")
                     for quantity in quantities}
    frames = report["held_out"]["frames"]
    assert [entry["time_s"] for entry in frames] == [1200.0, 2400.0]
    for entry in frames:
        for quantity in quantities:
            pinn, truth = (read_dce_series(folder / f"{quantity}.nii.gz") for folder in (inverted, release_twin
                                                                                          / "synth" / "truth"))
            pinn, truth = (series.data[..., int(np.flatnonzero(np.isclose(series.axis, entry["time_s"]))[0])]
                           for series in (pinn, truth))
            use = np.isfinite(pinn) & np.isfinite(truth)
            expected = np.linalg.norm(pinn[use] - truth[use]) / np.linalg.norm(truth[use])
            assert entry[quantity]["against_truth"]["pinn"] == pytest.approx(expected, rel=1e-12)


def test_release_with_geometry_gives_one_error_line(release_twin):
    config = release_twin / "with_geometry.toml"
    config.write_text(RELEASE_VALIDATE.format(inversion="inverted") + "[geometry]\nshape = \"disc\"\n")
    assert_one_error(run_hybrid("validate", config), "[geometry] is for kind \"ifp\"")


@pytest.mark.parametrize("name", ["validate_disc.toml", "validate_release.toml", "validate_ph_release.toml"])
def test_example_keys_are_fields(name):
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / name
    assert_keys_are_fields(load_crossval_config(path), tomllib.loads(path.read_text()), path)


# pH-triggered release: synthesize (synthetic pH_e map) -> invert (pH_50, steepness) -> validate
PH_SYNTHESIZE = """
[geometry]
shape = "disc"
tumour_radius = 1.0e-3
mesh_size = 2.0e-4
[flow]
model = "none"
[drug]
formulation = "ph_sensitive"
[plasma]
model = "dose"
dose = 50.0
dose_unit = "mg/m^2"
[time]
end = 3600.0
step = 600.0
[observation]
times = [-60.0, 1200.0, 2400.0, 3600.0]
voxel_size_mm = 0.25
noise = 0.02
seed = 4
quantities = ["total_drug", "released_fraction"]
[observation.ph_map]
core = 6.4
rim = 7.2
voxel_size_mm = 0.1
[output]
directory = "synth"
"""

PH_INVERT = """
[data]
observations = "synth/observations.nii.gz"
released_fraction = "synth/released_fraction.nii.gz"
ph_map = "synth/truth/ph.nii.gz"
truth = "synth/truth.json"
held_out_times = [2400.0]
[problem]
kind = "release"
radius = 1.0e-3
transport = "synthesize.toml"
[unknowns.ph_50]
lower = 6.0
upper = 7.6
initial = 7.2
log = false
[unknowns.steepness]
lower = 0.5
upper = 8.0
initial = 1.0
[training]
adam_steps = 4
lbfgs_steps = 2
collocation_points = 64
dtype = "float64"
seed = 0
threads = 1
[output]
directory = "inverted"
"""


@pytest.fixture(scope="module")
def ph_twin(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ph_release")
    (directory / "synthesize.toml").write_text(PH_SYNTHESIZE)
    result = run_hybrid("synthesize", directory / "synthesize.toml", timeout=300)
    assert result.returncode == 0, result.stderr
    (directory / "invert.toml").write_text(PH_INVERT)
    result = run_hybrid("invert", directory / "invert.toml", timeout=300)
    assert result.returncode == 0, result.stderr
    return directory


def test_ph_release_pipeline_runs_and_marks_identifiability(ph_twin):
    """The CLI pipeline with pH_50 and steepness unknown (a short training: no accuracy claim):
    outputs exist, estimates finite and within their bounds, and validate reports the PINN against
    the FEM, the held-out frame and an identifiability flag for each unknown."""
    summary = json.loads((ph_twin / "inverted" / "inversion.json").read_text())
    assert set(summary["estimates"]) == {"ph_50", "steepness"}
    bounds = {"ph_50": (6.0, 7.6), "steepness": (0.5, 8.0)}
    for name, entry in summary["estimates"].items():
        assert math.isfinite(entry["estimate"]) and bounds[name][0] < entry["estimate"] < bounds[name][1]
        assert entry["unit"] == "1" and entry["truth"] == {"ph_50": 6.8, "steepness": 2.0}[name]
    for name in ("total_drug", "released_fraction", "networks/seed0.pt"):
        assert (ph_twin / "inverted" / (name if name.endswith(".pt") else f"{name}.nii.gz")).is_file()
    report = validate_with_estimates(ph_twin, None, "trained")
    assert report["fem"]["ph_map"].endswith("ph.nii.gz")
    assert [f["time_s"] for f in report["pinn_vs_fem"]["frames"]] == [1200.0, 2400.0, 3600.0]
    assert [h["time_s"] for h in report["held_out"]["frames"]] == [2400.0]
    identifiability = report["identifiability"]
    assert identifiability["available"] and set(identifiability["unknowns"]) == {"ph_50", "steepness"}
    for name, entry in report["recovered"].items():
        assert entry["identifiable"] is identifiability["unknowns"][name]["identifiable"]
        assert entry["value"] == summary["estimates"][name]["estimate"]
        assert identifiability["unknowns"][name]["cramer_rao_sd"] > 0


@pytest.mark.parametrize("name, value, sd, log, identifiable", [
    ("ph_50", 6.8, 0.04, False, True),          # 0.04 pH
    ("ph_50", 6.8, 0.2, False, False),          # 0.2 pH: only 2.9 % of the value, yet the law is not pinned
    ("ph_50", 6.8, 0.2 / 6.8, True, False),     # the same sd in ln pH_50
    ("steepness", 2.0, 0.04, True, True),       # 4 % in ln n
    ("steepness", 2.0, 0.2, False, False),      # 10 % of the value
    ("release_rate", 5e-5, 1e-6, False, True)])  # 2 % of the value
def test_identifiability_rule_is_absolute_in_ph_and_relative_otherwise(name, value, sd, log, identifiable):
    """pH_50 is already logarithmic: its Cramer-Rao sd is judged in pH units (0.05), the others
    relative to the value (5 %)."""
    from hybrid.commands.crossval import identifiability_spread

    spread, limit = identifiability_spread(name, value, sd, log)
    assert (spread <= limit) is identifiable
    assert limit == 0.05


@pytest.mark.parametrize("ranks", [1, 2])
def test_ph_release_fem_at_the_true_law_reproduces_the_held_out_truth(ph_twin, ranks):
    """The FEM of validate with the true pH_50 and steepness on the inversion's pH map is the
    synthesize run itself (same map, mesh and steps): the held-out noise-free frames agree to the
    float32 images; pH_50 0.3 lower misses them."""
    right = validate_with_estimates(ph_twin, {"ph_50": 6.8, "steepness": 2.0}, "true_law", ranks)
    wrong = validate_with_estimates(ph_twin, {"ph_50": 6.5, "steepness": 2.0}, "wrong_law", ranks)
    held, missed = right["held_out"]["frames"][0], wrong["held_out"]["frames"][0]
    print({q: (held[q]["against_truth"], missed[q]["against_truth"]) for q in ("total_drug", "released_fraction")})
    for quantity in ("total_drug", "released_fraction"):
        assert held[quantity]["against_truth"]["fem"] < 1e-4
    assert missed["released_fraction"]["against_truth"]["fem"] > 0.05
