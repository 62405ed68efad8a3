"""Run configuration: TOML -> frozen dataclasses. Unknown keys, missing keys and impossible
values raise :class:`ConfigError` with one line that names the section and key.

Units are SI throughout (lengths in m, pressures in Pa). Example (``hybrid forward``)::

    [geometry]
    shape = "sphere"             # sphere (3-D) | disc (2-D) | slab (1-D) | krogh | vessels
    tumour_radius = 4.0e-3       # m
    host_thickness = 0.0         # m; 0 = tumour only, outer boundary = tumour surface
    mesh_size = 1.5e-4           # m (of the gmsh mesh, made on rank 0)
    refinements = 0              # then refined uniformly in parallel N times: h = mesh_size / 2^N
    partitioner = "scotch"       # scotch | kahip (| parmetis where DOLFINx has it)
    [tumour]
    hydraulic_conductivity = 3.1e-14   # ... any TissueProperties field
    [boundary]
    far_field_pressure = 0.0     # Pa
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

``hybrid maps`` (quantitative MRI): keys and units in :class:`MapsConfig`.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path

from hybrid.problems.ifp import OuterBoundary, TissueProperties
from hybrid.problems.parameters import PARAMETERS

__all__ = ["ConfigError", "GeometryConfig", "SolverConfig", "ForwardConfig", "load_forward_config",
           "forward_config_from_dict", "DceMapsConfig", "CestMapsConfig", "MapsConfig", "load_maps_config",
           "maps_config_from_dict"]

REQUIRED = object()
SHAPES = ("sphere", "disc", "slab", "krogh", "vessels", "mask")
PARTITIONERS = ("scotch", "kahip", "parmetis")   # the PyPI DOLFINx has scotch and kahip


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
    mask: Path | None = None                 # shape "mask": NIfTI tumour mask (nonzero = tumour)
    slice_index: int = 0                     # shape "mask": the slice meshed (2-D)
    field_of_view_host: bool = False         # shape "mask": mesh the rest of the image as host
    refinements: int = 0                     # uniform parallel refinements of the gmsh mesh (each: h / 2)
    partitioner: str = "scotch"              # graph partitioner of the gmsh mesh: scotch | kahip | parmetis

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
    ktrans_map: Path | None = None  # [images] ktrans: Lp S/V scaled by Ktrans (see hybrid.forward.image_sampling)
    write_velocity: bool = True     # [output] velocity: false skips the Darcy flux (a mixed RT solve) at scale


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


def _path(base: Path, section: str, name: str, value) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"[{section}] {name} must be a non-empty path string, got {value!r}")
    return base / value


def _optional_number(section: str, name: str, value, **kw) -> float | None:
    return None if value is None else _number(section, name, value, **kw)


def _integer(section: str, name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"[{section}] {name} must be an integer >= {minimum}, got {value!r}")
    return value


def _numbers(section: str, name: str, value) -> tuple[float, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"[{section}] {name} must be a non-empty list of numbers")
    return tuple(_number(section, name, v) for v in value)


def _geometry(table: dict, base: Path) -> GeometryConfig:
    spec = {f.name: REQUIRED if f.default is MISSING else f.default for f in fields(GeometryConfig)}
    values = _take(table, "geometry", spec)
    if values["shape"] == "mask":
        if values["mask"] is None:
            raise ConfigError('[geometry] shape = "mask" needs mask = "path/to/tumour_mask.nii.gz"')
        values["mask"] = _path(base, "geometry", "mask", values["mask"])
        values["slice_index"] = _integer("geometry", "slice_index", values["slice_index"], 0)
        if not isinstance(values["field_of_view_host"], bool):
            raise ConfigError("[geometry] field_of_view_host must be true or false")
    elif values["mask"] is not None:
        raise ConfigError('[geometry] mask is only used with shape = "mask"')
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
    if isinstance(values["refinements"], bool) or not isinstance(values["refinements"], int) \
            or not 0 <= values["refinements"] <= 6:
        raise ConfigError(f"[geometry] refinements must be an integer from 0 to 6 (each multiplies the "
                          f"cells by 4 in 2-D, 8 in 3-D), got {values['refinements']!r}")
    if values["partitioner"] not in PARTITIONERS:
        raise ConfigError(f"[geometry] partitioner must be one of {', '.join(PARTITIONERS)}, "
                          f"got {values['partitioner']!r}")
    if values["shape"] == "vessels" and values["n_vessels"] < 1:
        raise ConfigError(f'[geometry] shape = "vessels" needs n_vessels >= 1, got {values["n_vessels"]}')
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


def forward_config_from_dict(data: dict, origin: str = "<config>", base: Path = Path(".")) -> ForwardConfig:
    """Validate a parsed TOML document (see the module docstring for the layout); image paths
    are relative to ``base``, the output directory to the working directory."""
    try:
        top = _take(data, "top level", {"geometry": REQUIRED, "tumour": {}, "host": None, "images": {},
                                        "boundary": {}, "solver": {}, "output": REQUIRED})
        geometry = _geometry(top["geometry"], base)
        tumour = _tissue(top["tumour"], "tumour")
        host = None
        if geometry.host_thickness > 0 or geometry.field_of_view_host:
            host = _tissue(top["host"] or {}, "host")
        elif top["host"] is not None:
            raise ConfigError("[host] is given but the geometry has no host tissue "
                              "(host_thickness = 0, field_of_view_host = false)")
        images = _take(top["images"], "images", {"ktrans": None})
        ktrans = None if images["ktrans"] is None else _path(base, "images", "ktrans", images["ktrans"])
        bnd = _take(top["boundary"], "boundary", {"type": "dirichlet", "far_field_pressure": 0.0,
                                                 "robin_coefficient": 0.0})
        boundary = OuterBoundary(bnd["type"], _number("boundary", "far_field_pressure", bnd["far_field_pressure"]),
                                 _number("boundary", "robin_coefficient", bnd["robin_coefficient"], non_negative=True))
        sol = _take(top["solver"], "solver", {"degree": 1, "petsc_options": {}})
        if isinstance(sol["degree"], bool) or not isinstance(sol["degree"], int) or sol["degree"] not in (1, 2, 3):
            raise ConfigError(f"[solver] degree must be 1, 2 or 3 (an integer), got {sol['degree']!r}")
        _petsc_options(sol["petsc_options"])
        out = _take(top["output"], "output", {"directory": REQUIRED, "velocity": True})
        directory = _path(Path("."), "output", "directory", out["directory"])
        if not isinstance(out["velocity"], bool):
            raise ConfigError(f"[output] velocity must be true or false, got {out['velocity']!r}")
        rim = tumour.rim_thickness
        return ForwardConfig(geometry.resolved(rim), tumour, host, boundary,
                             SolverConfig(sol["degree"], dict(sol["petsc_options"])),
                             directory, data, ktrans, out["velocity"])
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None
    except ValueError as exc:  # from the physics dataclasses
        raise ConfigError(f"{origin}: {exc}") from None


def _petsc_options(options) -> None:
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


def _read_toml(path: Path) -> dict:
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


def load_forward_config(path: str | Path) -> ForwardConfig:
    """Read and validate a ``hybrid forward`` TOML file (image paths relative to it)."""
    path = Path(path)
    return forward_config_from_dict(_read_toml(path), str(path), path.parent)


# ---- hybrid maps -------------------------------------------------------------------------------

DCE_MODELS = ("tofts", "extended_tofts", "patlak", "2cxm", "2cum")
CEST_RATIOS = ("amplitude", "st", "mtrasym")        # hybrid.imaging.cest.RATIO_METHODS
DCE_AIFS = ("parker", "preclinical", "measured")


@dataclass(frozen=True)
class DceMapsConfig:
    """``[dce]`` of a maps configuration (see :class:`MapsConfig`)."""

    series: Path
    r1_per_mM_s: float
    n_baseline: int
    model: str = "extended_tofts"
    tr_s: float | None = None
    flip_angle_deg: float | None = None
    t10_s: float | None = None
    hematocrit: float = 0.42
    aif_delay_s: float = 0.0
    fit_delay: bool = False
    aif: str = "parker"
    aif_mask: Path | None = None
    blood_t10_s: float | None = None
    blood_r1_per_mM_s: float | None = None


@dataclass(frozen=True)
class CestMapsConfig:
    """``[cest]`` of a maps configuration (see :class:`MapsConfig`)."""

    series: Path
    calibration_ph: tuple[float, ...]
    calibration_ratio: tuple[float, ...]
    calibration_degree: int | None = None      # None: chosen by leave-one-out error ("auto")
    shifts_ppm: tuple[float, float] = (4.2, 5.6)
    mt: bool = True
    ratio: str = "amplitude"
    hydroxyl: bool = True
    endogenous: bool = False


@dataclass(frozen=True)
class MapsConfig:
    """Everything ``hybrid maps`` needs. Relative paths are relative to the configuration file.

    Keys (units)::

        [dce]                          # optional; needs [vfa] or t10_s
        series = "dce.nii.gz"          # 4-D SPGR series, time last; frame times from the sidecar
                                       # dce.json (FrameTimes_s | VolumeTiming | FrameInterval_s, s)
        model = "extended_tofts"       # tofts | extended_tofts | patlak | 2cxm | 2cum
        r1_per_mM_s = 4.0              # contrast-agent relaxivity [1/(mM s)]
        n_baseline = 12                # pre-contrast frames, frame 0 included (it is discarded)
        tr_s = 5e-3                    # excitation TR [s]; default: sidecar RepetitionTimeExcitation
        flip_angle_deg = 20.0          # [deg]; default: sidecar FlipAngle
        t10_s = 1.5                    # pre-contrast T1 [s] for every voxel, when there is no [vfa]
        aif = "parker"                 # parker (human, Parker 2006) | preclinical (rodent,
                                       # McGrath 2009 model B) | measured (arterial ROI)
        hematocrit = 0.42              # AIF blood -> plasma: Cp = Cb / (1 - hematocrit)
        aif_delay_s = 30.0             # bolus arrival of a population AIF [s]
        aif_mask = "aif_mask.nii.gz"   # measured: arterial ROI (> 0), on the DCE grid
        blood_t10_s = 1.9              # measured: pre-contrast T1 of blood [s]
        blood_r1_per_mM_s = 4.0        # measured: relaxivity in blood; default r1_per_mM_s
        fit_delay = false              # also fit a per-voxel delay (-10..10 s)
        [vfa]                          # optional: T1 map from variable flip angles
        series = "vfa.nii.gz"          # 4-D, flip angles from sidecar FlipAngles_deg [deg]
        tr_s = 5e-3                    # [s]; default: sidecar RepetitionTimeExcitation
        [cest]                         # optional: pH_e from iopamidol CEST
        series = "cest.nii.gz"         # 4-D, one volume per offset (sidecar offsets_ppm, ppm);
                                       # offsets |x| >= 20 ppm are the S0 reference
        calibration_ph = [6.2, ...]    # calibration vials: pH ...
        calibration_ratio = [-0.45, ...]  # ... and their ratio (same `ratio` method and pools)
        calibration_degree = "auto"    # polynomial degree of pH(ratio), or "auto": 1-3 by
                                       # leave-one-out error (reported in summary.json)
        ratio = "amplitude"            # amplitude | st | mtrasym: log10 of the 4.2/5.6 ppm effects
        shifts_ppm = [4.2, 5.6]        # amide lines [ppm from water]
        mt = true                      # fit a broad MT line too
        hydroxyl = true                # fit the iopamidol hydroxyl line near 1 ppm
        endogenous = false             # fit APT (3.5), amine (2.0) and NOE (-3.5 ppm) lines (in vivo)
        [mask]
        path = "mask.nii.gz"           # optional: fit voxels where mask > 0 (default: all)
        [output]
        directory = "maps"             # NIfTI maps, maps.png, summary.json

    At least one of [dce] and [cest] is required. All images must share the grid (shape, affine).
    """

    dce: DceMapsConfig | None
    vfa_series: Path | None
    vfa_tr_s: float | None
    cest: CestMapsConfig | None
    mask: Path | None
    output_directory: Path
    source: dict


def _dce_maps(table: dict, base: Path) -> DceMapsConfig:
    spec = {f.name: REQUIRED if f.default is MISSING else f.default for f in fields(DceMapsConfig)}
    v = _take(table, "dce", spec)
    if v["model"] not in DCE_MODELS:
        raise ConfigError(f"[dce] model must be one of {', '.join(DCE_MODELS)}, got {v['model']!r}")
    if not 0.0 <= _number("dce", "hematocrit", v["hematocrit"]) < 1.0:
        raise ConfigError(f"[dce] hematocrit must be in [0, 1), got {v['hematocrit']!r}")
    if not isinstance(v["fit_delay"], bool):
        raise ConfigError(f"[dce] fit_delay must be true or false, got {v['fit_delay']!r}")
    if v["aif"] not in DCE_AIFS:
        raise ConfigError(f"[dce] aif must be one of {', '.join(DCE_AIFS)}, got {v['aif']!r}")
    measured = ("aif_mask", "blood_t10_s", "blood_r1_per_mM_s")
    if v["aif"] == "measured":
        missing = [key for key in measured[:2] if v[key] is None]
        if missing:
            raise ConfigError(f"[dce] aif = \"measured\" needs {' and '.join(missing)} (the arterial "
                              "ROI mask and the pre-contrast T1 of blood [s])")
    else:
        given = [key for key in measured if v[key] is not None]
        if given:
            raise ConfigError(f"[dce] {', '.join(given)} apply only to aif = \"measured\" "
                              f"(aif is {v['aif']!r})")
    return DceMapsConfig(
        series=_path(base, "dce", "series", v["series"]),
        r1_per_mM_s=_number("dce", "r1_per_mM_s", v["r1_per_mM_s"], positive=True),
        n_baseline=_integer("dce", "n_baseline", v["n_baseline"], 2),
        model=v["model"],
        tr_s=_optional_number("dce", "tr_s", v["tr_s"], positive=True),
        flip_angle_deg=_optional_number("dce", "flip_angle_deg", v["flip_angle_deg"], positive=True),
        t10_s=_optional_number("dce", "t10_s", v["t10_s"], positive=True),
        hematocrit=float(v["hematocrit"]),
        aif_delay_s=_number("dce", "aif_delay_s", v["aif_delay_s"]),
        fit_delay=v["fit_delay"],
        aif=v["aif"],
        aif_mask=None if v["aif_mask"] is None else _path(base, "dce", "aif_mask", v["aif_mask"]),
        blood_t10_s=_optional_number("dce", "blood_t10_s", v["blood_t10_s"], positive=True),
        blood_r1_per_mM_s=_optional_number("dce", "blood_r1_per_mM_s", v["blood_r1_per_mM_s"],
                                           positive=True))


def _cest_maps(table: dict, base: Path) -> CestMapsConfig:
    spec = {f.name: REQUIRED if f.default is MISSING else f.default for f in fields(CestMapsConfig)}
    v = _take(table, "cest", spec)
    ph = _numbers("cest", "calibration_ph", v["calibration_ph"])
    ratio = _numbers("cest", "calibration_ratio", v["calibration_ratio"])
    if len(ph) != len(ratio):
        raise ConfigError(f"[cest] calibration_ph has {len(ph)} values but calibration_ratio has "
                          f"{len(ratio)}; give one ratio per calibration pH")
    default = isinstance(v["shifts_ppm"], tuple)
    shifts = _numbers("cest", "shifts_ppm", list(v["shifts_ppm"]) if default else v["shifts_ppm"])
    if len(shifts) != 2 or shifts[0] == shifts[1]:
        raise ConfigError(f"[cest] shifts_ppm must be two different offsets [ppm], e.g. [4.2, 5.6], "
                          f"got {list(shifts)}")
    for key in ("mt", "hydroxyl", "endogenous"):
        if not isinstance(v[key], bool):
            raise ConfigError(f"[cest] {key} must be true or false, got {v[key]!r}")
    if v["ratio"] not in CEST_RATIOS:
        raise ConfigError(f"[cest] ratio must be one of {', '.join(CEST_RATIOS)}, got {v['ratio']!r}")
    degree = v["calibration_degree"]
    degree = None if degree in (None, "auto") else _integer("cest", "calibration_degree", degree, 1)
    return CestMapsConfig(_path(base, "cest", "series", v["series"]), ph, ratio, degree, shifts, v["mt"],
                          v["ratio"], v["hydroxyl"], v["endogenous"])


def maps_config_from_dict(data: dict, base: Path = Path("."), origin: str = "<config>") -> MapsConfig:
    """Validate a parsed maps TOML document; relative paths are taken relative to ``base``."""
    try:
        top = _take(data, "top level", {"dce": None, "vfa": None, "cest": None, "mask": None,
                                        "output": REQUIRED})
        if top["dce"] is None and top["cest"] is None:
            raise ConfigError("give at least one of [dce] and [cest]")
        dce = None if top["dce"] is None else _dce_maps(top["dce"], base)
        vfa_series = vfa_tr = None
        if top["vfa"] is not None:
            vfa = _take(top["vfa"], "vfa", {"series": REQUIRED, "tr_s": None})
            vfa_series = _path(base, "vfa", "series", vfa["series"])
            vfa_tr = _optional_number("vfa", "tr_s", vfa["tr_s"], positive=True)
        if dce is not None and vfa_series is None and dce.t10_s is None:
            raise ConfigError("[dce] needs a pre-contrast T1: give t10_s [s] or a [vfa] series")
        mask = None
        if top["mask"] is not None:
            mask = _path(base, "mask", "path", _take(top["mask"], "mask", {"path": REQUIRED})["path"])
        out = _take(top["output"], "output", {"directory": REQUIRED})
        return MapsConfig(dce, vfa_series, vfa_tr,
                          None if top["cest"] is None else _cest_maps(top["cest"], base), mask,
                          _path(base, "output", "directory", out["directory"]), data)
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None


def load_maps_config(path: str | Path) -> MapsConfig:
    """Read and validate a ``hybrid maps`` TOML file (keys: :class:`MapsConfig`)."""
    path = Path(path)
    return maps_config_from_dict(_read_toml(path), path.parent, str(path))
