"""Configuration of ``hybrid transport``: TOML -> a frozen :class:`TransportConfig` (SI units).

TOML key = field name; unknown keys, missing required keys and impossible values raise
:class:`hybrid.config.ConfigError` naming the section and key. Paths are relative to the TOML
file (``[output] directory`` too).
Example (the Krogh verification case of issue 8)::

    [geometry]                     # as for hybrid forward (krogh | vessels | disc | sphere | slab | mask)
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

Other keys: ``[free_drug] reflection``, ``albumin_binding`` (true: free drug binds in the tissue at
equilibrium, bound/unbound = table B_alb = 2.94; ``free_drug`` is then the unbound part); ``[liposome] diffusivity`` (table D_L),
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
tissue farther than this from every vessel; default 50 um, the perivascular gradient of physics.md §4);
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

from hybrid.config.forward import tissue_from_table
from hybrid.config.geometry import GeometryConfig, geometry_from_table
from hybrid.config.validate import (REQUIRED, ConfigError, OutputConfig, check_petsc_options, number,
                                    output_from_table, read_toml, relative_path, take_keys)
from hybrid.problems.ifp import TissueProperties
from hybrid.problems.parameters import PARAMETERS, default
from hybrid.problems.radiation import RadiationResponse

__all__ = ["TransportConfig", "load_transport_config", "transport_config_from_dict", "FORMULATIONS"]

FORMULATIONS = ("free", "liposomal", "ph_sensitive", "thermosensitive")
PERIVASCULAR = ("krogh", "vessels")


@dataclass(frozen=True)
class TransportConfig:
    """Everything ``hybrid transport`` needs, validated (SI units; see the module docstring)."""

    geometry: GeometryConfig
    flow: dict                   # model, boundary, far_field_pressure
    tumour: TissueProperties     # IFP coefficients (flow = darcy)
    formulation: str
    free_drug: dict              # diffusivity, vessel_permeability, reflection, uptake, uptake_rate
    liposome: dict | None        # diffusivity, vessel_permeability, reflection, hindrance, clearance
    release: dict                # ph, temperature
    tissue: dict                 # interstitial_fraction, surface_to_volume, cell_density
    plasma: dict
    time: dict                   # end, step, order, output_interval, adaptive, tolerance
    heating: dict | None         # target_temperature, start, end, max_power, boundary
    exposure: dict               # lethal_amount_per_cell [mol/cell], kill_coefficient [1/mol], profile_bin_width [m]
    petsc_options: dict
    output: OutputConfig
    source: dict = field(repr=False)   # the TOML as read, echoed into summary.json
    radiation: dict | None = None      # dose_Gy [Gy], response (RadiationResponse); None: no [radiation]


def _checked(section: str, values: dict, symbols: dict[str, str] | None = None, **kinds) -> dict:
    """Numbers in ``values`` checked as ``kinds`` (name -> "positive" | "non_negative"), and
    against the parameter-table bounds of ``symbols`` (name -> table symbol)."""
    out = dict(values)
    for name, kind in kinds.items():
        out[name] = number(section, name, values[name], **{kind: True})
        if symbols and name in symbols:
            try:
                PARAMETERS[symbols[name]].check(out[name], f"[{section}] {name}")
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
    return out


def _radiation(section: dict, tumour: TissueProperties) -> dict:
    """``[radiation]``: the delivered dose [Gy] and the factors at the reference dose (table
    defaults; the p_v factor reproduces the table IFP fall for the configured tumour)."""
    base = RadiationResponse.defaults(tumour.vascular_pressure, tumour.reflection_coefficient,
                                      tumour.plasma_oncotic_pressure, tumour.interstitial_oncotic_pressure)
    values = take_keys(section, "radiation", {"dose_Gy": REQUIRED} | {f.name: getattr(base, f.name)
                                                                  for f in fields(RadiationResponse)})
    symbols = {"reference_dose": "D_RT_ref", "hydraulic_conductivity": "m_K_RT", "filtration_coefficient": "m_Lp_RT",
               "vessel_permeability": "m_P_RT", "cell_density": "m_rho_RT"}
    values = _checked("radiation", values, symbols, dose_Gy="non_negative", reference_dose="positive",
                      **{name: "positive" for name in values if name not in ("dose_Gy", "reference_dose")})
    dose = values.pop("dose_Gy")
    return {"dose_Gy": dose, "response": RadiationResponse(**values)}


def transport_config_from_dict(data: dict, origin: str = "<config>", base: Path = Path(".")) -> TransportConfig:
    """Validate a parsed TOML document (module docstring)."""
    try:
        top = take_keys(data, "top level", {"geometry": REQUIRED, "flow": {}, "tumour": {}, "drug": {},
                                        "free_drug": {}, "liposome": None, "release": {}, "tissue": {},
                                        "plasma": REQUIRED, "time": REQUIRED, "heating": None, "exposure": {}, "radiation": None,
                                        "solver": {},
                                        "output": REQUIRED})
        tumour = tissue_from_table(top["tumour"], "tumour")
        geometry = geometry_from_table(top["geometry"], base).resolved(tumour.rim_thickness)
        flow = take_keys(top["flow"], "flow", {"model": "none", "boundary": "dirichlet", "far_field_pressure": 0.0})
        if flow["model"] not in ("none", "darcy"):
            raise ConfigError(f"[flow] model must be none or darcy, got {flow['model']!r}")
        if flow["boundary"] not in ("dirichlet", "no_flux"):
            raise ConfigError(f"[flow] boundary must be dirichlet or no_flux, got {flow['boundary']!r}")
        flow["far_field_pressure"] = number("flow", "far_field_pressure", flow["far_field_pressure"])
        drug = take_keys(top["drug"], "drug", {"formulation": "free"})
        formulation = drug["formulation"]
        if formulation not in FORMULATIONS:
            raise ConfigError(f"[drug] formulation must be one of {', '.join(FORMULATIONS)}, got {formulation!r}")
        free = take_keys(top["free_drug"], "free_drug", {
            "diffusivity": default("D_F"), "vessel_permeability": default("P_F"), "reflection": default("sigma_F"),
            "uptake": "linear", "uptake_rate": default("k_up"), "albumin_binding": False})
        if not isinstance(free["albumin_binding"], bool):
            raise ConfigError(f"[free_drug] albumin_binding must be true or false, got {free['albumin_binding']!r}")
        if free["uptake"] not in ("linear", "el_kareh_secomb"):
            raise ConfigError(f"[free_drug] uptake must be linear or el_kareh_secomb, got {free['uptake']!r}")
        free = _checked("free_drug", free, {"diffusivity": "D_F", "vessel_permeability": "P_F", "reflection": "sigma_F", "uptake_rate": "k_up"},
                        diffusivity="positive", vessel_permeability="non_negative", reflection="non_negative",
                        uptake_rate="non_negative")
        liposome = None
        if formulation != "free":
            liposome = take_keys(top["liposome"] or {}, "liposome", {
                "diffusivity": default("D_L"), "vessel_permeability": default("P_L"), "reflection": default("sigma_L"),
                "hindrance": default("f_L"), "clearance": default("k_L")})
            liposome = _checked("liposome", liposome, {"diffusivity": "D_L", "vessel_permeability": "P_L",
                                                       "reflection": "sigma_L", "hindrance": "f_L",
                                                       "clearance": "k_L"},
                                diffusivity="positive", vessel_permeability="non_negative",
                                reflection="non_negative", hindrance="non_negative", clearance="non_negative")
        elif top["liposome"] is not None:
            raise ConfigError('[liposome] is given but [drug] formulation = "free"')
        release = take_keys(top["release"], "release", {"ph": 7.4, "temperature": default("T_a"),
                                                    "transit_time": default("tau_v"), "ph_map": None})
        if release["ph_map"] is not None:
            if formulation != "ph_sensitive":
                raise ConfigError('[release] ph_map is given but [drug] formulation is not "ph_sensitive"')
            release["ph_map"] = relative_path(base, "release", "ph_map", release["ph_map"])
        release = _checked("release", release, {"transit_time": "tau_v"}, ph="positive", temperature="positive",
                           transit_time="positive")
        tissue = take_keys(top["tissue"], "tissue", {"interstitial_fraction": default("phi_T"),
                                                 "surface_to_volume": default("SV_T"), "cell_density": default("rho_c"),
                                                 "ktrans_map": None})
        if tissue["ktrans_map"] is not None:
            if geometry.shape in PERIVASCULAR:
                raise ConfigError(f"[tissue] ktrans_map needs a tumour-scale mesh (S/V exchange); the "
                                  f"{geometry.shape!r} mesh resolves its vessel walls")
            tissue["ktrans_map"] = relative_path(base, "tissue", "ktrans_map", tissue["ktrans_map"])
        tissue = _checked("tissue", tissue, {"interstitial_fraction": "phi_T", "surface_to_volume": "SV_T",
                                             "cell_density": "rho_c"},
                          interstitial_fraction="positive", surface_to_volume="non_negative", cell_density="positive")
        exposure = take_keys(top["exposure"], "exposure", {"lethal_amount_per_cell": default("C_I_lethal"),
                                                       "kill_coefficient": default("omega"),
                                                       "profile_bin_width": geometry.mesh_size,
                                                       "distal_distance": 50e-6})
        exposure = _checked("exposure", exposure, {"lethal_amount_per_cell": "C_I_lethal", "kill_coefficient": "omega"},
                            lethal_amount_per_cell="positive", kill_coefficient="non_negative",
                            profile_bin_width="positive", distal_distance="non_negative")
        plasma = take_keys(top["plasma"], "plasma", {
            "model": REQUIRED, "free_concentration": 0.0, "liposomal_concentration": 0.0, "dose": 0.0,
            "dose_unit": "mg/kg", "infusion_duration": 0.0, "liposome_half_life": default("t_half_L"),
            "albumin_bound_fraction": default("delta_alb")})
        if plasma["model"] not in ("constant", "dose"):
            raise ConfigError(f"[plasma] model must be constant or dose, got {plasma['model']!r}")
        if plasma["dose_unit"] not in ("mg/kg", "mg/m^2"):
            raise ConfigError(f"[plasma] dose_unit must be mg/kg or mg/m^2, got {plasma['dose_unit']!r}")
        plasma = _checked("plasma", plasma, {"albumin_bound_fraction": "delta_alb"},
                          free_concentration="non_negative", liposomal_concentration="non_negative",
                          dose="non_negative", infusion_duration="non_negative", liposome_half_life="positive",
                          albumin_bound_fraction="non_negative")
        time = take_keys(top["time"], "time", {"end": REQUIRED, "step": REQUIRED, "order": 1, "output_interval": None,
                                           "adaptive": False, "tolerance": 1e-3})
        time = _checked("time", time, end="positive", step="positive", tolerance="positive")
        if not isinstance(time["adaptive"], bool):
            raise ConfigError(f"[time] adaptive must be true or false, got {time['adaptive']!r}")
        if time["adaptive"] and time["order"] != 1:
            raise ConfigError("[time] adaptive = true needs order = 1 (backward Euler; BDF2 steps are equal)")
        if time["order"] not in (1, 2) or isinstance(time["order"], bool):
            raise ConfigError(f"[time] order must be 1 (backward Euler) or 2 (BDF2), got {time['order']!r}")
        if time["step"] > time["end"]:
            raise ConfigError(f"[time] step ({time['step']} s) must not exceed end ({time['end']} s)")
        interval = time["end"] / 10 if time["output_interval"] is None else time["output_interval"]
        time["output_interval"] = number("time", "output_interval", interval, positive=True)
        heating = None
        if top["heating"] is not None:
            heating = take_keys(top["heating"], "heating", {"target_temperature": REQUIRED, "start": 0.0,
                                                        "end": REQUIRED, "max_power": REQUIRED,
                                                        "boundary": "no_flux"})
            heating = _checked("heating", heating, target_temperature="positive", start="non_negative",
                               end="positive", max_power="positive")
            if heating["boundary"] not in ("no_flux", "dirichlet"):
                raise ConfigError(f"[heating] boundary must be no_flux or dirichlet, got {heating['boundary']!r}")
            if heating["end"] <= heating["start"]:
                raise ConfigError(f"[heating] end ({heating['end']} s) must be after start ({heating['start']} s)")
        if heating is not None and time["adaptive"]:
            raise ConfigError("[time] adaptive = true cannot be combined with [heating] yet (the bioheat solver "
                              "steps with the fixed step); set adaptive = false")
        radiation = None if top["radiation"] is None else _radiation(top["radiation"], tumour)
        solver = take_keys(top["solver"], "solver", {"petsc_options": {}})
        check_petsc_options(solver["petsc_options"])
        return TransportConfig(geometry, flow, tumour, formulation, free, liposome, release, tissue, plasma, time,
                               heating, exposure, dict(solver["petsc_options"]), output_from_table(top["output"], base),
                               data, radiation)
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{origin}: {exc}") from None


def load_transport_config(path: str | Path) -> TransportConfig:
    """Read and validate a ``hybrid transport`` TOML file (paths relative to it)."""
    path = Path(path)
    return transport_config_from_dict(read_toml(path), str(path), path.parent)
