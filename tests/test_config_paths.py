"""Every command's ``[output] directory`` (and every other path in a TOML file) is relative to the
TOML file, not to the working directory; ``--output`` replaces it. Checked on the shipped examples,
loaded from another working directory."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

from hybrid.config import load_forward_config
from hybrid.config.compare import load_compare_config
from hybrid.config.crossval import load_crossval_config
from hybrid.config.invert import load_invert_config
from hybrid.config.synthesize import load_synthesize_config
from hybrid.config.transport import load_transport_config
from hybrid.config.validate import with_output_directory

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
LOADERS = {"ifp_sphere.toml": load_forward_config,
           "transport_krogh.toml": load_transport_config,
           "compare_krogh.toml": lambda path: load_compare_config(path)[0][1],
           "synthesize_disc.toml": lambda path: load_synthesize_config(path)[0],
           "synthesize_release.toml": lambda path: load_synthesize_config(path)[0],
           "synthesize_ph_release.toml": lambda path: load_synthesize_config(path)[0],
           "synthesize_coupled.toml": lambda path: load_synthesize_config(path)[0],
           "invert_disc.toml": load_invert_config,
           "invert_release.toml": load_invert_config,
           "invert_ph_release.toml": load_invert_config,
           "invert_ph_release_warm.toml": load_invert_config,
           "invert_coupled.toml": load_invert_config,
           "validate_disc.toml": load_crossval_config,
           "validate_release.toml": load_crossval_config,
           "validate_ph_release.toml": load_crossval_config,
           "validate_coupled.toml": load_crossval_config}


def test_every_example_is_checked_here():
    assert sorted(path.name for path in EXAMPLES.glob("*.toml")) == sorted(LOADERS)


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_output_directory_is_relative_to_the_toml_file(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = EXAMPLES / name
    config = LOADERS[name](os.path.relpath(path, tmp_path))
    written = tomllib.loads(path.read_text())["output"]["directory"]
    assert config.output.directory.resolve() == (EXAMPLES / written).resolve()
    assert with_output_directory(config, Path("elsewhere")).output.directory == Path("elsewhere")


def test_example_outputs_land_in_the_checkout_results_folder():
    for name, load in LOADERS.items():
        assert load(EXAMPLES / name).output.directory.resolve().parent == EXAMPLES.parent / "results", name


@pytest.mark.parametrize("name", ["invert_disc", "invert_release", "invert_ph_release", "invert_ph_release_warm",
                                  "invert_coupled"])
def test_checkpoint_is_relative_to_the_toml_file(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_invert_config(os.path.relpath(EXAMPLES / f"{name}.toml", tmp_path))
    assert config.training.checkpoint.resolve() == (EXAMPLES.parent / "results" / f"{name}.pt").resolve()


def test_every_example_is_checked():
    assert {path.name for path in EXAMPLES.glob("*.toml")} == set(LOADERS)


@pytest.mark.parametrize("name", sorted(set(LOADERS) - {"compare_krogh.toml"}))
def test_example_keys_are_fields(name):
    """TOML key = field name on every shipped example (compare: tests/test_compare_cli.py, per scenario)."""
    from config_keys import assert_keys_are_fields

    path = EXAMPLES / name
    document = tomllib.loads(path.read_text())
    if name.startswith("synthesize"):
        transport, observation = load_synthesize_config(path)
        assert_keys_are_fields(observation, document.pop("observation"), path)
        assert_keys_are_fields(transport, document, path)
    else:
        assert_keys_are_fields(LOADERS[name](path), document, path)
