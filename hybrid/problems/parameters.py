"""The one parameter table: every physical default of hybrid, in SI units, with its source.

Each entry is a :class:`Parameter`. Code reads defaults with :func:`default` (or the
``PARAMETERS`` mapping) and never repeats a number that lives here. Each ``source`` names the
publication or public code a value comes from and ends with a confidence tag; the tags mean the
same wherever hybrid's docstrings and comments use them:

- [V] seen in a retrieved source: an abstract, a published table or the paper's own numbers;
- [S] seen in public code or a secondary text that attributes it to the cited original (likely
  right, the original not read);
- [R] recalled from the literature, not re-verified: check it before a result depends on it;
- [D] derived here from tagged inputs (unit conversions, closed forms).

Names used in the sources: BJ89 = Baxter & Jain 1989, Microvasc Res 37:77-104; tumorcode =
github.com/thierry3000/tumorcode, ``src/iff/calc-ifflow.cpp``; the FlexPDE (tumour-)cord script =
a public FlexPDE "Tumour cord model using a Krogh cylinder" with the parameter set of El-Kareh &
Secomb 2000 (Neoplasia 2:325) and Eikenberry 2009 (Theor Biol Med Model 6:16); the public PINN
script = a public TensorFlow "PINN for Identification of Pressure from Liposome Data" of the model
of Meaney, Stapleton & Kohandel 2023 (Sci Rep 13:20548) and Stapleton et al. 2013 (PLoS ONE
8:e81157).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MMHG_TO_PA = 133.322
"""Pascal per millimetre of mercury."""


@dataclass(frozen=True)
class Parameter:
    """One physical quantity: SI default, admissible bounds and where the value comes from."""

    symbol: str
    meaning: str
    unit: str
    default: float
    lower: float
    upper: float
    source: str

    def check(self, value: float, where: str) -> float:
        """Return ``value`` as float, or raise ValueError naming ``where`` if out of bounds."""
        value = float(value)
        if not math.isfinite(value) or not (self.lower <= value <= self.upper):
            raise ValueError(
                f"{where} = {value!r} is outside the admissible range "
                f"[{self.lower:g}, {self.upper:g}] {self.unit} ({self.meaning})"
            )
        return value


_BJ89 = "Baxter & Jain 1989 Microvasc Res 37:77, via tumorcode calc-ifflow.cpp [S]"
_TUMORCODE_LYMPH = (
    "tumorcode IFP model (Welter & Rieger), thierry3000/tumorcode src/iff/calc-ifflow.cpp IffParams "
    "defaults: lymph_permeability 2.0e-3 um/(kPa s) = 2.0e-12 m/(Pa s), lymph_surf_per_vol "
    "6*2pi/1000 1/um = 3.77e4 1/m, lymph_press 0 [S]; the primary source, Baxter & Jain 1990 "
    "Microvasc Res 40:246, was not retrieved, so its value is not checked here. "
    "With the BJ89 normal values it drains host IFP to p_inf = 1.30 mmHg [D]")

_DOX_G_PER_MOL = 543.5  # doxorubicin molar mass in g/mol: per-cell El-Kareh units convert through it

PARAMETERS: dict[str, Parameter] = {
    p.symbol: p
    for p in [
        # --- interstitial fluid pressure, tumour ---------------------------------------
        Parameter("K_T", "interstitial hydraulic conductivity, tumour", "m^2/(Pa s)",
                  3.10e-14, 1e-20, 1e-8, _BJ89),
        Parameter("Lp_T", "vascular filtration coefficient, tumour", "m/(Pa s)",
                  2.10e-11, 0.0, 1e-6, _BJ89),
        Parameter("SV_T", "vascular surface per tissue volume, tumour", "1/m",
                  2.0e4, 0.0, 1e7, _BJ89),
        Parameter("pv_T", "microvascular pressure, tumour (15.6 mmHg)", "Pa",
                  15.6 * MMHG_TO_PA, -1e5, 1e5, _BJ89),
        Parameter("piv_T", "plasma oncotic pressure (20 mmHg)", "Pa",
                  20.0 * MMHG_TO_PA, 0.0, 1e5, _BJ89),
        Parameter("pii_T", "interstitial oncotic pressure, tumour (15 mmHg)", "Pa",
                  15.0 * MMHG_TO_PA, 0.0, 1e5, _BJ89),
        Parameter("sigma_T", "osmotic reflection coefficient, tumour vessels", "1",
                  0.82, 0.0, 1.0, _BJ89),
        Parameter("LpSV_L_T", "lymphatic filtration coefficient x surface density, tumour", "1/(Pa s)",
                  0.0, 0.0, 1e-3, "0: tumours modelled as alymphatic (Baxter & Jain 1989, 1990) [S]"),
        # --- interstitial fluid pressure, host (normal) tissue -------------------------
        Parameter("K_N", "interstitial hydraulic conductivity, normal tissue", "m^2/(Pa s)",
                  6.40e-15, 1e-20, 1e-8, _BJ89 + " (10x larger in some PINN codes)"),
        Parameter("Lp_N", "vascular filtration coefficient, normal tissue", "m/(Pa s)",
                  2.70e-12, 0.0, 1e-6, _BJ89),
        Parameter("SV_N", "vascular surface per tissue volume, normal tissue", "1/m",
                  7.0e3, 0.0, 1e7, "Baxter & Jain 1989 [R]"),
        Parameter("pv_N", "microvascular pressure, normal tissue (15.6 mmHg)", "Pa",
                  15.6 * MMHG_TO_PA, -1e5, 1e5, _BJ89),
        Parameter("piv_N", "plasma oncotic pressure (20 mmHg)", "Pa",
                  20.0 * MMHG_TO_PA, 0.0, 1e5, _BJ89),
        Parameter("pii_N", "interstitial oncotic pressure, normal tissue (10 mmHg)", "Pa",
                  10.0 * MMHG_TO_PA, 0.0, 1e5, _BJ89),
        Parameter("sigma_N", "osmotic reflection coefficient, normal vessels", "1",
                  0.91, 0.0, 1.0, _BJ89),
        Parameter("LpSV_L_N", "lymphatic filtration coefficient x surface density L_pL S_L/V, normal tissue",
                  "1/(Pa s)", 2.0e-12 * 3.77e4, 0.0, 1e-3, _TUMORCODE_LYMPH),
        Parameter("p_L", "lymphatic pressure", "Pa", 0.0, -1e5, 1e5,
                  "tumorcode lymph_press = 0 [S]; Baxter & Jain 1990 [R]"),
        # --- geometry -------------------------------------------------------------------
        Parameter("R", "tumour radius (slab: half-width)", "m",
                  4.0e-3, 1e-7, 1.0, "mouse xenograft 2.5-7.5 mm [R]"),
        Parameter("r_vessel", "Krogh vessel radius", "m",
                  10e-6, 1e-7, 1e-3, "FlexPDE tumour-cord script [S]"),
        Parameter("r_tissue", "Krogh tissue radius", "m",
                  120e-6, 1e-6, 1e-2, "FlexPDE cord script [S]; O2 limit ~140 um [V]"),
        # --- drug transport physics (issue 8) ---------------------------------------------
        # pharmacokinetics (hybrid/problems/pharmacokinetics.py); human reference patient
        Parameter("MW_DOX", "molar mass of doxorubicin (free base, C27H29NO11)", "kg/mol",
                  _DOX_G_PER_MOL * 1e-3, 0.5, 0.6, "543.5 g/mol (free base) [V]"),
        Parameter("body_mass", "body mass of the reference patient", "kg",
                  70.0, 0.01, 300.0, "reference adult 70 kg [R]; a 20 g mouse is 0.02"),
        Parameter("body_surface", "body surface area of the reference patient", "m^2",
                  1.73, 0.005, 3.0, "reference adult 1.73 m^2 [R]"),
        Parameter("t_half_F1", "free doxorubicin plasma half-life, distribution phase", "s",
                  0.07 * 3600.0, 1.0, 1e6,
                  "0.07 h at 25 mg/m^2: Drummond et al. 1999 Pharmacol Rev Table 4 (Gabizon 1994 data) [V]"),
        Parameter("t_half_F2", "free doxorubicin plasma half-life, elimination phase", "s",
                  8.7 * 3600.0, 1.0, 1e7,
                  "8.7 h at 25 mg/m^2: Drummond et al. 1999 Table 4 [V] (Rossi 1987 triexponential: 37.6 h)"),
        Parameter("A_F1", "free doxorubicin plasma concentration per dosed amount, fast phase (70 kg patient)", "1/m^3",
                  74.6, 0.0, 1e4, "0.0746 1/L: FlexPDE tumour-cord script (t1/2 4.3 min) [S]"),
        Parameter("A_F2", "free doxorubicin plasma concentration per dosed amount, slow phase (70 kg patient)", "1/m^3",
                  # AUC = 1.0 mg h/L at 25 mg/m^2 (Drummond 1999 Table 4 [V]) for 1.73 m^2, minus the fast phase
                  (1.0 / (25.0 * 1.73) - 0.0746 * 0.07 / math.log(2.0)) * math.log(2.0) / 8.7 * 1e3, 0.0, 1e4,
                  "[D]: from the AUC 1.0 mg h/L at 25 mg/m^2 (Drummond 1999 Table 4 [V]), 1.73 m^2 and A_F1"),
        Parameter("t_half_L", "plasma half-life of PEGylated liposomal doxorubicin", "s",
                  45.0 * 3600.0, 60.0, 1e7,
                  "45 h human median (Gabizon et al. 1994 Cancer Res 54:987) [V]; mouse/rat 20-30 h [V]"),
        Parameter("Vd_L_per_mass", "volume of distribution of liposomal doxorubicin per body mass", "m^3/kg",
                  4.0e-3 / 70.0, 1e-6, 1e-3,
                  "[D]: V_d = 4 L (Gabizon 1994 [V]) over 70 kg; close to the plasma volume"),
        Parameter("delta_alb", "fraction of plasma free doxorubicin bound to albumin", "1",
                  0.75, 0.0, 1.0, "FlexPDE cord script k_a/(k_a + k_d) = 50/67 [S]"),
        Parameter("B_alb", "bound per unbound free doxorubicin in tumour tissue at binding equilibrium", "1",
                  50.0 / 17.0, 0.0, 1e3, "k_a/k_d = 50/17 (1/min): FlexPDE tumour-cord script bound pool [S]"),
        Parameter("k_a", "association rate of free doxorubicin to albumin in tumour tissue", "1/s",
                  50.0 / 60.0, 0.0, 1e3, "50 1/min: FlexPDE tumour-cord script bound pool [S]"),
        Parameter("k_d", "dissociation rate of albumin-bound doxorubicin in tumour tissue", "1/s",
                  17.0 / 60.0, 1e-9, 1e3, "17 1/min: FlexPDE tumour-cord script bound pool [S]"),
        # transvascular exchange (hybrid/problems/exchange.py)
        # interstitial diffusion and convection (hybrid/forward/transport.py)
        Parameter("D_F", "effective diffusivity of free doxorubicin in tumour tissue", "m^2/s",
                  7000e-12 / 60.0, 1e-14, 1e-8,
                  "7000 um^2/min: FlexPDE tumour-cord script (El-Kareh/Eikenberry lineage) [S]; "
                  "tumorcode: 180 um^2/s free, 16 um^2/s with binding [S]"),
        Parameter("D_Fb", "diffusivity of albumin-bound doxorubicin in tumour tissue", "m^2/s",
                  530e-12 / 60.0, 1e-16, 1e-8, "530 um^2/min: FlexPDE tumour-cord script [S]"),
        Parameter("D_L", "hindered diffusivity of ~100 nm liposomes in tumour interstitium", "m^2/s",
                  6.6e-12 / 20.0, 1e-16, 1e-10,
                  "[D]: Stokes-Einstein 6.6e-12 m^2/s (100 nm, 37 C, water 0.69 mPa s) hindered 20x; "
                  "range 1e-13 to 1e-12 (5-50x hindrance) [R]; Pluen et al. 2001 PNAS [V qualitative]"),
        Parameter("f_L", "convective hindrance (retardation) of liposomes, tumour", "1",
                  0.5, 0.0, 1.0, "public PINN script (Stapleton/Meaney-type model) [S]; normal tissue 1.0"),
        Parameter("P_F", "vessel-wall permeability, free doxorubicin", "m/s",
                  2.67e-6, 0.0, 1e-3, "160 um/min: FlexPDE cord script [S] (another code: 1.0e-6)"),
        Parameter("P_Fb", "vessel-wall permeability, albumin-bound doxorubicin", "m/s",
                  0.5e-6 / 60.0, 0.0, 1e-3, "0.5 um/min: FlexPDE cord script [S]"),
        Parameter("sigma_F", "solute reflection coefficient of tumour vessels, free doxorubicin", "1",
                  0.0, 0.0, 1.0, "small solute (0.5 kDa) in leaky tumour vessels: ~0 [R]"),
        Parameter("P_L", "vessel-wall permeability, ~90 nm liposome, tumour", "m/s",
                  2.0e-10, 0.0, 1e-6, "2e-7 mm/s for 90 nm: PMC7078505 Table 2 (estimate there 1.1e-7 mm/s) [V]"),
        Parameter("sigma_L", "solute reflection coefficient of tumour vessels, liposomes", "1",
                  0.2, 0.0, 1.0, "public PINN script (Stapleton/Meaney-type model) [S]; normal tissue 1.0"),
        # release kinetics (hybrid/problems/release.py)
        Parameter("k_rel_L", "baseline release rate of non-triggered PEG liposomes in tissue", "1/s",
                  -math.log(1.0 - 0.49) / (7.0 * 86400.0), 0.0, 1.0,
                  "[D]: 49 % bioavailable by day 7 (Laginha et al. 2005 Clin Cancer Res 11:6944 [V]) as first order; "
                  "Harashima 1999 optimum 0.06 1/h [V]"),
        Parameter("k_L", "clearance rate of extravasated liposomes", "1/s",
                  5.1e-6, 0.0, 1.0, "public PINN script, t1/2 ~ 38 h [S]"),
        Parameter("T_m", "release midpoint temperature of lysolipid thermosensitive liposomes", "K",
                  273.15 + 41.3, 273.15 + 37.0, 273.15 + 50.0, "~41.3 C near the DPPC transition [R]"),
        Parameter("dT_m", "width of the thermal release switch", "K",
                  0.75, 0.05, 5.0, "0.5-1 K [R]"),
        Parameter("k_max_T", "release rate of thermosensitive liposomes above T_m", "1/s",
                  0.05, 0.0, 10.0, "0.03-0.1 1/s (t1/2 7-20 s) [R, order of magnitude]; Gasselhuber 2010 table not read"),
        Parameter("k_37_T", "leakage rate of thermosensitive liposomes far below T_m (~ at 37 C)", "1/s",
                  3.0e-4, 0.0, 1.0, "1e-4 to 1e-3 1/s [R, order of magnitude]"),
        Parameter("v_b", "blood volume fraction of tumour tissue", "1",
                  0.05, 0.0, 1.0, "DCE-MRI v_p / blood volume of tumours 2-10 % [R]"),
        Parameter("tau_v", "mean transit time of blood through the tumour microvasculature", "s",
                  0.05 / 9.0e-3, 0.01, 600.0,
                  "[D]: central volume principle v_b / omega_b = 0.05 / 9e-3 1/s (table perfusion) = 5.6 s"),
        Parameter("pH_50", "release midpoint pH of pH-sensitive liposomes", "1",
                  6.8, 4.0, 8.0, "must be 6.5-6.9 to trigger at tumour pH_e [R]; an inverse-problem unknown"),
        Parameter("n_pH", "steepness (Hill exponent) of the pH release switch", "1",
                  2.0, 0.1, 10.0, "1-4 [R]; an inverse-problem unknown"),
        Parameter("k_max_pH", "release rate of pH-sensitive liposomes well below pH_50", "1/s",
                  1.0e-4, 0.0, 10.0, "no published in-vivo rate constant found [R]: placeholder t1/2 ~ 2 h"),
        # cellular uptake and kill (hybrid/problems/uptake.py); El-Kareh & Secomb 2000 Neoplasia 2:325
        Parameter("phi_T", "interstitial (extracellular) volume fraction, tumour", "1",
                  0.4, 0.01, 1.0, "El-Kareh & Secomb lineage, two public implementations [S]"),
        Parameter("rho_c", "tumour cell density", "1/m^3",
                  1.0e15, 0.0, 1e16, "1e9 cells/mL, two public El-Kareh implementations [S] (one uses 6e8)"),
        Parameter("V_max", "maximal membrane transport rate of doxorubicin per cell", "mol/s",
                  0.28e-14 / 60.0 / _DOX_G_PER_MOL, 0.0, 1e-15,
                  "0.28 ng/(1e5 cells min), El-Kareh & Secomb 2000 via two public implementations [S]"),
        Parameter("K_E", "extracellular Michaelis constant (per interstitial-fluid volume)", "mol/m^3",
                  0.219 / _DOX_G_PER_MOL, 0.0, 1.0, "0.219 ug/mL, El-Kareh & Secomb 2000 via two implementations [S]"),
        Parameter("K_I", "intracellular Michaelis constant per cell", "mol",
                  1.37e-14 / _DOX_G_PER_MOL, 0.0, 1e-12, "1.37 ng/1e5 cells, El-Kareh & Secomb 2000 via two implementations [S]"),
        Parameter("k_up", "first-order cellular uptake rate of free doxorubicin (linear model)", "1/s",
                  0.02, 0.0, 10.0,
                  "[D]: a steady linear Krogh sink (hybrid.problems.krogh) matching the 24-50 um half-distances of "
                  "Grantab et al. 2012 BMC Cancer 12:214 [V] and Primeau et al. 2005 [R] needs 0.01-0.025 1/s"),
        Parameter("omega", "log-kill coefficient on peak intracellular amount per cell", "1/mol",
                  0.66 * _DOX_G_PER_MOL * 1e14, 0.0, 1e20,
                  "0.66 (ng/1e5 cells)^-1, i.e. 90 % kill at 3.5 ng/1e5 cells [R]: verify in El-Kareh & Secomb 2000"),
        Parameter("C_I_lethal", "lethal peak intracellular amount per cell", "mol",
                  3.5e-14 / _DOX_G_PER_MOL, 0.0, 1e-12, "3.5 ng/1e5 cells, public El-Kareh re-implementation [S]"),
        # radiation (hybrid/problems/radiation.py)
        Parameter("D_RT_ref", "reference fractionated radiation dose of the IFP measurement", "Gy",
                  28.8, 0.0, 100.0, "median 28.8 Gy in 16 fractions, Yeo et al. 2009 Clin Cancer Res 15:6201 [V]"),
        Parameter("ifp_drop_RT", "relative fall of tumour IFP at the reference dose", "1",
                  0.31, 0.0, 0.99, "median 29.0 -> 20.0 mmHg, Yeo et al. 2009 [V]; -31 % also in a second cohort [V]"),
        Parameter("m_K_RT", "factor on hydraulic conductivity at the reference dose", "1",
                  1.0, 0.01, 100.0, "sign uncertain: cell loss raises K [R], collagen lowers it (Znati 2003) [R]"),
        Parameter("m_Lp_RT", "factor on vascular filtration coefficient at the reference dose", "1",
                  1.0, 0.01, 100.0, "no dose-response found [R]"),
        Parameter("m_P_RT", "factor on vascular solute permeability at the reference dose", "1",
                  1.0, 0.01, 100.0,
                  "no dose-response found; nanoparticle accumulation up to 6x (Miller 2017 [V]) is not P alone [R]"),
        Parameter("m_rho_RT", "factor on tumour cell density at the reference dose", "1",
                  1.0, 0.01, 1.0, "no tissue-level dose-response found [R]; cell loss lowers IFP (Griffon-Etienne 1999) [R]"),
        # Pennes bioheat (hybrid/problems/bioheat.py)
        Parameter("k_th", "thermal conductivity of tumour tissue", "W/(m K)",
                  0.527, 0.05, 5.0, "0.5-0.56 [R]; 0.527 in a public tumour-hyperthermia script [S]"),
        Parameter("rho_tissue", "tissue density", "kg/m^3",
                  1045.0, 900.0, 1200.0, "1045-1060 [R]; 1045 in the same script [S]"),
        Parameter("c_tissue", "tissue specific heat", "J/(kg K)",
                  3600.0, 2000.0, 4500.0, "3500-3700 [R]; 3600 in the same script [S]"),
        Parameter("rho_b", "blood density", "kg/m^3",
                  1050.0, 1000.0, 1100.0, "1043-1060 [R/S]"),
        Parameter("c_b", "blood specific heat", "J/(kg K)",
                  3617.0, 3000.0, 4200.0, "3600-3840 [R/S]"),
        Parameter("omega_b", "blood perfusion rate, tumour (blood volume per tissue volume per time)", "1/s",
                  9.0e-3, 0.0, 0.1, "tumour 5e-4 to 1e-2 [R]; 9e-3 in the public tumour script [S]"),
        Parameter("Q_m", "metabolic heat production", "W/m^3",
                  550.0, 0.0, 1e5, "400-700 W/m^3 [R]; negligible during hyperthermia"),
        Parameter("T_a", "arterial blood temperature", "K",
                  273.15 + 37.0, 273.15 + 30.0, 273.15 + 45.0, "37 C [R]"),
    ]
}


def default(symbol: str) -> float:
    """SI default of the parameter named ``symbol`` (KeyError lists the known symbols)."""
    try:
        return PARAMETERS[symbol].default
    except KeyError:
        raise KeyError(f"unknown parameter {symbol!r}; known: {sorted(PARAMETERS)}") from None


def value_or_default(value, symbol: str):
    """``value`` where given (number, array, tensor or UFL expression), else the table default of ``symbol``."""
    return default(symbol) if value is None else value
