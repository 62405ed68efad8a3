"""Tissue properties and boundary conditions of the Darcy-Starling IFP model (SI units).

``-div(K grad p) = Lp S/V (p_v - p - sigma (pi_v - pi_i)) - LpL SL/V (p - p_L)``
(Baxter & Jain 1989 Microvasc Res 37:77; lymphatics: Baxter & Jain 1990 Microvasc Res 40:246).
Defaults come from the parameter table :mod:`hybrid.problems.parameters`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from hybrid.problems.exact import RadialRegion, RadialSolution, effective_pressure, radial_pressure, screening
from hybrid.problems.parameters import PARAMETERS

# dataclass field name -> parameter-table symbol without the region suffix
_SYMBOLS = {
    "hydraulic_conductivity": "K",
    "filtration_coefficient": "Lp",
    "vessel_surface_density": "SV",
    "vascular_pressure": "pv",
    "plasma_oncotic_pressure": "piv",
    "interstitial_oncotic_pressure": "pii",
    "reflection_coefficient": "sigma",
    "lymphatic_filtration": "LpSV_L",
}
_REGION_FREE = {"lymphatic_pressure": "p_L"}


@dataclass(frozen=True)
class TissueProperties:
    """Coefficients of one tissue region; every value in SI units."""

    hydraulic_conductivity: float          # K, m^2/(Pa s)
    filtration_coefficient: float          # Lp, m/(Pa s)
    vessel_surface_density: float          # S/V, 1/m
    vascular_pressure: float               # p_v, Pa
    plasma_oncotic_pressure: float         # pi_v, Pa
    interstitial_oncotic_pressure: float   # pi_i, Pa
    reflection_coefficient: float          # sigma, 1
    lymphatic_filtration: float = 0.0      # LpL SL/V, 1/(Pa s) (table default: host 7.5e-8, tumour 0)
    lymphatic_pressure: float = 0.0        # p_L, Pa

    @classmethod
    def defaults(cls, region: str) -> "TissueProperties":
        """Table defaults for ``region`` = ``"tumour"`` or ``"host"`` (normal tissue)."""
        suffix = {"tumour": "_T", "host": "_N"}[region]
        values = {name: PARAMETERS[symbol + suffix].default for name, symbol in _SYMBOLS.items()}
        values |= {name: PARAMETERS[symbol].default for name, symbol in _REGION_FREE.items()}
        return cls(**values)

    def validated(self, region: str) -> "TissueProperties":
        """Return self after checking every value against the table bounds (ValueError if not)."""
        suffix = {"tumour": "_T", "host": "_N"}[region]
        for f in fields(self):
            symbol = _SYMBOLS[f.name] + suffix if f.name in _SYMBOLS else _REGION_FREE[f.name]
            PARAMETERS[symbol].check(getattr(self, f.name), f"[{region}] {f.name}")
        if self.hydraulic_conductivity <= 0:
            raise ValueError(f"[{region}] hydraulic_conductivity must be > 0 m^2/(Pa s)")
        return self

    @property
    def vascular_exchange(self) -> float:
        """Lp S/V [1/(Pa s)]: transvascular fluid exchange per unit tissue volume and pressure."""
        return self.filtration_coefficient * self.vessel_surface_density

    @property
    def effective_pressure(self) -> float:
        """p_e = p_v - sigma (pi_v - pi_i) [Pa]: the pressure the vessels drive towards."""
        return effective_pressure(self.vascular_pressure, self.reflection_coefficient,
                                  self.plasma_oncotic_pressure, self.interstitial_oncotic_pressure)

    def radial_region(self, outer_radius: float) -> RadialRegion:
        """This tissue as a closed-form shell up to ``outer_radius`` [m] (screening constant, p_inf)."""
        lam, p_inf = screening(self.hydraulic_conductivity, self.vascular_exchange, self.effective_pressure,
                               self.lymphatic_filtration, self.lymphatic_pressure)
        return RadialRegion(outer_radius, self.hydraulic_conductivity, lam, p_inf)

    @property
    def rim_thickness(self) -> float:
        """sqrt(K / (Lp S/V + LpL SL/V)) [m]: width of the IFP boundary layer (inf if no sink)."""
        sink = self.vascular_exchange + self.lymphatic_filtration
        return math.sqrt(self.hydraulic_conductivity / sink) if sink > 0 else math.inf


@dataclass(frozen=True)
class OuterBoundary:
    """Condition on the outer boundary: ``kind`` in {"dirichlet", "robin", "no_flux"}."""

    kind: str = "dirichlet"
    pressure: float = 0.0            # p_far, Pa
    robin_coefficient: float = 0.0   # h, m/(Pa s): outflow = h (p - p_far)

    def __post_init__(self):
        if self.kind not in ("dirichlet", "robin", "no_flux"):
            raise ValueError(f"[boundary] type must be dirichlet, robin or no_flux, got {self.kind!r}")
        if self.kind == "robin" and not self.robin_coefficient > 0:
            raise ValueError("[boundary] type = robin needs robin_coefficient > 0 m/(Pa s)")
        if not math.isfinite(self.pressure):
            raise ValueError("[boundary] far_field_pressure must be finite")


def closed_form_pressure(dim: int, tumour_radius: float, tumour: TissueProperties, boundary: OuterBoundary,
                         host: TissueProperties | None = None, host_thickness: float = 0.0) -> RadialSolution:
    """Baxter-Jain closed form of a radially symmetric tumour of ``tumour_radius`` [m] in ``dim``
    dimensions with constant region coefficients, optionally in a host shell ``host_thickness`` [m]
    thick, under a Dirichlet, Robin or no-flux outer ``boundary``."""
    regions = [tumour.radial_region(tumour_radius)]
    if host is not None:
        regions.append(host.radial_region(tumour_radius + host_thickness))
    robin = {"dirichlet": None, "robin": boundary.robin_coefficient, "no_flux": 0.0}[boundary.kind]
    return radial_pressure(dim, regions, boundary.pressure, robin)
