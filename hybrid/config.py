"""Run configuration: TOML -> frozen dataclasses. Unknown keys, missing keys and impossible
values raise :class:`ConfigError` with one line that names the section and key.

Units are SI throughout (lengths in m, pressures in Pa). Example (``hybrid forward``)::

    [geometry]
    shape = "sphere"             # sphere (3-D) | disc (2-D) | slab (1-D) | krogh | vessels
    tumour_radius = 4.0e-3       # m
    host_thickness = 0.0         # m; 0 = tumour only, outer boundary = tumour surface
    mesh_size = 1.5e-4           # m
    [tumour]
    hydraulic_conductivity = 3.1e-14   # ... any TissueProperties field
    [boundary]
    far_field_pressure = 0.0     # Pa
    [output]
    directory = "results/ifp"
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path

from hybrid.problems.ifp import OuterBoundary, TissueProperties
from hybrid.problems.parameters import PARAMETERS

__all__ = ["ConfigError", "GeometryConfig", "SolverConfig", "ForwardConfig", "load_forward_config",
           "forward_config_from_dict"]

REQUIRED = object()
SHAPES = ("sphere", "disc", "slab", "krogh", "vessels")


class ConfigError(ValueError):
    """A configuration file that cannot describe a run; the message is one actionable line."""


@dataclass(frozen=True)
class GeometryConfig:
    """What to mesh. Lengths in metres. ``None`` sizes are derived (see ``resolved``)."""

    shape: str
    mesh_size: float
    tumour_radius: float = PARAMETERS["R"].default
    host_thickness: float = 0.0
    surface_mesh_size: float | None = None   # default: rim thickness / 4 (P1 max error < 1 %)
    refinement_width: float | None = None    # default: 2 x rim thickness
    vessel_radius: float = PARAMETERS["r_vessel"].default
    tissue_radius: float = PARAMETERS["r_tissue"].default
    patch_size: float = 400e-6
    n_vessels: int = 5
    min_spacing: float = 80e-6
    seed: int = 0

    def resolved(self, rim_thickness: float) -> "GeometryConfig":
        """Fill the surface refinement from the IFP rim thickness ``sqrt(K/(Lp S/V))`` [m].

        Perivascular shapes keep ``None``: their builders resolve vessel walls by vessel radius.
        """
        if self.shape in ("krogh", "vessels"):
            return self
        surface = self.surface_mesh_size
        if surface is None:
            surface = min(self.mesh_size, rim_thickness / 4) if math.isfinite(rim_thickness) else self.mesh_size
        width = self.refinement_width
        if width is None:
            width = 2 * rim_thickness if math.isfinite(rim_thickness) else 0.0
        return replace(self, surface_mesh_size=surface, refinement_width=width)


@dataclass(frozen=True)
class SolverConfig:
    """FEM discretisation: Lagrange ``degree`` and PETSc options overriding the CG+GAMG defaults."""

    degree: int = 1
    petsc_options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ForwardConfig:
    """Everything ``hybrid forward`` needs, validated."""

    geometry: GeometryConfig
    tumour: TissueProperties
    host: TissueProperties | None
    boundary: OuterBoundary
    solver: SolverConfig
    output_directory: Path
    source: dict                  # the TOML as read, echoed into summary.json


def _take(table: dict, section: str, spec: dict[str, object]) -> dict:
    """Keys of ``table`` checked against ``spec`` (name -> default or REQUIRED)."""
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


def _number(section: str, name: str, value, *, positive=False, non_negative=False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"[{section}] {name} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ConfigError(f"[{section}] {name} must be > 0, got {value!r}")
    if non_negative and value < 0:
        raise ConfigError(f"[{section}] {name} must be >= 0, got {value!r}")
    return float(value)


def _geometry(table: dict) -> GeometryConfig:
    spec = {f.name: REQUIRED if f.default is MISSING else f.default for f in fields(GeometryConfig)}
    values = _take(table, "geometry", spec)
    if values["shape"] not in SHAPES:
        raise ConfigError(f"[geometry] shape must be one of {', '.join(SHAPES)}, got {values['shape']!r}")
    for name in ("mesh_size", "tumour_radius", "vessel_radius", "tissue_radius", "patch_size",
                 "min_spacing", "surface_mesh_size", "refinement_width"):
        if values[name] is not None:
            values[name] = _number("geometry", name, values[name], positive=name != "refinement_width",
                                   non_negative=True)
    values["host_thickness"] = _number("geometry", "host_thickness", values["host_thickness"], non_negative=True)
    for name in ("n_vessels", "seed"):
        if isinstance(values[name], bool) or not isinstance(values[name], int) or values[name] < 0:
            raise ConfigError(f"[geometry] {name} must be a non-negative integer, got {values[name]!r}")
    geometry = GeometryConfig(**values)
    if geometry.shape in ("sphere", "disc", "slab") and geometry.mesh_size >= geometry.tumour_radius:
        raise ConfigError(f"[geometry] mesh_size ({geometry.mesh_size} m) must be smaller than "
                          f"tumour_radius ({geometry.tumour_radius} m)")
    return geometry


def _tissue(table: dict, region: str) -> TissueProperties:
    base = TissueProperties.defaults(region)
    values = _take(table, region, {f.name: getattr(base, f.name) for f in fields(TissueProperties)})
    values = {k: _number(region, k, v) for k, v in values.items()}
    try:
        return TissueProperties(**values).validated(region)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def forward_config_from_dict(data: dict, origin: str = "<config>") -> ForwardConfig:
    """Validate a parsed TOML document (see the module docstring for the layout)."""
    try:
        top = _take(data, "top level", {"geometry": REQUIRED, "tumour": {}, "host": None,
                                        "boundary": {}, "solver": {}, "output": REQUIRED})
        geometry = _geometry(top["geometry"])
        tumour = _tissue(top["tumour"], "tumour")
        host = None
        if geometry.host_thickness > 0:
            host = _tissue(top["host"] or {}, "host")
        elif top["host"] is not None:
            raise ConfigError("[host] is given but [geometry] host_thickness = 0 (no host shell)")
        bnd = _take(top["boundary"], "boundary", {"type": "dirichlet", "far_field_pressure": 0.0,
                                                 "robin_coefficient": 0.0})
        boundary = OuterBoundary(bnd["type"], _number("boundary", "far_field_pressure", bnd["far_field_pressure"]),
                                 _number("boundary", "robin_coefficient", bnd["robin_coefficient"], non_negative=True))
        sol = _take(top["solver"], "solver", {"degree": 1, "petsc_options": {}})
        if sol["degree"] not in (1, 2, 3):
            raise ConfigError(f"[solver] degree must be 1, 2 or 3, got {sol['degree']!r}")
        if not isinstance(sol["petsc_options"], dict):
            raise ConfigError("[solver] petsc_options must be a table of PETSc option = value")
        out = _take(top["output"], "output", {"directory": REQUIRED})
        rim = tumour.rim_thickness
        return ForwardConfig(geometry.resolved(rim), tumour, host, boundary,
                             SolverConfig(sol["degree"], dict(sol["petsc_options"])),
                             Path(out["directory"]), data)
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None
    except ValueError as exc:  # from the physics dataclasses
        raise ConfigError(f"{origin}: {exc}") from None


def load_forward_config(path: str | Path) -> ForwardConfig:
    """Read and validate a ``hybrid forward`` TOML file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return forward_config_from_dict(data, str(path))
