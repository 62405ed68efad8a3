"""Classical baseline of the inverse problem (issue 9 point 5): FEM-constrained least squares.

A few scalar unknowns ``theta`` (positive ones as logarithms) are fitted to voxel images by
``scipy.optimize.least_squares`` (trust-region reflective, within bounds) over FEM forward solves:
residual ``r(theta) = (observe_on_grid(FEM field(theta)) - image) / noise_sd`` over the finite
voxels, Jacobian by forward differences (one FEM solve per unknown and iteration). Uncertainty:
the Gauss-Newton covariance ``(J^T J)^-1`` of the scaled residual at the estimate, with J by
central differences there (2 solves per unknown), from the SVD of J (:mod:`hybrid.identifiability`);
directions with singular value below ``rank_tolerance`` x the largest are unidentifiable and
every unknown with weight on them gets an infinite standard error (no lucky numbers).

- :func:`fit_ifp`: the steady IFP image -> (log K, log Lp S/V, p_e) or the identifiable reduced
  set (log K/(Lp S/V), p_e): with uniform coefficients the Darcy-Starling equation
  ``-div(K grad p) + Lp S/V (p - p_e) = 0`` depends on K and Lp S/V only through their ratio
  (the squared rim length), so the Jacobian in (log K, log Lp S/V) has the null vector (1, 1).
- :func:`fit_release_rate`: drug images (total drug or released fraction) at the frame times ->
  log k_rel of a liposomal formulation, over transport solves on the same mesh and flow.
- :func:`fit_release_law` and :func:`release_identifiability`: the fit and the Fisher information
  (Cramer-Rao bounds) of release-law unknowns held in ``dolfinx.fem.Constant`` s (k_rel, or pH_50
  and the steepness of a pH law on a pH map) for given drug images, from :func:`release_images` runs.
- :func:`identifiability`: that Fisher information for any image predictor of named unknowns
  (also the coupled kind of ``hybrid validate``, which re-solves the IFP per prediction).

DOLFINx lives here; torch never (tests/test_layering.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
from scipy.optimize import least_squares

import hybrid._fem_stack  # noqa: F401  (before dolfinx)
import dolfinx.fem

from hybrid.forward.image_sampling import observe_on_grid
from hybrid.identifiability import analyse, central_jacobian
from hybrid.problems.ifp import OuterBoundary, TissueProperties
from hybrid.problems.release import released_fraction

__all__ = ["RANK_TOLERANCE", "IDENTIFIABILITY_STEP", "Fit", "fit", "fit_images", "fit_ifp", "fit_release_rate",
           "fit_release_law",
           "IFP_UNKNOWNS", "ifp_tissue", "release_images", "identifiability", "release_identifiability",
           "scaled_residual"]

RANK_TOLERANCE = 1e-4
"""Singular values at most this fraction of the largest count as unseen directions (unidentifiable)."""

IDENTIFIABILITY_STEP = 0.02
"""Central-difference step of :func:`identifiability` in the fitted variables (ln of a
log unknown [1], else its unit, e.g. pH)."""

IFP_UNKNOWNS = {"full": ("log_K", "log_LpSV", "p_e"), "reduced": ("log_K_over_LpSV", "p_e")}
"""Unknowns of :func:`fit_ifp`: K [m^2/(Pa s)], Lp S/V [1/(Pa s)], K/(Lp S/V) [m^2] (natural logs), p_e [Pa]."""


@dataclass(frozen=True)
class Fit:
    """Result of a least-squares fit. ``estimate`` and ``standard_error`` per unknown (in the
    fitted variables, logs for log_*; inf where unidentifiable); ``singular_values`` of the scaled
    Jacobian at the estimate (descending) and ``null_directions`` (unit vectors, name -> weight)
    of the unidentifiable part; ``chi2_per_datum`` = sum r^2 / number of data (about 1 when the
    noise sd is right); ``fem_solves`` forward solves in all (fit and final Jacobian)."""

    names: tuple[str, ...]
    estimate: np.ndarray
    standard_error: np.ndarray
    singular_values: np.ndarray
    null_directions: list[dict[str, float]]
    chi2_per_datum: float
    fem_solves: int
    wall_s: float
    status: str

    def as_dict(self) -> dict:
        """JSON-ready record."""
        return {"unknowns": {name: {"estimate": float(v), "standard_error": float(s)}
                             for name, v, s in zip(self.names, self.estimate, self.standard_error)},
                "singular_values": self.singular_values.tolist(), "null_directions": self.null_directions,
                "chi2_per_datum": self.chi2_per_datum, "fem_solves": self.fem_solves, "wall_s": self.wall_s,
                "status": self.status}


def fit(residual: Callable[[np.ndarray], np.ndarray], names, x0, bounds, *, rank_tolerance: float = RANK_TOLERANCE,
        diff_step: float = 1e-4, jacobian_step: float = 1e-3, max_nfev: int = 50) -> Fit:
    """Least squares of ``residual(theta)`` (scaled by the noise sd) from ``x0`` within ``bounds``
    ((lower, upper) arrays); counts the calls of ``residual`` (each one FEM solve). The fitted
    variables should be O(1)-sensitive (logs, or pressures in Pa): ``jacobian_step`` is absolute."""
    calls = [0]

    def counted(theta):
        calls[0] += 1
        return residual(theta)

    start = time.perf_counter()
    result = least_squares(counted, np.asarray(x0, dtype=float), bounds=bounds, jac="2-point", method="trf",
                           x_scale="jac", diff_step=diff_step, max_nfev=max_nfev)
    analysis = analyse(central_jacobian(counted, result.x, jacobian_step), names, relative_threshold=rank_tolerance)
    return Fit(tuple(names), result.x, analysis.standard_errors, analysis.singular_values,
               analysis.unidentifiable_directions(), float(np.sum(result.fun ** 2) / result.fun.size),
               calls[0], time.perf_counter() - start, result.message)


def ifp_tissue(tumour: TissueProperties, names, theta) -> TissueProperties:
    """``tumour`` with the unknowns ``names`` (:data:`IFP_UNKNOWNS`) set to ``theta``: K and Lp
    (Lp S/V divided by the fixed S/V); p_e through p_v = p_e + sigma (pi_v - pi_i). The reduced
    ratio keeps Lp S/V and sets K = ratio x Lp S/V."""
    values = dict(zip(names, theta))
    K, exchange = tumour.hydraulic_conductivity, tumour.vascular_exchange
    if "log_K" in values:
        K = float(np.exp(values["log_K"]))
    if "log_LpSV" in values:
        exchange = float(np.exp(values["log_LpSV"]))
    if "log_K_over_LpSV" in values:
        K = float(np.exp(values["log_K_over_LpSV"])) * exchange
    oncotic = tumour.vascular_pressure - tumour.effective_pressure
    pv = values.get("p_e", tumour.effective_pressure) + oncotic
    return replace(tumour, hydraulic_conductivity=K, filtration_coefficient=exchange / tumour.vessel_surface_density,
                   vascular_pressure=pv)


def scaled_residual(images: dict, noise_sd: dict, predict: Callable[[np.ndarray], dict]):
    """theta -> (prediction - image) / ``noise_sd[quantity]`` over the voxels finite in each of
    ``images`` (quantity -> array; the data fix the voxels, so every residual has the same length),
    quantities concatenated; ValueError where the prediction is not finite on an observed voxel."""
    images = {quantity: np.asarray(image, dtype=float) for quantity, image in images.items()}
    observed = {quantity: np.isfinite(image) for quantity, image in images.items()}

    def residual(theta):
        predicted = predict(theta)
        scaled = np.concatenate([(predicted[q][observed[q]] - images[q][observed[q]]) / noise_sd[q] for q in images])
        if not np.isfinite(scaled).all():
            raise ValueError("the model predicts no finite value in a voxel the image observes; set the image's "
                             "voxels outside the mesh to NaN")
        return scaled
    return residual


def fit_ifp(domain, tumour: TissueProperties, boundary: OuterBoundary, image: np.ndarray, affine_mm: np.ndarray,
            noise_sd: float, *, unknowns: str = "reduced", x0=None, bounds=None, **options) -> Fit:
    """Fit the IFP unknowns ``IFP_UNKNOWNS[unknowns]`` to a steady IFP ``image`` [Pa] (nx, ny, nz)
    with ``affine_mm`` and Gaussian noise ``noise_sd`` [Pa]; ``tumour`` gives the fixed coefficients
    and (without ``x0``) the start. Bounds default to a factor 100 either side on the logs and
    p_e in [0, 10 kPa]. Collective."""
    from hybrid.forward.ifp import solve_ifp

    names = IFP_UNKNOWNS[unknowns]
    truth_like = {"log_K": np.log(tumour.hydraulic_conductivity), "log_LpSV": np.log(tumour.vascular_exchange),
                  "log_K_over_LpSV": np.log(tumour.hydraulic_conductivity / tumour.vascular_exchange),
                  "p_e": tumour.effective_pressure}
    x0 = np.array([truth_like[n] for n in names]) if x0 is None else np.asarray(x0, dtype=float)
    if bounds is None:
        width = np.log(100.0)
        bounds = (np.array([x - width if n != "p_e" else 0.0 for n, x in zip(names, x0)]),
                  np.array([x + width if n != "p_e" else 1e4 for n, x in zip(names, x0)]))
    shape = np.shape(image)

    def predict(theta):
        pressure = solve_ifp(domain, ifp_tissue(tumour, names, theta), boundary).pressure
        return {"ifp": observe_on_grid(pressure, shape, affine_mm)}
    return fit(scaled_residual({"ifp": image}, {"ifp": noise_sd}, predict), names, x0, bounds, **options)


def fit_release_rate(setup, frame_times, images: np.ndarray, affine_mm: np.ndarray, noise_sd: float, *,
                     quantity: str = "released_fraction", x0: float, bounds=(np.log(1e-9), np.log(1e-2)),
                     **options) -> Fit:
    """Fit log k_rel [ln(1/s)] of a liposomal ``setup`` (:func:`hybrid.commands.transport.setup_transport`;
    its solver is closed here) to ``images`` (nx, ny, nz, frames) of ``quantity`` ("total_drug"
    [mol/m^3 of tissue] or "released_fraction" [1]) at ``frame_times`` [s] (all > 0), noise
    ``noise_sd`` in the image unit. Each residual is one transport run to the last frame time
    with the steps of ``setup.config.time.step`` landing on the frame times. The fit of
    :func:`fit_release_law` with ln k_rel (named "ln_release_rate") the one unknown. Collective."""
    setup.solver.close()
    rate = dolfinx.fem.Constant(setup.domain.mesh, float(np.exp(x0)))
    law = _ReleaseLaw(setup, replace(setup.solver.model, release_rate=rate), {"release_rate": (rate, True)},
                      frame_times, np.shape(images)[:3], affine_mm, 3)
    return _fit_law(law, {quantity: images}, {quantity: noise_sd}, bounds, options)


def release_images(setup, model, frame_times, shape, affine_mm: np.ndarray, points_per_axis: int = 3) -> dict:
    """``total_drug`` [mol/m^3 of tissue] and ``released_fraction`` [1] images (nx, ny, nz, frames)
    of one transport run of ``model`` (a TransportModel; a new solver on ``setup.domain`` and
    ``setup.flow``; ``setup.solver`` is not stepped) from t = 0 to the last of ``frame_times`` [s]
    (all > 0), steps of at most ``setup.config.time.step`` landing on the frame times, averaged
    like ``hybrid synthesize`` (``shape``, ``affine_mm`` [mm], ``points_per_axis``). Collective."""
    from hybrid.commands.synthesize import frame_stops
    from hybrid.forward.transport import TransportSolver

    config = setup.config
    solver = TransportSolver(setup.domain, model, flow=setup.flow, order=config.time.order,
                             petsc_options=config.solver.petsc_options)
    totals, fractions = [], []
    try:
        for stop, is_frame in frame_stops(config.time.step, frame_times):
            solver.step(stop - solver.time)
            if is_frame:
                parts = [observe_on_grid(f, shape, affine_mm, points_per_axis=points_per_axis)
                         for f in solver.species()]
                totals.append(sum(parts))   # liposomal, free and cell drug (and bound drug with kinetic binding)
                fractions.append(released_fraction(parts[0], totals[-1]))
    finally:
        solver.close()
    return {"total_drug": np.stack(totals, axis=-1), "released_fraction": np.stack(fractions, axis=-1)}


def _to_fitted(values: dict, logs: dict) -> np.ndarray:
    """The fitted variables (in the order of ``logs``) of unknowns at ``values`` (name -> value
    [SI]): ln(value) where ``logs[name]`` (positive unknowns: relative sensitivities), else the
    value (e.g. pH_50 [1])."""
    return np.array([np.log(values[name]) if log else values[name] for name, log in logs.items()], dtype=float)


def _from_fitted(theta, logs: dict) -> dict:
    """Inverse of :func:`_to_fitted`: name -> value [SI] of the fitted variables ``theta``."""
    return {name: float(np.exp(v)) if log else float(v) for (name, log), v in zip(logs.items(), theta)}


def _fitted_names(logs: dict) -> tuple:
    """Names of the fitted variables: "ln_<name>" where ``logs[name]``, else the name."""
    return tuple(f"ln_{name}" if log else name for name, log in logs.items())


class _ReleaseLaw:
    """Release-law unknowns held in ``dolfinx.fem.Constant`` s of ``model``'s release rate (a
    TransportModel run on ``setup``'s domain and flow): ``constants`` name -> (Constant, ``log``),
    fitted as ln(value) where ``log`` else as the value (e.g. pH_50 [1]); :meth:`images` of a
    vector of fitted variables and :meth:`images_at` of values (both set the constants)."""

    def __init__(self, setup, model, constants: dict, frame_times, shape, affine_mm, points_per_axis: int):
        self.setup, self.model, self.constants = setup, model, constants
        self.frame_times, self.shape, self.affine_mm, self.points_per_axis = frame_times, shape, affine_mm, points_per_axis
        self.logs = {name: log for name, (_, log) in constants.items()}
        self.names = _fitted_names(self.logs)

    def values(self) -> dict:
        """name -> the constant's current value."""
        return {name: float(constant.value) for name, (constant, _) in self.constants.items()}

    def current(self) -> np.ndarray:
        """The fitted variables of the constants' current values."""
        return _to_fitted(self.values(), self.logs)

    def set_values(self, values: dict) -> None:
        for name, (constant, _) in self.constants.items():
            constant.value = values[name]

    def set(self, theta) -> None:
        self.set_values(_from_fitted(theta, self.logs))

    def images_at(self, values: dict) -> dict:
        self.set_values(values)
        return release_images(self.setup, self.model, self.frame_times, self.shape, self.affine_mm,
                              self.points_per_axis)

    def images(self, theta) -> dict:
        return self.images_at(_from_fitted(theta, self.logs))


def fit_release_law(setup, constants: dict, frame_times, images: dict, noise_sd: dict, affine_mm,
                    points_per_axis: int = 3, *, bounds, **options) -> Fit:
    """Least squares of release-law unknowns (``constants`` as for :func:`release_identifiability`,
    started from their current values and left at the estimate) on the finite voxels of
    ``images`` (quantity "total_drug" and/or "released_fraction" -> (nx, ny, nz, frames) at
    ``frame_times`` [s], > 0) with noise ``noise_sd[quantity]`` (image unit); ``bounds`` (lower,
    upper) in the fitted variables (logs where ``log``). Each residual is one transport run. Collective."""
    law = _ReleaseLaw(setup, setup.solver.model, constants, frame_times, next(iter(images.values())).shape[:3],
                      affine_mm, points_per_axis)
    return _fit_law(law, images, noise_sd, bounds, options)


def _fit_law(law: _ReleaseLaw, images: dict, noise_sd: dict, bounds, options: dict) -> Fit:
    """Least squares of ``law``'s unknowns from their current values; the constants left at the estimate."""
    result = fit(scaled_residual(images, noise_sd, law.images), law.names, law.current(), bounds, **options)
    law.set(result.estimate)
    return result


def fit_images(predict_images: Callable[[dict], dict], start: dict, logs: dict, images: dict, noise_sd: dict, *,
               bounds: dict, **options) -> Fit:
    """Least squares of the scalar unknowns named in ``logs`` (in its order; fitted as ln(value)
    where ``logs[name]``, else as the value) from ``start`` (name -> value [SI]) within ``bounds``
    (name -> (lower, upper) [SI]): ``predict_images(values)`` returns predicted images (quantity ->
    array) for the finite voxels of ``images`` with Gaussian noise ``noise_sd[quantity]``; each
    prediction a forward run (e.g. a FEM of every unknown, as :func:`identifiability`'s)."""
    lower, upper = (_to_fitted({name: bounds[name][side] for name in logs}, logs) for side in (0, 1))
    residual = scaled_residual(images, noise_sd, lambda theta: predict_images(_from_fitted(theta, logs)))
    return fit(residual, _fitted_names(logs), _to_fitted(start, logs), (lower, upper), **options)


def identifiability(predict_images: Callable[[dict], dict], values: dict, logs: dict, images: dict, noise_sd: dict, *,
                    restore: Callable[[], None], step: float = IDENTIFIABILITY_STEP,
                    rank_tolerance: float = RANK_TOLERANCE):
    """Practical identifiability (:func:`hybrid.identifiability.analyse`) of the scalar unknowns
    named in ``logs`` (in its order) at ``values`` (name -> value [SI]), each varied as ln(value)
    (named "ln_<name>") where ``logs[name]``, else as the value (e.g. pH_50 [1]).
    ``predict_images(values)`` (name -> value [SI]) returns predicted images (quantity -> array, the unit of ``images``); data: the finite voxels
    of ``images`` with Gaussian noise ``noise_sd[quantity]`` (> 0, the image unit). Jacobian of
    the noise-scaled residual by central differences of ``step`` in the fitted variables (2
    predictions per unknown); ``restore()`` undoes what the predictions changed (e.g.
    ``dolfinx.fem.Constant`` values), also on an error. Collective (every rank calls it, as
    ``predict_images`` is a FEM run)."""
    try:
        jacobian = central_jacobian(scaled_residual(images, noise_sd, lambda theta: predict_images(
            _from_fitted(theta, logs))), _to_fitted(values, logs), step)
    finally:
        restore()
    return analyse(jacobian, _fitted_names(logs), relative_threshold=rank_tolerance)


def release_identifiability(setup, constants: dict, frame_times, images: dict, noise_sd: dict, affine_mm,
                            points_per_axis: int = 3, *, step: float = IDENTIFIABILITY_STEP,
                            rank_tolerance: float = RANK_TOLERANCE):
    """:func:`identifiability` of release-law unknowns at their current values: ``constants``
    name -> (``dolfinx.fem.Constant`` in ``setup.solver.model``'s release rate, ``log``), varied as
    ln(value) where ``log`` else as the value (e.g. pH_50 [1]); data: the finite voxels of
    ``images`` (quantity -> (nx, ny, nz, frames) at ``frame_times`` [s], > 0) with Gaussian noise
    ``noise_sd[quantity]`` (> 0, the image unit). Each prediction is one transport run
    (:func:`release_images`); the constants are restored. Collective."""
    law = _ReleaseLaw(setup, setup.solver.model, constants, frame_times, next(iter(images.values())).shape[:3],
                      affine_mm, points_per_axis)
    values = law.values()
    return identifiability(law.images_at, values, law.logs, images, noise_sd,
                           restore=lambda: law.set_values(values), step=step, rank_tolerance=rank_tolerance)
