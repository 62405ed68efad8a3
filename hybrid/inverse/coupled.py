"""Coupled pressure + drug problem of a tumour in host tissue (torch only, SI units).

The FEM's tumour-in-host twin (``hybrid transport`` / ``hybrid synthesize`` with ``[host]``): a
ball |x| <= R_o (tumour |x| < R_t, host outside) with piecewise-constant coefficients, the steady
Darcy-Starling pressure p (p = p_far on |x| = R_o) and the liposomal / free / cell drug fed by it:
Darcy flux u = -K grad p, Starling fluid source phi_V = Lp S/V (p_e - p) (solvent drag of the
transvascular terms), lymphatic sink phi_L = LpL SL/V (p - p_L), and the vascular exchange
P S/V with the region's S/V.

Interface: K jumps at |x| = R_t, so p has a kink there (K dp/dn is continuous, dp/dn is not). The
pressure network sees the level set's magnitude as an extra input, p = p_far + P b(x~)
N(x~, |phi(x~)|) with phi = (|x~|^2 - rho^2) / (2 rho), rho = R_t / R_o (negative in the tumour):
p is continuous and may kink on phi = 0 (cusp-capturing PINN, Tseng, Lin, Hu & Lai, JCP 2023).
The PDE is enforced inside each region (piecewise-constant K: no grad K term), and the flux
condition [K dp/dn] = 0 as the loss term ``interface_ifp`` on fixed interface points, with the
one-sided gradients of N(x~, +phi) (host side) and N(x~, -phi) (tumour side). The drug has one
diffusivity in both regions and a continuous normal Darcy flux, but its sources (S/V, div u) jump
at the interface and the liposomes barely diffuse (sqrt(D_L t) ~ 60 um after 3 h, Peclet number
u L / D_L ~ 1e2 per 0.25 mm near the rim), so the drug networks see (x~, t~, |phi(x~)|) too.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Callable

import torch

from hybrid.inverse.geometry import Ball
from hybrid.inverse.images import (ktrans_scale, liposomal_exchange, release_rate_coefficient,
                                   release_state_scales, scaled)
from hybrid.inverse.networks import STATE_NETWORK, FourierFeatureMLP
from hybrid.inverse.problems import IFPProblem, TransportProblem
from hybrid.inverse.residuals import DrugExchange, ElKarehSecombUptake, gradient
from hybrid.inverse.unknowns import BoundedScalar

__all__ = ["TumourInHost", "RegionCoefficient", "HostIFPProblem", "CoupledProblem", "TUMOUR_FLOW_UNKNOWNS",
           "tumour_host_problem", "pretrain_pressure"]


class LevelSetInput(torch.nn.Module):
    """``network`` of (x~, t~, |phi(x~)|) called with (x~, t~): fields that may kink at the interface.
    With ``interface_width`` w [1, nondimensional] > 0 it also sees tanh(phi / w), a smooth step of
    width w across the interface: fields that change steeply there (a margin band of width ~w)."""

    def __init__(self, network: torch.nn.Module, geometry: "TumourInHost", interface_width: float = 0.0):
        super().__init__()
        if interface_width < 0:
            raise ValueError(f"interface_width must be >= 0 (0: no step input), got {interface_width}")
        self.network, self.geometry, self.interface_width = network, geometry, float(interface_width)

    @staticmethod
    def extra_inputs(interface_width: float) -> int:
        """Number of inputs after (x~, t~): |phi| and, with an interface width, tanh(phi / w)."""
        return 2 if interface_width else 1

    def forward(self, xt: torch.Tensor) -> torch.Tensor:
        phi = self.geometry.level_set(xt[:, :-1])
        inputs = [xt, phi.abs()] + ([torch.tanh(phi / self.interface_width)] if self.interface_width else [])
        return self.network(torch.cat(inputs, dim=1))


@dataclass(frozen=True)
class TumourInHost(Ball):
    """The ball |x| <= ``radius`` [m] (tumour and host) with the tumour |x| < ``tumour_radius`` [m]."""

    tumour_radius: float = 0.0

    def __post_init__(self):
        if not 0.0 < self.tumour_radius < self.radius:
            raise ValueError(f"tumour_radius must lie in (0, {self.radius:g}) m (the outer radius), "
                             f"got {self.tumour_radius:g} m")

    @property
    def interface_radius(self) -> float:
        """R_t / R_o: the interface radius in nondimensional coordinates [1]."""
        return self.tumour_radius / self.radius

    def level_set(self, x: torch.Tensor) -> torch.Tensor:
        """phi = (|x~|^2 - rho^2) / (2 rho) (n, 1): < 0 in the tumour, 0 on the interface, smooth
        everywhere (|grad phi| = 1 on the interface)."""
        rho = self.interface_radius
        return ((x * x).sum(dim=-1, keepdim=True) - rho**2) / (2.0 * rho)

    def in_tumour(self, x: torch.Tensor) -> torch.Tensor:
        """Boolean (n,): the points x~ inside the tumour."""
        return self.level_set(x).reshape(-1) < 0.0

    def sample_interface(self, n: int, generator: torch.Generator, dtype=torch.float64):
        """``n`` points on |x~| = rho and the unit normals pointing into the host."""
        direction = torch.randn(n, self.dim, generator=generator, dtype=dtype)
        direction = direction / direction.norm(dim=1, keepdim=True)
        return self.interface_radius * direction, direction.clone()


def tensor_like(value, like: torch.Tensor) -> torch.Tensor:
    """``value`` (a number or a tensor) as a 0-d or same-shape tensor of ``like``'s dtype and device.
    A number is filled in on the device, not copied from the host: a CUDA graph can capture that."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype=like.dtype, device=like.device)
    return torch.full((), float(value), dtype=like.dtype, device=like.device)


class RegionCoefficient:
    """A coefficient with one value in the tumour and one in the host (the problems' callable
    coefficients ``f(x~, unknowns)``): each value is a number [SI] or the name of a scalar unknown."""

    def __init__(self, geometry: TumourInHost, tumour, host):
        self.geometry, self.tumour, self.host = geometry, tumour, host

    def value(self, region_value, unknowns: dict):
        return unknowns[region_value] if isinstance(region_value, str) else region_value

    def __call__(self, x: torch.Tensor, unknowns: dict) -> torch.Tensor:
        tumour, host = (tensor_like(self.value(v, unknowns), x) for v in (self.tumour, self.host))
        return torch.where(self.geometry.in_tumour(x), tumour, host)


class HostIFPProblem(IFPProblem):
    """:class:`IFPProblem` on a :class:`TumourInHost` with a pressure that may kink at the
    interface (module doc) and the flux condition on ``interface_points`` fixed points.
    ``conductivity`` should be a :class:`RegionCoefficient` (piecewise constant).

    ``parametric``: one network is the pressure over the whole box of this problem's scalar
    unknowns (a parametric PINN): it also takes their positions in their bounds
    (:meth:`BoundedScalar.position`, -1 to 1) and the tumour's rim profile exp(-|phi~| / lambda~),
    lambda = sqrt(K / (Lp S/V + LpL SL/V)) of the tumour's values, whose width the unknowns move
    tenfold across the box. The equation is linear in the tumour's effective pressure p_e: when it
    is an unknown the network gives two fields, p = p_far + P b (N_0 + (p_e / p_e,max) N_1) with
    p_e,max its largest bound in magnitude, and p_e is not an input (exact). Its collocation points are (x~, positions), drawn uniformly, and the
    interface condition is taken at positions redrawn with them. Outside training (:meth:`pressure`
    of space points) it is evaluated at the unknowns' current values and the gradient reaches them
    through the network's inputs: the pressure follows the unknowns without a retraining. It is
    trained alone, before the drug (:func:`pretrain_pressure`), and :class:`CoupledProblem` keeps it
    fixed."""

    def __init__(self, geometry: TumourInHost, coefficients: dict, *, interface_points: int = 256,
                 width: int = 32, depth: int = 3, features: int = 16, sigma: float = 1.0,
                 generator: torch.Generator | None = None, parametric: bool = False, **keywords):
        if not isinstance(geometry, TumourInHost):
            raise TypeError(f"HostIFPProblem needs a TumourInHost geometry, got {type(geometry).__name__}")
        super().__init__(geometry, coefficients, width=width, depth=depth, features=features, sigma=sigma,
                         generator=generator, **keywords)
        self.parametric = bool(parametric)
        self.parameter_names = [name for name, unknown in self.unknowns.items()
                                if isinstance(unknown, BoundedScalar)] if self.parametric else []
        if self.parametric and (not self.parameter_names or len(self.parameter_names) < len(self.unknowns)
                                or self.data is not None):
            raise ValueError("a parametric pressure needs scalar unknowns of the flow, no field unknowns "
                             "and no pressure observations")
        effective = self._known.get("effective_pressure")
        self.linear_name = effective.tumour if self.parametric and isinstance(effective, RegionCoefficient) \
            and effective.tumour in self.parameter_names else None
        self.input_names = [name for name in self.parameter_names if name != self.linear_name]
        inputs = geometry.dim + 1 + (len(self.input_names) + 1 if self.parametric else 0)
        self.network = FourierFeatureMLP(inputs, 2 if self.linear_name else 1, width=width, depth=depth,
                                         features=features, sigma=sigma, generator=generator)
        with torch.no_grad():   # Fourier features of (x~, |phi|) only: the others enter as they are
            self.network.frequencies[geometry.dim + 1:].zero_()
        x, normals = geometry.sample_interface(interface_points, generator or torch.Generator().manual_seed(0))
        self.register_buffer("interface_x", x)
        self.register_buffer("interface_normals", normals)
        self.register_buffer("interface_positions", torch.zeros(interface_points, len(self.parameter_names),
                                                                dtype=x.dtype), persistent=self.parametric)
        self.register_buffer("_input_columns", torch.tensor([self.parameter_names.index(name)
                                                             for name in self.input_names], dtype=torch.long),
                             persistent=False)   # an index on the device: a CUDA graph can capture it
        self._positions = None   # per-point positions of the unknowns while a parametric residual is taken

    @contextmanager
    def _at_positions(self, positions: torch.Tensor):
        """Within: the unknowns take the per-point ``positions`` (n, number of unknowns)."""
        self._positions = positions
        try:
            yield
        finally:
            self._positions = None

    def _input_positions(self, n: int, like: torch.Tensor) -> torch.Tensor:
        """Positions (n, len(input_names)) of the unknowns that are network inputs: per point within
        :meth:`_at_positions`, else their current ones."""
        if self._positions is not None:
            return self._positions.index_select(1, self._input_columns)
        if not self.input_names:
            return like.new_zeros(n, 0)
        current = torch.stack([self.unknowns[name].position() for name in self.input_names])
        return current.to(dtype=like.dtype).expand(n, -1)

    def _side_value(self, name: str, x: torch.Tensor, tumour_side: bool = True):
        """Coefficient ``name`` on the tumour or the host side (one value, per-point values, or the
        unknown's); a coefficient that is not a :class:`RegionCoefficient` is taken at ``x``."""
        rule = self._known.get(name)
        if isinstance(rule, RegionCoefficient):
            return tensor_like(rule.value(rule.tumour if tumour_side else rule.host, self.scalar_values()), x)
        return self.coefficient(name, x)

    def _rim_width(self, x: torch.Tensor) -> torch.Tensor:
        """The tumour's rim width sqrt(K / (Lp S/V + LpL SL/V)) / L [1] (n, 1) or 0-d."""
        width = torch.sqrt(self._side_value("conductivity", x) / (
            self._side_value("vascular_exchange", x) + self._side_value("lymphatic_filtration", x)))
        width = width / self.scales.length
        return width.reshape(-1, 1) if width.dim() else width

    def scalar_values(self) -> dict[str, torch.Tensor]:
        if self._positions is None:
            return super().scalar_values()
        return {name: self.unknowns[name].value_at(self._positions[:, i]) for i, name in enumerate(self.parameter_names)}

    def coefficient(self, name: str, x: torch.Tensor):
        if self._positions is not None and name in self.parameter_names:
            return self.scalar_values()[name]
        return super().coefficient(name, x)

    def sample_collocation(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` points x~ (n, dim); parametric: (x~, positions) (n, dim + unknowns), and the
        interface points' positions redrawn."""
        x = super().sample_collocation(n, generator)
        if not self.parametric:
            return x
        self.interface_positions.copy_(2.0 * torch.rand(self.interface_positions.shape, generator=generator,
                                                        dtype=torch.float64) - 1.0)
        return torch.cat([x, 2.0 * torch.rand(n, len(self.parameter_names), generator=generator, dtype=x.dtype) - 1.0],
                         dim=1)

    def _pressure(self, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        boundary = self.geometry.boundary_factor(x)
        if not self.parametric:
            return self.far_pressure + self.scales.pressure * boundary * self.network(torch.cat([x, level], dim=1))
        n = x.shape[0]
        rim = torch.exp(-level / self._rim_width(x))
        out = self.network(torch.cat([x, level, self._input_positions(n, x), rim], dim=1))
        if self.linear_name is not None:
            bound = self.unknowns[self.linear_name]
            p_e = self.scalar_values()[self.linear_name] / max(abs(bound.lower), abs(bound.upper))   # |.| <= 1
            out = out[:, :1] + (p_e.reshape(-1, 1) if p_e.dim() else p_e) * out[:, 1:]
        return self.far_pressure + self.scales.pressure * boundary * out

    def pressure(self, x: torch.Tensor) -> torch.Tensor:
        """Pressure [Pa] (n, 1) at nondimensional points ``x`` (n, dim)."""
        return self._pressure(x, self.geometry.level_set(x).abs())

    def pointwise_residual(self, points: torch.Tensor) -> torch.Tensor:
        """The fluid balance (:class:`IFPProblem`) at points x~ or, parametric, (x~, positions)."""
        dim = self.geometry.dim
        if points.shape[1] == dim:
            return super().pointwise_residual(points)
        with self._at_positions(points[:, dim:].detach()):
            return super().pointwise_residual(points[:, :dim].detach().clone())

    def interface_flux_jump(self) -> torch.Tensor:
        """(K_host dp/dn|host - K_tumour dp/dn|tumour) / (K_tumour P / L) at the interface points (n,)."""
        x = self.interface_x.clone().requires_grad_(True)
        level = self.geometry.level_set(x)
        host, tumour = ((gradient(self._pressure(x, side * level), x) * self.interface_normals).sum(dim=1)
                        for side in (1.0, -1.0))
        K_tumour, K_host = (self._side_value("conductivity", x, side) for side in (True, False))
        return (K_host * host - K_tumour * tumour) / (K_tumour * self.scales.pressure)

    def loss_terms(self, points: torch.Tensor) -> dict[str, torch.Tensor]:
        if not self.parametric:
            return super().loss_terms(points) | {"interface": (self.interface_flux_jump() ** 2).mean()}
        with self._at_positions(self.interface_positions):
            interface = (self.interface_flux_jump() ** 2).mean()
        return {"pde": (self.pointwise_residual(points) ** 2).mean(), "interface": interface}


class CoupledProblem(TransportProblem):
    """:class:`TransportProblem` with cell drug and a :class:`HostIFPProblem` flow on a
    :class:`TumourInHost`: coefficients may be :class:`RegionCoefficient`; the vascular exchange
    P S/V of each carrier is the given ``exchange_*`` one (tumour S/V) times ``host_surface_ratio``
    = S/V_host / S/V_tumour [1] in the host; ``uptake`` None (linear, coefficient ``uptake_rate``)
    or an :class:`~hybrid.inverse.residuals.ElKarehSecombUptake` (then dC_I/dt = U(C_F, C_I)).
    The state network also sees |phi| and, with ``interface_width`` > 0, tanh(phi / w)
    (:class:`LevelSetInput`). ``flow_points`` > 0: the flow's terms are taken on their own
    ``flow_points`` uniform points of the domain, redrawn whenever collocation points are sampled,
    instead of the drug's collocation points (the steady pressure is cheap per point, and on a few
    hundred points L-BFGS fits a pressure whose residual is small there only). Other keywords:
    :class:`TransportProblem` (``cell_drug`` is always on)."""

    def __init__(self, geometry: TumourInHost, coefficients: dict, *, flow: HostIFPProblem,
                 host_surface_ratio: float = 1.0, uptake: ElKarehSecombUptake | None = None,
                 interface_width: float = 0.0, flow_points: int = 0, **keywords):
        if not isinstance(geometry, TumourInHost) or not isinstance(flow, HostIFPProblem):
            raise TypeError("CoupledProblem needs a TumourInHost geometry and a HostIFPProblem flow")
        if host_surface_ratio < 0:
            raise ValueError(f"host_surface_ratio must be >= 0, got {host_surface_ratio}")
        if flow_points < 0:
            raise ValueError(f"flow_points must be >= 0 (0: the drug's collocation points), got {flow_points}")
        super().__init__(geometry, coefficients, flow=flow, cell_drug=True, **keywords)
        shape = {name: keywords.get(name, default) for name, default in STATE_NETWORK.items()}
        inputs = geometry.dim + 1 + LevelSetInput.extra_inputs(interface_width)
        self.network = LevelSetInput(FourierFeatureMLP(inputs, 3, generator=keywords.get("generator"), **shape),
                                     geometry, interface_width)
        self.host_surface_ratio = float(host_surface_ratio)
        self.uptake = uptake
        self.flow_points = int(flow_points)
        if flow.parametric:   # trained alone before (pretrain_pressure); the drug does not move it
            flow.network.requires_grad_(False)
        self.register_buffer("flow_x", geometry.sample(self.flow_points, torch.Generator().manual_seed(0)),
                             persistent=self.flow_points > 0)

    def sample_collocation(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` (x~, t~) points; also redraws the flow's own points (``flow_points``) from ``generator``."""
        if self.flow_points and self._trains_flow:
            self.flow_x.copy_(self.geometry.sample(self.flow_points, generator, dtype=self.flow_x.dtype,
                                                   device=self.flow_x.device))
        return super().sample_collocation(n, generator)

    def _flow_points(self, points: torch.Tensor) -> torch.Tensor:
        """The flow's own points (``flow_points`` > 0), else those of the drug's collocation ``points``."""
        return self.flow_x.clone() if self.flow_points else super()._flow_points(points)

    def _uptake_law(self, x: torch.Tensor) -> Callable:
        """U(C_F, C_I) [mol/(m^3 s)]: linear (``uptake_rate``) or the given ``uptake`` law."""
        return super()._uptake_law(x) if self.uptake is None else self.uptake

    def _exchanges(self, x: torch.Tensor) -> tuple[DrugExchange | None, DrugExchange | None]:
        """Each carrier's exchange with P S/V per point: tumour value, times host_surface_ratio in the host."""
        factor = RegionCoefficient(self.geometry, 1.0, self.host_surface_ratio)(x, {})
        return tuple(None if exchange is None else
                     DrugExchange(exchange.plasma, exchange.permeability_surface * factor, exchange.reflection)
                     for exchange in super()._exchanges(x))


TUMOUR_FLOW_UNKNOWNS = {"conductivity": "tumour_conductivity", "effective_pressure": "tumour_effective_pressure"}
"""IFP coefficients of the tumour that :func:`tumour_host_problem` may take as scalar unknowns
(the host's stay known), and the names of their unknowns in the problem's estimates."""
_FLOW_COEFFICIENTS = ("conductivity", "vascular_exchange", "effective_pressure", "lymphatic_filtration",
                      "lymphatic_pressure")


def tumour_host_problem(physics: dict, unknowns: dict[str, dict], units: dict[str, str], observations, *,
                        concentration_scale: float, pressure_scale: float, seed: int, interface_points: int = 256,
                        parametric_pressure: bool = False, **network) -> CoupledProblem:
    """The coupled PINN of a 2-D tumour disc in host tissue (:class:`CoupledProblem` with a
    :class:`HostIFPProblem`), zero drug at t = 0, no diffusive flux through the outer edge, over
    [0, ``physics["end_time"]``] s.

    ``physics`` (SI): the tumour's release physics of
    :func:`hybrid.inverse.images.disc_release_problem` (``flow`` the tumour's IFP coefficients and
    ``far_pressure``), and ``tumour_radius`` [m], ``outer_radius`` [m] (tumour + host),
    ``host_flow`` (the host's IFP coefficients) and ``host_surface_ratio`` S/V_host / S/V_tumour [1].
    ``unknowns`` name -> BoundedScalar keywords with ``units[name]``: ``release_rate`` (or
    ``ph_50`` / ``steepness`` of the pH law), the liposomes' ``vessel_permeability`` and the
    tumour's ``conductivity`` and ``effective_pressure`` (:data:`TUMOUR_FLOW_UNKNOWNS`).
    ``parametric_pressure``: the pressure network is parametric in the tumour's flow unknowns
    (:class:`HostIFPProblem`; needs one of them). ``network``: keywords of
    :class:`CoupledProblem` (width, sigma, interface_width, flow_points, ...) over STATE_NETWORK."""
    region = TumourInHost(2, physics["outer_radius"], tumour_radius=physics["tumour_radius"])
    generator = torch.Generator().manual_seed(seed)
    scalars = {name: BoundedScalar(name, units[name], **spec) for name, spec in unknowns.items()}
    tumour_flow, host_flow = physics["flow"], physics["host_flow"]
    flow_coefficients = {name: RegionCoefficient(region, TUMOUR_FLOW_UNKNOWNS[name] if name in unknowns
                                                 else tumour_flow[name], host_flow[name])
                         for name in _FLOW_COEFFICIENTS}
    scale = ktrans_scale(physics, region, {"tumour": region.in_tumour,
                                           "host": lambda x: region.contains(x) & ~region.in_tumour(x)})
    if scale is not None and parametric_pressure:
        raise ValueError("a parametric pressure does not take a Ktrans map: its rim input uses the tumour's "
                         "uniform Lp S/V")
    if scale is not None:   # each region's Lp S/V and P S/V by Ktrans over that region's mean, as the FEM
        flow_coefficients["vascular_exchange"] = scaled(flow_coefficients["vascular_exchange"], scale)
    flow_coefficients |= {TUMOUR_FLOW_UNKNOWNS[name]: scalars[name] for name in TUMOUR_FLOW_UNKNOWNS
                          if name in unknowns}
    flow = HostIFPProblem(region, flow_coefficients, far_pressure=tumour_flow["far_pressure"],
                          pressure_scale=pressure_scale, interface_points=interface_points, generator=generator,
                          parametric=parametric_pressure)
    release = {name: scalars[name] for name in ("release_rate", "ph_50", "steepness") if name in unknowns}
    if "release_rate" not in unknowns:
        release["release_rate"] = release_rate_coefficient(physics, region.radius, unknowns)
    return CoupledProblem(
        region, {name: physics[name] for name in ("diffusivity_lipo", "diffusivity_free", "uptake_rate", "clearance")}
        | release | {name: scalars[name] for name in ("vessel_permeability",) if name in unknowns}, flow=flow,
        end_time=physics["end_time"], concentration_scale=concentration_scale,
        observations=observations, boundary="no_flux", exchange_lipo=liposomal_exchange(physics, unknowns),
        exchange_free=DrugExchange(**physics["exchange_free"]), host_surface_ratio=physics["host_surface_ratio"],
        hindrance=physics["hindrance"], interstitial_fraction=physics["interstitial_fraction"],
        free_binding_ratio=physics["free_binding_ratio"],
        state_scales=release_state_scales(physics, unknowns), exchange_scale=scale,
        generator=generator, **(STATE_NETWORK | network))


def pretrain_pressure(problem: CoupledProblem, config, progress=None):
    """Train the pressure network of ``problem`` alone (a :class:`~hybrid.inverse.TrainingConfig`
    ``config``) on its Darcy-Starling residual and interface condition, no data, the scalar
    unknowns held at their current values, before the joint training: the drug's vascular source
    depends on p_e - p, only ~35 Pa of ~1500 Pa at the tumour centre of the benchmark twin
    (benchmarks/pinn_twin_host.py). The pressure equation is taken pointwise and unweighted in time
    whatever ``config``'s residual form and causal slices (those are the drug's). A parametric
    pressure (:class:`HostIFPProblem`) is trained over the whole box of its unknowns and stays
    fixed afterwards. Returns the :class:`~hybrid.inverse.training.TrainingResult`."""
    from hybrid.inverse.training import Trainer

    scalars = [u.raw for u in problem.flow.scalar_unknowns()]
    for raw in scalars:
        raw.requires_grad_(False)
    problem.flow.network.requires_grad_(True)
    try:
        return Trainer(problem.flow, replace(config, residual_form="strong", causal_slices=0),
                       progress=progress).run()
    finally:
        for raw in scalars:
            raw.requires_grad_(True)
        problem.flow.network.requires_grad_(not problem.flow.parametric)
