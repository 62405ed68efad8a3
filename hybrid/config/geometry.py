"""``[geometry]``: what to mesh (shared by ``hybrid forward`` and ``hybrid transport``). Lengths in m."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

from hybrid.config.validate import ConfigError, choice, integer, number, relative_path, spec_of, take_keys
from hybrid.problems.parameters import PARAMETERS

__all__ = ["SHAPES", "PARTITIONERS", "GeometryConfig", "geometry_from_table"]

SHAPES = ("sphere", "disc", "slab", "krogh", "vessels", "mask")
PARTITIONERS = ("scotch", "kahip", "parmetis")   # the PyPI DOLFINx has scotch and kahip
ADAPTIVE_SHAPES = ("sphere", "disc")   # where adaptive refinement (hybrid.forward.adaptive) is measured


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
    mask: Path | None = None                 # shape "mask": NIfTI tumour mask (nonzero = tumour)
    slice_index: int = 0                     # shape "mask": the slice meshed (2-D)
    field_of_view_host: bool = False         # shape "mask": mesh the rest of the image as host
    refinements: int = 0                     # uniform parallel refinements of the gmsh mesh (each: h / 2)
    rim_refinements: int = 0                 # sphere/disc: parallel refinements near the tumour surface
    rim_band: float | None = None            # width of the widest rim refinement; default 2 ln2 N rim
    adaptive_dofs: int = 0                   # hybrid forward: refine adaptively to this many P1 DOFs (0: off)
    partitioner: str = "scotch"              # graph partitioner of the gmsh mesh: scotch | kahip | parmetis

    def resolved(self, rim_thickness: float) -> "GeometryConfig":
        """Fill the surface refinement from the IFP rim thickness ``sqrt(K/(Lp S/V))`` [m].

        Default surface size: rim / 4, or ``2^rim_refinements`` times that on the gmsh mesh when the
        rim is refined in parallel afterwards, or ``mesh_size`` with ``adaptive_dofs`` (adaptive
        refinement finds the rim). Default ``rim_band``: ``2 ln 2 * rim_refinements *
        rim``, so the cell size doubles every ``2 ln 2 * rim`` from the surface, which spreads the
        P1 error ``h^2 |p''|`` of ``p ~ exp(-d / rim)`` evenly. Perivascular shapes keep ``None``:
        their builders resolve vessel walls by vessel radius.
        """
        if self.shape in ("krogh", "vessels"):
            return self
        finite = math.isfinite(rim_thickness)
        surface = self.surface_mesh_size
        if surface is None:
            surface = (min(self.mesh_size, rim_thickness / 4 * 2 ** self.rim_refinements)
                       if finite and not self.adaptive_dofs else self.mesh_size)
        width = self.refinement_width
        if width is None:
            width = 2 * rim_thickness if finite else 0.0
        band = self.rim_band
        if band is None and self.rim_refinements:
            if not finite:
                raise ConfigError("[geometry] rim_refinements needs rim_band (m): without a fluid sink the "
                                  "IFP rim thickness is infinite")
            band = 2 * math.log(2) * self.rim_refinements * rim_thickness
        return replace(self, surface_mesh_size=surface, refinement_width=width, rim_band=band)


def geometry_from_table(table: dict, base: Path, *, adaptive: bool = True) -> GeometryConfig:
    """The validated ``[geometry]`` table; a mask path is relative to ``base``. ``adaptive=False``
    (commands other than hybrid forward) refuses ``adaptive_dofs``."""
    if not adaptive and isinstance(table, dict) and "adaptive_dofs" in table:
        raise ConfigError("[geometry] adaptive_dofs is used by hybrid forward only; remove it")
    spec = spec_of(GeometryConfig)
    values = take_keys(table, "geometry", spec)
    if values["shape"] == "mask":
        if values["mask"] is None:
            raise ConfigError('[geometry] shape = "mask" needs mask = "path/to/tumour_mask.nii.gz"')
        values["mask"] = relative_path(base, "geometry", "mask", values["mask"])
        values["slice_index"] = integer("geometry", "slice_index", values["slice_index"], 0)
        choice("geometry", "field_of_view_host", values["field_of_view_host"], (True, False))
    elif values["mask"] is not None:
        raise ConfigError('[geometry] mask is only used with shape = "mask"')
    choice("geometry", "shape", values["shape"], SHAPES)
    for name in ("mesh_size", "tumour_radius", "vessel_radius", "tissue_radius", "patch_size",
                 "min_spacing", "surface_mesh_size", "refinement_width", "rim_band"):
        if values[name] is not None:
            values[name] = number("geometry", name, values[name], positive=name != "refinement_width",
                                   non_negative=True)
    values["host_thickness"] = number("geometry", "host_thickness", values["host_thickness"], non_negative=True)
    for name in ("n_vessels", "seed"):
        if isinstance(values[name], bool) or not isinstance(values[name], int) or values[name] < 0:
            raise ConfigError(f"[geometry] {name} must be a non-negative integer, got {values[name]!r}")
    for name in ("refinements", "rim_refinements"):
        if isinstance(values[name], bool) or not isinstance(values[name], int) or not 0 <= values[name] <= 6:
            raise ConfigError(f"[geometry] {name} must be an integer from 0 to 6 (each splits the refined "
                              f"cells into 4 in 2-D, 8 in 3-D), got {values[name]!r}")
    adaptive = values["adaptive_dofs"]
    if isinstance(adaptive, bool) or not isinstance(adaptive, int) or adaptive < 0:
        raise ConfigError(f"[geometry] adaptive_dofs must be a non-negative integer (a budget of P1 DOFs, "
                          f"0: no adaptive refinement), got {adaptive!r}")
    if adaptive and values["shape"] not in ADAPTIVE_SHAPES:
        shapes = " or ".join(f'"{shape}"' for shape in ADAPTIVE_SHAPES)
        raise ConfigError(f"[geometry] adaptive_dofs needs shape = {shapes} (where it is measured; its error "
                          f"indicator has no vessel-wall term and no 1-D form), got {values['shape']!r}")
    if values["rim_refinements"] and values["shape"] not in ("sphere", "disc"):
        raise ConfigError(f'[geometry] rim_refinements needs shape = "sphere" or "disc" (a tumour surface to '
                          f'refine towards), got {values["shape"]!r}; use refinements')
    choice("geometry", "partitioner", values["partitioner"], PARTITIONERS)
    if values["shape"] == "vessels" and values["n_vessels"] < 1:
        raise ConfigError(f'[geometry] shape = "vessels" needs n_vessels >= 1, got {values["n_vessels"]}')
    geometry = GeometryConfig(**values)
    if geometry.shape in ("sphere", "disc", "slab") and geometry.mesh_size >= geometry.tumour_radius:
        raise ConfigError(f"[geometry] mesh_size ({geometry.mesh_size} m) must be smaller than "
                          f"tumour_radius ({geometry.tumour_radius} m)")
    return geometry
