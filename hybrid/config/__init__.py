"""Run configuration: TOML -> frozen dataclasses, one schema module per command (``forward``,
``maps``; ``geometry`` is shared) and one module of shared validators (``validate``). Unknown keys,
missing keys and impossible values raise :class:`ConfigError` with one line naming section and key."""

from hybrid.config.forward import ForwardConfig, SolverConfig, forward_config_from_dict, load_forward_config
from hybrid.config.geometry import PARTITIONERS, SHAPES, GeometryConfig
from hybrid.config.maps import CestMapsConfig, DceMapsConfig, MapsConfig, load_maps_config, maps_config_from_dict
from hybrid.config.validate import REQUIRED, ConfigError

# The old private names, for hybrid/config_transport.py and hybrid/commands/compare.py only; they go
# when the transport schema moves into this package (it then imports hybrid.config.validate).
from hybrid.config.forward import tissue_from_table as _tissue  # noqa: E402
from hybrid.config.geometry import geometry_from_table as _geometry  # noqa: E402
from hybrid.config.validate import check_petsc_options as _petsc_options  # noqa: E402
from hybrid.config.validate import number as _number  # noqa: E402
from hybrid.config.validate import read_toml as _read_toml  # noqa: E402
from hybrid.config.validate import relative_path as _path  # noqa: E402
from hybrid.config.validate import take_keys as _take  # noqa: E402

__all__ = ["ConfigError", "REQUIRED", "SHAPES", "PARTITIONERS", "GeometryConfig", "SolverConfig", "ForwardConfig",
           "load_forward_config", "forward_config_from_dict", "DceMapsConfig", "CestMapsConfig", "MapsConfig",
           "load_maps_config", "maps_config_from_dict"]
