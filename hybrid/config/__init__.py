"""Run configuration: TOML -> frozen dataclasses, one schema module per command (``forward``,
``maps``, ``transport``, ``compare``; ``geometry`` is shared) and one module of shared validators (``validate``). Unknown keys,
missing keys and impossible values raise :class:`ConfigError` with one line naming section and key.
Every TOML ``[section] key`` is the field ``config.section.key``; paths are relative to the TOML file."""

from hybrid.config.forward import (BoundaryConfig, ForwardConfig, ImagesConfig, SolverConfig, forward_config_from_dict,
                                   load_forward_config)
from hybrid.config.geometry import PARTITIONERS, SHAPES, GeometryConfig
from hybrid.config.maps import (CestMapsConfig, DceMapsConfig, MapsConfig, MaskConfig, VfaConfig, load_maps_config,
                                maps_config_from_dict)
from hybrid.config.validate import REQUIRED, ConfigError

__all__ = ["ConfigError", "REQUIRED", "SHAPES", "PARTITIONERS", "GeometryConfig", "SolverConfig", "ImagesConfig",
           "BoundaryConfig", "ForwardConfig", "load_forward_config", "forward_config_from_dict", "DceMapsConfig",
           "VfaConfig", "CestMapsConfig", "MaskConfig", "MapsConfig", "load_maps_config", "maps_config_from_dict"]
