"""The one parameter table: every physical default of hybrid, in SI units, with its source.

Each entry is a :class:`Parameter`. Code reads defaults with :func:`default` (or the
``PARAMETERS`` mapping) and never repeats a number that lives here. Values and sources are
from ``shared/reference/physics.md`` §0; the tag says how sure the source is
([V] read in a primary source, [S] seen in public code citing the original,
[R] recalled, [D] derived).
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
    ]
}


def default(symbol: str) -> float:
    """SI default of the parameter named ``symbol`` (KeyError lists the known symbols)."""
    try:
        return PARAMETERS[symbol].default
    except KeyError:
        raise KeyError(f"unknown parameter {symbol!r}; known: {sorted(PARAMETERS)}") from None
