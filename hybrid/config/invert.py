"""Schema of ``hybrid invert CONFIG.toml``: the inverse PINN (hybrid/inverse/) on image data::

    [data]
    observations = "../results/synthesize_disc/truth/ifp.nii.gz"   # IFP map [Pa] (3-D NIfTI, one slice)
    noise_sd = 0.0                        # Pa, noise sd of the map (reported only)
    points_per_axis = 3                   # voxel averaging: sub-voxel midpoints per axis (as synthesize)
    truth = "../results/synthesize_disc/truth.json"   # optional: a `hybrid synthesize` truth.json

    [problem]
    kind = "ifp"                          # steady Darcy-Starling IFP on a disc (only kind so far)
    radius = 5.0e-3                       # m, tumour disc centred at the world origin; p = far_pressure on its edge
    far_pressure = 0.0                    # Pa
    pressure_scale = 1000.0               # Pa, nondimensionalisation of the pressure
    vascular_exchange = 1.9e-6            # known coefficients [SI] (a number), or an [unknowns.NAME] table
    lymphatic_filtration = 0.0

    [unknowns.conductivity]               # K [m^2/(Pa s)]
    lower = 1e-14
    upper = 1e-11
    initial = 1e-12                       # optional: geometric (log) / arithmetic mean of the bounds
    log = true                            # positive unknown learned in log space

    [training]
    adam_steps = 600
    lbfgs_steps = 200
    collocation_points = 2048
    dtype = "float64"                     # or "float32"
    device = "cpu"                        # or "cuda"
    seed = 0
    ensemble = 1                          # members (seeds seed, seed + 1, ...); >= 2 gives a spread
    checkpoint = "checkpoints/invert_disc.pt"   # optional; `hybrid invert --resume` continues from it

    [output]
    directory = "results/invert_disc"

Coefficients of kind "ifp" (hybrid.inverse.IFPProblem): ``conductivity``, ``vascular_exchange``,
``effective_pressure`` (each known or unknown, required), ``lymphatic_filtration`` and
``lymphatic_pressure`` (default 0). A steady IFP map fixes only K / (Lp S/V) (the rim thickness)
and the plateau: leave one of K and Lp S/V known. ``[data]`` paths are relative to the configuration
file, as are ``checkpoint`` and ``[output] directory``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hybrid.config.validate import (REQUIRED, ConfigError, OutputConfig, integer, number, output_from_table,
                                    read_toml, relative_path, take_keys)

__all__ = ["UnknownConfig", "InvertConfig", "IFP_COEFFICIENTS", "invert_config_from_dict", "load_invert_config"]

IFP_COEFFICIENTS = {"conductivity": "m^2/(Pa s)", "vascular_exchange": "1/(Pa s)", "effective_pressure": "Pa",
                    "lymphatic_filtration": "1/(Pa s)", "lymphatic_pressure": "Pa"}
"""Coefficients of the "ifp" problem and their SI units."""
_IFP_DEFAULTS = {"lymphatic_filtration": 0.0, "lymphatic_pressure": 0.0}


@dataclass(frozen=True)
class UnknownConfig:
    """One scalar unknown: bounds and initial value in SI units; ``log``: learned in log space."""

    lower: float
    upper: float
    initial: float | None
    log: bool


@dataclass(frozen=True)
class InvertConfig:
    observations: Path
    noise_sd: float
    points_per_axis: int
    truth: Path | None
    radius: float
    far_pressure: float
    pressure_scale: float
    known: dict[str, float]
    unknowns: dict[str, UnknownConfig]
    training: dict
    ensemble: int
    checkpoint: Path | None
    output: OutputConfig


def _unknown(name: str, table) -> UnknownConfig:
    section = f"unknowns.{name}"
    values = take_keys(table, section, {"lower": REQUIRED, "upper": REQUIRED, "initial": None, "log": True})
    lower, upper = number(section, "lower", values["lower"]), number(section, "upper", values["upper"])
    log = values["log"]
    if not isinstance(log, bool):
        raise ConfigError(f"[{section}] log must be true or false, got {log!r}")
    if not lower < upper:
        raise ConfigError(f"[{section}] needs lower < upper, got lower = {lower:g}, upper = {upper:g}")
    if log and lower <= 0:
        raise ConfigError(f"[{section}] is learned in log space (log = true): lower must be > 0, got {lower:g}")
    initial = None if values["initial"] is None else number(section, "initial", values["initial"])
    if initial is not None and not lower < initial < upper:
        raise ConfigError(f"[{section}] initial {initial:g} must lie strictly between lower and upper")
    return UnknownConfig(lower, upper, initial, log)


def _training(table) -> tuple[dict, int, str | None]:
    values = take_keys(table, "training", {"adam_steps": 600, "lbfgs_steps": 200, "collocation_points": 2048,
                                           "dtype": "float64", "device": "cpu", "seed": 0, "ensemble": 1,
                                           "checkpoint": None})
    if values["dtype"] not in ("float32", "float64"):
        raise ConfigError(f"[training] dtype must be \"float32\" or \"float64\", got {values['dtype']!r}")
    if values["device"] not in ("cpu", "cuda"):
        raise ConfigError(f"[training] device must be \"cpu\" or \"cuda\", got {values['device']!r}")
    training = {"adam_steps": integer("training", "adam_steps", values["adam_steps"], 0),
                "lbfgs_steps": integer("training", "lbfgs_steps", values["lbfgs_steps"], 0),
                "collocation_points": integer("training", "collocation_points", values["collocation_points"], 1),
                "dtype": values["dtype"], "device": values["device"],
                "seed": integer("training", "seed", values["seed"], 0)}
    return training, integer("training", "ensemble", values["ensemble"], 1), values["checkpoint"]


def invert_config_from_dict(data: dict, origin: str = "<config>", base: Path = Path(".")) -> InvertConfig:
    """Validate a parsed ``hybrid invert`` TOML (module docstring)."""
    try:
        unknown_sections = sorted(set(data) - {"data", "problem", "unknowns", "training", "output"})
        if unknown_sections:
            raise ConfigError(f"unknown section(s) {', '.join(unknown_sections)}; allowed: data, problem, unknowns, "
                              "training, output")
        source = take_keys(data.get("data", {}), "data", {"observations": REQUIRED, "noise_sd": 0.0, "truth": None,
                                                          "points_per_axis": 3})
        problem = take_keys(data.get("problem", {}), "problem",
                            {"kind": REQUIRED, "radius": REQUIRED, "far_pressure": 0.0, "pressure_scale": 1000.0}
                            | {name: None for name in IFP_COEFFICIENTS})
        if problem["kind"] != "ifp":
            raise ConfigError(f"[problem] kind {problem['kind']!r} is not available from the command line: only "
                              "\"ifp\" is (the release problem is built with the Python API, see README)")
        unknowns_table = data.get("unknowns", {})
        if not isinstance(unknowns_table, dict) or not unknowns_table:
            raise ConfigError("declare at least one unknown as an [unknowns.NAME] table")
        extra = sorted(set(unknowns_table) - set(IFP_COEFFICIENTS))
        if extra:
            raise ConfigError(f"unknown(s) {', '.join(extra)} are not coefficients of the ifp problem; "
                              f"choose from {', '.join(IFP_COEFFICIENTS)}")
        unknowns = {name: _unknown(name, table) for name, table in unknowns_table.items()}
        known = {}
        for name in IFP_COEFFICIENTS:
            value = problem[name] if problem[name] is not None else _IFP_DEFAULTS.get(name)
            if name in unknowns:
                if problem[name] is not None:
                    raise ConfigError(f"{name} is both given in [problem] and declared in [unknowns.{name}]")
            elif value is None:
                raise ConfigError(f"[problem] {name} [{IFP_COEFFICIENTS[name]}] is required (a number) unless "
                                  f"declared as [unknowns.{name}]")
            else:
                known[name] = number("problem", name, value)
        training, ensemble, checkpoint = _training(data.get("training", {}))
        return InvertConfig(
            observations=relative_path(base, "data", "observations", source["observations"]),
            noise_sd=number("data", "noise_sd", source["noise_sd"], non_negative=True),
            points_per_axis=integer("data", "points_per_axis", source["points_per_axis"], 1),
            truth=None if source["truth"] is None else relative_path(base, "data", "truth", source["truth"]),
            radius=number("problem", "radius", problem["radius"], positive=True),
            far_pressure=number("problem", "far_pressure", problem["far_pressure"]),
            pressure_scale=number("problem", "pressure_scale", problem["pressure_scale"], positive=True),
            known=known, unknowns=unknowns, training=training, ensemble=ensemble,
            checkpoint=None if checkpoint is None else relative_path(base, "training", "checkpoint", checkpoint),
            output=output_from_table(data.get("output"), base))
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None


def load_invert_config(path: str | Path) -> InvertConfig:
    """Read and validate a ``hybrid invert`` TOML file (paths relative to it)."""
    path = Path(path)
    return invert_config_from_dict(read_toml(path), str(path), path.parent)
