"""The configuration rule every schema keeps (README, per command): a TOML ``[section] key`` is the
field ``config.section.key`` of the loaded configuration, and a path in the TOML is relative to the
TOML file. ``assert_keys_are_fields`` checks both for one loaded file."""

from __future__ import annotations

from pathlib import Path


def _check(node, table: dict, where: str, base: Path) -> None:
    for key, value in table.items():
        name = f"{where}.{key}" if where else key
        assert hasattr(node, key), f"TOML key [{where or 'top level'}] {key} is not a field ({type(node).__name__})"
        field = getattr(node, key)
        if isinstance(value, dict) and not isinstance(field, dict):
            _check(field, value, name, base)
        elif isinstance(field, Path):
            assert field == base / value, f"{name}: {field} is not {value!r} relative to the TOML file ({base})"
        elif isinstance(value, list) and isinstance(field, (tuple, list)):
            assert list(field) == value, f"{name}: field {field!r} != TOML {value!r}"
        elif isinstance(value, (bool, int, float, str, dict)):
            assert field == value, f"{name}: field {field!r} != TOML {value!r}"


def assert_keys_are_fields(config, document: dict, toml_path: Path) -> None:
    """Every key of the parsed TOML ``document`` (read from ``toml_path``) is a field of ``config``
    at the same place, holding the TOML value (paths: joined to the TOML file's folder)."""
    _check(config, document, "", Path(toml_path).parent)
