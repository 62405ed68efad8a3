"""Inverse problems set up from image records, and recovered fields put back on image grids or
evaluated at given points (torch; used by ``hybrid invert`` and ``hybrid validate``, which pass
numpy arrays in SI units: points [m], times [s])."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from hybrid.config.invert import starting_value
from hybrid.inverse.geometry import Ball
from hybrid.inverse.problems import IFPProblem, TransportProblem
from hybrid.inverse.residuals import DrugExchange
from hybrid.inverse.maps import KnownMap, KtransScale
from hybrid.inverse.unknowns import BoundedField, BoundedScalar
from hybrid.problems.release import ph_release_rate, released_fraction
from hybrid.records import ObservationOperator, Observations, VoxelGrid

__all__ = ["disc_ifp_problem", "disc_release_problem", "liposomal_exchange", "ktrans_scale", "scaled", "release_rate_coefficient",
           "release_state_scales", "voxel_average", "voxel_series", "pressure_at",
           "drug_at", "save_state", "load_state"]

DRUG_FIELDS = ("liposomal_drug", "free_drug", "cell_drug", "total_drug")
"""Drug fields of a release problem with cell drug [mol/m^3 of tissue]."""


def disc_ifp_problem(radius: float, known: dict[str, float], unknowns: dict[str, dict], units: dict[str, str],
                     observations: Observations | None, *, far_pressure: float, pressure_scale: float,
                     seed: int) -> IFPProblem:
    """An :class:`IFPProblem` on the disc |x| <= ``radius`` [m] centred at the world origin:
    ``known`` coefficients [SI], ``unknowns`` name -> BoundedScalar keywords (lower, upper,
    initial, log) with ``units[name]``, or with ``field`` true a :class:`BoundedField` (lower,
    upper, log); networks initialised from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    coefficients = dict(known)
    for name, spec in unknowns.items():
        spec = dict(spec)
        if spec.pop("field", False):
            coefficients[name] = BoundedField(name, units[name], spec["lower"], spec["upper"], 2, log=spec["log"],
                                              generator=generator)
        else:
            coefficients[name] = BoundedScalar(name, units[name], **spec)
    return IFPProblem(Ball(2, radius), coefficients, observations=observations, far_pressure=far_pressure,
                      pressure_scale=pressure_scale, generator=generator)


def disc_release_problem(radius: float, physics: dict, unknowns: dict[str, dict], units: dict[str, str],
                         observations: tuple[Observations, ...], *, concentration_scale: float,
                         pressure_scale: float, seed: int) -> TransportProblem:
    """A :class:`TransportProblem` with cell drug on the disc |x| <= ``radius`` [m], zero drug at
    t = 0, no diffusive flux through the edge (the FEM's condition), over [0, ``physics["end_time"]``] s.

    ``physics`` (SI): ``diffusivity_lipo``, ``diffusivity_free``, ``uptake_rate``, ``clearance``,
    ``interstitial_fraction``, ``hindrance``, ``free_binding_ratio``, ``end_time``, ``exchange_lipo`` /
    ``exchange_free`` (dicts of :class:`DrugExchange` keywords: plasma curve, P S/V [1/s],
    reflection), ``surface_to_volume`` S/V [1/m] (for an unknown ``vessel_permeability``), ``release_rate`` (known k_rel [1/s] unless it is an unknown, or None with a pH
    map), ``ph_law`` (None, or for pH-sensitive liposomes ``ph_50``, ``steepness``, ``base_rate``,
    ``max_rate`` of :func:`hybrid.problems.release.ph_release_rate` and the pH_e: ``ph_volume`` on
    ``ph_grid`` (:class:`~hybrid.inverse.maps.KnownMap`, 2-D on ``slice_index``) or the uniform ``ph``;
    the release rate is then k(pH_e(x)) with the unknowns among ``ph_50`` and ``steepness``) and
    ``flow`` (None, or the IFP coefficients of :class:`IFPProblem` with ``far_pressure`` [Pa]: the
    Darcy flow, trained jointly) and ``ktrans_map`` (None, or a Ktrans map by which, as in the FEM,
    every P S/V and the flow's Lp S/V are scaled: :func:`ktrans_scale`). ``unknowns`` name -> BoundedScalar keywords with ``units[name]``."""
    generator = torch.Generator().manual_seed(seed)
    coefficients = {name: physics[name] for name in ("diffusivity_lipo", "diffusivity_free", "uptake_rate",
                                                     "clearance") if name not in unknowns}
    if "release_rate" not in unknowns:
        coefficients["release_rate"] = release_rate_coefficient(physics, radius, unknowns)
    coefficients |= {name: BoundedScalar(name, units[name], **spec) for name, spec in unknowns.items()}
    geometry = Ball(2, radius)
    scale = ktrans_scale(physics, geometry, {"tumour": geometry.contains})
    flow = None
    if physics["flow"] is not None:
        flow_coefficients = dict(physics["flow"])
        far = flow_coefficients.pop("far_pressure")
        if scale is not None:
            flow_coefficients["vascular_exchange"] = scaled(flow_coefficients["vascular_exchange"], scale)
        flow = IFPProblem(geometry, flow_coefficients, far_pressure=far, pressure_scale=pressure_scale,
                          generator=generator)
    return TransportProblem(
        geometry, coefficients, end_time=physics["end_time"], concentration_scale=concentration_scale,
        observations=observations, boundary="no_flux", exchange_lipo=liposomal_exchange(physics, unknowns),
        exchange_free=DrugExchange(**physics["exchange_free"]), flow=flow, hindrance=physics["hindrance"],
        free_binding_ratio=physics["free_binding_ratio"], interstitial_fraction=physics["interstitial_fraction"],
        generator=generator, cell_drug=True, state_scales=release_state_scales(physics, unknowns),
        exchange_scale=scale)


def ktrans_scale(physics: dict, geometry, regions: dict, per_axis: int = 800) -> KtransScale | None:
    """The :class:`~hybrid.inverse.maps.KtransScale` of ``physics["ktrans_map"]`` (None without a
    map: ``volume`` [1/min], ``grid``, ``slice_index``, ``label``) on ``geometry``'s ``regions``
    (name -> mask of x~, the tumour first), region means over a ``per_axis``^dim grid of points
    inside the domain."""
    known = physics.get("ktrans_map")
    if known is None:
        return None
    axis = torch.linspace(-1.0, 1.0, per_axis, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(*[axis] * geometry.dim, indexing="ij"), dim=-1).reshape(-1, geometry.dim)
    points = grid[geometry.contains(grid)]
    slice_index = known["slice_index"] if known["volume"].shape[2] > 1 else 0
    return KtransScale(known["volume"], known["grid"], geometry.length, regions, points, slice_index=slice_index,
                       label=known["label"])


def scaled(coefficient, scale: Callable):
    """``coefficient`` (a number or a coefficient ``f(x~, unknown values)``) times the known factor
    ``scale(x~)``, as a coefficient."""
    return lambda x, values: (coefficient(x, values) if callable(coefficient) else coefficient) * scale(x)


def liposomal_exchange(physics: dict, unknowns) -> DrugExchange:
    """The liposomes' vascular exchange of ``physics`` (see :func:`disc_release_problem`); with
    ``vessel_permeability`` among ``unknowns`` its P S/V is that unknown P_L [m/s] times the known
    ``physics["surface_to_volume"]`` S/V [1/m]."""
    exchange = dict(physics["exchange_lipo"])
    if "vessel_permeability" in unknowns:
        surface = physics["surface_to_volume"]
        exchange["permeability_surface"] = lambda x, values: values["vessel_permeability"] * surface
    return DrugExchange(**exchange)


def release_rate_coefficient(physics: dict, radius: float, unknowns) -> float | Callable:
    """The release rate k_rel [1/s] when it is not among ``unknowns``: the known
    ``physics["release_rate"]``, or with a pH law (``physics["ph_law"]``, see
    :func:`disc_release_problem`) k(pH_e(x)) as a coefficient ``f(x~, values)`` on a domain of radius
    ``radius`` [m] (the length scale of x~), its ``ph_50`` and ``steepness`` taken from the unknown
    values where they are among ``unknowns``."""
    law = physics.get("ph_law")
    if law is None:
        return physics["release_rate"]
    if law["ph_volume"] is None:
        ph = lambda x: law["ph"]
    else:
        ph = KnownMap(law["ph_volume"], law["ph_grid"], radius,
                      slice_index=law["slice_index"] if law["ph_volume"].shape[2] > 1 else 0)
    fixed = {name: law[name] for name in ("ph_50", "steepness") if name not in unknowns}

    def rate(x, values):
        shape = {name: values[name] for name in ("ph_50", "steepness") if name in values}
        return ph_release_rate(ph(x), base_rate=law["base_rate"], max_rate=law["max_rate"], **fixed, **shape)
    return rate


def release_state_scales(physics: dict, unknowns: dict[str, dict]) -> tuple[float, float, float]:
    """Scales [1] of the (liposomal, free, cell) drug states relative to the concentration scale,
    keeping each network output O(1): free drug ~ k_rel C_L / (its loss rate k_up + P S/V_free / phi),
    cell drug ~ k_rel T C_L, each capped at 1. k_rel [1/s] is the starting value of the
    ``release_rate`` unknown, else that of the starting pH law at the median pH_e, else the known
    rate; ``physics`` (SI) as in :func:`disc_release_problem`, ``unknowns`` name -> BoundedScalar keywords."""
    law = physics.get("ph_law")
    if "release_rate" in unknowns:
        rate = starting_value(unknowns["release_rate"])
    elif law is not None:
        ph = law["ph"] if law["ph_volume"] is None else float(np.median(law["ph_volume"]))
        rate = float(ph_release_rate(ph, base_rate=law["base_rate"], max_rate=law["max_rate"],
                                     **{name: starting_value(unknowns[name]) if name in unknowns else law[name]
                                        for name in ("ph_50", "steepness")}))
    else:
        rate = physics["release_rate"]
    loss = physics["uptake_rate"] + physics["exchange_free"]["permeability_surface"] / physics["interstitial_fraction"]
    return 1.0, min(1.0, rate / loss) if loss > 0 else 1.0, min(1.0, rate * physics["end_time"])


def _voxel_mean(field: Callable, length: float, contains: Callable, grid: VoxelGrid,
                operator: ObservationOperator, reference: torch.Tensor) -> np.ndarray:
    """Mean of ``field`` (nondimensional points (n, dim) -> values (n, 1)) over each voxel's
    sub-voxel points inside the domain; (nx, ny, nz), NaN where a voxel has no point inside."""
    voxels = np.argwhere(np.ones(grid.shape, dtype=bool))
    points = torch.as_tensor(operator.voxel_points(grid, voxels) / length, dtype=reference.dtype)
    inside = contains(points).numpy()
    with torch.no_grad():
        values = field(points.reshape(-1, points.shape[-1]).to(reference.device)).cpu().numpy()
    values = values.reshape(inside.shape)
    count = inside.sum(axis=1)
    with np.errstate(invalid="ignore"):
        mean = np.where(count > 0, (values * inside).sum(axis=1) / count, np.nan)
    return mean.reshape(grid.shape)


def voxel_average(problem: IFPProblem, grid: VoxelGrid, operator: ObservationOperator,
                  unknown: str | None = None) -> np.ndarray:
    """The problem's pressure [Pa] (or its field unknown ``unknown``, in that unit) averaged like the
    data, over each voxel's sub-voxel points inside the domain; (nx, ny, nz), NaN where a voxel has
    no point inside."""
    geometry = problem.geometry
    field = problem.pressure if unknown is None else problem.unknowns[unknown]
    return _voxel_mean(field, geometry.length, geometry.contains, grid, operator, next(problem.parameters()))


def voxel_series(problem: TransportProblem, grid: VoxelGrid, operator: ObservationOperator,
                 times_s) -> dict[str, np.ndarray]:
    """The drug fields of ``DRUG_FIELDS`` [mol/m^3] and the released fraction
    (:func:`hybrid.problems.release.released_fraction`, a ratio of voxel means, as ``hybrid
    synthesize`` computes it; NaN where the total is <= 0) averaged like the data at ``times_s``
    [s]; each (nx, ny, nz, frames)."""
    geometry, reference = problem.geometry, next(problem.parameters())
    out = {name: [] for name in DRUG_FIELDS}
    for t in np.asarray(times_s, dtype=float):
        t_nd = t / problem.scales.time
        for name in DRUG_FIELDS:
            field = lambda x, q=name: problem.observed(q, torch.cat([x, torch.full_like(x[:, :1], t_nd)], dim=1))
            out[name].append(_voxel_mean(field, geometry.length, geometry.contains, grid, operator, reference))
    series = {name: np.stack(frames, axis=-1) for name, frames in out.items()}
    series["released_fraction"] = released_fraction(series["liposomal_drug"], series["total_drug"])
    return series


def _nondimensional(problem, points_m) -> torch.Tensor:
    reference = next(problem.parameters())
    points = np.asarray(points_m, dtype=float)[:, :problem.geometry.dim] / problem.geometry.length
    return torch.as_tensor(points, dtype=reference.dtype, device=reference.device)


def pressure_at(problem: IFPProblem, points_m) -> np.ndarray:
    """The network's pressure [Pa] at ``points_m`` (n, >= dim) [m] (extra coordinates ignored), (n,)."""
    with torch.no_grad():
        return problem.pressure(_nondimensional(problem, points_m)).reshape(-1).cpu().numpy()


def drug_at(problem: TransportProblem, points_m, time_s: float) -> dict[str, np.ndarray]:
    """The network's ``DRUG_FIELDS`` [mol/m^3] at ``points_m`` (n, >= dim) [m] and time ``time_s`` [s], each (n,)."""
    x = _nondimensional(problem, points_m)
    xt = torch.cat([x, torch.full_like(x[:, :1], time_s / problem.scales.time)], dim=1)
    with torch.no_grad():
        return {name: problem.observed(name, xt).reshape(-1).cpu().numpy() for name in DRUG_FIELDS}


def save_state(problem, path) -> None:
    """Write the trained state of ``problem`` (its state_dict) to ``path``."""
    torch.save(problem.state_dict(), path)


def load_state(problem, path, dtype: str):
    """``problem`` with the state saved at ``path``, on the CPU in ``dtype`` ("float32" or "float64"),
    ready for evaluation; returns it."""
    problem.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return problem.to(dtype=getattr(torch, dtype)).eval()
