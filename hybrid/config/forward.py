"""``hybrid forward`` configuration: TOML -> frozen dataclasses. Unknown keys, missing keys and impossible
values raise :class:`ConfigError` with one line that names the section and key.

Units are SI throughout (lengths in m, pressures in Pa). Every ``[section] key`` is the field
``config.section.key``; paths are relative to the TOML file. Example (``hybrid forward``)::

    [geometry]
    shape = "sphere"             # sphere (3-D) | disc (2-D) | slab (1-D) | krogh | vessels
    tumour_radius = 4.0e-3       # m
    host_thickness = 0.0         # m; 0 = tumour only, outer boundary = tumour surface
    mesh_size = 1.5e-4           # m (of the gmsh mesh, made on rank 0)
    refinements = 0              # then refined uniformly in parallel N times: h = mesh_size / 2^N
    rim_refinements = 0          # sphere/disc: then N parallel refinements near the tumour surface
    rim_band = 1.0e-3            # m, width of the widest rim refinement (default 2 ln2 N x IFP rim)
    adaptive_dofs = 0            # sphere/disc: refine adaptively (residual indicator) to this many P1 DOFs; 0: off
    partitioner = "scotch"       # scotch | kahip (| parmetis where DOLFINx has it)
    [tumour]
    hydraulic_conductivity = 3.1e-14   # ... any TissueProperties field
    [boundary]
    type = "dirichlet"           # dirichlet | robin | no_flux
    far_field_pressure = 0.0     # Pa
    robin_coefficient = 0.0      # m/(Pa s); robin: outflow = robin_coefficient (p - far_field_pressure)
    [solver]
    degree = 1                   # Lagrange degree 1, 2 or 3
    petsc_options = {}           # e.g. { ksp_rtol = 1e-10 }, over the CG + GAMG defaults
    [output]
    directory = "results/ifp"
    velocity = true              # false: pressure only (the conservative flux costs ~10x the pressure solve)

Imaging-guided geometry and coefficients (paths relative to the TOML file)::

    [geometry]
    shape = "mask"               # 2-D tumour outline traced from a NIfTI mask (hybrid.mesh.from_mask)
    mask = "tumour_mask.nii.gz"  # nonzero voxels = tumour; affine in mm
    slice_index = 0
    field_of_view_host = false   # true: the rest of the image is host tissue
    mesh_size = 1.5e-4
    [images]
    ktrans = "maps/Ktrans.nii.gz"  # [1/min]; vessel surface density taken proportional to Ktrans

``hybrid maps`` (quantitative MRI): keys and units in :class:`hybrid.config.maps.MapsConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from hybrid.config.geometry import GeometryConfig, geometry_from_table
from hybrid.config.validate import (REQUIRED, ConfigError, OutputConfig, check_petsc_options, choice, number,
                                    output_from_table, read_toml, relative_path, spec_of, take_keys)
from hybrid.problems.ifp import OuterBoundary, TissueProperties

__all__ = ["SolverConfig", "ImagesConfig", "BoundaryConfig", "ForwardOutputConfig", "ForwardConfig",
           "tissue_from_table", "host_from_table", "forward_config_from_dict", "load_forward_config"]


@dataclass(frozen=True)
class SolverConfig:
    """FEM discretisation: Lagrange ``degree`` and PETSc options overriding the CG+GAMG defaults."""

    degree: int = 1
    petsc_options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ImagesConfig:
    """``[images]``: coefficient maps on an image grid. ``ktrans``: NIfTI Ktrans map [1/min]; the
    vessel surface density (hence Lp S/V) is taken proportional to it (hybrid.forward.image_sampling)."""

    ktrans: Path | None = None


@dataclass(frozen=True)
class BoundaryConfig:
    """``[boundary]``: the outer boundary condition. ``type``: dirichlet (p = far_field_pressure),
    robin (outflow = robin_coefficient (p - far_field_pressure)) or no_flux; far_field_pressure
    [Pa], robin_coefficient [m/(Pa s)]."""

    type: str = "dirichlet"
    far_field_pressure: float = 0.0
    robin_coefficient: float = 0.0

    def outer_boundary(self) -> OuterBoundary:
        """The physics record of this condition (hybrid.problems.ifp.OuterBoundary)."""
        return OuterBoundary(self.type, self.far_field_pressure, self.robin_coefficient)


@dataclass(frozen=True)
class ForwardOutputConfig(OutputConfig):
    """``[output]`` of ``hybrid forward``: ``velocity = false`` skips the Darcy flux (a mixed RT solve)."""

    velocity: bool = True


@dataclass(frozen=True)
class ForwardConfig:
    """Everything ``hybrid forward`` needs, validated."""

    geometry: GeometryConfig
    tumour: TissueProperties
    host: TissueProperties | None
    images: ImagesConfig
    boundary: BoundaryConfig
    solver: SolverConfig
    output: ForwardOutputConfig
    source: dict                  # the TOML as read, echoed into summary.json


def tissue_from_table(table: dict, region: str) -> TissueProperties:
    """The validated ``[tumour]`` or ``[host]`` table: TissueProperties with the table's defaults."""
    base = TissueProperties.defaults(region)
    values = take_keys(table, region, {f.name: getattr(base, f.name) for f in fields(TissueProperties)})
    values = {k: number(region, k, v) for k, v in values.items()}
    try:
        return TissueProperties(**values).validated(region)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def host_from_table(table: dict | None, geometry: GeometryConfig) -> TissueProperties | None:
    """The validated ``[host]`` table (None: absent) where ``geometry`` has host tissue, else None;
    a ``[host]`` without host tissue is a ConfigError."""
    if geometry.host_thickness > 0 or geometry.field_of_view_host:
        return tissue_from_table(table or {}, "host")
    if table is not None:
        raise ConfigError("[host] is given but the geometry has no host tissue "
                          "(host_thickness = 0, field_of_view_host = false)")
    return None


def _boundary(values: dict) -> BoundaryConfig:
    """The validated ``[boundary]`` keys as a BoundaryConfig (type and the robin coefficient are
    checked by OuterBoundary, whose ValueError the caller turns into a ConfigError)."""
    boundary = BoundaryConfig(values["type"], number("boundary", "far_field_pressure", values["far_field_pressure"]),
                              number("boundary", "robin_coefficient", values["robin_coefficient"], non_negative=True))
    boundary.outer_boundary()
    return boundary


def forward_config_from_dict(data: dict, origin: str = "<config>", base: Path = Path(".")) -> ForwardConfig:
    """Validate a parsed TOML document (see the module docstring for the layout); paths are
    relative to ``base`` (the TOML file's folder)."""
    try:
        top = take_keys(data, "top level", {"geometry": REQUIRED, "tumour": {}, "host": None, "images": {},
                                        "boundary": {}, "solver": {}, "output": REQUIRED})
        geometry = geometry_from_table(top["geometry"], base)
        tumour = tissue_from_table(top["tumour"], "tumour")
        host = host_from_table(top["host"], geometry)
        ktrans = take_keys(top["images"], "images", spec_of(ImagesConfig))["ktrans"]
        images = ImagesConfig(None if ktrans is None else relative_path(base, "images", "ktrans", ktrans))
        boundary = _boundary(take_keys(top["boundary"], "boundary", spec_of(BoundaryConfig)))
        sol = take_keys(top["solver"], "solver", {"degree": 1, "petsc_options": {}})
        choice("solver", "degree", sol["degree"], (1, 2, 3))
        check_petsc_options(sol["petsc_options"])
        output = output_from_table(top["output"], base, ForwardOutputConfig)
        rim = tumour.rim_thickness
        return ForwardConfig(geometry.resolved(rim), tumour, host, images, boundary,
                             SolverConfig(sol["degree"], dict(sol["petsc_options"])), output, data)
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None
    except ValueError as exc:  # from the physics dataclasses
        raise ConfigError(f"{origin}: {exc}") from None


def load_forward_config(path: str | Path) -> ForwardConfig:
    """Read and validate a ``hybrid forward`` TOML file (paths relative to it)."""
    path = Path(path)
    return forward_config_from_dict(read_toml(path), str(path), path.parent)
