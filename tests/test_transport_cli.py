"""``hybrid transport`` on the Krogh verification configuration of issue 8 (coarser mesh, shorter
time): transport.xdmf holds the named species at the final time, summary.json the mass balance
and the closed-form comparison. Serially and under ``mpirun -n 2`` (subprocesses)."""

import json
from pathlib import Path

import pytest

from cli_helpers import assert_one_error, run_hybrid

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
    assert set(fields) == {"liposomal_drug", "free_drug", "cell_drug"}
    assert fields["free_drug"].min() >= 0 and fields["free_drug"].max() > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["fields"]["free_drug"] == "mol/m^3 of tissue"
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
    ("diffusivity = 1.2e-10          # m^2/s\n", "", "[free_drug] missing required key 'diffusivity'"),
    ('formulation = "free"', 'formulation = "magic"', "[drug] formulation must be one of"),
    ("uptake_rate = 0.02", "uptake_rate = -0.02", "[free_drug] uptake_rate must be >= 0"),
    ("step = 10.0", "step = 7200.0", "[time] step (7200.0 s) must not exceed end"),
    ('model = "none"', 'model = "stokes"', "[flow] model must be none or darcy"),
])
def test_transport_config_errors_are_one_line(tmp_path, old, new, message):
    text = EXAMPLE.read_text()
    assert old in text
    config = tmp_path / "bad.toml"
    config.write_text(text.replace(old, new))
    result = run_hybrid("transport", config, "--output", tmp_path / "out", timeout=120)
    assert_one_error(result, message)
    assert not (tmp_path / "out").exists()
