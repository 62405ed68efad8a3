"""Strong-form PDE residuals evaluated on network outputs with torch autograd (SI units).

The rate laws are the ones the FEM uses, called with torch tensors through the namespace adapter
(:data:`hybrid.problems.namespace.TORCH`): Starling fluid exchange
(:func:`~hybrid.problems.exchange.starling_fluid_flux`) and Kedem-Katchalsky solute exchange
(:func:`~hybrid.problems.exchange.kedem_katchalsky_flux`); release and uptake rates come in as
values of :mod:`hybrid.problems.release` / :mod:`hybrid.problems.uptake` functions.

Networks see nondimensional coordinates x~ = x / L (and t~ = t / T); derivatives are taken with
respect to those and converted: d/dx = (1/L) d/dx~, d/dt = (1/T) d/dt~.

Darcy-Starling (steady IFP, the FEM's :mod:`hybrid.forward.ifp`)::

    div(K grad p) + Lp S/V (p_e - p) + LpL SL/V (p_L - p) = 0                       [1/s]

Liposomal (L) and free (F) drug per tissue volume (the FEM's :mod:`hybrid.forward.transport`,
linear uptake)::

    dC_L/dt - D_L lap C_L + div(f_L u C_L / phi) - J_L + (k_rel + k_L) C_L + phi_L C_L / phi = 0
    (1 + B) dC_F/dt - D_F lap C_F + div(u C_F / phi) - J_F - k_rel C_L + U(C_F) + phi_L C_F / phi = 0

(units mol/(m^3 s); phi_L = LpL SL/V (p - p_L) the lymphatic fluid sink [1/s]).

Drug taken up by cells C_I [mol/m^3 of tissue] (:func:`cell_drug_residual`)::

    dC_I/dt - U(C_F, C_I) = 0

with U linear (k C_F) or El-Kareh & Secomb's saturable, bidirectional law
(:class:`ElKarehSecombUptake`, :func:`hybrid.problems.uptake.el_kareh_secomb_uptake`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from hybrid.problems.exchange import kedem_katchalsky_flux, starling_fluid_flux
from hybrid.problems.namespace import TORCH
from hybrid.problems.uptake import el_kareh_secomb_uptake

__all__ = ["gradient", "laplacian", "darcy_starling_residual", "DrugExchange", "transport_sources",
           "transport_residuals", "ElKarehSecombUptake", "cell_drug_residual"]


def gradient(u: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """du/dx (n, d) of a per-point scalar ``u`` (n, 1) or (n,), keeping the graph for higher derivatives."""
    g = torch.autograd.grad(u.sum(), x, create_graph=True, allow_unused=True)[0]
    return torch.zeros_like(x) if g is None else g


def laplacian(u: torch.Tensor, x: torch.Tensor, dims: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(laplacian over the first ``dims`` coordinates (n,), gradient (n, d)) of ``u`` w.r.t. ``x``."""
    g = gradient(u, x)
    lap = sum(gradient(g[:, i], x)[:, i] for i in range(dims))
    return lap, g


def darcy_starling_residual(pressure: torch.Tensor, x: torch.Tensor, length: float, *, conductivity,
                            vascular_exchange, effective_pressure, lymphatic_filtration=0.0,
                            lymphatic_pressure=0.0) -> torch.Tensor:
    """Fluid balance ``div(K grad p) + phi_V - phi_L`` [1/s] per point (n,).

    ``pressure`` p [Pa] (n, 1) as a function of ``x`` = x / ``length`` (n, d) (requires grad);
    coefficients are numbers or tensors broadcastable to (n,): ``conductivity`` K [m^2/(Pa s)]
    (may depend on ``x``: its gradient enters), ``vascular_exchange`` Lp S/V [1/(Pa s)],
    ``effective_pressure`` p_e [Pa], ``lymphatic_filtration`` [1/(Pa s)], ``lymphatic_pressure`` [Pa].
    """
    p = pressure.reshape(-1)
    dims = x.shape[1]
    lap, grad_p = laplacian(p, x, dims)
    K = conductivity.reshape(-1) if isinstance(conductivity, torch.Tensor) and conductivity.dim() else conductivity
    divergence = K * lap
    if isinstance(K, torch.Tensor) and K.dim() and K.requires_grad:   # K(x): + grad K . grad p
        divergence = divergence + (gradient(K, x) * grad_p).sum(dim=1)
    divergence = divergence / length**2
    vascular = starling_fluid_flux(p, vascular_exchange, effective_pressure)
    lymphatic = starling_fluid_flux(p, lymphatic_filtration, lymphatic_pressure)   # LpL SL/V (p_L - p)
    return divergence + vascular + lymphatic


@dataclass(frozen=True)
class DrugExchange:
    """Transvascular exchange of one carrier: plasma concentration ``plasma(t)`` [mol/m^3 of
    plasma] (e.g. a :class:`~hybrid.problems.pharmacokinetics.PlasmaCurve`), permeability-surface
    product ``permeability_surface`` P S/V [1/s] (number or per-point tensor; in a problem's
    ``exchange_*`` also a coefficient ``f(x~, unknown values)``) and solute reflection ``reflection``
    sigma_s [1]."""

    plasma: Callable
    permeability_surface: object
    reflection: float = 0.0


def transport_sources(c_lipo: torch.Tensor, c_free: torch.Tensor, t: torch.Tensor, *, release_rate, uptake: Callable,
                      clearance=0.0, interstitial_fraction: float = 1.0, exchange_lipo: DrugExchange | None = None,
                      exchange_free: DrugExchange | None = None, fluid_source=0.0,
                      lymphatic_sink=0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The terms of the two drug equations without a derivative (module doc) [mol/(m^3 s)] per
    point (n,): s_L = -J_L + (k_rel + k_L) C_L + phi_L C_L / phi and s_F = -J_F - k_rel C_L + U(C_F)
    + phi_L C_F / phi, at times ``t`` [s] (n,); keywords as :func:`transport_residuals`. The strong
    residual is the derivative terms plus these; the weak one (:mod:`hybrid.inverse.weak`) takes
    them times the test function."""
    c_lipo, c_free = c_lipo.reshape(-1), c_free.reshape(-1)
    phi = interstitial_fraction
    sources = []
    for c, exchange in ((c_lipo, exchange_lipo), (c_free, exchange_free)):
        s = lymphatic_sink * c / phi
        if exchange is not None:
            s = s - kedem_katchalsky_flux(exchange.plasma(t, TORCH), c / phi, fluid_source, exchange.reflection,
                                          exchange.permeability_surface, TORCH)
        sources.append(s)
    released = release_rate * c_lipo
    return sources[0] + released + clearance * c_lipo, sources[1] - released + uptake(c_free)


def transport_residuals(c_lipo: torch.Tensor, c_free: torch.Tensor, xt: torch.Tensor, length: float, time: float, *,
                        diffusivity_lipo: float, diffusivity_free: float, release_rate, uptake: Callable,
                        clearance: float = 0.0, interstitial_fraction: float = 1.0,
                        exchange_lipo: DrugExchange | None = None, exchange_free: DrugExchange | None = None,
                        fluid_source=0.0, darcy_flux: torch.Tensor | None = None,
                        flux_divergence=0.0, lymphatic_sink=0.0, hindrance: float = 1.0,
                        free_binding_ratio: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Residuals (r_L, r_F) [mol/(m^3 s)] per point (n,) of the two drug equations (module doc).

    ``c_lipo``, ``c_free`` [mol/m^3] (n, 1) as functions of ``xt`` = (x / length, t / time) (n, d+1);
    ``release_rate`` k_rel [1/s] (number or per-point tensor); ``uptake`` U(c_free) [mol/(m^3 s)]
    (e.g. ``hybrid.problems.uptake.linear_uptake``); ``clearance`` k_L [1/s]; ``exchange_*`` the
    vascular exchange (None: no vessels); ``fluid_source`` phi_V [1/s] (drives the solvent drag);
    ``darcy_flux`` u [m/s] (n, d) with ``flux_divergence`` div u [1/s] (None: no advection),
    ``hindrance`` f_L [1] of the liposomes; ``lymphatic_sink`` phi_L [1/s] clears phi_L C / phi;
    ``free_binding_ratio`` B [1]: immobile bound free drug per unbound, so the free equation's
    time derivative is (1 + B) dC_F/dt (as in the FEM's ``TransportModel.free_binding_ratio``).
    """
    dims = xt.shape[1] - 1
    phi = interstitial_fraction
    derivatives = []
    for c, diffusivity, hinder, capacity in ((c_lipo.reshape(-1), diffusivity_lipo, hindrance, 1.0),
                                             (c_free.reshape(-1), diffusivity_free, 1.0, 1.0 + free_binding_ratio)):
        lap, grad_c = laplacian(c, xt, dims)
        r = capacity * grad_c[:, -1] / time - diffusivity * lap / length**2
        if darcy_flux is not None:   # div(f u C / phi) = f (u . grad C + C div u) / phi
            r = r + hinder * ((darcy_flux * grad_c[:, :dims]).sum(dim=1) / length + c * flux_divergence) / phi
        derivatives.append(r)
    s_lipo, s_free = transport_sources(
        c_lipo, c_free, xt[:, -1] * time, release_rate=release_rate, uptake=uptake, clearance=clearance,
        interstitial_fraction=phi, exchange_lipo=exchange_lipo, exchange_free=exchange_free,
        fluid_source=fluid_source, lymphatic_sink=lymphatic_sink)
    return derivatives[0] + s_lipo, derivatives[1] + s_free


@dataclass(frozen=True)
class ElKarehSecombUptake:
    """El-Kareh & Secomb uptake of free drug into cells with fixed constants (None: table value):
    ``interstitial_fraction`` phi [1], ``cell_density`` rho_c [1/m^3], ``max_rate`` V_max
    [mol/(cell s)], ``extracellular_constant`` K_E [mol/m^3 of fluid], ``intracellular_constant``
    K_I [mol/cell]. Calling it with (C_F, C_I) [mol/m^3 of tissue] gives the net rate U
    [mol/(m^3 s)] of :func:`hybrid.problems.uptake.el_kareh_secomb_uptake` (the FEM's law)."""

    interstitial_fraction: float | None = None
    cell_density: float | None = None
    max_rate: float | None = None
    extracellular_constant: float | None = None
    intracellular_constant: float | None = None

    def __call__(self, c_free: torch.Tensor, c_cell: torch.Tensor) -> torch.Tensor:
        return el_kareh_secomb_uptake(c_free, c_cell, interstitial_fraction=self.interstitial_fraction,
                                      cell_density=self.cell_density, max_rate=self.max_rate,
                                      extracellular_constant=self.extracellular_constant,
                                      intracellular_constant=self.intracellular_constant)

    def linearised_rate(self) -> float:
        """dU/dC_F at C_F = C_I = 0 [1/s]: rho_c V_max / (phi K_E), the low-concentration uptake rate."""
        c = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        return float(torch.autograd.grad(self(c, torch.zeros_like(c)).sum(), c)[0])


def cell_drug_residual(c_cell: torch.Tensor, c_free: torch.Tensor, xt: torch.Tensor, time: float,
                       uptake: Callable) -> torch.Tensor:
    """``dC_I/dt - U(C_F, C_I)`` [mol/(m^3 s)] per point (n,): ``c_cell`` C_I and ``c_free`` C_F
    [mol/m^3 of tissue] (n, 1) as functions of ``xt`` = (x~, t / ``time``); ``uptake(C_F, C_I)``
    [mol/(m^3 s)] (e.g. :class:`ElKarehSecombUptake`)."""
    c_cell, c_free = c_cell.reshape(-1), c_free.reshape(-1)
    return gradient(c_cell, xt)[:, -1] / time - uptake(c_free, c_cell)
