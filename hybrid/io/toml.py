"""TOML out (configuration files that hybrid writes for the user, e.g. the phantom's maps.toml).

Reading TOML is :mod:`hybrid.config`'s job (``tomllib``); this writes tables of scalars, strings
and lists of numbers only.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["write_toml"]


def _value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise ValueError(f"cannot write {type(value).__name__} {value!r} as a TOML value")


def write_toml(path: str | Path, document: dict[str, dict], header: str = "") -> Path:
    """Write ``{table: {key: value}}`` as TOML, with ``header`` lines as comments on top."""
    lines = [f"# {line}" for line in header.splitlines()]
    for table, entries in document.items():
        lines += ["", f"[{table}]"] + [f"{key} = {_value(value)}" for key, value in entries.items()]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines).lstrip("\n") + "\n")
    return path
