"""``hybrid transport`` on the Krogh verification configuration of issue 8 (coarser mesh, shorter
time): transport.xdmf holds the named species at the final time, summary.json the mass balance
and the closed-form comparison. Serially and under ``mpirun -n 2`` (subprocesses)."""

import json
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import assert_one_error, run_hybrid, run_hybrid_failing_on_rank0
from hybrid.config.transport import transport_config_from_dict
from hybrid.problems.krogh import half_distance, krogh_concentration
from hybrid.problems.parameters import default

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "transport_krogh.toml"


@pytest.mark.parametrize("ranks", [1, 2])
def test_transport_krogh_config_writes_fields_and_mass_balance(tmp_path, ranks):
    text = EXAMPLE.read_text().replace("mesh_size = 2.0e-6", "mesh_size = 6.0e-6") \
        .replace("end = 3600.0", "end = 1200.0").replace("step = 10.0", "step = 30.0")
    config = tmp_path / "krogh.toml"
    config.write_text(text)
    out = tmp_path / "out"
    result = run_hybrid("transport", config, "--output", out, ranks=ranks, timeout=300)
    assert result.returncode == 0, result.stderr
    from hybrid.io.fields import read_point_data

    _, _, fields = read_point_data(out / "transport.xdmf")
    assert set(fields) == {"liposomal_drug", "free_drug", "cell_drug", "auc_free_drug", "auc_cell_drug",
                           "peak_cell_drug", "survival_fraction", "lethal"}
    assert fields["free_drug"].min() >= 0 and fields["free_drug"].max() > 0
    assert np.all(fields["peak_cell_drug"] >= fields["cell_drug"]) and fields["auc_free_drug"].max() > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["fields"]["free_drug"] == "mol/m^3 of tissue"
    assert summary["fields"]["auc_free_drug"] == "mol s/m^3 of tissue"
    exposure = summary["exposure"]
    assert exposure["exposure_time_s"] == pytest.approx(1200.0, rel=1e-12)
    assert exposure["lethal_fraction"] == 0.0 and 0.0 < exposure["mean_survival_fraction"] < 1.0
    # steady free drug: half-distance of the Bessel closed form (27.63 um; measured 27.75 at 6 um cells)
    radii = np.linspace(10e-6, 120e-6, 20001)
    exact = half_distance(radii, krogh_concentration(radii, diffusivity=1.2e-10, sink_rate=0.02, r_vessel=10e-6,
                                                     r_tissue=120e-6, vessel_concentration=1e-3,
                                                     permeability=2.7e-6))
    assert exposure["profiles"]["free_drug"]["half_distance_m"] == pytest.approx(exact, rel=0.01)
    assert abs(summary["mass_balance"]["final_balance_error_relative"]) < 1e-10
    assert summary["mass_balance"]["max_step_residual_relative"] < 1e-10
    assert summary["closed_form"]["relative_to_wall_value"] < 0.01
    assert summary["time_steps"] == 40 and summary["mpi_ranks"] == ranks


def test_transport_adaptive_steps(tmp_path):
    """[time] adaptive = true: steps grow from 5 s as the Krogh problem settles, the output times
    are hit exactly, the balance and the steady closed form hold."""
    text = EXAMPLE.read_text().replace("mesh_size = 2.0e-6", "mesh_size = 6.0e-6") \
        .replace("end = 3600.0", "end = 1200.0").replace("step = 10.0", "step = 5.0\nadaptive = true\n"
                                                                      "output_interval = 300.0")
    config = tmp_path / "krogh.toml"
    config.write_text(text)
    out = tmp_path / "out"
    result = run_hybrid("transport", config, "--output", out, timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["adaptive"] and summary["time_steps"] < 120   # 240 steps at the initial 5 s (measured 80)
    assert summary["time_step_s"]["max"] >= 8 * summary["time_step_s"]["min"]
    assert summary["mass_balance"]["steps"]["time"][-1] == pytest.approx(1200.0, rel=1e-12)
    assert summary["mass_balance"]["max_step_residual_relative"] < 1e-10
    assert summary["closed_form"]["relative_to_wall_value"] < 0.01


def test_transport_thermosensitive_with_heating(tmp_path):
    """[heating] holds 42 C for 10 min on the Krogh patch: thermosensitive liposomes release into
    free drug, temperature and CEM43 are written, CEM43 = 10 min x 0.25 (+ the ramp step)."""
    text = EXAMPLE.read_text().replace("mesh_size = 2.0e-6", "mesh_size = 8.0e-6") \
        .replace("end = 3600.0", "end = 900.0").replace("step = 10.0", "step = 30.0") \
        .replace('formulation = "free"', 'formulation = "thermosensitive"') \
        .replace("[tissue]", "[liposome]\ndiffusivity = 2e-12\nvessel_permeability = 1e-7\n"
                             "[heating]\ntarget_temperature = 315.15\nstart = 300.0\nend = 900.0\n"
                             "max_power = 1e6\n[tissue]") \
        .replace("free_concentration = 1.0e-3", "liposomal_concentration = 1.0e-2")
    config = tmp_path / "tsl.toml"
    config.write_text(text)
    out = tmp_path / "out"
    result = run_hybrid("transport", config, "--output", out, timeout=300)
    assert result.returncode == 0, result.stderr
    from hybrid.io.fields import read_point_data

    _, _, fields = read_point_data(out / "transport.xdmf")
    assert {"temperature", "thermal_dose"} <= set(fields)
    assert fields["temperature"].min() == pytest.approx(315.15, abs=1e-6)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["heating"]["cem43_max_min"] == pytest.approx(600 / 60 * 0.25, rel=0.05)
    assert summary["final_amounts"]["in_cells"] > 0 and fields["free_drug"].max() > 0
    assert summary["mass_balance"]["max_step_residual_relative"] < 1e-10


@pytest.mark.parametrize("old, new, message", [
    ('model = "constant"', "", "[plasma] missing required key 'model'"),
    ("[output]", "[exposure]\nlethal_amount_per_cell = -1.0\n[output]", "[exposure] lethal_amount_per_cell must be > 0"),
    ("[output]", "[radiation]\ndose_Gy = -1.0\n[output]", "[radiation] dose_Gy must be >= 0"),
    ('uptake = "linear"', 'uptake = "linear"\nalbumin_binding = 1',
     '[free_drug] albumin_binding must be one of "none", "equilibrium", "kinetic", got 1'),
    ('formulation = "free"', 'formulation = "magic"', "[drug] formulation must be one of"),
    ("uptake_rate = 0.02", "uptake_rate = -0.02", "[free_drug] uptake_rate must be >= 0"),
    ("step = 10.0", "step = 7200.0", "[time] step (7200.0 s) must not exceed end"),
    ('model = "none"', 'model = "stokes"', '[flow] model must be "none" or "darcy", got \'stokes\''),
    ("[output]", "[host]\nvessel_surface_density = 5000.0\n[output]", "[host] is given but the geometry has no host"),
])
def test_transport_config_errors_are_one_line(tmp_path, old, new, message):
    text = EXAMPLE.read_text()
    assert old in text
    config = tmp_path / "bad.toml"
    config.write_text(text.replace(old, new))
    result = run_hybrid("transport", config, "--output", tmp_path / "out", timeout=120)
    assert_one_error(result, message)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("shape, adaptive_dofs", [("disc", 3000), ("sphere", 0)])
def test_transport_refuses_adaptive_dofs(tmp_path, shape, adaptive_dofs):
    """``[geometry] adaptive_dofs`` refines ``hybrid forward``'s mesh only: ``hybrid transport``
    refuses it (any value) in one line instead of ignoring it, and writes nothing; the same file
    without the key loads."""
    import tomllib

    key = f"adaptive_dofs = {adaptive_dofs}"
    config = tmp_path / "adaptive.toml"
    config.write_text(REGIONS_CASE.format(shape=shape, mesh_size=2.0e-4, flow="none", host=key))
    result = run_hybrid("transport", config, "--output", tmp_path / "out", timeout=120)
    assert_one_error(result, "[geometry] adaptive_dofs is used by hybrid forward only; remove it")
    assert not (tmp_path / "out").exists()
    assert transport_config_from_dict(tomllib.loads(config.read_text().replace(key, ""))).geometry.shape == shape


def test_transport_config_defaults_come_from_the_parameter_table():
    """Diffusivities, liposome hindrance, albumin binding, cell density and the lethal line default
    to the parameter table (issue 8: one table)."""
    import tomllib

    data = tomllib.loads(EXAMPLE.read_text())
    del data["free_drug"]["diffusivity"]
    data["drug"]["formulation"] = "liposomal"
    config = transport_config_from_dict(data)
    assert config.free_drug.diffusivity == default("D_F") == pytest.approx(1.17e-10, rel=1e-3)
    assert config.liposome.diffusivity == default("D_L") and config.liposome.hindrance == default("f_L") == 0.5
    assert config.liposome.reflection == default("sigma_L")
    assert config.plasma.albumin_bound_fraction == default("delta_alb")
    assert config.tissue.cell_density == default("rho_c")
    assert config.exposure.lethal_amount_per_cell == default("C_I_lethal")
    assert config.exposure.profile_bin_width == config.geometry.mesh_size
    assert config.time.output_interval == config.time.end / 10


def test_dose_plasma_curve_is_the_unbound_fraction():
    """[plasma] model = "dose": the vessel wall sees (1 - albumin_bound_fraction) of the total
    free-doxorubicin plasma curve; a constant free_concentration is unbound."""
    import tomllib

    from hybrid.commands.plasma import bound_plasma_curve, plasma_curves
    from hybrid.problems.pharmacokinetics import PlasmaCurve, dose_amount

    data = tomllib.loads(EXAMPLE.read_text())
    data["plasma"] = {"model": "dose", "dose": 50.0, "dose_unit": "mg/m^2", "albumin_bound_fraction": 0.6}
    free, liposomal = plasma_curves(transport_config_from_dict(data))
    total = PlasmaCurve.free_doxorubicin(dose_amount(50.0, "mg/m^2"))
    times = np.array([0.0, 60.0, 3600.0, 86400.0])
    assert liposomal is None and np.allclose(free(times), 0.4 * total(times), rtol=1e-14)
    assert np.allclose(bound_plasma_curve(transport_config_from_dict(data))(times), 0.6 * total(times), rtol=1e-14)
    data["plasma"] = {"model": "constant", "free_concentration": 1e-3, "albumin_bound_fraction": 0.6}
    assert bound_plasma_curve(transport_config_from_dict(data))(times) == pytest.approx(1.5e-3, rel=1e-14)


def test_albumin_binding_true_and_false_keep_their_meaning():
    """[free_drug] albumin_binding: the earlier booleans read as "equilibrium" / "none"."""
    import tomllib

    data = tomllib.loads(EXAMPLE.read_text())
    for value, meaning in ((True, "equilibrium"), (False, "none"), ("kinetic", "kinetic")):
        data["free_drug"]["albumin_binding"] = value
        assert transport_config_from_dict(data).free_drug.albumin_binding == meaning


def test_transport_kinetic_albumin_binding_writes_bound_drug(tmp_path):
    """albumin_binding = "kinetic" on the Krogh example: the fourth field bound_drug is written
    with its unit, it fills from the wall (bound plasma drug f/(1 - f) x 1e-3 through P_Fb and
    binding of the free drug), every field >= 0 and the mass balance holds."""
    text = EXAMPLE.read_text().replace("mesh_size = 2.0e-6", "mesh_size = 8.0e-6") \
        .replace("end = 3600.0", "end = 600.0").replace("step = 10.0", "step = 30.0") \
        .replace('uptake = "linear"', 'uptake = "linear"\nalbumin_binding = "kinetic"')
    config = tmp_path / "krogh.toml"
    config.write_text(text)
    out = tmp_path / "out"
    result = run_hybrid("transport", config, "--output", out, timeout=300)
    assert result.returncode == 0, result.stderr
    from hybrid.io.fields import read_point_data

    _, _, fields = read_point_data(out / "transport.xdmf")
    assert fields["bound_drug"].min() >= 0 and fields["bound_drug"].max() > fields["free_drug"].max() > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["fields"]["bound_drug"] == "mol/m^3 of tissue"
    assert summary["minimum_concentration_mol_m3"]["bound_drug"] >= 0.0
    assert summary["mass_balance"]["max_step_residual_relative"] < 1e-10


RADIATION_CASE = """
[geometry]
shape = "disc"
tumour_radius = 1.0e-3
mesh_size = 1.0e-4
[flow]
model = "darcy"
[drug]
formulation = "free"
[plasma]
model = "constant"
free_concentration = 1.0e-3
[free_drug]
[time]
end = 60.0
step = 60.0
[output]
directory = "out"
"""


@pytest.mark.parametrize("target", ["hybrid.commands.transport._krogh_error",
                                    "hybrid.commands.transport._exposure_summary"])
def test_a_failure_on_one_rank_after_the_stepping_ends_every_rank(tmp_path, target):
    """A failure on rank 0 alone after the time stepping: exit 2, one error line, no output left.
    Before, rank 0 waited in the collective close of the XDMF file (a with block) and of the solver
    (a finally block) while rank 1 went on: the job hung."""
    config = tmp_path / "rank0_failure.toml"
    config.write_text(RADIATION_CASE)
    out = tmp_path / "rank0_failure_out"
    result = run_hybrid_failing_on_rank0(target, "transport", config, "--output", out, directory=tmp_path,
                                         timeout=120)
    assert_one_error(result, "injected failure on rank 0")
    assert not out.exists()


def _ifp_after(tmp_path, dose, ranks=1) -> dict:
    config = tmp_path / f"rt_{dose}_{ranks}.toml"
    config.write_text(RADIATION_CASE + ("" if dose is None else f"[radiation]\ndose_Gy = {dose}\n"))
    out = tmp_path / f"out_{dose}_{ranks}"
    result = run_hybrid("transport", config, "--output", out, ranks=ranks, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads((out / "summary.json").read_text())


def test_radiation_lowers_ifp_as_the_dose_response_says(tmp_path):
    """[radiation] dose_Gy: with the table response only p_v changes, so with p = 0 outside the IFP
    is proportional to p_e = m_pv(D) p_v - sigma (pi_v - pi_i): 31 % lower at the reference
    28.8 Gy (Yeo 2009), m_ref^(1/2) on p_v at 14.4 Gy; also under mpirun -n 2."""
    from hybrid.problems.ifp import TissueProperties
    from hybrid.problems.radiation import RadiationResponse

    tumour = TissueProperties.defaults("tumour")
    baseline = _ifp_after(tmp_path, None)["ifp"]
    for dose, ranks in ((28.8, 1), (14.4, 1), (28.8, 2)):
        summary = _ifp_after(tmp_path, dose, ranks)
        m = RadiationResponse.defaults().factors(dose)["vascular_pressure"]
        oncotic = tumour.vascular_pressure - tumour.effective_pressure
        expected = (m * tumour.vascular_pressure - oncotic) / tumour.effective_pressure
        if dose == 28.8:
            assert expected == pytest.approx(1 - default("ifp_drop_RT"), rel=1e-12)
        assert summary["radiation"]["factors"]["vascular_pressure"] == pytest.approx(m, rel=1e-12)
        for key in ("max_Pa", "mean_Pa"):
            assert summary["ifp"][key] / baseline[key] == pytest.approx(expected, rel=1e-6)


IMAGE_CASE = """
[geometry]
shape = "disc"
tumour_radius = 1.0e-3
mesh_size = 1.0e-4
[drug]
formulation = "{formulation}"
[plasma]
model = "constant"
liposomal_concentration = 1.0e-2
{extra}
[time]
end = 600.0
step = 300.0
[output]
directory = "out"
"""


def _image_run(tmp_path, name: str, formulation: str, extra: str = "", ranks: int = 1):
    """Run the disc case; returns (vertex coordinates [m], fields, summary)."""
    from hybrid.io.fields import read_point_data

    config = tmp_path / f"{name}.toml"
    config.write_text(IMAGE_CASE.format(formulation=formulation, extra=extra))
    out = tmp_path / f"out_{name}"
    result = run_hybrid("transport", config, "--output", out, ranks=ranks, timeout=300)
    assert result.returncode == 0, result.stderr
    points, _, fields = read_point_data(out / "transport.xdmf")
    return points, fields, json.loads((out / "summary.json").read_text())


def _write_map(path, left: float, right: float, nan_corner: bool = False, shift_mm: float = 0.0):
    """2-D NIfTI map on 0.1 mm voxels over [-1.5, 1.5] mm (moved by ``shift_mm`` in x): ``left`` for
    x < 0, ``right`` for x > 0."""
    import nibabel

    n = 30
    centres = -1.5 + 0.1 * (np.arange(n) + 0.5)
    data = np.where(centres[:, None, None] < 0, left, right) * np.ones((n, n, 1))
    if nan_corner:
        data[0, 0, 0] = np.nan   # outside the disc: an invalid CEST voxel
    affine = np.diag([0.1, 0.1, 1.0, 1.0])
    affine[:2, 3] = -1.5 + 0.05
    affine[0, 3] += shift_mm
    nibabel.save(nibabel.Nifti1Image(data, affine), str(path))


@pytest.mark.parametrize("ranks", [1, 2])
def test_ph_map_drives_ph_sensitive_release(tmp_path, ranks):
    """[release] ph_map (NIfTI, as written by hybrid maps): a uniform map equals the uniform
    [release] ph; an acidic half releases more free drug than the neutral half."""
    _write_map(tmp_path / "uniform.nii.gz", 6.6, 6.6, nan_corner=True)
    _write_map(tmp_path / "halves.nii.gz", 6.4, 7.4)
    _, uniform, _ = _image_run(tmp_path, "uniform", "ph_sensitive", "[release]\nph = 6.6", ranks)
    _, mapped, _ = _image_run(tmp_path, "mapped", "ph_sensitive", '[release]\nph_map = "uniform.nii.gz"', ranks)
    for name in ("liposomal_drug", "free_drug", "cell_drug"):
        assert np.allclose(mapped[name], uniform[name], rtol=1e-10, atol=1e-14 * uniform[name].max())
    points, halves, _ = _image_run(tmp_path, "halves", "ph_sensitive", '[release]\nph_map = "halves.nii.gz"', ranks)
    left, right = points[:, 0] < -2e-4, points[:, 0] > 2e-4
    assert halves["free_drug"][left].mean() > 2.0 * halves["free_drug"][right].mean()


def test_ktrans_map_scales_surface_to_volume(tmp_path):
    """[tissue] ktrans_map: a uniform map leaves S/V (and the run) unchanged; Ktrans twice as high
    on the left half puts about twice the liposomes into that half (S/V ~ Ktrans / tumour mean)."""
    _write_map(tmp_path / "flat.nii.gz", 0.2, 0.2)
    _write_map(tmp_path / "halves.nii.gz", 0.4, 0.2)
    _, plain, _ = _image_run(tmp_path, "plain", "liposomal")
    _, flat, summary = _image_run(tmp_path, "flat", "liposomal", '[tissue]\nktrans_map = "flat.nii.gz"')
    assert summary["ktrans"]["mean_tumour_ktrans_per_min"] == pytest.approx(0.2, rel=1e-12)
    assert np.allclose(flat["liposomal_drug"], plain["liposomal_drug"], rtol=1e-10)
    points, halves, _ = _image_run(tmp_path, "halves", "liposomal", '[tissue]\nktrans_map = "halves.nii.gz"')
    left, right = points[:, 0] < -2e-4, points[:, 0] > 2e-4
    ratio = halves["liposomal_drug"][left].mean() / halves["liposomal_drug"][right].mean()
    assert ratio == pytest.approx(2.0, rel=0.05)


@pytest.mark.parametrize("ranks", [1, 2])
def test_ktrans_map_that_misses_the_tumour_is_one_error(tmp_path, ranks):
    """A Ktrans map [1/min] whose affine lies 20 mm off the disc: one error line naming the map and
    the slice instead of a run with the unscaled table S/V and Lp S/V (on 2 ranks too: every rank
    raises, one line is printed, none hangs)."""
    _write_map(tmp_path / "shifted.nii.gz", 0.2, 0.2, shift_mm=20.0)
    config = tmp_path / "shifted.toml"
    config.write_text(IMAGE_CASE.format(formulation="liposomal", extra='[tissue]\nktrans_map = "shifted.nii.gz"'))
    result = run_hybrid("transport", config, "--output", tmp_path / "out", ranks=ranks, timeout=300)
    line = assert_one_error(result, "has no finite value at any tumour cell (slice_index 0)")
    assert "shifted.nii.gz" in line


def test_ktrans_map_keeps_surface_to_volume_finite_where_lp_is_zero(tmp_path):
    """[host] filtration_coefficient = 0 (host Lp S/V 0) with a Ktrans map: the drug S/V [1/m] is the
    table S/V times Ktrans / region mean in every cell, finite (no 0/0 from a ratio of Lp S/V)."""
    import tomllib

    from mpi4py import MPI

    import hybrid._fem_stack  # noqa: F401  (before dolfinx)
    import dolfinx.fem
    from hybrid.commands.transport import _images, _model, build_domain
    from hybrid.forward.image_sampling import sample_image
    from hybrid.io.nifti import read_volume
    from hybrid.mesh import tags

    _write_map(tmp_path / "halves.nii.gz", 0.4, 0.2)
    data = tomllib.loads(IMAGE_CASE.format(formulation="liposomal", extra='[tissue]\nktrans_map = "halves.nii.gz"\n'
                                                                          '[host]\nfiltration_coefficient = 0.0'))
    data["geometry"] |= {"host_thickness": 4.0e-4, "mesh_size": 2.0e-4}
    config = transport_config_from_dict(data, base=tmp_path)
    domain = build_domain(config, MPI.COMM_SELF, lambda message: None, {})
    images = _images(config, domain, lambda message: None)
    model = _model(config, domain, False, images=images)
    space = images["vascular_exchange"].function_space   # DG0
    surface = dolfinx.fem.Function(space)
    surface.interpolate(dolfinx.fem.Expression(model.surface_to_volume, space.element.interpolation_points))
    ktrans = sample_image(domain, *read_volume(tmp_path / "halves.nii.gz"), space="DG0", method="nearest").x.array
    stats = images["stats"]
    for tag, name, table in ((tags.TUMOUR, "tumour", config.tissue.surface_to_volume),
                             (tags.HOST, "host", config.host.vessel_surface_density)):
        cells = space.dofmap.list[domain.cell_tags.find(tag)].ravel()
        assert cells.size and np.isfinite(surface.x.array[cells]).all()
        np.testing.assert_allclose(surface.x.array[cells],
                                   table * ktrans[cells] / stats[f"mean_{name}_ktrans_per_min"], rtol=1e-12)


EVERY_SECTION = """
[geometry]
shape = "disc"
tumour_radius = 1.0e-3
host_thickness = 5.0e-4
mesh_size = 1.0e-4
[host]
hydraulic_conductivity = 1.0e-14
vessel_surface_density = 5000.0
[flow]
model = "darcy"
boundary = "no_flux"
far_field_pressure = 10.0
[tumour]
hydraulic_conductivity = 2.0e-14
[drug]
formulation = "ph_sensitive"
[free_drug]
diffusivity = 1.0e-10
vessel_permeability = 2.0e-6
reflection = 0.1
uptake = "el_kareh_secomb"
uptake_rate = 0.01
albumin_binding = "kinetic"
association_rate = 0.5
dissociation_rate = 0.2
bound_diffusivity = 5.0e-12
bound_vessel_permeability = 1.0e-8
[liposome]
diffusivity = 2.0e-12
vessel_permeability = 1.0e-8
reflection = 0.5
hindrance = 0.4
clearance = 1.0e-6
[release]
ph = 6.8
temperature = 311.0
transit_time = 4.0
ph_map = "maps/ph.nii.gz"
[tissue]
interstitial_fraction = 0.4
surface_to_volume = 1.0e4
cell_density = 5.0e14
ktrans_map = "maps/Ktrans.nii.gz"
[plasma]
model = "dose"
free_concentration = 0.0
liposomal_concentration = 0.0
dose = 50.0
dose_unit = "mg/m^2"
infusion_duration = 1800.0
liposome_half_life = 1.0e5
albumin_bound_fraction = 0.7
[time]
end = 3600.0
step = 60.0
order = 2
output_interval = 600.0
adaptive = false
tolerance = 1e-4
[heating]
target_temperature = 315.15
start = 60.0
end = 1800.0
max_power = 2.0e6
boundary = "dirichlet"
[exposure]
lethal_amount_per_cell = 1.0e-19
kill_coefficient = 1.0e19
profile_bin_width = 5.0e-6
distal_distance = 40.0e-6
[radiation]
dose_Gy = 10.0
reference_dose = 20.0
hydraulic_conductivity = 1.5
filtration_coefficient = 0.9
vascular_pressure = 0.8
vessel_permeability = 1.2
cell_density = 0.7
[solver]
petsc_options = {ksp_type = "gmres", ksp_rtol = 1e-9}
[output]
directory = "../results/every"
"""


@pytest.mark.parametrize("text", [EXAMPLE.read_text(), EVERY_SECTION], ids=["krogh_example", "every_section"])
def test_transport_toml_keys_are_config_fields(tmp_path, text):
    """Configuration rule (tests/config_keys.py): [section] key is config.section.key (every section
    of the schema), paths relative to the TOML file."""
    import tomllib

    from config_keys import assert_keys_are_fields
    from hybrid.config.transport import load_transport_config

    path = tmp_path / "case" / "transport.toml"
    path.parent.mkdir()
    path.write_text(text)
    config = load_transport_config(path)
    document = tomllib.loads(text)
    assert_keys_are_fields(config, document, path)
    if "radiation" in document:   # every section of the schema is in this document
        assert {name for name in vars(config) if getattr(config, name) is not None} - {"source"} == set(document)
        assert config.radiation.factors(10.0)["cell_density"] == pytest.approx(0.7 ** 0.5, rel=1e-12)


REGIONS_CASE = """
[geometry]
shape = "{shape}"
tumour_radius = 1.0e-3
mesh_size = {mesh_size}
{host}
[flow]
model = "{flow}"
[drug]
formulation = "free"
[plasma]
model = "constant"
free_concentration = 1.0e-3
[time]
end = 60.0
step = 30.0
[output]
directory = "out"
"""


def _regions_run(tmp_path, shape: str, flow: str, host_surface_density: float | None, ranks: int = 1,
                 mesh_size: float = 1.0e-4):
    """``hybrid transport`` of free drug from a constant plasma on a 1 mm ``shape`` tumour, in a
    1 mm host shell with S/V ``host_surface_density`` [1/m] (None: no host); returns the nodes,
    the final fields and the summary."""
    from hybrid.io.fields import read_point_data

    name = f"{shape}_{flow}_{host_surface_density}_{ranks}"
    host = ("" if host_surface_density is None else
            f"host_thickness = 1.0e-3\n[host]\nvessel_surface_density = {host_surface_density}")
    config = tmp_path / f"{name}.toml"
    config.write_text(REGIONS_CASE.format(shape=shape, mesh_size=mesh_size, host=host, flow=flow))
    result = run_hybrid("transport", config, "--output", tmp_path / name, ranks=ranks, timeout=300)
    assert result.returncode == 0, result.stderr
    points, _, fields = read_point_data(tmp_path / name / "transport.xdmf")
    return points, fields, json.loads((tmp_path / name / "summary.json").read_text())


def compartment_free_drug(surface_to_volume: float, steps: int = 2, dt: float = 30.0) -> float:
    """Free drug [mol/m^3] of a well-mixed tissue compartment (no gradients) after ``steps``
    backward-Euler steps of ``dt`` [s] from zero: exchange P S/V (c_p - C_F/phi) with a constant
    plasma c_p = 1e-3 mol/m^3 and linear uptake k C_F (table P_F, phi_T, k_up; a well-mixed
    compartment dC/dt = k_in c_p - k_out C with a constant input, discretised as the solver does)."""
    phi, k, P, c_p = default("phi_T"), default("k_up"), default("P_F"), 1.0e-3
    ps, free = P * surface_to_volume, 0.0
    for _ in range(steps):
        free = (free + dt * ps * c_p) / (1.0 + dt * (ps / phi + k))
    return free


@pytest.mark.parametrize("ranks", [1, 2])
def test_tumour_in_host_uses_the_host_coefficients(tmp_path, ranks):
    """A 2-D disc in a host shell (issue 8 + [host]): far from the interface the free drug follows
    the 0-D backward-Euler exchange/uptake balance of its own region's S/V (tumour: table SV_T,
    host: [host] vessel_surface_density), the IFP of each region is the two-region Baxter-Jain
    closed form (host: table normal-tissue values with lymphatics), exposure is reported per region
    and the mass balance holds to solver tolerance."""
    from dataclasses import replace

    from hybrid.problems.ifp import OuterBoundary, TissueProperties, closed_form_pressure

    points, fields, summary = _regions_run(tmp_path, "disc", "none", 5000.0, ranks)
    r = np.linalg.norm(points[:, :2], axis=1)
    tumour, host = compartment_free_drug(default("SV_T")), compartment_free_drug(5000.0)
    assert tumour / host > 1.5   # the check tells the regions apart
    assert np.allclose(fields["free_drug"][r < 0.4e-3], tumour, rtol=1e-3, atol=0)
    assert np.allclose(fields["free_drug"][r > 1.6e-3], host, rtol=1e-3, atol=0)
    assert abs(summary["mass_balance"]["final_balance_error_relative"]) < 1e-10
    assert summary["exposure"]["tumour_volume"] == pytest.approx(np.pi * 1e-6, rel=0.01)
    assert summary["exposure_host"]["host_volume"] == pytest.approx(np.pi * 3e-6, rel=0.01)
    assert summary["exposure"]["mean_auc_free_drug_mol_s_m3"] > 1.3 * summary["exposure_host"]["mean_auc_free_drug_mol_s_m3"]

    _, _, summary = _regions_run(tmp_path, "disc", "darcy", 5000.0, ranks)
    host_properties = replace(TissueProperties.defaults("host"), vessel_surface_density=5000.0)
    exact = closed_form_pressure(2, 1e-3, TissueProperties.defaults("tumour"), OuterBoundary(), host_properties, 1e-3)
    radii = np.linspace(0.0, 2e-3, 200001)
    weight = radii * exact.pressure(radii)
    inside = radii <= 1e-3
    mean = lambda mask: np.trapezoid(weight[mask], radii[mask]) / np.trapezoid(radii[mask], radii[mask])
    assert summary["ifp"]["mean_tumour_Pa"] == pytest.approx(mean(inside), rel=0.005)   # measured 3e-4
    assert summary["ifp"]["mean_host_Pa"] == pytest.approx(mean(~inside), rel=0.005)    # measured 2e-3
    assert abs(summary["mass_balance"]["final_balance_error_relative"]) < 1e-10
    assert summary["mass_balance"]["max_step_residual_relative"] < 1e-10


def _slab_run(tmp_path, flow: str, host: bool):
    """The slab case, in a host with twice the tumour's S/V: nodes' x [m], fields, summary."""
    points, fields, summary = _regions_run(tmp_path, "slab", flow, 4.0e4 if host else None, mesh_size=5.0e-5)
    return points[:, 0], fields, summary


@pytest.mark.parametrize("host", [False, True], ids=["alone", "in_host"])
def test_slab_transport_is_the_compartment_balance_per_region(tmp_path, host):
    """1-D slab |x| < 1 mm, no flow: the free drug is the well-mixed backward-Euler balance of each
    region's S/V (alone: at every node; in a host shell with twice the tumour's S/V: away from the
    interface), and each region's peak cell drug is the largest over its own nodes (the host's is
    the larger here, so a tumour peak taken over every node would report the host's)."""
    x, fields, summary = _slab_run(tmp_path, "none", host)
    tumour = compartment_free_drug(default("SV_T"))
    assert abs(summary["mass_balance"]["final_balance_error_relative"]) < 1e-10
    assert summary["exposure"]["tumour_volume"] == pytest.approx(2e-3, rel=1e-12)
    inside = np.abs(x) <= 1e-3 * (1 + 1e-9)
    peak = fields["peak_cell_drug"]
    assert summary["exposure"]["peak_cell_drug_max_mol_m3"] == pytest.approx(peak[inside].max(), rel=1e-6)
    if not host:
        assert np.allclose(fields["free_drug"], tumour, rtol=1e-10, atol=0)
        assert "exposure_host" not in summary
        return
    host_value = compartment_free_drug(4.0e4)
    assert host_value / tumour > 1.05   # the check tells the regions apart
    assert np.allclose(fields["free_drug"][np.abs(x) < 0.6e-3], tumour, rtol=1e-3, atol=0)
    assert np.allclose(fields["free_drug"][np.abs(x) > 1.4e-3], host_value, rtol=1e-3, atol=0)
    assert summary["exposure_host"]["host_volume"] == pytest.approx(2e-3, rel=1e-12)
    outside = np.abs(x) >= 1e-3 * (1 - 1e-9)
    host_peak = summary["exposure_host"]["peak_cell_drug_max_mol_m3"]
    assert host_peak == pytest.approx(peak[outside].max(), rel=1e-6)
    assert host_peak > 1.02 * summary["exposure"]["peak_cell_drug_max_mol_m3"]   # measured 1.046


@pytest.mark.parametrize("host", [False, True], ids=["alone", "in_host"])
def test_slab_transport_with_darcy_flow(tmp_path, host):
    """1-D slab with Darcy flow (outflow through the end points, the facets FFCx's vertex rule could
    not integrate): the mean IFP of each region is the Baxter-Jain slab closed form
    (hybrid.problems.exact), drug leaves through the ends, and the mass balance holds to solver
    tolerance."""
    from dataclasses import replace

    from hybrid.problems.ifp import OuterBoundary, TissueProperties, closed_form_pressure

    x, fields, summary = _slab_run(tmp_path, "darcy", host)
    host_properties = replace(TissueProperties.defaults("host"), vessel_surface_density=4.0e4) if host else None
    exact = closed_form_pressure(1, 1e-3, TissueProperties.defaults("tumour"), OuterBoundary(), host_properties,
                                 1e-3 if host else 0.0)
    grid = np.linspace(0.0, 2e-3 if host else 1e-3, 200001)
    inside = grid <= 1e-3
    mean = lambda mask: np.trapezoid(exact.pressure(grid[mask]), grid[mask]) / (grid[mask][-1] - grid[mask][0])
    if host:
        assert summary["ifp"]["mean_tumour_Pa"] == pytest.approx(mean(inside), rel=0.005)
        assert summary["ifp"]["mean_host_Pa"] == pytest.approx(mean(~inside), rel=0.005)
    else:
        assert summary["ifp"]["mean_Pa"] == pytest.approx(mean(inside), rel=0.005)
    balance = summary["mass_balance"]
    assert balance["left_through_boundary"] > 0.0
    assert abs(balance["final_balance_error_relative"]) < 1e-10
    assert balance["max_step_residual_relative"] < 1e-10
    assert fields["free_drug"].min() >= 0.0
