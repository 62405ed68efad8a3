"""Plasma concentration of doxorubicin after a dose: free drug, liposomes, constant (SI units).

Free doxorubicin follows a bi-exponential curve per dosed amount,
``c(t) = D sum_i A_i exp(-a_i t)`` (bolus at t = 0; table A_F1, A_F2, t_half_F1, t_half_F2, after
Drummond et al. 1999 Pharmacol Rev 51:691 Table 4), with amplitudes A_i
[1/m^3] and rates a_i = ln 2 / t1/2,i [1/s]. A constant-rate infusion of the same dose over
``T`` is the convolution of that curve with D/T on [0, T], in closed form:

    c(t) = D/T sum_i A_i/a_i (exp(-a_i max(t - T, 0)) - exp(-a_i t)),   t >= 0.

PEGylated liposomes are mono-exponential, ``c(t) = c_0 exp(-ln 2 t / t1/2)`` with
``c_0 = D / V_d`` (V_d ~ plasma volume). Doses in mg/kg or mg/m^2 become an amount [mol]
through the body mass or body surface and the molar mass (:func:`dose_amount`). Times are in
seconds since the start of administration (t >= 0); concentrations in mol per m^3 of plasma.
Defaults and sources: :mod:`hybrid.problems.parameters`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hybrid.problems.namespace import LN2, Namespace, namespace_of
from hybrid.problems.parameters import default, value_or_default

__all__ = ["PlasmaCurve", "dose_amount"]

_DOSE_UNITS = ("mg/kg", "mg/m^2")


def dose_amount(dose: float, unit: str, *, body_mass: float | None = None,
                body_surface: float | None = None) -> float:
    """Dosed amount of doxorubicin [mol] from ``dose`` in ``unit`` = "mg/kg" or "mg/m^2".

    ``body_mass`` [kg] and ``body_surface`` [m^2] default to the reference patient of the
    parameter table (70 kg, 1.73 m^2).
    """
    if unit not in _DOSE_UNITS:
        raise ValueError(f"dose unit must be one of {_DOSE_UNITS}, got {unit!r}")
    if not (math.isfinite(dose) and dose >= 0.0):
        raise ValueError(f"dose must be a finite number >= 0 {unit}, got {dose!r}")
    if unit == "mg/kg":
        scale = value_or_default(body_mass, "body_mass")
    else:
        scale = value_or_default(body_surface, "body_surface")
    if not scale > 0.0:
        raise ValueError(f"a dose in {unit} needs a body {'mass' if unit == 'mg/kg' else 'surface'} > 0")
    return dose * scale * 1e-6 / default("MW_DOX")   # mg -> kg, then kg / (kg/mol)


@dataclass(frozen=True)
class PlasmaCurve:
    """Plasma concentration ``sum_i c_i exp(-a_i t)`` after a bolus, or after an infusion of
    the same dose lasting ``infusion_duration`` [s] (0 = bolus).

    ``amplitudes`` c_i [mol/m^3] are the bolus concentrations of each phase at t = 0 and
    ``rates`` a_i [1/s] their decay rates. A zero rate is allowed only for a bolus (the
    constant curve used for verification).
    """

    amplitudes: tuple[float, ...]
    rates: tuple[float, ...]
    infusion_duration: float = 0.0

    def __post_init__(self):
        if len(self.amplitudes) != len(self.rates) or not self.amplitudes:
            raise ValueError("PlasmaCurve needs as many amplitudes as rates (at least one)")
        if any(a < 0.0 or not math.isfinite(a) for a in self.amplitudes + self.rates):
            raise ValueError("plasma amplitudes [mol/m^3] and rates [1/s] must be finite and >= 0")
        if self.infusion_duration < 0.0:
            raise ValueError("infusion_duration must be >= 0 s")
        if self.infusion_duration > 0.0 and min(self.rates) == 0.0:
            raise ValueError("an infusion needs decay rates > 0 (a constant curve is a bolus)")

    @classmethod
    def constant(cls, concentration: float) -> "PlasmaCurve":
        """A plasma concentration [mol/m^3] held constant for all t >= 0 (verification)."""
        return cls((float(concentration),), (0.0,))

    @classmethod
    def free_doxorubicin(cls, amount: float, infusion_duration: float = 0.0,
                         body_mass: float | None = None) -> "PlasmaCurve":
        """Bi-exponential free-drug curve for ``amount`` [mol] (see :func:`dose_amount`), as a
        bolus or an infusion of ``infusion_duration`` [s].

        The table amplitudes belong to the 70 kg reference patient; for another ``body_mass``
        [kg] they scale with 1/body mass (volumes of distribution proportional to mass [R]),
        so equal mg/kg doses give equal concentrations. Half-lives are the human ones.
        """
        body_mass = value_or_default(body_mass, "body_mass")
        if not body_mass > 0.0:
            raise ValueError("body_mass must be > 0 kg")
        scale = amount * default("body_mass") / body_mass          # the table patient's mass over this one's
        amplitudes = (scale * default("A_F1"), scale * default("A_F2"))
        rates = (LN2 / default("t_half_F1"), LN2 / default("t_half_F2"))
        return cls(amplitudes, rates, infusion_duration)

    @classmethod
    def liposomal(cls, amount: float, half_life: float | None = None,
                  body_mass: float | None = None) -> "PlasmaCurve":
        """Mono-exponential liposome-encapsulated drug: ``amount`` [mol] over the volume of
        distribution V_d = Vd_L_per_mass x body_mass [m^3], decaying with ``half_life`` [s]."""
        half_life = value_or_default(half_life, "t_half_L")
        body_mass = value_or_default(body_mass, "body_mass")
        if not (half_life > 0.0 and body_mass > 0.0):
            raise ValueError("liposome half_life [s] and body_mass [kg] must be > 0")
        volume = default("Vd_L_per_mass") * body_mass
        return cls((amount / volume,), (LN2 / half_life,))

    def __call__(self, t, xp: Namespace | None = None):
        """Plasma concentration [mol/m^3] at time ``t`` >= 0 [s] (number, array, tensor or UFL)."""
        xp = xp or namespace_of(t)
        T = self.infusion_duration
        if T == 0.0:
            return sum(c * xp.exp(-a * t) for c, a in zip(self.amplitudes, self.rates))
        after = xp.maximum(t - T, 0.0)
        return sum(c / (a * T) * (xp.exp(-a * after) - xp.exp(-a * t))
                   for c, a in zip(self.amplitudes, self.rates))

    @property
    def area_under_curve(self) -> float:
        """AUC from 0 to infinity [mol s/m^3], sum_i c_i / a_i (the same for bolus and infusion)."""
        if min(self.rates) == 0.0:
            return math.inf
        return sum(c / a for c, a in zip(self.amplitudes, self.rates))
