"""Forward configuration: defaults from the parameter table, derived refinement, clear errors."""

import pytest

from hybrid.config import ConfigError, forward_config_from_dict, load_forward_config
from hybrid.problems.ifp import TissueProperties

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
    assert config.boundary.kind == "dirichlet" and config.boundary.pressure == 0.0


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
    (with_("solver", degree=4), "degree must be 1, 2 or 3"),
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
    assert config.ktrans_map == tmp_path / "maps" / "Ktrans.nii.gz"
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
    (with_("solver", degree=True), r"degree must be 1, 2 or 3 \(an integer\), got True"),
    (with_("solver", degree=2.0), r"degree must be 1, 2 or 3 \(an integer\), got 2.0"),
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
