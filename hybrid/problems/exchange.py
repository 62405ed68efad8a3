"""Transvascular exchange per unit tissue volume: Starling fluid flux, Kedem-Katchalsky solute flux
with the Patlak Peclet correction, and Ktrans -> PS (SI units; as in Baxter & Jain 1989 Microvasc
Res 37:77).

    phi_V = Lp S/V (p_v - p - sigma (pi_v - pi_i))                     fluid, [1/s]
    v     = phi_V (1 - sigma_s)                                        solvent drag, [1/s]
    Pe    = v / (P S/V)
    J_s/V = v c_p + P S/V (c_p - c_i) Pe / (e^Pe - 1)                  solute, [mol/(m^3 s)]

``c_i`` is the interstitial-fluid concentration (tissue concentration / phi). The limits are
pure diffusion ``P S/V (c_p - c_i)`` for Pe -> 0 and pure convection ``v c_p`` for Pe -> inf
(for Pe -> -inf, fluid reabsorbed into the vessel: ``v c_i``). Every function takes a
math namespace ``xp`` (:mod:`hybrid.problems.namespace`) or infers it from its arguments.
"""

from __future__ import annotations

from hybrid.problems.namespace import Namespace, namespace_of

__all__ = ["effective_pressure", "starling_fluid_flux", "peclet_factor", "diffusive_exchange_rate",
           "kedem_katchalsky_flux", "ktrans_to_permeability_surface"]

_SERIES_BELOW = 1e-2   # |Pe| under which Pe/(e^Pe - 1) is evaluated by its Taylor series


def effective_pressure(pv, sigma, piv, pii):
    """Starling effective pressure ``p_e = p_v - sigma (pi_v - pi_i)`` [Pa] (all pressures in Pa)."""
    return pv - sigma * (piv - pii)


def starling_fluid_flux(p, vascular_exchange, pe):
    """Fluid leaving the vessels per tissue volume ``phi_V = Lp S/V (p_e - p)`` [1/s].

    ``p`` interstitial pressure [Pa], ``vascular_exchange`` Lp S/V [1/(Pa s)], ``pe`` the
    effective pressure [Pa] (:func:`effective_pressure`). Negative where fluid is reabsorbed.
    """
    return vascular_exchange * (pe - p)


def peclet_factor(pe, xp: Namespace | None = None):
    """Pe / (e^Pe - 1) (the Bernoulli function): 1 at Pe = 0, -> 0 for Pe -> inf, ~|Pe| for Pe -> -inf.

    Written without overflow as |Pe| e^{-max(Pe, 0)} / (1 - e^{-|Pe|}), with the Taylor series
    1 - Pe/2 + Pe^2/12 - Pe^4/720 for |Pe| < 1e-2 (truncation error < 1e-16). The series
    branch also keeps torch gradients finite at Pe = 0.
    """
    xp = xp or namespace_of(pe)
    small = xp.abs(pe) < _SERIES_BELOW
    safe = xp.where(small, 1.0, pe)          # never 0 in the exponential branch
    magnitude = xp.abs(safe)
    exact = magnitude * xp.exp(-xp.maximum(safe, 0.0)) / (1.0 - xp.exp(-magnitude))
    series = 1.0 - pe / 2.0 + pe * pe / 12.0 - pe ** 4 / 720.0
    return xp.where(small, series, exact)


def diffusive_exchange_rate(solvent_drag, permeability_surface, xp: Namespace | None = None):
    """Rate multiplying (c_p - c_i) in the Patlak flux, ``P S/V Pe/(e^Pe - 1)`` [1/s].

    ``solvent_drag`` v = phi_V (1 - sigma_s) [1/s], ``permeability_surface`` P S/V [1/s] >= 0.
    Where P S/V = 0 the limit is used: 0 for filtration (v >= 0), -v for reabsorption (v < 0),
    so a Ktrans map with zeros (necrosis) gives finite sources.
    """
    xp = xp or namespace_of(solvent_drag, permeability_surface)
    positive = permeability_surface > 0.0
    safe_ps = xp.where(positive, permeability_surface, 1.0)
    rate = permeability_surface * peclet_factor(solvent_drag / safe_ps, xp)
    return xp.where(positive, rate, xp.maximum(-solvent_drag, 0.0))


def kedem_katchalsky_flux(c_plasma, c_interstitial, fluid_flux, solute_reflection, permeability_surface,
                          xp: Namespace | None = None):
    """Solute entering the tissue per tissue volume ``J_s/V`` [mol/(m^3 s)] (Patlak form, module doc).

    ``c_plasma`` and ``c_interstitial`` [mol/m^3] are per plasma and per interstitial-fluid
    volume, ``fluid_flux`` phi_V [1/s] (:func:`starling_fluid_flux`), ``solute_reflection``
    sigma_s [1], ``permeability_surface`` P S/V [1/s].
    """
    xp = xp or namespace_of(c_plasma, c_interstitial, fluid_flux, solute_reflection, permeability_surface)
    drag = fluid_flux * (1.0 - solute_reflection)
    return drag * c_plasma + diffusive_exchange_rate(drag, permeability_surface, xp) * (c_plasma - c_interstitial)


def ktrans_to_permeability_surface(ktrans_per_min, plasma_flow_per_min=None, xp: Namespace | None = None):
    """Transvascular permeability-surface product per tissue volume P S/V [1/s] from DCE-MRI Ktrans [1/min].

    Ktrans = E Fp with extraction E = 1 - exp(-PS/Fp) (Renkin-Crone). Without a plasma flow
    Fp [1/min] the permeability-limited regime (PS << Fp, E ~ PS/Fp) gives PS = Ktrans, i.e.
    P S/V = Ktrans / 60; that underestimates PS in the flow-limited regime (Ktrans ~ Fp). With
    Fp, PS = -Fp ln(1 - Ktrans/Fp) (needs Ktrans < Fp). The tracer (Gd-DTPA, ~0.5 kDa) is far
    smaller than a liposome: scale P S/V for the carrier separately.
    """
    if plasma_flow_per_min is None:
        return ktrans_per_min / 60.0
    xp = xp or namespace_of(ktrans_per_min, plasma_flow_per_min)
    return -plasma_flow_per_min * xp.log(1.0 - ktrans_per_min / plasma_flow_per_min) / 60.0
