"""The command line as a user runs it: `hybrid --help`, `hybrid demo`, `mpirun -n 2 hybrid forward`."""

import json

import pytest

from cli_helpers import assert_one_error, run_hybrid

DISC_CONFIG = """\
[geometry]
shape = "disc"
tumour_radius = 2.0e-3
host_thickness = 0.0
mesh_size = 2.0e-4
[tumour]
hydraulic_conductivity = 3.1e-14
filtration_coefficient = 2.1e-11
vessel_surface_density = 2.0e4
vascular_pressure = 2080.0
plasma_oncotic_pressure = 2670.0
interstitial_oncotic_pressure = 2000.0
reflection_coefficient = 0.82
[boundary]
far_field_pressure = 0.0
[output]
directory = "{out}"
"""


def test_help_lists_commands():
    result = run_hybrid("--help")
    assert result.returncode == 0
    for command in ("demo", "forward"):
        assert command in result.stdout


def test_forward_under_mpirun_two_ranks(tmp_path):
    out = tmp_path / "ifp"
    config = tmp_path / "disc.toml"
    config.write_text(DISC_CONFIG.format(out=out))
    result = run_hybrid("forward", config, ranks=2, timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mpi_ranks"] == 2
    for key in ("dofs", "iterations", "solve_time_s", "p_max_Pa", "p_mean_tumour_Pa", "versions",
                "configuration", "wall_time_s"):
        assert key in summary
    assert summary["configuration"]["geometry"]["shape"] == "disc"
    assert summary["closed_form"]["max_error_over_tumour_pe"] < 0.01
    assert (out / "ifp.xdmf").exists() and (out / "ifp.h5").exists()
    from hybrid.io.fields import read_point_data

    points, cells, fields = read_point_data(out / "ifp.xdmf")
    assert set(fields) == {"pressure", "velocity"}
    assert fields["pressure"].shape == (points.shape[0],) and fields["velocity"].shape == (points.shape[0], 3)  # XDMF pads 2-D vectors
    assert fields["pressure"].max() == pytest.approx(summary["p_max_Pa"], rel=1e-9)


@pytest.mark.parametrize("change, message", [
    ('mesh_size = 2.0e-4', "unknown key"),                       # replaced by an unknown key below
    ('hydraulic_conductivity = 3.1e-14', "hydraulic_conductivity"),
    ('tumour_radius = 2.0e-3', "tumour_radius"),
    ('shape = "disc"', "missing required key 'shape'"),
])
def test_bad_config_one_error_line_nonzero_exit_no_hang(tmp_path, change, message):
    replacement = {
        'mesh_size = 2.0e-4': 'mesh_size = 2.0e-4\nmesh_sise = 1.0',
        'hydraulic_conductivity = 3.1e-14': 'hydraulic_conductivity = -3.1e-14',
        'tumour_radius = 2.0e-3': 'tumour_radius = 0.0',
        'shape = "disc"': '',
    }[change]
    config = tmp_path / "bad.toml"
    config.write_text(DISC_CONFIG.format(out=tmp_path / "o").replace(change, replacement))
    result = run_hybrid("forward", config, ranks=2)
    assert_one_error(result, message)


@pytest.mark.parametrize("ranks", [1, 2])
def test_demo_writes_both_parts(tmp_path, ranks):
    result = run_hybrid("demo", "--output", tmp_path, ranks=ranks, timeout=600)
    assert result.returncode == 0, result.stderr
    verification = json.loads((tmp_path / "verification" / "summary.json").read_text())
    assert verification["closed_form"]["max_error_over_tumour_pe"] < 0.01
    assert (tmp_path / "verification" / "ifp_demo.png").stat().st_size > 10_000
    imaging = json.loads((tmp_path / "imaging" / "summary.json").read_text())
    assert imaging["mpi_ranks"] == ranks
    # the phantom's tumour: 1 mm rim at Ktrans 0.6, core 0.2, necrotic centre 0.02 /min (area mean 0.349)
    assert imaging["images"]["mean_tumour_ktrans_per_min"] == pytest.approx(0.349, rel=0.05)
    assert imaging["p_max_Pa"] == pytest.approx(imaging["tumour_effective_pressure_Pa"], rel=0.01)
    for path in ("phantom/maps/Ktrans.nii.gz", "phantom/maps/pH.nii.gz", "phantom/maps/maps.png",
                 "imaging/ifp.xdmf", "imaging/ifp_imaging.png"):
        assert (tmp_path / path).exists(), path
    again = run_hybrid("demo", "--output", tmp_path, ranks=ranks, timeout=120)
    assert_one_error(again, "is not empty (3 entries: imaging, phantom, verification)")


def test_demo_with_relative_output_writes_each_part_in_its_folder(tmp_path):
    """``hybrid demo --output results/demo`` (as ``make demo``) from another working directory: each
    part's files, those README.md lists included, are in ``<out>/<part>/``, nothing nested deeper."""
    result = run_hybrid("demo", "--output", "results/demo", timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "results" / "demo"
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["demo"]
    assert sorted(p.name for p in out.iterdir()) == ["imaging", "phantom", "verification"]
    assert sorted(p.name for p in (out / "verification").iterdir()) == ["ifp.h5", "ifp.xdmf", "ifp_demo.png",
                                                                       "summary.json"]
    assert sorted(p.name for p in (out / "imaging").iterdir()) == ["ifp.h5", "ifp.xdmf", "ifp_imaging.png",
                                                                  "summary.json"]
    for path in ("phantom/maps/Ktrans.nii.gz", "phantom/maps/ve.nii.gz", "phantom/maps/vp.nii.gz",
                 "phantom/maps/T1.nii.gz", "phantom/maps/pH.nii.gz", "phantom/maps/maps.png"):
        assert (out / path).is_file(), path
    assert not [p for p in out.rglob("*") if p.name in ("results", "demo") or p.name.startswith(".hybrid-partial")]
