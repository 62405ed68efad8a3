"""Source terms of the Pennes bioheat equation (Pennes 1948, J Appl Physiol 1:93; SI units, kelvin).

    rho c dT/dt = div(k grad T) + omega_b rho_b c_b (T_a - T) + Q_m + Q_ext        [W/m^3]

Perfusion by blood at arterial temperature T_a is a linear sink towards T_a with rate
omega_b rho_b c_b [W/(m^3 K)]; Q_m is metabolic heat and Q_ext the applied heating power.
The steady operator is the same screened Poisson operator as the IFP problem, with
penetration constant m = sqrt(omega_b rho_b c_b / k) [1/m]. Defaults (tumour) come from the
parameter table.

Thermal dose: CEM43 = integral of R^(43 C - T) dt, with R = 0.5 at and above 43 C and 0.25
below (Sapareto & Dewey 1984, Int J Radiat Oncol Biol Phys 10:787); 60 min at 42 C is 15 min.
"""

from __future__ import annotations

import math

from hybrid.problems.namespace import Namespace, namespace_of
from hybrid.problems.parameters import value_or_default

__all__ = ["perfusion_coefficient", "pennes_source", "heating_power_for", "penetration_constant",
           "volumetric_heat_capacity", "cem43_rate", "CEM43_REFERENCE_K"]

CEM43_REFERENCE_K = 273.15 + 43.0
"""Reference temperature of the CEM43 thermal dose [K] (43 C)."""
_LN_R_ABOVE, _LN_R_BELOW = math.log(0.5), math.log(0.25)


def perfusion_coefficient(perfusion=None, blood_density=None, blood_heat_capacity=None) -> float:
    """omega_b rho_b c_b [W/(m^3 K)] from ``perfusion`` omega_b [1/s], ``blood_density`` rho_b
    [kg/m^3] and ``blood_heat_capacity`` c_b [J/(kg K)] (table omega_b, rho_b, c_b if None)."""
    omega = value_or_default(perfusion, "omega_b")
    rho = value_or_default(blood_density, "rho_b")
    c = value_or_default(blood_heat_capacity, "c_b")
    return omega * rho * c


def pennes_source(temperature, *, perfusion_coeff=None, arterial_temperature=None,
                  metabolic_heat=None, external_heat=0.0):
    """Right-hand side without conduction, w (T_a - T) + Q_m + Q_ext [W/m^3].

    ``temperature`` [K] (number, array, tensor or UFL), ``perfusion_coeff`` w [W/(m^3 K)]
    (:func:`perfusion_coefficient` if None), ``arterial_temperature`` T_a [K], heats
    ``metabolic_heat`` Q_m and ``external_heat`` Q_ext [W/m^3] (table T_a, Q_m if None).
    """
    w = perfusion_coefficient() if perfusion_coeff is None else perfusion_coeff
    t_a = value_or_default(arterial_temperature, "T_a")
    q_m = value_or_default(metabolic_heat, "Q_m")
    return w * (t_a - temperature) + q_m + external_heat


def heating_power_for(temperature_rise: float, perfusion_coeff: float | None = None) -> float:
    """Perfusion-dominated estimate of the heating power [W/m^3] that holds tissue
    ``temperature_rise`` [K] above T_a at steady state: Q = dT omega_b rho_b c_b (conduction neglected)."""
    w = perfusion_coefficient() if perfusion_coeff is None else perfusion_coeff
    return temperature_rise * w


def penetration_constant(perfusion_coeff: float | None = None, conductivity: float | None = None) -> float:
    """m = sqrt(omega_b rho_b c_b / k) [1/m]; 1/m is the thermal screening length."""
    w = perfusion_coefficient() if perfusion_coeff is None else perfusion_coeff
    k = value_or_default(conductivity, "k_th")
    return math.sqrt(w / k)


def volumetric_heat_capacity(density: float | None = None, specific_heat: float | None = None) -> float:
    """rho c [J/(m^3 K)] of tissue (table rho_tissue, c_tissue if None): the coefficient of dT/dt."""
    rho = value_or_default(density, "rho_tissue")
    c = value_or_default(specific_heat, "c_tissue")
    return rho * c


def cem43_rate(temperature, xp: Namespace | None = None):
    """Thermal-dose rate R^(43 C - T) [equivalent time at 43 C per time] at ``temperature`` [K].

    Integrate over time for CEM43 (seconds in, seconds out; divide by 60 for minutes).
    """
    xp = xp or namespace_of(temperature)
    ln_r = xp.where(temperature >= CEM43_REFERENCE_K, _LN_R_ABOVE, _LN_R_BELOW)
    return xp.exp(ln_r * (CEM43_REFERENCE_K - temperature))
