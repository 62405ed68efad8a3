"""Schema of ``hybrid compare CONFIG.toml``: a transport configuration plus ``[compare]``,
expanded into the eight scenario configurations (see hybrid/commands/compare.py)."""

from __future__ import annotations

import copy
from pathlib import Path

from hybrid.config.transport import TransportConfig, transport_config_from_dict
from hybrid.config.validate import ConfigError, number, read_toml, take_keys
from hybrid.problems.parameters import default

__all__ = ["SCENARIOS", "compare_configs", "load_compare_config"]

SCENARIOS = ("free", "liposomal", "ph_sensitive", "thermosensitive")
"""Formulations compared; each runs without and with radiation."""

DEFAULT_HEATING = {"target_temperature": 273.15 + 42.0, "start": 0.0, "max_power": 1.0e6}
"""Hyperthermia of the thermosensitive scenarios without ``[heating]`` (end: the end of the run)."""


def compare_configs(data: dict, origin: str = "<config>", base: Path = Path(".")) -> list[tuple[str, TransportConfig]]:
    """The eight scenario configurations (name, config) of a parsed compare TOML (module doc)."""
    data = copy.deepcopy(data)
    try:
        options = take_keys(data.pop("compare", {}), "compare", {"radiation_dose_Gy": default("D_RT_ref")})
        dose = number("compare", "radiation_dose_Gy", options["radiation_dose_Gy"], positive=True)
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None
    radiation = data.pop("radiation", {})   # its response factors are kept, its dose replaced
    heating = data.pop("heating", None)
    plasma = data.setdefault("plasma", {})
    scenarios = []
    for formulation in SCENARIOS:
        variant = copy.deepcopy(data)
        variant.setdefault("drug", {})["formulation"] = formulation
        release = variant.get("release", {})
        if formulation != "ph_sensitive":
            release.pop("ph_map", None)
        if formulation == "free":
            variant.pop("liposome", None)
        if plasma.get("model") == "constant":
            variant["plasma"].pop("liposomal_concentration" if formulation == "free" else "free_concentration", None)
        if formulation == "thermosensitive":
            end = variant.get("time", {}).get("end")
            variant["heating"] = heating or DEFAULT_HEATING | {"end": end}
        for irradiated in (False, True):
            name = formulation + ("_radiation" if irradiated else "")
            run = copy.deepcopy(variant)
            if irradiated:
                run["radiation"] = radiation | {"dose_Gy": dose}
            try:
                scenarios.append((name, transport_config_from_dict(run, origin, base)))
            except ConfigError as exc:
                raise ConfigError(f"{exc} (scenario {name})") from None
    return scenarios


def load_compare_config(path: str | Path) -> list[tuple[str, TransportConfig]]:
    """Read a compare TOML (paths relative to it) into its eight scenario configurations."""
    path = Path(path)
    return compare_configs(read_toml(path), str(path), path.parent)
