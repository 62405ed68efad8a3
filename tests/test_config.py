"""Forward configuration: defaults from the parameter table, derived refinement, clear errors;
every TOML ``[section] key`` is the field ``config.section.key``."""

import tomllib
from pathlib import Path

import pytest

from config_keys import assert_keys_are_fields
from hybrid.config import ConfigError, forward_config_from_dict, load_forward_config
from hybrid.problems.ifp import OuterBoundary, TissueProperties

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

BASE = {"geometry": {"shape": "sphere", "mesh_size": 1.5e-4}, "output": {"directory": "out"}}


def with_(section, **values):
    document = {k: dict(v) for k, v in BASE.items()}
    document.setdefault(section, {}).update(values)
    return document


def test_defaults_come_from_the_parameter_table():
    config = forward_config_from_dict(BASE)
    assert config.tumour == TissueProperties.defaults("tumour")
    assert config.host is None
    assert config.geometry.tumour_radius == 4e-3
    assert config.boundary.type == "dirichlet" and config.boundary.far_field_pressure == 0.0
    assert config.boundary.outer_boundary() == OuterBoundary("dirichlet", 0.0)


def test_example_keys_are_fields():
    path = EXAMPLES / "ifp_sphere.toml"
    assert_keys_are_fields(load_forward_config(path), tomllib.loads(path.read_text()), path)


FULL_FORWARD = """
[geometry]
shape = "mask"
mask = "images/tumour_mask.nii.gz"
slice_index = 1
field_of_view_host = true
mesh_size = 1e-4
surface_mesh_size = 5e-5
refinement_width = 4e-4
refinements = 1
partitioner = "kahip"
[tumour]
hydraulic_conductivity = 3.1e-14
vessel_surface_density = 2.0e4
[host]
hydraulic_conductivity = 6.4e-14
[images]
ktrans = "maps/Ktrans.nii.gz"
[boundary]
type = "robin"
far_field_pressure = 150.0
robin_coefficient = 1e-9
[solver]
degree = 2
petsc_options = { ksp_rtol = 1e-10, pc_type = "hypre" }
[output]
directory = "../results/full"
velocity = false
"""


def test_demo_configuration_keys_are_fields():
    """The built-in ``hybrid demo`` document obeys the same rule (paths relative to its base, ".")."""
    from hybrid.commands.demo import DEMO_CONFIG

    assert_keys_are_fields(forward_config_from_dict(DEMO_CONFIG), DEMO_CONFIG, Path("demo.toml"))


def test_every_forward_key_is_a_field(tmp_path):
    """[images] ktrans, [boundary] type/far_field_pressure/robin_coefficient, [solver], [host] and
    [output] velocity are fields at the same place, paths joined to the TOML folder; the
    boundary gives the physics record OuterBoundary."""
    path = tmp_path / "runs" / "full.toml"
    path.parent.mkdir()
    path.write_text(FULL_FORWARD)
    config = load_forward_config(path)
    assert_keys_are_fields(config, tomllib.loads(FULL_FORWARD), path)
    assert config.boundary.outer_boundary() == OuterBoundary("robin", 150.0, 1e-9)
    assert config.images.ktrans == tmp_path / "runs" / "maps" / "Ktrans.nii.gz"


def test_surface_refinement_derived_from_rim_thickness():
    config = forward_config_from_dict(BASE)
    rim = config.tumour.rim_thickness
    assert config.geometry.surface_mesh_size == pytest.approx(rim / 4)
    assert config.geometry.refinement_width == pytest.approx(2 * rim)
    explicit = forward_config_from_dict(with_("geometry", surface_mesh_size=1e-4, refinement_width=1e-3))
    assert explicit.geometry.surface_mesh_size == 1e-4 and explicit.geometry.refinement_width == 1e-3


def test_host_defaults_when_shell_present():
    config = forward_config_from_dict(with_("geometry", host_thickness=2e-3))
    assert config.host == TissueProperties.defaults("host")


@pytest.mark.parametrize("document, message", [
    (with_("geometry", colour="red"), r"\[geometry\] unknown key\(s\) colour"),
    (with_("tumour", hydraulic_conductivity=-1.0), "hydraulic_conductivity"),
    (with_("tumour", reflection_coefficient=1.5), "reflection_coefficient"),
    (with_("geometry", tumour_radius=0.0), "tumour_radius must be > 0"),
    (with_("geometry", shape="cube"), "shape must be one of"),
    (with_("geometry", mesh_size=1e-2), "mesh_size .* must be smaller than tumour_radius"),
    (with_("host", hydraulic_conductivity=1e-14), "host_thickness = 0"),
    (with_("boundary", type="robin"), "robin_coefficient > 0"),
    (with_("boundary", type="neumann"), r"\[boundary\] type must be dirichlet, robin or no_flux"),
    (with_("boundary", kind="robin"), r"\[boundary\] unknown key\(s\) kind"),
    (with_("images", ktrans_map="k.nii.gz"), r"\[images\] unknown key\(s\) ktrans_map; allowed: ktrans"),
    (with_("solver", degree=4), "degree must be one of 1, 2, 3, got 4"),
    ({"geometry": {"shape": "disc"}, "output": {"directory": "x"}}, "missing required key 'mesh_size'"),
    ({"geometry": {"shape": "disc", "mesh_size": 1e-4}}, "missing required key 'output'"),
    (with_("geometry", mesh_size="fine"), "must be a finite number"),
])
def test_bad_configuration_names_section_and_key(document, message):
    with pytest.raises(ConfigError, match=message):
        forward_config_from_dict(document)


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_forward_config(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[geometry\nshape = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_forward_config(broken)


def test_mask_geometry_and_images_paths_are_relative_to_the_file(tmp_path):
    (tmp_path / "run.toml").write_text('[geometry]\nshape = "mask"\nmask = "m.nii.gz"\nmesh_size = 1e-4\n'
                                       '[images]\nktrans = "maps/Ktrans.nii.gz"\n[output]\ndirectory = "o"\n')
    config = load_forward_config(tmp_path / "run.toml")
    assert config.geometry.mask == tmp_path / "m.nii.gz"
    assert config.images.ktrans == tmp_path / "maps" / "Ktrans.nii.gz"
    assert config.host is None


@pytest.mark.parametrize("geometry, message", [
    ({"shape": "mask", "mesh_size": 1e-4}, 'needs mask = "path'),
    ({"shape": "disc", "mesh_size": 1e-4, "mask": "m.nii.gz"}, 'only used with shape = "mask"'),
    ({"shape": "mask", "mesh_size": 1e-4, "mask": "m.nii.gz", "slice_index": -1}, "slice_index"),
])
def test_mask_geometry_errors(geometry, message):
    with pytest.raises(ConfigError, match=message):
        forward_config_from_dict({"geometry": geometry, "output": {"directory": "o"}})


@pytest.mark.parametrize("document, message", [
    (with_("solver", degree=True), r"\[solver\] degree must be one of 1, 2, 3, got True \(a boolean, not an integer\)"),
    (with_("solver", degree=2.0), r"\[solver\] degree must be one of 1, 2, 3, got 2\.0 \(a float, not an integer\)"),
    (with_("solver", petsc_options={"ksp": {"type": "cg"}}), r"petsc_options.ksp is a table; write PETSc options flat"),
    (with_("solver", petsc_options={"ksp_type": ["cg"]}), r"petsc_options.ksp_type must be a string, number"),
    (with_("solver", petsc_options={"ksp_error_if_not_converged": False}), r"would let a solve that did not converge"),
    (with_("output", directory=""), r"\[output\] directory must be a non-empty path string"),
    (with_("output", directory=123), r"\[output\] directory must be a non-empty path string, got 123"),
    (with_("geometry", shape="vessels", n_vessels=0, mesh_size=2e-5), r"needs n_vessels >= 1"),
])
def test_types_and_values_that_used_to_pass_are_refused(document, message):
    """Issue 7 case 9: degree = true ran as degree 1, directory = "" wrote into the working
    directory, a nested petsc_options table was ignored, n_vessels = 0 gave a traceback."""
    with pytest.raises(ConfigError, match=message):
        forward_config_from_dict(document)


def test_unreadable_configuration_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match=f"{tmp_path}: is a directory"):
        load_forward_config(tmp_path)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(bytes(range(256)))
    with pytest.raises(ConfigError, match=r"binary.toml: not a text \(UTF-8\) TOML file"):
        load_forward_config(binary)


@pytest.mark.parametrize("shifts, message", [
    (4.2, r"\[cest\] shifts_ppm must be a non-empty list of numbers"),
    ([4.2, 4.2], r"\[cest\] shifts_ppm must be two different offsets"),
])
def test_cest_shifts_must_be_two_different_offsets(shifts, message):
    from hybrid.config import maps_config_from_dict

    document = {"cest": {"series": "c.nii.gz", "calibration_ph": [6.5, 7.0], "calibration_ratio": [0.1, 0.3],
                         "shifts_ppm": shifts}, "output": {"directory": "o"}}
    with pytest.raises(ConfigError, match=message):
        maps_config_from_dict(document)


FULL_MAPS = """
[dce]
series = "series/dce.nii.gz"
model = "2cxm"
r1_per_mM_s = 4.0
n_baseline = 12
tr_s = 5e-3
flip_angle_deg = 20.0
aif = "measured"
hematocrit = 0.45
aif_mask = "rois/aif.nii.gz"
blood_t10_s = 1.9
blood_r1_per_mM_s = 3.5
fit_delay = true
[vfa]
series = "series/vfa.nii.gz"
tr_s = 6e-3
[cest]
series = "series/cest.nii.gz"
calibration_ph = [6.2, 6.6, 7.0, 7.4]
calibration_ratio = [-0.4, -0.1, 0.2, 0.4]
calibration_degree = 2
ratio = "st"
shifts_ppm = [4.3, 5.5]
mt = false
hydroxyl = false
endogenous = true
[mask]
path = "rois/mask.nii.gz"
[output]
directory = "../maps"
"""


def _maps_file(tmp_path, text):
    path = tmp_path / "study" / "maps.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def test_every_maps_key_is_a_field(tmp_path):
    """[dce] (with a measured AIF), [vfa] series/tr_s, [cest], [mask] path and [output] are fields
    at the same place; paths are joined to the TOML file's folder."""
    from hybrid.config import load_maps_config

    path = _maps_file(tmp_path, FULL_MAPS)
    config = load_maps_config(path)
    assert_keys_are_fields(config, tomllib.loads(FULL_MAPS), path)
    assert config.vfa.series == tmp_path / "study" / "series" / "vfa.nii.gz"
    assert config.mask.path == tmp_path / "study" / "rois" / "mask.nii.gz"
    assert config.cest.calibration_spectra is None


AUTO_CEST = '[cest]\nseries = "cest.nii.gz"\ncalibration_spectra = "vials/vials.csv"\nratio = "auto"\n' \
            'calibration_degree = "auto"\n[output]\ndirectory = "maps"\n'


def test_cest_calibration_from_spectra_keys(tmp_path):
    """calibration_spectra (relative to the TOML file), ratio = "auto" and calibration_degree = "auto"
    are fields holding the TOML values; the defaults are a given degree-"auto" amplitude ratio."""
    from hybrid.config import load_maps_config

    path = _maps_file(tmp_path, AUTO_CEST)
    config = load_maps_config(path)
    assert_keys_are_fields(config, tomllib.loads(AUTO_CEST), path)
    assert config.cest.calibration_spectra == tmp_path / "study" / "vials" / "vials.csv"
    assert config.cest.calibration_ph is None and config.cest.calibration_ratio is None
    fixed = load_maps_config(_maps_file(tmp_path, AUTO_CEST.replace('ratio = "auto"\ncalibration_degree = "auto"\n',
                                                                     "")))
    assert (fixed.cest.ratio, fixed.cest.calibration_degree) == ("amplitude", "auto")


@pytest.mark.parametrize("cest, message", [
    ('calibration_spectra = "v.csv"\ncalibration_ratio = [0.1, 0.2, 0.3]',
     r"\[cest\] calibration_ratio cannot be combined with calibration_spectra"),
    ('calibration_spectra = "v.csv"\ncalibration_ph = [6.5, 7.0, 7.2]',
     r"\[cest\] calibration_ph cannot be combined with calibration_spectra \(the table's pH column"),
    ('calibration_spectra = "v.csv"\nratio = "auto"\ncalibration_degree = 2',
     r'\[cest\] ratio = "auto" chooses the degree too; remove calibration_degree = 2'),
    ('calibration_ph = [6.5, 7.0, 7.2]\ncalibration_ratio = [0.1, 0.2, 0.3]\nratio = "auto"',
     r'\[cest\] ratio = "auto" needs calibration_spectra = "vials.csv"'),
    ('calibration_ph = [6.5, 7.0, 7.2]', r"\[cest\] missing calibration_ratio: give the calibration vials' pH"),
    ('', r"\[cest\] missing calibration_ph and calibration_ratio"),
    ('calibration_spectra = ""', r"\[cest\] calibration_spectra must be a non-empty path string"),
    ('calibration_spectra = "v.csv"\nratio = "best"',
     r'\[cest\] ratio must be one of "amplitude", "st", "mtrasym", "auto", got \'best\''),
    ('calibration_spectra = "v.csv"\ncalibration_degree = "best"', r"\[cest\] calibration_degree must be an integer"),
])
def test_inconsistent_cest_calibrations_are_refused(tmp_path, cest, message):
    from hybrid.config import load_maps_config

    path = _maps_file(tmp_path, f'[cest]\nseries = "cest.nii.gz"\n{cest}\n[output]\ndirectory = "maps"\n')
    with pytest.raises(ConfigError, match=message):
        load_maps_config(path)
