"""Run configuration: TOML -> frozen dataclasses, one schema module per command (``forward``,
``maps``, ``transport``, ``compare``; ``geometry`` is shared) and one module of shared validators (``validate``). Unknown keys,
missing keys and impossible values raise :class:`ConfigError` with one line naming section and key."""

from hybrid.config.forward import ForwardConfig, SolverConfig, forward_config_from_dict, load_forward_config
from hybrid.config.geometry import PARTITIONERS, SHAPES, GeometryConfig
from hybrid.config.maps import CestMapsConfig, DceMapsConfig, MapsConfig, load_maps_config, maps_config_from_dict
from hybrid.config.validate import REQUIRED, ConfigError

__all__ = ["ConfigError", "REQUIRED", "SHAPES", "PARTITIONERS", "GeometryConfig", "SolverConfig", "ForwardConfig",
           "load_forward_config", "forward_config_from_dict", "DceMapsConfig", "CestMapsConfig", "MapsConfig",
           "load_maps_config", "maps_config_from_dict"]
