"""Plasma curves of a transport configuration (free, encapsulated and albumin-bound drug in the
blood, mol/m^3): composition shared by ``hybrid transport`` (DOLFINx) and ``hybrid invert`` (torch),
so this module loads neither."""

from __future__ import annotations

from hybrid.config.transport import TransportConfig
from hybrid.problems.pharmacokinetics import PlasmaCurve, dose_amount

__all__ = ["plasma_curves", "bound_plasma_curve"]


def plasma_curves(config: TransportConfig) -> tuple[PlasmaCurve, PlasmaCurve | None]:
    """Plasma curves of free and (for liposomal formulations) encapsulated drug [mol/m^3]."""
    plasma, liposomal = config.plasma, config.drug.formulation != "free"
    if plasma.model == "constant":
        return (PlasmaCurve.constant(plasma.free_concentration),
                PlasmaCurve.constant(plasma.liposomal_concentration) if liposomal else None)
    amount = dose_amount(plasma.dose, plasma.dose_unit)
    if not liposomal:   # the vessel wall sees the unbound fraction of the total plasma drug
        return _scaled(_total_free_plasma(config), 1.0 - plasma.albumin_bound_fraction), None
    # encapsulated dose; free drug leaking in the circulation is neglected: nearly all plasma drug
    # after Doxil is encapsulated (Gabizon et al. 1994 Cancer Res 54:987), leakage <~ 1e-3 1/h
    return PlasmaCurve.constant(0.0), PlasmaCurve.liposomal(amount, plasma.liposome_half_life)


def _total_free_plasma(config: TransportConfig) -> PlasmaCurve:
    """Total (unbound + albumin-bound) free-drug plasma curve of a ``[plasma] model = "dose"`` [mol/m^3]."""
    plasma = config.plasma
    return PlasmaCurve.free_doxorubicin(dose_amount(plasma.dose, plasma.dose_unit), plasma.infusion_duration)


def _scaled(curve: PlasmaCurve, factor: float) -> PlasmaCurve:
    return PlasmaCurve(tuple(factor * c for c in curve.amplitudes), curve.rates, curve.infusion_duration)


def bound_plasma_curve(config: TransportConfig) -> PlasmaCurve:
    """Albumin-bound free drug in plasma [mol/m^3] for kinetic binding: ``albumin_bound_fraction``
    f of the total dose curve; with a constant unbound ``free_concentration`` the bound drug in
    equilibrium with it, f / (1 - f) of it; 0 for liposomal formulations (no free drug in the blood)."""
    plasma, fraction = config.plasma, config.plasma.albumin_bound_fraction
    if config.drug.formulation != "free":
        return PlasmaCurve.constant(0.0)
    if plasma.model == "constant":
        return PlasmaCurve.constant(fraction / (1.0 - fraction) * plasma.free_concentration)
    return _scaled(_total_free_plasma(config), fraction)
