"""``hybrid compare`` (issue 8 point 7) on a small Krogh case with the IFP flux: eight scenarios on
one mesh, the table (CSV + JSON), the answer and the figures; radiation lowers the IFP by the
table's 31 % and changes delivery only through it. Serially and under ``mpirun -n 2``."""

import csv
import json
import tomllib

import numpy as np
import pytest

from cli_helpers import assert_one_error, run_hybrid

CASE = """
[geometry]
shape = "krogh"
vessel_radius = 10.0e-6
tissue_radius = 120.0e-6
mesh_size = 8.0e-6
[flow]
model = "darcy"
[free_drug]
uptake = "el_kareh_secomb"
[plasma]
model = "dose"
dose = 1.0
dose_unit = "mg/kg"
[time]
end = 600.0
step = 120.0
[compare]
radiation_dose_Gy = 28.8
[output]
directory = "out"
"""

SCENARIOS = ["free", "free_radiation", "liposomal", "liposomal_radiation", "ph_sensitive",
             "ph_sensitive_radiation", "thermosensitive", "thermosensitive_radiation"]


@pytest.mark.parametrize("ranks", [1, 2])
def test_compare_writes_table_answer_and_figures(tmp_path, ranks):
    config = tmp_path / "compare.toml"
    config.write_text(CASE)
    out = tmp_path / "out"
    result = run_hybrid("compare", config, "--output", out, ranks=ranks, timeout=600)
    assert result.returncode == 0, result.stderr
    with (out / "compare.csv").open() as stream:
        rows = {row["scenario"]: row for row in csv.DictReader(stream)}
    assert list(rows) == SCENARIOS
    document = json.loads((out / "compare.json").read_text())
    assert document["config"] == tomllib.loads(CASE)   # the compare TOML as read, not a scenario's
    assert [row["scenario"] for row in document["rows"]] == SCENARIOS
    for name in SCENARIOS:
        assert (out / name / "transport.xdmf").is_file()
        assert abs(float(rows[name]["balance_error_relative"])) < 1e-10
        assert 0.0 <= float(rows[name]["lethal_fraction"]) <= 1.0
    for figure in ("lethal_fraction.png", "exposure_maps.png", "penetration_profiles.png"):
        assert (out / figure).stat().st_size > 10_000
    for formulation in ("free", "liposomal", "ph_sensitive", "thermosensitive"):
        plain, treated = rows[formulation], rows[formulation + "_radiation"]
        # the IFP scales with p_e on this mesh (p = 0 outside): 31 % lower at the reference dose
        assert float(treated["ifp_max_Pa"]) / float(plain["ifp_max_Pa"]) == pytest.approx(0.69, rel=1e-6)
    assert float(rows["thermosensitive"]["cem43_max_min"]) > 0 and rows["free"]["cem43_max_min"] == ""
    answer = document["answer"]
    assert answer["distal_distance_m"] == 50e-6
    assert set(answer["triggered_release_vs_free_drug"]) == {"ph_sensitive", "thermosensitive"}
    assert set(answer["radiation_without_vs_with"]) == {"free", "liposomal", "ph_sensitive", "thermosensitive"}
    # one mesh for the eight runs, one IFP solve without and one with radiation
    assert result.stdout.count("meshing krogh") == 1 and document["mesh_s"] > 0
    assert document["ifp_solves"] == 2
    for name in SCENARIOS:
        assert "mesh_s" not in json.loads((out / name / "summary.json").read_text())["stages_s"]
    _assert_scenarios_equal_separate_runs(tmp_path, config, out, ranks, ["ph_sensitive", "thermosensitive_radiation"])


def _assert_scenarios_equal_separate_runs(tmp_path, config, out, ranks, names):
    """The compare outputs of ``names`` equal a ``hybrid transport`` run of each scenario's
    configuration on its own (its own mesh and IFP solve), as compare ran them before it shared them."""
    from hybrid.config.compare import load_compare_config
    from hybrid.io.fields import read_point_data
    from hybrid.io.toml import write_toml

    scenarios = dict(load_compare_config(config))
    for name in names:
        alone = tmp_path / f"alone_{name}"
        result = run_hybrid("transport", write_toml(tmp_path / f"{name}.toml", scenarios[name].source), "--output",
                            alone, ranks=ranks, timeout=300)
        assert result.returncode == 0, result.stderr
        shared, separate = (json.loads((folder / "summary.json").read_text()) for folder in (out / name, alone))
        for key in ("exposure", "final_amounts", "ifp", "heating", "minimum_concentration_mol_m3"):
            numbers, expected = _leaves(shared.get(key)), _leaves(separate.get(key))
            assert numbers.keys() == expected.keys(), (name, key)
            for leaf, value in expected.items():
                close = pytest.approx(value, rel=1e-9) if isinstance(value, float) else value
                assert numbers[leaf] == close, (name, key, leaf)
        _, _, fields = read_point_data(out / name / "transport.xdmf")
        _, _, reference = read_point_data(alone / "transport.xdmf")
        for field, values in reference.items():
            assert np.allclose(fields[field], values, rtol=1e-9, atol=1e-12 * np.abs(values).max()), (name, field)


def test_compare_config_error_names_the_scenario(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text(CASE.replace("step = 120.0", "step = 120.0\nadaptive = true"))
    result = run_hybrid("compare", config, "--output", tmp_path / "out", timeout=120)
    assert_one_error(result, "(scenario thermosensitive)")
    assert not (tmp_path / "out").exists()


def test_compare_scenario_configurations():
    """Eight configurations: formulation per scenario, [heating] only for thermosensitive (42 C for
    the run when absent), the [radiation] factors kept and its dose set in the irradiated runs only."""
    from hybrid.config.compare import compare_configs

    data = tomllib.loads(CASE)
    data["radiation"] = {"dose_Gy": 5.0, "hydraulic_conductivity": 2.0}
    data["liposome"] = {"hindrance": 0.3}
    scenarios = dict(compare_configs(data))
    assert list(scenarios) == SCENARIOS
    for name, config in scenarios.items():
        assert config.drug.formulation == name.removesuffix("_radiation")
        assert (config.heating is not None) == name.startswith("thermosensitive")
        if name.endswith("_radiation"):
            assert config.radiation.dose_Gy == 28.8
            assert config.radiation.hydraulic_conductivity == 2.0
        else:
            assert config.radiation is None
        assert (config.liposome is None) == name.startswith("free")
    heating = scenarios["thermosensitive"].heating
    assert heating.target_temperature == pytest.approx(315.15) and heating.end == 600.0


@pytest.mark.parametrize("source", ["example", "radiation_factors"])
def test_compare_toml_keys_are_scenario_config_fields(tmp_path, source):
    """Configuration rule (tests/config_keys.py): every scenario's configuration has its TOML keys
    as fields (the sections every scenario shares, and the scenario's own [drug], [heating],
    [radiation]); [compare] radiation_dose_Gy is the irradiated scenarios' config.radiation.dose_Gy."""
    from pathlib import Path

    from config_keys import assert_keys_are_fields
    from hybrid.config.compare import load_compare_config

    example = Path(__file__).resolve().parents[1] / "examples" / "compare_krogh.toml"
    text = example.read_text() if source == "example" else CASE + "[radiation]\nhydraulic_conductivity = 2.0\n"
    path = tmp_path / "case" / "compare.toml"
    path.parent.mkdir()
    path.write_text(text)
    document = tomllib.loads(text)
    shared = {key: value for key, value in document.items() if key not in ("compare", "drug", "heating", "radiation")}
    scenarios = load_compare_config(path)
    assert [name for name, _ in scenarios] == SCENARIOS
    for name, config in scenarios:
        assert_keys_are_fields(config, config.source, path)
        assert_keys_are_fields(config, shared, path)
        if name.startswith("thermosensitive") and "heating" in document:
            assert_keys_are_fields(config, {"heating": document["heating"]}, path)
        if name.endswith("_radiation"):
            assert config.radiation.dose_Gy == document["compare"]["radiation_dose_Gy"]
            assert_keys_are_fields(config, {"radiation": document.get("radiation", {})}, path)


def _leaves(document, path: str = "") -> dict:
    """The scalar leaves of a JSON document by path (lists by index)."""
    if isinstance(document, dict):
        return {leaf: value for key, item in document.items() for leaf, value in _leaves(item, f"{path}/{key}").items()}
    if isinstance(document, list):
        return {leaf: value for index, item in enumerate(document) for leaf, value in _leaves(item, f"{path}/{index}").items()}
    return {path: document}
