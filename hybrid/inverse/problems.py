"""Inverse problems as torch modules: state networks, unknowns, loss terms and estimates.

A coefficient of a problem is one of:

- a number (known, SI units);
- a :class:`~hybrid.inverse.unknowns.BoundedScalar` or :class:`~hybrid.inverse.unknowns.BoundedField`
  (an unknown to recover);
- a callable ``f(x~, values)`` of the nondimensional points and the current unknown values (dict
  name -> tensor): e.g. a pH-triggered release ``lambda x, v: ph_release_rate(ph(x), ph_50=v["ph_50"])``
  with a known pH map.

Every problem exposes ``loss_terms(points)`` (dict of nondimensional mean-square terms),
``pointwise_residual(points)`` (for residual-adaptive collocation), ``sample_collocation``,
``uses_collocation`` (whether ``loss_terms`` depends on the points at all),
``estimates()`` (current value and unit of every recovered scalar, and derived quantities).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from torch import nn

from hybrid.inverse.networks import STATE_NETWORK, FourierFeatureMLP
from hybrid.inverse.observation import VoxelAverage
from hybrid.inverse.residuals import (DrugExchange, cell_drug_residual, darcy_starling_residual, gradient,
                                      transport_residuals)
from hybrid.inverse.scales import Scales
from hybrid.inverse.unknowns import BoundedField, BoundedScalar
from hybrid.inverse.weak import SpaceTimeTestFunctions, weak_cell_drug_residual, weak_transport_residuals
from hybrid.problems.exchange import starling_fluid_flux
from hybrid.problems.release import released_fraction_misfit
from hybrid.problems.uptake import linear_uptake
from hybrid.records import Observations

__all__ = ["InverseProblem", "IFPProblem", "TransportProblem", "causal_weights"]


def causal_weights(slice_losses: torch.Tensor, epsilon) -> torch.Tensor:
    """Causal weights (Wang, Sankaran & Perdikaris, CMAME 2024) of time slices in order, (M,):
    w_i = exp(-epsilon sum_{k<i} L_k) of the slice losses ``slice_losses`` (M,) [1]; w_1 = 1, and
    no gradient flows through them."""
    losses = slice_losses.detach()
    earlier = torch.cat([torch.zeros_like(losses[:1]), torch.cumsum(losses, dim=0)[:-1]])
    return torch.exp(-epsilon * earlier)


class InverseProblem(nn.Module):
    """Common machinery: the coefficient table, unknowns and estimates."""

    def __init__(self, coefficients: dict, *, defaults: dict, required: set[str]):
        """``coefficients`` (number, callable or unknown per name) completed by ``defaults``; raises
        ValueError naming the ``required`` ones that are missing."""
        super().__init__()
        coefficients = defaults | dict(coefficients)
        missing = required - set(coefficients)
        if missing:
            raise ValueError(f"{type(self).__name__} needs the coefficients {sorted(missing)}")
        unknown = {name: value for name, value in coefficients.items()
                   if isinstance(value, (BoundedScalar, BoundedField))}
        self.unknowns = nn.ModuleDict(unknown)
        self._known = {name: value for name, value in coefficients.items() if name not in unknown}

    def coefficient(self, name: str, x: torch.Tensor):
        """Value of coefficient ``name`` at the nondimensional points ``x`` (number or tensor)."""
        if name in self.unknowns:
            unknown = self.unknowns[name]
            return unknown(x).reshape(-1) if isinstance(unknown, BoundedField) else unknown()
        value = self._known[name]
        return value(x, self.scalar_values()) if callable(value) else value

    def scalar_values(self) -> dict[str, torch.Tensor]:
        """Name -> current value (0-d tensor) of this problem's own scalar unknowns."""
        return {n: u() for n, u in self.unknowns.items() if isinstance(u, BoundedScalar)}

    def estimates(self) -> dict[str, tuple[float, str]]:
        """Current value and unit of every scalar unknown (plus derived quantities of subclasses)."""
        return {name: (float(u().detach()), u.unit) for name, u in self.unknowns.items()
                if isinstance(u, BoundedScalar)}

    def scalar_unknowns(self) -> list[BoundedScalar]:
        """Every scalar unknown of this problem and of the problems it contains."""
        return [module for module in self.modules() if isinstance(module, BoundedScalar)]

    @property
    def uses_collocation(self) -> bool:
        """Whether :meth:`loss_terms` depends on its collocation points (residual-adaptive
        resampling is pointless otherwise)."""
        return True

    def sample_collocation(self, n: int, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def loss_terms(self, points: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def pointwise_residual(self, points: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class IFPProblem(InverseProblem):
    """Steady Darcy-Starling pressure on ``geometry`` with ``p = far_pressure`` [Pa] on its boundary
    (exact: p = p_far + P b(x~) N(x~)); ``observations`` of quantity "ifp" [Pa] (or None: forward).

    Coefficients (SI): ``conductivity`` K, ``vascular_exchange`` Lp S/V, ``effective_pressure`` p_e,
    ``lymphatic_filtration`` (default 0), ``lymphatic_pressure`` (default 0).
    """

    parametric = False   # True: a pressure over the unknowns' box, trained before the drug, not with it

    def __init__(self, geometry, coefficients: dict, *, observations: Observations | None = None,
                 far_pressure: float = 0.0, pressure_scale: float = 1000.0, width: int = 32, depth: int = 3,
                 features: int = 16, sigma: float = 1.0, generator: torch.Generator | None = None):
        super().__init__(coefficients, defaults={"lymphatic_filtration": 0.0, "lymphatic_pressure": 0.0},
                         required={"conductivity", "vascular_exchange", "effective_pressure"})
        self.geometry = geometry
        self.scales = Scales(length=geometry.length, pressure=pressure_scale)
        self.far_pressure = float(far_pressure)
        self.network = FourierFeatureMLP(geometry.dim, 1, width=width, depth=depth, features=features, sigma=sigma,
                                         generator=generator)
        self.data = None
        if observations is not None:
            if observations.quantity != "ifp":
                raise ValueError(f"IFPProblem fits quantity 'ifp' [Pa], got {observations.quantity!r}")
            self.data = VoxelAverage(observations, geometry.contains, length=geometry.length,
                                     value_scale=pressure_scale)

    def pressure(self, x: torch.Tensor) -> torch.Tensor:
        """Pressure [Pa] (n, 1) at nondimensional points ``x`` (n, dim)."""
        return self.far_pressure + self.scales.pressure * self.geometry.boundary_factor(x) * self.network(x)

    def sample_collocation(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.geometry.sample(n, generator)

    def pointwise_residual(self, points: torch.Tensor) -> torch.Tensor:
        """Fluid balance / ((K / L^2 + Lp S/V + LpL SL/V) P): nondimensional, O(1) for an O(1)
        error of p~ whichever of diffusion and exchange dominates."""
        x = points.requires_grad_(True) if not points.requires_grad else points
        K = self.coefficient("conductivity", x)
        exchange = self.coefficient("vascular_exchange", x)
        lymphatic = self.coefficient("lymphatic_filtration", x)
        residual = darcy_starling_residual(
            self.pressure(x), x, self.scales.length, conductivity=K, vascular_exchange=exchange,
            effective_pressure=self.coefficient("effective_pressure", x), lymphatic_filtration=lymphatic,
            lymphatic_pressure=self.coefficient("lymphatic_pressure", x))
        return residual / ((K / self.scales.length**2 + exchange + lymphatic) * self.scales.pressure)

    def loss_terms(self, points: torch.Tensor) -> dict[str, torch.Tensor]:
        terms = {"pde": (self.pointwise_residual(points) ** 2).mean()}
        if self.data is not None:
            terms["data"] = self.data.misfit(lambda x: self.pressure(x) / self.scales.pressure, with_time=False)
        return terms

    def estimates(self) -> dict[str, tuple[float, str]]:
        """Scalar unknowns plus the rim thickness sqrt(K / (Lp S/V + LpL SL/V)) [m] when all
        three coefficients are scalars."""
        out = super().estimates()
        names = ("conductivity", "vascular_exchange", "lymphatic_filtration")
        if not any(isinstance(self.unknowns[n] if n in self.unknowns else None, BoundedField)
                   or callable(self._known.get(n)) for n in names):
            K, exchange, lymph = (float(torch.as_tensor(self.coefficient(n, None)).detach()) for n in names)
            out["rim_thickness"] = (math.sqrt(K / (exchange + lymph)), "m")
        return out


class TransportProblem(InverseProblem):
    """Liposomal and free drug C_L, C_F [mol/m^3] on ``geometry`` x [0, end_time] s.

    Exact initial condition: C = C0(x) + C b(x~) (t/T) N(x~, t~) with ``initial_lipo`` /
    ``initial_free`` callables of x~ returning mol/m^3 (None: 0); ``boundary="dirichlet"`` makes
    b vanish on the boundary (C = C0 there, so C0 must meet the boundary value), ``"free"`` sets
    b = 1 (no boundary condition: for domains whose boundary data come from the images), and
    ``"no_flux"`` sets b = 1 and adds the loss term ``bc_no_flux``: no diffusive flux through the
    outer boundary (the FEM's condition), grad C . n = 0 on ``boundary_points`` fixed points.

    Coefficients (SI): ``diffusivity_lipo``, ``diffusivity_free`` [m^2/s], ``release_rate`` k_rel,
    ``uptake_rate`` (linear uptake, :func:`hybrid.problems.uptake.linear_uptake`), ``clearance``
    k_L [1/s]; optional vascular exchange ``exchange_lipo`` / ``exchange_free``
    (:class:`~hybrid.inverse.residuals.DrugExchange`). Observations: quantities
    "liposomal_drug", "free_drug" or "total_drug" [mol/m^3]. ``free_binding_ratio`` B: immobile
    bound free drug per unbound, (1 + B) dC_F/dt (C_F is the unbound drug, as in the FEM).

    ``flow``: an :class:`IFPProblem` on the same geometry, trained jointly (its terms are added as
    ``pde_ifp`` / ``data_ifp``, its unknowns reported too) unless it is parametric (trained before,
    then fixed: no terms of its own). Its pressure gives the Darcy flux
    u = -K grad p (liposomes advected with ``hindrance`` f_L), div u = phi_V - phi_L, the solvent
    drag of the vascular exchange (phi_V) and the lymphatic clearance (phi_L), so drug images also
    inform the pressure and its unknowns.

    Residual form: strong (pointwise at the collocation points, by autograd) unless
    :meth:`use_weak_form` gave test functions: then the drug's PDE terms are the mean squares of
    the weak residuals (:mod:`hybrid.inverse.weak`, network values and the Darcy flux only, fixed
    quadrature points), nondimensionalised the same way; a flow's pressure terms stay pointwise. The
    strong form takes div u as the Starling source phi_V - phi_L, the weak one (by parts) the
    pressure network's own flux: they differ by f C r_p / phi where the pressure residual r_p is
    not 0. Either form's PDE terms can be weighted causally in time (:meth:`use_causal_weights`).

    ``cell_drug``: a third state C_I [mol/m^3 of tissue], the drug taken up by cells,
    dC_I/dt = U(C_F) (loss term ``pde_cell``; C_I = 0 at t = 0 exactly), as in the FEM; "total_drug"
    is then C_L + C_F + C_I, and the quantities "cell_drug" and "released_fraction"
    (:func:`hybrid.problems.release.released_fraction` of the voxel means, like ``hybrid
    synthesize``'s) can be observed (its misfit is taken times the predicted total,
    :func:`~hybrid.problems.release.released_fraction_misfit` / C, so it stays bounded where the
    predicted total is near zero). ``state_scales``: a factor per state on
    ``concentration_scale`` for its network output (e.g. ~1e-3 for a free drug kept small by fast
    uptake), so every output is O(1). ``exchange_scale``: a known factor f(x~) [1] of every P S/V
    (e.g. :class:`~hybrid.inverse.maps.KtransScale`, the vessel surface density of a Ktrans map).
    """

    QUANTITIES = ("liposomal_drug", "free_drug", "total_drug", "cell_drug", "released_fraction")
    STATES = ("liposomal_drug", "free_drug", "cell_drug")   # the network's outputs, in order

    def __init__(self, geometry, coefficients: dict, *, end_time: float, concentration_scale: float,
                 observations: tuple[Observations, ...] = (), initial_lipo: Callable | None = None,
                 initial_free: Callable | None = None, boundary: str = "dirichlet",
                 exchange_lipo: DrugExchange | None = None, exchange_free: DrugExchange | None = None,
                 flow: IFPProblem | None = None, hindrance: float = 1.0, free_binding_ratio: float = 0.0,
                 interstitial_fraction: float = 1.0, boundary_points: int = 256,
                 width: int = STATE_NETWORK["width"], depth: int = STATE_NETWORK["depth"],
                 features: int = STATE_NETWORK["features"], sigma: float = STATE_NETWORK["sigma"],
                 generator: torch.Generator | None = None,
                 cell_drug: bool = False, state_scales: tuple[float, ...] | None = None,
                 exchange_scale: Callable | None = None):
        if boundary not in ("dirichlet", "free", "no_flux"):
            raise ValueError(f"boundary must be 'dirichlet', 'free' or 'no_flux', got {boundary!r}")
        super().__init__(coefficients, defaults={"clearance": 0.0, "uptake_rate": 0.0},
                         required={"diffusivity_lipo", "diffusivity_free", "release_rate"})
        self.geometry, self.boundary = geometry, boundary
        self.scales = Scales(length=geometry.length, time=end_time, concentration=concentration_scale)
        self.initial = (initial_lipo, initial_free)
        self.exchange, self.exchange_scale = (exchange_lipo, exchange_free), exchange_scale
        self.interstitial_fraction, self.hindrance = interstitial_fraction, hindrance
        self.free_binding_ratio = free_binding_ratio
        if flow is not None and (flow.geometry != geometry):
            raise ValueError(f"the flow problem's geometry {flow.geometry} differs from the transport's {geometry}")
        self.flow = flow
        self.test_functions = None   # strong residual form (use_weak_form)
        self.causal_slices, self.causal_frozen = 0, False   # plain-mean PDE terms (use_causal_weights)
        self.cell_drug = cell_drug
        count = 3 if cell_drug else 2
        state_scales = (1.0,) * count if state_scales is None else tuple(float(v) for v in state_scales)
        if len(state_scales) != count or not all(v > 0 for v in state_scales):
            raise ValueError(f"state_scales needs {count} positive factors (one per state), got {state_scales}")
        self.register_buffer("state_scales", torch.tensor(state_scales, dtype=torch.float64), persistent=False)
        self.network = FourierFeatureMLP(geometry.dim + 1, 3 if cell_drug else 2, width=width, depth=depth,
                                         features=features, sigma=sigma, generator=generator)
        if boundary == "no_flux":
            points = generator or torch.Generator().manual_seed(0)
            x, normals = geometry.sample_boundary(boundary_points, points)
            t = torch.rand(boundary_points, 1, generator=points, dtype=x.dtype)
            self.register_buffer("boundary_xt", torch.cat([x, t], dim=1))
            self.register_buffer("boundary_normals", normals)
        self.data = nn.ModuleList()
        for record in observations:
            if record.quantity not in self.QUANTITIES[:3] + (self.QUANTITIES[3:] if cell_drug else ()):
                raise ValueError(f"TransportProblem observes {self.QUANTITIES[:3]} (and with cell_drug "
                                 f"{self.QUANTITIES[3:]}), got {record.quantity!r}")
            ratio = record.quantity == "released_fraction"   # [1], scaled by its largest observed value
            scale = float(np.nanmax(np.abs(record.values))) if ratio else concentration_scale
            self.data.append(VoxelAverage(record, geometry.contains, length=geometry.length, time=end_time,
                                          value_scale=scale))
        # the first record averaging over the same points, per record: its state means are shared
        self._shared_data = [next(j for j in range(i + 1) if self.data[j].same_points(data))
                             for i, data in enumerate(self.data)]

    def states(self, xt: torch.Tensor) -> list[torch.Tensor]:
        """[C_L, C_F] (and C_I with ``cell_drug``) [mol/m^3], each (n, 1), at nondimensional
        (x~, t~) points (n, dim + 1)."""
        x, t = xt[:, :-1], xt[:, -1:]
        factor = t * (self.geometry.boundary_factor(x) if self.boundary == "dirichlet" else 1.0)
        out = self.scales.concentration * factor * self.network(xt) * self.state_scales
        states = []
        for i, initial in enumerate(self.initial + ((None,) if self.cell_drug else ())):
            c = out[:, i:i + 1]
            states.append(c if initial is None else c + initial(x).reshape(-1, 1))
        return states

    def concentrations(self, xt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(C_L, C_F) [mol/m^3], each (n, 1), at nondimensional (x~, t~) points (n, dim + 1)."""
        c_lipo, c_free = self.states(xt)[:2]
        return c_lipo, c_free

    def observed(self, quantity: str, xt: torch.Tensor) -> torch.Tensor:
        """The observed drug ``quantity`` [mol/m^3] at (x~, t~) (not "released_fraction", a ratio of
        voxel means: :meth:`loss_terms`)."""
        states = self.states(xt)
        if quantity == "total_drug":
            return sum(states)
        return dict(zip(self.STATES, states))[quantity]

    def sample_collocation(self, n: int, generator: torch.Generator) -> torch.Tensor:
        x = self.geometry.sample(n, generator)
        t = torch.rand(n, 1, generator=generator, dtype=x.dtype)
        return torch.cat([x, t], dim=1)

    def use_weak_form(self, test_functions: SpaceTimeTestFunctions | None) -> None:
        """PDE terms of the drug from weak residuals against ``test_functions`` (None: the strong
        form); a flow's pressure terms stay pointwise on collocation points."""
        if test_functions is not None and test_functions.dim != self.geometry.dim:
            raise ValueError(f"test functions in {test_functions.dim}-D for a {self.geometry.dim}-D problem")
        self.test_functions = test_functions

    def use_causal_weights(self, slices: int) -> None:
        """Causal weighting of the PDE terms (0: off, plain means): the residuals, ordered by t~
        (of the collocation points, or of the centres of the test functions' boxes), form
        ``slices`` equal-count slices (their number must be a multiple); each term is
        (1/M) sum_i w_i L_i, L_i its mean square on slice i, w = :func:`causal_weights` of the
        equations' summed slice losses with the buffer ``causal_epsilon`` [1] (0 until set). The
        buffer ``causal_weights`` (M,) holds the last weights; with ``causal_frozen`` they are
        reused instead of recomputed (a fixed objective, e.g. for L-BFGS)."""
        if slices < 0:
            raise ValueError(f"causal slices must be >= 0 (0: off), got {slices}")
        for name in ("causal_epsilon", "causal_weights"):
            self._buffers.pop(name, None)
        self.causal_slices, self.causal_frozen = int(slices), False
        if slices:
            dtype = self.state_scales.dtype
            self.register_buffer("causal_epsilon", torch.zeros((), dtype=dtype, device=self.state_scales.device))
            self.register_buffer("causal_weights", torch.ones(slices, dtype=dtype, device=self.state_scales.device))

    @property
    def uses_collocation(self) -> bool:
        """Strong form, or a flow trained with the drug (its pressure terms are pointwise in either form)."""
        return self.test_functions is None or self._trains_flow

    def _uptake_law(self, x: torch.Tensor) -> Callable:
        """U(C_F, C_I) [mol/(m^3 s)] at the nondimensional space points ``x``: linear in C_F with
        the coefficient ``uptake_rate``."""
        rate = self.coefficient("uptake_rate", x)
        return lambda free, cell: linear_uptake(free, rate)

    def _exchanges(self, x: torch.Tensor) -> tuple[DrugExchange | None, DrugExchange | None]:
        """The vascular exchange of the liposomes and of the free drug at the points ``x``: a P S/V
        given as a callable ``f(x~, unknown values)`` (e.g. of an unknown vessel permeability) is
        evaluated there, and every P S/V is multiplied by ``exchange_scale(x~)`` where given."""
        scale = None if self.exchange_scale is None else self.exchange_scale(x)
        out = []
        for exchange in self.exchange:
            if exchange is not None:
                product = exchange.permeability_surface
                product = product(x, self.scalar_values()) if callable(product) else product
                exchange = DrugExchange(exchange.plasma, product if scale is None else product * scale,
                                        exchange.reflection)
            out.append(exchange)
        return tuple(out)

    def _equation_coefficients(self, x: torch.Tensor, states: list[torch.Tensor]) -> tuple[dict, Callable]:
        """(keywords of the drug equations, uptake law U(C_F, C_I)) at the nondimensional space
        points ``x`` with the ``states`` there (no flow terms); the keywords' ``uptake`` is that law
        at the states' C_I, a function of C_F alone (the free-drug equation), the law itself serves
        the cell-drug equation."""
        uptake = self._uptake_law(x)
        cell = states[2].reshape(-1) if self.cell_drug else None
        exchange_lipo, exchange_free = self._exchanges(x)
        return dict(diffusivity_lipo=self.coefficient("diffusivity_lipo", x),
                    diffusivity_free=self.coefficient("diffusivity_free", x),
                    release_rate=self.coefficient("release_rate", x), uptake=lambda free: uptake(free, cell),
                    clearance=self.coefficient("clearance", x), interstitial_fraction=self.interstitial_fraction,
                    exchange_lipo=exchange_lipo, exchange_free=exchange_free,
                    free_binding_ratio=self.free_binding_ratio, hindrance=self.hindrance), uptake

    def _residuals(self, points: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Nondimensional strong residuals (r_L, r_F) (and r_I with ``cell_drug``), each (n,)."""
        xt = points.requires_grad_(True) if not points.requires_grad else points
        states = self.states(xt)
        c_lipo, c_free = states[:2]
        coefficients, uptake = self._equation_coefficients(xt[:, :-1], states)
        flow = self._flow_terms(xt[:, :-1]) if self.flow is not None else {}
        residuals = list(transport_residuals(c_lipo, c_free, xt, self.scales.length, self.scales.time,
                                             **coefficients, **flow))
        if self.cell_drug:   # dC_I/dt = U(C_F, C_I)
            residuals.append(cell_drug_residual(states[2], c_free, xt, self.scales.time, uptake))
        scale = self.scales.concentration / self.scales.time
        return tuple(r / scale for r in residuals)

    def _weak_residuals(self) -> tuple[torch.Tensor, ...]:
        """Nondimensional weak residuals per test function, each (n_test,): the networks evaluated
        once at the test functions' quadrature points (the steady flow once per place)."""
        test = self.test_functions
        states = self.states(test.points)
        coefficients, uptake = self._equation_coefficients(test.points[:, :-1], states)
        flow = {}
        if self.flow is not None:   # by parts: u only, not div u
            terms = self._flow_terms(test.space_points.clone().requires_grad_(True))
            flow = {name: terms[name][test.space_index] for name in ("darcy_flux", "fluid_source", "lymphatic_sink")}
        residuals = list(weak_transport_residuals(test, states[0], states[1], self.scales.length, self.scales.time,
                                                  **coefficients, **flow))
        if self.cell_drug:
            residuals.append(weak_cell_drug_residual(test, states[2], states[1], self.scales.time, uptake))
        scale = self.scales.concentration / self.scales.time
        return tuple(r / scale for r in residuals)

    def _flow_terms(self, x: torch.Tensor) -> dict:
        """Darcy flux u = -K grad p [m/s], div u, phi_V and phi_L [1/s] of the flow's pressure at the
        nondimensional space points ``x`` (n, dim), which must be in the autograd graph."""
        flow = self.flow
        p = flow.pressure(x).reshape(-1)
        grad_p = gradient(p, x) / self.scales.length
        conductivity = flow.coefficient("conductivity", x)
        conductivity = conductivity.reshape(-1, 1) if isinstance(conductivity, torch.Tensor) and conductivity.dim() \
            else conductivity
        vascular = starling_fluid_flux(p, flow.coefficient("vascular_exchange", x),
                                       flow.coefficient("effective_pressure", x))
        lymphatic = -starling_fluid_flux(p, flow.coefficient("lymphatic_filtration", x),
                                         flow.coefficient("lymphatic_pressure", x))
        return {"darcy_flux": -conductivity * grad_p, "flux_divergence": vascular - lymphatic,
                "fluid_source": vascular, "lymphatic_sink": lymphatic}

    @property
    def _trains_flow(self) -> bool:
        """Whether the flow's terms are part of this problem's loss (not for a parametric pressure)."""
        return self.flow is not None and not self.flow.parametric

    def _flow_points(self, points: torch.Tensor) -> torch.Tensor:
        """The nondimensional space points (n, dim) on which the flow's loss terms are taken: those
        of the collocation ``points`` (x~, t~)."""
        return points[:, :-1].detach().clone()

    def pointwise_residual(self, points: torch.Tensor) -> torch.Tensor:
        """Strong residual norm per point (n,) (residual-adaptive collocation): the drug's and the
        flow's (one trained with the drug); in the weak form with such a flow the flow's only (the
        points then serve only the pressure)."""
        weak_with_flow = self.test_functions is not None and self._trains_flow
        squares = 0.0 if weak_with_flow else sum(r**2 for r in self._residuals(points))
        if self._trains_flow:
            squares = squares + self.flow.pointwise_residual(points[:, :-1].detach().clone()) ** 2
        return torch.sqrt(squares)

    def pde_residuals(self, points: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Nondimensional residuals (r_L, r_F) (and r_I with ``cell_drug``) in the form in use: strong,
        one per collocation point (n,), or weak, one per test function (n_test,; ``points`` unused)."""
        return self._residuals(points) if self.test_functions is None else self._weak_residuals()

    def _causal_pde_terms(self, residuals: tuple[torch.Tensor, ...], times: torch.Tensor) -> dict[str, torch.Tensor]:
        """Causally weighted PDE terms (:meth:`use_causal_weights`) of the residuals (n,) at
        nondimensional times ``times`` (n,)."""
        slices = self.causal_slices
        if times.shape[0] % slices:
            raise ValueError(f"{times.shape[0]} residuals (collocation points or test functions) do not split into "
                             f"{slices} equal causal slices: use a slice count that divides them")
        order = torch.argsort(times.detach())
        losses = torch.stack([(r[order] ** 2).reshape(slices, -1).mean(dim=1) for r in residuals])   # (terms, M)
        if not self.causal_frozen:
            self.causal_weights.copy_(causal_weights(losses.sum(dim=0), self.causal_epsilon))
        return {f"pde_{name}": (self.causal_weights * loss).mean()
                for name, loss in zip(("lipo", "free", "cell"), losses)}

    def loss_terms(self, points: torch.Tensor) -> dict[str, torch.Tensor]:
        residuals = self.pde_residuals(points)
        if self.causal_slices:
            test = self.test_functions
            times = points[:, -1] if test is None else test.points[test.index, -1].mean(dim=1)   # weak: box centres
            terms = self._causal_pde_terms(residuals, times)
        else:
            terms = {f"pde_{name}": (r**2).mean() for name, r in zip(("lipo", "free", "cell"), residuals)}
        if self._trains_flow:
            for name, value in self.flow.loss_terms(self._flow_points(points)).items():
                terms[f"{name}_ifp"] = value
        if self.boundary == "no_flux":
            xt = self.boundary_xt.clone().requires_grad_(True)
            flux = [(gradient(c, xt)[:, :-1] * self.boundary_normals).sum(dim=1) for c in self.concentrations(xt)]
            terms["bc_no_flux"] = sum((f / self.scales.concentration) ** 2 for f in flux).mean()
        means = {}   # voxel means (n, states) of C_L, C_F (, C_I) / C: one network evaluation per point set
        for data, shared in zip(self.data, self._shared_data):
            if shared not in means:
                means[shared] = data.predict_columns(
                    lambda xt: torch.cat(self.states(xt), dim=1) / self.scales.concentration, with_time=True)
            states = means[shared]
            total = states.sum(dim=1)
            if data.quantity == "released_fraction":   # ratio of the voxel means, as synthesize computes it
                misfit = released_fraction_misfit(states[:, 0], total, data.values * data.value_scale)
                terms["data_released_fraction"] = ((misfit / data.value_scale) ** 2).mean()
                continue
            predicted = total if data.quantity == "total_drug" else states[:, self.STATES.index(data.quantity)]
            terms[f"data_{data.quantity}"] = data.mean_square_error(predicted)
        return terms

    def estimates(self) -> dict[str, tuple[float, str]]:
        """The transport's scalar unknowns and, with a flow, the flow's estimates."""
        return super().estimates() | (self.flow.estimates() if self.flow is not None else {})
