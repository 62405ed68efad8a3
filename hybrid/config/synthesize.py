"""Schema of ``hybrid synthesize CONFIG.toml``: a transport configuration (hybrid/config/transport.py)
plus an ``[observation]`` section describing the synthetic imaging acquisition::

    [observation]
    times = [-60.0, 600.0, 1800.0, 3600.0]   # s after injection (t <= 0: pre-injection frame)
    voxel_size_mm = 0.5                      # mm (NIfTI affines are in mm), isotropic
    noise = 0.05                             # relative sd: additive Gaussian, sd = noise x peak of the clean series
    seed = 1                                 # seed of numpy's default_rng for the noise
    quantities = ["total_drug", "released_fraction"]   # total_drug required first
    points_per_axis = 3                      # sub-voxel midpoint points per axis (voxel averaging)

The grid covers the mesh's bounding box; 2-D meshes give one slice (nx, ny, 1).

Optional, for pH-sensitive liposomes (``[drug] formulation = "ph_sensitive"`` without ``[release]
ph_map``): a synthetic extracellular pH map, acidic in the core, written to ``truth/ph.nii.gz`` and
used by the FEM as its ``[release] ph_map`` (the known pH map of ``hybrid invert``)::

    [observation.ph_map]
    core = 6.5                               # pH_e at the world origin (tumour centre) [1]
    rim = 7.1                                # pH_e at [geometry] tumour_radius and beyond [1]
    voxel_size_mm = 0.1                      # mm, isotropic grid of the map over the mesh's bounding box

pH_e is linear in the distance r from the origin: core + (rim - core) min(r / tumour_radius, 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hybrid.config.transport import TransportConfig, transport_config_from_dict
from hybrid.config.validate import REQUIRED, ConfigError, integer, number, numbers, read_toml, spec_of, take_keys

__all__ = ["ObservationConfig", "PhMapConfig", "QUANTITIES", "synthesize_config_from_dict", "load_synthesize_config"]

QUANTITIES = {"total_drug": "mol/m^3 of tissue", "released_fraction": "1"}
"""Observable quantities and their units: total tissue drug C_L + C_F + C_I, and the released
fraction (C_F + C_I) / total of the voxel (liposomes whose relaxivity changes on release)."""


@dataclass(frozen=True)
class PhMapConfig:
    """``[observation.ph_map]``: a radial synthetic pH_e map (module docstring); pH [1], voxel size [mm]."""

    core: float
    rim: float
    voxel_size_mm: float = 0.1


@dataclass(frozen=True)
class ObservationConfig:
    """The synthetic acquisition (module docstring); times [s], voxel size [mm]."""

    times: tuple[float, ...]
    voxel_size_mm: float
    noise: float
    seed: int
    quantities: tuple[str, ...]
    points_per_axis: int = 3
    ph_map: PhMapConfig | None = None


def _ph_map(table) -> PhMapConfig:
    values = take_keys(table, "observation.ph_map", spec_of(PhMapConfig))
    ph = {name: number("observation.ph_map", name, values[name]) for name in ("core", "rim")}
    for name, value in ph.items():
        if not 0.0 < value < 14.0:
            raise ConfigError(f"[observation.ph_map] {name} must be a pH between 0 and 14, got {value:g}")
    return PhMapConfig(**ph, voxel_size_mm=number("observation.ph_map", "voxel_size_mm", values["voxel_size_mm"],
                                                  positive=True))


def _observation(table: dict) -> ObservationConfig:
    values = take_keys(table, "observation", {"times": REQUIRED, "voxel_size_mm": REQUIRED, "noise": 0.0,
                                              "seed": REQUIRED, "quantities": ["total_drug"], "points_per_axis": 3,
                                              "ph_map": None})
    times = numbers("observation", "times", values["times"])
    if any(b <= a for a, b in zip(times, times[1:])):
        raise ConfigError(f"[observation] times must be strictly increasing, got {list(times)}")
    quantities = values["quantities"]
    if not isinstance(quantities, list) or not quantities or any(q not in QUANTITIES for q in quantities) \
            or quantities[0] != "total_drug" or len(set(quantities)) != len(quantities):
        raise ConfigError(f"[observation] quantities must be a list starting with \"total_drug\", optionally "
                          f"followed by \"released_fraction\"; got {quantities!r}")
    return ObservationConfig(times=times,
                             voxel_size_mm=number("observation", "voxel_size_mm", values["voxel_size_mm"], positive=True),
                             noise=number("observation", "noise", values["noise"], non_negative=True),
                             seed=integer("observation", "seed", values["seed"], 0),
                             quantities=tuple(quantities),
                             points_per_axis=integer("observation", "points_per_axis", values["points_per_axis"], 1),
                             ph_map=None if values["ph_map"] is None else _ph_map(values["ph_map"]))


def synthesize_config_from_dict(data: dict, origin: str = "<config>",
                                base: Path = Path(".")) -> tuple[TransportConfig, ObservationConfig]:
    """Validate a parsed synthesize TOML: the transport part and ``[observation]``."""
    data = dict(data)
    try:
        if "observation" not in data:
            raise ConfigError("missing [observation] section (times, voxel_size_mm, seed; "
                              "see hybrid/config/synthesize.py)")
        observation = _observation(data.pop("observation"))
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None
    transport = transport_config_from_dict(data, origin, base)
    if observation.ph_map is not None and (transport.drug.formulation != "ph_sensitive"
                                           or transport.release.ph_map is not None):
        raise ConfigError(f"{origin}: [observation.ph_map] is the pH_e map of pH-sensitive liposomes: it needs "
                          "[drug] formulation = \"ph_sensitive\" and no [release] ph_map")
    if observation.times[-1] > transport.time.end + 1e-9 * transport.time.end:
        raise ConfigError(f"{origin}: [observation] times go to {observation.times[-1]:g} s, past [time] end "
                          f"{transport.time.end:g} s")
    return transport, observation


def load_synthesize_config(path: str | Path) -> tuple[TransportConfig, ObservationConfig]:
    """Read and validate a ``hybrid synthesize`` TOML file (paths relative to it)."""
    path = Path(path)
    return synthesize_config_from_dict(read_toml(path), str(path), path.parent)
