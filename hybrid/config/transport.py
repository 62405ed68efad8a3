"""Configuration of ``hybrid transport``: TOML -> a frozen :class:`TransportConfig` (SI units).

TOML key = field name: ``[section] key`` is ``config.section.key`` (``[drug] formulation`` is
``config.drug.formulation``, ``[solver] petsc_options`` is ``config.solver.petsc_options``, ``[tumour]``
is a :class:`hybrid.problems.ifp.TissueProperties`); one small frozen dataclass per section, its
fields the keys below. Unknown keys, missing required keys and impossible values raise
:class:`hybrid.config.ConfigError` naming the section and key. Paths are relative to the TOML
file (``[output] directory`` too).
Example (the Krogh verification case of issue 8)::

    [geometry]                     # as for hybrid forward, no adaptive_dofs (krogh | vessels | disc | sphere | slab | mask)
    shape = "krogh"
    vessel_radius = 10.0e-6        # m
    tissue_radius = 120.0e-6       # m
    mesh_size = 2.0e-6             # m
    [flow]
    model = "none"                 # none | darcy (solve the IFP first and advect with its conservative flux)
    [drug]
    formulation = "free"           # free | liposomal | ph_sensitive | thermosensitive
    [free_drug]
    diffusivity = 1.2e-10          # m^2/s (default: table D_F)
    vessel_permeability = 2.7e-6   # m/s (default: table P_F)
    uptake = "linear"              # linear | el_kareh_secomb
    uptake_rate = 0.02             # 1/s (linear; default: table k_up)
    [tissue]
    interstitial_fraction = 1.0    # default: table phi_T
    [plasma]
    model = "constant"             # constant | dose
    free_concentration = 1.0e-3    # mol/m^3
    [time]
    end = 3600.0                   # s
    step = 10.0                    # s
    [output]
    directory = "results/krogh"

Other keys: ``[free_drug] reflection``, ``albumin_binding`` (albumin binding of free drug in the
tissue: "none" (default; false also means it); "equilibrium" (true also means it): instantaneous,
bound/unbound = table B_alb = 2.94, ``free_drug`` is then the unbound part; "kinetic": a fourth
field ``bound_drug`` with ``association_rate`` k_a, ``dissociation_rate`` k_d [1/s],
``bound_diffusivity`` [m^2/s], ``bound_vessel_permeability`` [m/s] (table k_a, k_d, D_Fb, P_Fb), fed
by the albumin-bound plasma drug: ``albumin_bound_fraction`` of the dose curve, or with a constant
plasma f/(1 - f) times ``free_concentration``); ``[liposome] diffusivity`` (table D_L),
``vessel_permeability`` (P_L), ``reflection`` (sigma_L), ``hindrance`` (f_L), ``clearance`` (k_L); ``[release] ph``
(uniform extracellular pH, ph_sensitive) and ``temperature`` (uniform tissue temperature [K],
thermosensitive), ``transit_time`` [s] (thermosensitive: blood transit time through the tissue; the
fraction 1 - exp(-k(T) tau) of the plasma liposomal drug is released in the vessels and reaches the
wall as free drug; table tau_v), ``ph_map`` (ph_sensitive: NIfTI pH_e map, e.g. the CEST pH map of
``hybrid maps``, sampled at the mesh vertices; non-finite voxels take the uniform ``ph``);
``[tissue] ktrans_map`` (tumour-scale meshes: NIfTI Ktrans map [1/min]; S/V and the IFP's Lp S/V
scale with Ktrans / its tumour mean, as in ``hybrid forward``); ``[tissue] surface_to_volume`` (S/V [1/m]: volume exchange on tumour-scale
meshes; default table SV_T), ``cell_density`` [1/m^3] (El-Kareh uptake and cell kill; table rho_c);
``[exposure] lethal_amount_per_cell`` [mol/cell] (lethal peak intracellular amount; table
C_I_lethal, 3.5 ng/1e5 cells), ``kill_coefficient`` [1/mol] (SF = exp(-omega n_max); table omega),
``profile_bin_width`` [m] (distance bins of the perivascular profiles; default the mesh size),
``distal_distance`` [m] (perivascular meshes: lethal fraction and survival reported also for the
tissue farther than this from every vessel; default 50 um, the upper end of the measured 24-50 um
half-distances of doxorubicin from vessels, Grantab et al. 2012 BMC Cancer 12:214, Primeau et al. 2005);
``[radiation] dose_Gy`` [Gy] (fractionated dose delivered before the drug: hydraulic conductivity,
filtration coefficient, microvascular pressure, vessel permeabilities and cell density are
multiplied by m^(dose/reference_dose), :mod:`hybrid.problems.radiation`) with the factors at the
reference dose ``reference_dose``, ``hydraulic_conductivity``, ``filtration_coefficient``,
``vascular_pressure`` (default: the table's 31 % IFP fall at 28.8 Gy), ``vessel_permeability``,
``cell_density`` (table defaults, 1 where no dose-response is known); ``[plasma] liposomal_concentration`` (constant) or ``dose``,
``dose_unit`` (mg/kg | mg/m^2), ``infusion_duration`` [s], ``liposome_half_life`` [s] (dose),
``albumin_bound_fraction`` (dose: the free-drug plasma curve is total drug, the vessel wall sees the
unbound part (1 - fraction) of it; table delta_alb; a constant ``free_concentration`` is unbound);
``[time] order`` (1 backward Euler | 2 BDF2), ``output_interval`` [s] (default: end / 10),
``adaptive`` (true: backward Euler with steps from a local error estimate, starting at ``step``, at
most ``output_interval``) and ``tolerance`` (relative local error per step, default 1e-3);
``[tumour]`` IFP tissue coefficients (flow = darcy, as for hybrid forward); ``[flow] boundary``
(dirichlet | no_flux, tumour-scale meshes) and ``far_field_pressure`` [Pa];
``[solver] petsc_options``.

Tumour in host tissue (``[geometry] host_thickness > 0`` on disc | sphere | slab, or a mask with
``field_of_view_host``): the host cells take the ``[host]`` table (:class:`TissueProperties`, table
normal-tissue defaults, incl. the sourced host lymphatics LpSV_L_N, as for hybrid forward) for the
IFP, its Starling fluid source and lymphatic drainage, and its ``vessel_surface_density`` (table
SV_N) as the S/V of the drug's vascular exchange. The parameter table has no host value for the
other transport coefficients, so the host reuses the tumour's: vessel permeabilities and
reflection coefficients, diffusivities, hindrance, liposome clearance, interstitial fraction, cell
density and uptake, release rates, Pennes coefficients; ``[radiation]`` irradiates the tumour's
IFP coefficients only. The exposure numbers are those of the tumour cells, and separately of the
host (``exposure_host`` in summary.json); ``[heating]`` heats the tumour cells.

Hyperthermia (Pennes bioheat on the same mesh and steps, table tissue values; with
``formulation = "thermosensitive"`` the release rate is then k(T) of the computed temperature)::

    [heating]
    target_temperature = 315.15    # K (42 C): mean over the heated cells, held by the controller
    start = 0.0                    # s
    end = 1800.0                   # s
    max_power = 1.0e6              # W/m^3
    boundary = "no_flux"           # no_flux | dirichlet (T = T_a on the outer boundary)
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from hybrid.config.forward import host_from_table, tissue_from_table
from hybrid.config.geometry import GeometryConfig, geometry_from_table
from hybrid.config.validate import (REQUIRED, ConfigError, OutputConfig, check_petsc_options, choice, number,
                                    output_from_table, read_toml, relative_path, spec_of, take_keys)
from hybrid.problems.ifp import TissueProperties
from hybrid.problems.parameters import PARAMETERS, default
from hybrid.problems.radiation import RadiationResponse

__all__ = ["TransportConfig", "FlowConfig", "DrugConfig", "FreeDrugConfig", "LiposomeConfig", "ReleaseConfig",
           "TissueConfig", "PlasmaConfig", "TimeConfig", "HeatingConfig", "ExposureConfig", "RadiationConfig",
           "TransportSolverConfig", "load_transport_config", "transport_config_from_dict", "FORMULATIONS",
           "PERIVASCULAR"]

FORMULATIONS = ("free", "liposomal", "ph_sensitive", "thermosensitive")
PERIVASCULAR = ("krogh", "vessels")


@dataclass(frozen=True)
class FlowConfig:
    """``[flow]``: ``model`` none | darcy; the IFP's outer ``boundary`` (dirichlet | no_flux,
    tumour-scale meshes) at ``far_field_pressure`` [Pa]."""

    model: str = "none"
    boundary: str = "dirichlet"
    far_field_pressure: float = 0.0


@dataclass(frozen=True)
class DrugConfig:
    """``[drug]``: ``formulation`` (one of :data:`FORMULATIONS`)."""

    formulation: str = "free"


@dataclass(frozen=True)
class FreeDrugConfig:
    """``[free_drug]``: free doxorubicin in the tissue (table defaults)."""

    diffusivity: float = default("D_F")                   # m^2/s
    vessel_permeability: float = default("P_F")           # m/s
    reflection: float = default("sigma_F")                # 1
    uptake: str = "linear"                                # linear | el_kareh_secomb
    uptake_rate: float = default("k_up")                  # 1/s (linear uptake)
    albumin_binding: str = "none"                         # none | equilibrium (table B_alb) | kinetic
    association_rate: float = default("k_a")              # 1/s (kinetic binding)
    dissociation_rate: float = default("k_d")             # 1/s (kinetic binding)
    bound_diffusivity: float = default("D_Fb")            # m^2/s (kinetic binding)
    bound_vessel_permeability: float = default("P_Fb")    # m/s (kinetic binding)


@dataclass(frozen=True)
class LiposomeConfig:
    """``[liposome]``: encapsulated drug (table defaults; liposomal formulations only)."""

    diffusivity: float = default("D_L")                   # m^2/s
    vessel_permeability: float = default("P_L")           # m/s
    reflection: float = default("sigma_L")                # 1
    hindrance: float = default("f_L")                     # 1, convective hindrance
    clearance: float = default("k_L")                     # 1/s


@dataclass(frozen=True)
class ReleaseConfig:
    """``[release]``: uniform ``ph`` (pH_e) and ``temperature`` [K], blood ``transit_time`` [s],
    ``ph_map`` (NIfTI pH_e map, relative to the TOML file)."""

    ph: float = 7.4
    temperature: float = default("T_a")
    transit_time: float = default("tau_v")
    ph_map: Path | None = None


@dataclass(frozen=True)
class TissueConfig:
    """``[tissue]``: interstitial fraction [1], S/V [1/m], cell density [1/m^3], ``ktrans_map``
    (NIfTI Ktrans [1/min], relative to the TOML file)."""

    interstitial_fraction: float = default("phi_T")
    surface_to_volume: float = default("SV_T")
    cell_density: float = default("rho_c")
    ktrans_map: Path | None = None


@dataclass(frozen=True)
class PlasmaConfig:
    """``[plasma]``: ``model`` constant | dose; concentrations [mol/m^3], ``dose`` in ``dose_unit``,
    ``infusion_duration`` and ``liposome_half_life`` [s], ``albumin_bound_fraction`` [1]."""

    model: str
    free_concentration: float = 0.0
    liposomal_concentration: float = 0.0
    dose: float = 0.0
    dose_unit: str = "mg/kg"
    infusion_duration: float = 0.0
    liposome_half_life: float = default("t_half_L")
    albumin_bound_fraction: float = default("delta_alb")


@dataclass(frozen=True)
class TimeConfig:
    """``[time]``: ``end``, ``step`` and ``output_interval`` [s] (default end / 10), ``order`` 1 | 2,
    ``adaptive`` steps with a relative local error ``tolerance``."""

    end: float
    step: float
    order: int = 1
    output_interval: float | None = None
    adaptive: bool = False
    tolerance: float = 1e-3


@dataclass(frozen=True)
class HeatingConfig:
    """``[heating]``: hold ``target_temperature`` [K] from ``start`` to ``end`` [s] with at most
    ``max_power`` [W/m^3]; outer ``boundary`` no_flux | dirichlet."""

    target_temperature: float
    end: float
    max_power: float
    start: float = 0.0
    boundary: str = "no_flux"


@dataclass(frozen=True)
class ExposureConfig:
    """``[exposure]``: lethal amount [mol/cell], kill coefficient [1/mol], profile bin width [m]
    (default: the mesh size), distal distance [m]."""

    lethal_amount_per_cell: float = default("C_I_lethal")
    kill_coefficient: float = default("omega")
    profile_bin_width: float | None = None
    distal_distance: float = 50e-6


@dataclass(frozen=True)
class RadiationConfig(RadiationResponse):
    """``[radiation]``: the delivered dose ``dose_Gy`` [Gy] and the response factors at
    ``reference_dose`` (:class:`hybrid.problems.radiation.RadiationResponse`)."""

    dose_Gy: float


@dataclass(frozen=True)
class TransportSolverConfig:
    """``[solver]``: PETSc options updating the transport solver's defaults."""

    petsc_options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TransportConfig:
    """Everything ``hybrid transport`` needs, validated (SI units; see the module docstring)."""

    geometry: GeometryConfig
    flow: FlowConfig
    tumour: TissueProperties            # IFP coefficients (flow = darcy)
    drug: DrugConfig
    free_drug: FreeDrugConfig
    liposome: LiposomeConfig | None     # None for free drug
    release: ReleaseConfig
    tissue: TissueConfig
    plasma: PlasmaConfig
    time: TimeConfig
    heating: HeatingConfig | None       # None: no hyperthermia
    exposure: ExposureConfig
    solver: TransportSolverConfig
    output: OutputConfig
    source: dict = field(repr=False)    # the TOML as read, echoed into summary.json
    radiation: RadiationConfig | None = None   # None: no [radiation]
    host: TissueProperties | None = None       # IFP coefficients and S/V of the host cells; None: no host


def _section(schema, table, section: str, symbols: dict[str, str] | None = None, choices: dict | None = None,
             **kinds):
    """The ``[section]`` table as a ``schema`` instance: keys checked against its fields (defaults
    filled in), the numbers ``kinds`` (name -> "finite" | "positive" | "non_negative") checked and against the
    parameter-table bounds of ``symbols`` (name -> table symbol), ``choices`` (name -> the allowed
    values of :func:`~hybrid.config.validate.choice`; booleans: (True, False))."""
    values = take_keys(table, section, spec_of(schema))
    for name, allowed in (choices or {}).items():
        choice(section, name, values[name], allowed)
    for name, kind in kinds.items():
        values[name] = number(section, name, values[name], **({} if kind == "finite" else {kind: True}))
        if symbols and name in symbols:
            try:
                PARAMETERS[symbols[name]].check(values[name], f"[{section}] {name}")
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
    return schema(**values)


def _radiation(table: dict, tumour: TissueProperties) -> RadiationConfig:
    """``[radiation]``: the delivered dose [Gy] and the factors at the reference dose (table
    defaults; the p_v factor reproduces the table IFP fall for the configured tumour)."""
    base = RadiationResponse.defaults(tumour.vascular_pressure, tumour.reflection_coefficient,
                                      tumour.plasma_oncotic_pressure, tumour.interstitial_oncotic_pressure)
    values = take_keys(table, "radiation", {f.name: getattr(base, f.name, REQUIRED) for f in fields(RadiationConfig)})
    symbols = {"reference_dose": "D_RT_ref", "hydraulic_conductivity": "m_K_RT", "filtration_coefficient": "m_Lp_RT",
               "vessel_permeability": "m_P_RT", "cell_density": "m_rho_RT"}
    kinds = {name: "positive" for name in values} | {"dose_Gy": "non_negative"}
    return _section(RadiationConfig, values, "radiation", symbols, **kinds)


def transport_config_from_dict(data: dict, origin: str = "<config>", base: Path = Path(".")) -> TransportConfig:
    """Validate a parsed TOML document (module docstring)."""
    try:
        top = take_keys(data, "top level", {"geometry": REQUIRED, "flow": {}, "tumour": {}, "drug": {},
                                        "free_drug": {}, "liposome": None, "release": {}, "tissue": {},
                                        "plasma": REQUIRED, "time": REQUIRED, "heating": None, "exposure": {},
                                        "radiation": None, "solver": {}, "host": None, "output": REQUIRED})
        tumour = tissue_from_table(top["tumour"], "tumour")
        geometry = geometry_from_table(top["geometry"], base, adaptive=False).resolved(tumour.rim_thickness)
        host = host_from_table(top["host"], geometry)
        flow = _section(FlowConfig, top["flow"], "flow", choices={"model": ("none", "darcy"),
                                                                  "boundary": ("dirichlet", "no_flux")},
                        far_field_pressure="finite")
        drug = _section(DrugConfig, top["drug"], "drug", choices={"formulation": FORMULATIONS})
        free = dict(top["free_drug"])
        if isinstance(free.get("albumin_binding"), bool):   # the earlier true/false keep their meaning
            free["albumin_binding"] = "equilibrium" if free["albumin_binding"] else "none"
        free = _section(FreeDrugConfig, free, "free_drug",
                        {"diffusivity": "D_F", "vessel_permeability": "P_F", "reflection": "sigma_F", "uptake_rate": "k_up",
                         "association_rate": "k_a", "dissociation_rate": "k_d", "bound_diffusivity": "D_Fb",
                         "bound_vessel_permeability": "P_Fb"},
                        {"albumin_binding": ("none", "equilibrium", "kinetic"), "uptake": ("linear", "el_kareh_secomb")},
                        diffusivity="positive", vessel_permeability="non_negative", reflection="non_negative",
                        uptake_rate="non_negative", association_rate="non_negative", dissociation_rate="positive",
                        bound_diffusivity="non_negative", bound_vessel_permeability="non_negative")
        liposome = None
        if drug.formulation != "free":
            liposome = _section(LiposomeConfig, top["liposome"] or {}, "liposome",
                                {"diffusivity": "D_L", "vessel_permeability": "P_L", "reflection": "sigma_L",
                                 "hindrance": "f_L", "clearance": "k_L"},
                                diffusivity="positive", vessel_permeability="non_negative",
                                reflection="non_negative", hindrance="non_negative", clearance="non_negative")
        elif top["liposome"] is not None:
            raise ConfigError('[liposome] is given but [drug] formulation = "free"')
        release = take_keys(top["release"], "release", spec_of(ReleaseConfig))
        if release["ph_map"] is not None:
            if drug.formulation != "ph_sensitive":
                raise ConfigError('[release] ph_map is given but [drug] formulation is not "ph_sensitive"')
            release["ph_map"] = relative_path(base, "release", "ph_map", release["ph_map"])
        release = _section(ReleaseConfig, release, "release", {"transit_time": "tau_v"}, ph="positive",
                           temperature="positive", transit_time="positive")
        tissue = take_keys(top["tissue"], "tissue", spec_of(TissueConfig))
        if tissue["ktrans_map"] is not None:
            if geometry.shape in PERIVASCULAR:
                raise ConfigError(f"[tissue] ktrans_map needs a tumour-scale mesh (S/V exchange); the "
                                  f"{geometry.shape!r} mesh resolves its vessel walls")
            tissue["ktrans_map"] = relative_path(base, "tissue", "ktrans_map", tissue["ktrans_map"])
        tissue = _section(TissueConfig, tissue, "tissue", {"interstitial_fraction": "phi_T", "surface_to_volume": "SV_T",
                                                           "cell_density": "rho_c"},
                          interstitial_fraction="positive", surface_to_volume="non_negative", cell_density="positive")
        exposure = take_keys(top["exposure"], "exposure", spec_of(ExposureConfig))
        if exposure["profile_bin_width"] is None:
            exposure["profile_bin_width"] = geometry.mesh_size
        exposure = _section(ExposureConfig, exposure, "exposure",
                            {"lethal_amount_per_cell": "C_I_lethal", "kill_coefficient": "omega"},
                            lethal_amount_per_cell="positive", kill_coefficient="non_negative",
                            profile_bin_width="positive", distal_distance="non_negative")
        plasma = _section(PlasmaConfig, top["plasma"], "plasma", {"albumin_bound_fraction": "delta_alb"},
                          {"model": ("constant", "dose"), "dose_unit": ("mg/kg", "mg/m^2")},
                          free_concentration="non_negative", liposomal_concentration="non_negative",
                          dose="non_negative", infusion_duration="non_negative", liposome_half_life="positive",
                          albumin_bound_fraction="non_negative")
        if (free.albumin_binding == "kinetic" and plasma.model == "constant" and plasma.free_concentration > 0
                and plasma.albumin_bound_fraction >= 1.0):
            raise ConfigError("[plasma] albumin_bound_fraction must be < 1 with a constant unbound free_concentration "
                              "and kinetic albumin binding (the bound plasma drug is f/(1 - f) of it)")
        time = take_keys(top["time"], "time", spec_of(TimeConfig))
        if time["output_interval"] is None:
            time["output_interval"] = number("time", "end", time["end"], positive=True) / 10
        time = _section(TimeConfig, time, "time", choices={"adaptive": (True, False),
                                                           "order": {1: "backward Euler", 2: "BDF2"}},
                        end="positive", step="positive", tolerance="positive", output_interval="positive")
        if time.adaptive and time.order != 1:
            raise ConfigError("[time] adaptive = true needs order = 1 (backward Euler; BDF2 steps are equal)")
        if time.step > time.end:
            raise ConfigError(f"[time] step ({time.step} s) must not exceed end ({time.end} s)")
        heating = None
        if top["heating"] is not None:
            heating = _section(HeatingConfig, top["heating"], "heating", choices={"boundary": ("no_flux", "dirichlet")},
                               target_temperature="positive", start="non_negative", end="positive",
                               max_power="positive")
            if heating.end <= heating.start:
                raise ConfigError(f"[heating] end ({heating.end} s) must be after start ({heating.start} s)")
            if time.adaptive:
                raise ConfigError("[time] adaptive = true cannot be combined with [heating] yet (the bioheat "
                                  "solver steps with the fixed step); set adaptive = false")
        radiation = None if top["radiation"] is None else _radiation(top["radiation"], tumour)
        solver = take_keys(top["solver"], "solver", {"petsc_options": {}})
        check_petsc_options(solver["petsc_options"])
        return TransportConfig(geometry, flow, tumour, drug, free, liposome, release, tissue, plasma, time, heating,
                               exposure, TransportSolverConfig(dict(solver["petsc_options"])),
                               output_from_table(top["output"], base), data, radiation, host)
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{origin}: {exc}") from None


def load_transport_config(path: str | Path) -> TransportConfig:
    """Read and validate a ``hybrid transport`` TOML file (paths relative to it)."""
    path = Path(path)
    return transport_config_from_dict(read_toml(path), str(path), path.parent)
