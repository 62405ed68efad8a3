"""Radiation-induced change of the tumour microenvironment before drug delivery.

Model choice (no canonical dose-response law for K, Lp, P or p_v was found in the literature): each
property q is multiplied by a log-linear dose response

    m_q(D) = m_q,ref^(D / D_ref)        (m_q(0) = 1; two courses multiply),

with D the delivered (fractionated) dose [Gy] and m_q,ref the factor at the reference dose
D_ref = 28.8 Gy of Yeo et al. 2009 (Clin Cancer Res 15:6201), whose cervix patients' median IFP
fell by 31 % (29.0 -> 20.0 mmHg) [V]. In the Baxter-Jain model the IFP plateau is the effective
pressure p_e = p_v - sigma (pi_v - pi_i), so that fall is carried by the microvascular pressure:
m_pv,ref is chosen so that p_e falls by 31 % [D] (mechanism: cell loss decompresses vessels,
Griffon-Etienne et al. 1999 [R]). The factors on hydraulic conductivity, filtration coefficient,
vascular permeability and cell density default to 1: their sign and size depend on dose,
timing and tumour (Znati 2003 [R]; Appelbe 2016, Miller 2017 [V] qualitative), so they are
exposed for configuration and inversion, not invented. Confidence: the 31 % is [V]; its
attribution to p_v and the log-linear form are [D]/model choices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hybrid.problems.exchange import effective_pressure
from hybrid.problems.namespace import Namespace, namespace_of
from hybrid.problems.parameters import default, value_or_default

__all__ = ["RadiationResponse", "vascular_pressure_factor", "dose_response"]


def vascular_pressure_factor(ifp_drop: float, pv: float, sigma: float, piv: float, pii: float) -> float:
    """Factor on p_v [1] that lowers p_e = p_v - sigma (pi_v - pi_i) by the fraction ``ifp_drop``
    (pressures in Pa). Raises ValueError if the lowered p_v would be negative."""
    oncotic = sigma * (piv - pii)
    lowered = (1.0 - ifp_drop) * effective_pressure(pv, sigma, piv, pii) + oncotic
    if not (pv > 0.0 and lowered >= 0.0):
        raise ValueError(f"an IFP drop of {ifp_drop:g} cannot be carried by p_v = {pv:g} Pa "
                         f"(oncotic term {oncotic:g} Pa): choose a smaller drop or larger p_v")
    return lowered / pv


def dose_response(dose, factor_at_reference: float, reference_dose: float, xp: Namespace | None = None):
    """Multiplier m(D) = m_ref^(D / D_ref) [1] at ``dose`` [Gy] (number, array, tensor or UFL)."""
    if not (factor_at_reference > 0.0 and reference_dose > 0.0):
        raise ValueError("the dose-response factor and the reference dose [Gy] must be > 0")
    xp = xp or namespace_of(dose)
    return xp.exp(math.log(factor_at_reference) * dose / reference_dose)


@dataclass(frozen=True)
class RadiationResponse:
    """Factors at the reference dose ``reference_dose`` [Gy] for each tumour property (1 = no change)."""

    reference_dose: float
    hydraulic_conductivity: float
    filtration_coefficient: float
    vascular_pressure: float
    vessel_permeability: float
    cell_density: float

    @classmethod
    def defaults(cls, pv=None, sigma=None, piv=None, pii=None) -> "RadiationResponse":
        """Table defaults; the p_v factor reproduces the 31 % IFP fall for the tumour's Starling
        values ``pv``, ``sigma``, ``piv``, ``pii`` [Pa, 1] (table tumour values where None)."""
        pv_factor = vascular_pressure_factor(default("ifp_drop_RT"), value_or_default(pv, "pv_T"),
                                             value_or_default(sigma, "sigma_T"), value_or_default(piv, "piv_T"),
                                             value_or_default(pii, "pii_T"))
        return cls(default("D_RT_ref"), default("m_K_RT"), default("m_Lp_RT"), pv_factor,
                   default("m_P_RT"), default("m_rho_RT"))

    def factors(self, dose) -> dict[str, object]:
        """Multiplier of each property after ``dose`` [Gy]; keys are the field names of this class
        (the first three match :class:`hybrid.problems.ifp.TissueProperties`)."""
        names = ("hydraulic_conductivity", "filtration_coefficient", "vascular_pressure",
                 "vessel_permeability", "cell_density")
        return {name: dose_response(dose, getattr(self, name), self.reference_dose) for name in names}
