"""Shared validators of the configuration schemas: each checks one TOML value and raises
:class:`ConfigError` with one line naming the ``[section] key`` and what is allowed."""

from __future__ import annotations

import math
import tomllib
from dataclasses import MISSING, dataclass, fields, replace
from pathlib import Path

__all__ = ["ConfigError", "REQUIRED", "OutputConfig", "read_toml", "spec_of", "take_keys", "number",
           "optional_number", "integer", "choice", "numbers", "relative_path", "output_from_table",
           "with_output_directory", "check_petsc_options"]

REQUIRED = object()
"""Marks a key without a default in a spec (see :func:`take_keys`)."""


class ConfigError(ValueError):
    """A configuration file that cannot describe a run; the message is one actionable line."""


@dataclass(frozen=True)
class OutputConfig:
    """``[output]`` of every command: the folder the run writes into (in the TOML: relative to the
    TOML file; ``--output`` on the command line: relative to the working directory)."""

    directory: Path


def read_toml(path: Path) -> dict:
    """The parsed TOML document at ``path`` (ConfigError if missing, unreadable or malformed)."""
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory; give the configuration file (.toml)")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text (UTF-8) TOML file (byte {exc.start} cannot be decoded)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration file ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def spec_of(schema) -> dict[str, object]:
    """The keys of a dataclass ``schema``: field name -> default, or REQUIRED where it has none."""
    return {f.name: REQUIRED if f.default is MISSING else f.default for f in fields(schema)}


def take_keys(table: dict, section: str, spec: dict[str, object]) -> dict:
    """Keys of ``table`` checked against ``spec`` (name -> default or REQUIRED), defaults filled in."""
    if not isinstance(table, dict):
        raise ConfigError(f"[{section}] must be a table")
    unknown = sorted(set(table) - set(spec))
    if unknown:
        raise ConfigError(f"[{section}] unknown key(s) {', '.join(unknown)}; allowed: {', '.join(spec)}")
    values = {}
    for name, default in spec.items():
        if name in table:
            values[name] = table[name]
        elif default is REQUIRED:
            raise ConfigError(f"[{section}] missing required key '{name}'")
        else:
            values[name] = default
    return values


def number(section: str, name: str, value, *, positive=False, non_negative=False) -> float:
    """``value`` as a finite float, > 0 with ``positive``, >= 0 with ``non_negative``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"[{section}] {name} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ConfigError(f"[{section}] {name} must be > 0, got {value!r}")
    if non_negative and value < 0:
        raise ConfigError(f"[{section}] {name} must be >= 0, got {value!r}")
    return float(value)


def optional_number(section: str, name: str, value, **bounds) -> float | None:
    """None, or ``value`` checked by :func:`number` with ``bounds``."""
    return None if value is None else number(section, name, value, **bounds)


def integer(section: str, name: str, value, minimum: int) -> int:
    """``value`` as an integer >= ``minimum`` (booleans refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"[{section}] {name} must be an integer >= {minimum}, got {value!r}")
    return value


_TOML_TYPES = {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}


def _as_toml(value) -> str:
    """``value`` as written in a TOML file: strings quoted, booleans true/false."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return f'"{value}"' if isinstance(value, str) else str(value)


def choice(section: str, name: str, value, allowed):
    """``value`` if it is one of ``allowed`` (a tuple, or a dict value -> what it means), of the same
    TOML type (so true is not the integer 1, 2.0 not 2)."""
    if any(type(value) is type(option) and value == option for option in allowed):
        return value
    options = [_as_toml(option) + (f" ({allowed[option]})" if isinstance(allowed, dict) else "") for option in allowed]
    options = " or ".join(options) if len(options) == 2 else "one of " + ", ".join(options)
    equal = [option for option in allowed if value == option]   # True == 1, 2.0 == 2: say why refused
    mistyped = f" ({_TOML_TYPES.get(type(value), type(value).__name__)}, not {_TOML_TYPES[type(equal[0])]})" \
        if equal else ""
    raise ConfigError(f"[{section}] {name} must be {options}, got {value!r}{mistyped}")


def numbers(section: str, name: str, value) -> tuple[float, ...]:
    """A non-empty list of finite numbers as a tuple of floats."""
    if not isinstance(value, list) or not value:
        raise ConfigError(f"[{section}] {name} must be a non-empty list of numbers")
    return tuple(number(section, name, v) for v in value)


def relative_path(base: Path, section: str, name: str, value) -> Path:
    """A non-empty path string, taken relative to ``base`` (the TOML file's folder)."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"[{section}] {name} must be a non-empty path string, got {value!r}")
    return base / value


def output_from_table(table, base: Path, schema: type[OutputConfig] = OutputConfig) -> OutputConfig:
    """The validated ``[output]`` table as ``schema`` (OutputConfig or a subclass with more keys,
    each a boolean), its ``directory`` relative to ``base`` (the TOML file's folder)."""
    values = take_keys(table if table is not None else {}, "output", spec_of(schema))
    for name, value in values.items():
        if name != "directory":
            choice("output", name, value, (True, False))
    values["directory"] = relative_path(base, "output", "directory", values["directory"])
    return schema(**values)


def with_output_directory(config, directory: Path):
    """``config`` (any command's, with an ``output`` section) writing into ``directory`` instead."""
    return replace(config, output=replace(config.output, directory=Path(directory)))


def check_petsc_options(options) -> None:
    """ConfigError unless ``options`` is a flat table of PETSc option = string, number or boolean."""
    if not isinstance(options, dict):
        raise ConfigError("[solver] petsc_options must be a table of PETSc option = value")
    for key, value in options.items():
        if isinstance(value, dict):
            raise ConfigError(f"[solver] petsc_options.{key} is a table; write PETSc options flat, without "
                              f"the leading dash, e.g. ksp_type = \"cg\"")
        if not isinstance(value, (str, int, float, bool)):
            raise ConfigError(f"[solver] petsc_options.{key} must be a string, number or boolean, got {value!r}")
        if key.endswith("ksp_error_if_not_converged") and str(value).lower() in ("false", "0", "no"):
            raise ConfigError(f"[solver] petsc_options.{key} = {value!r} would let a solve that did not "
                              "converge pass silently; remove it (raise ksp_max_it or change the solver instead)")
