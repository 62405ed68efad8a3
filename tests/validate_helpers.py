"""``hybrid validate`` of a finished ``hybrid invert`` run with chosen estimates, shared by the
release and coupled CLI tests (tests/test_validate_cli.py, tests/test_coupled_cli.py)."""

import json
import shutil
import tomllib
from pathlib import Path

from cli_helpers import run_hybrid
from config_keys import assert_keys_are_fields
from hybrid.config.crossval import load_crossval_config

VALIDATE = """
[inversion]
config = "invert.toml"
directory = "{inversion}"
[output]
directory = "unused"
"""
"""A validate configuration of ``directory / "invert.toml"``'s run copied into ``{inversion}``."""


def validate_with_estimates(directory: Path, estimates: dict | None, name: str, ranks: int = 1) -> dict:
    """Validate the run in ``directory / "inverted"`` (of ``directory / "invert.toml"``) with its
    inversion.json estimates set to ``estimates`` (name -> value [SI]; None: as trained), on
    ``ranks`` ranks, into ``directory / f"{name}_{ranks}_out"``; returns validation.json."""
    inversion = directory / f"inversion_{name}"
    if not inversion.exists():
        shutil.copytree(directory / "inverted", inversion)
        path = inversion / "inversion.json"
        summary = json.loads(path.read_text())
        for key, value in (estimates or {}).items():
            summary["estimates"][key]["estimate"] = value
        path.write_text(json.dumps(summary))
    config = directory / f"{name}.toml"
    config.write_text(VALIDATE.format(inversion=inversion.name))
    assert_keys_are_fields(load_crossval_config(config), tomllib.loads(config.read_text()), config)
    out = directory / f"{name}_{ranks}_out"
    result = run_hybrid("validate", config, "--output", out, ranks=ranks, timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads((out / "validation.json").read_text())
