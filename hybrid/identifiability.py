"""Practical identifiability: which combinations of unknowns the data determine (numpy only).

Shared by the inverse PINN (:mod:`hybrid.inverse`) and the classical FEM inversion
(:mod:`hybrid.validation.classical`). For a forward model ``predict(theta) -> data`` (a closed form,
the FEM, a trained PINN) with Gaussian noise of standard deviation ``sd``, the noise-scaled
Jacobian ``J = d predict / d theta / sd`` gives the Fisher information ``F = J^T J``, which bounds
the covariance of any unbiased estimate from below (Cramer-Rao). Right singular vectors of J with
singular values near 0 are directions the data cannot see: e.g. a steady IFP image fixes only
K / (Lp S/V) and the plateau p_e, so in (log K, log Lp S/V, p_e) the vector (1, 1, 0)/sqrt 2 has
singular value 0. Never report an estimate along such a direction. Positive unknowns should enter
as logarithms (relative sensitivities).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["central_jacobian", "noise_scaled_jacobian", "Identifiability", "analyse"]


def central_jacobian(function: Callable[[np.ndarray], np.ndarray], theta, step: float, *,
                     relative: bool = False) -> np.ndarray:
    """d function / d theta (n, p) by central differences (2 calls per unknown) with step ``step``,
    or ``step`` x max(|theta_i|, 1) when ``relative``."""
    theta = np.asarray(theta, dtype=float)
    columns = []
    for i in range(theta.size):
        h = step * max(abs(theta[i]), 1.0) if relative else step
        shift = np.zeros_like(theta)
        shift[i] = h
        columns.append((np.ravel(function(theta + shift)) - np.ravel(function(theta - shift))) / (2 * h))
    return np.stack(columns, axis=1)


def noise_scaled_jacobian(predict: Callable[[np.ndarray], np.ndarray], theta, noise_sd, *,
                          step: float = 1e-5) -> np.ndarray:
    """J / sd (n, p) of the data ``predict(theta)`` with independent Gaussian noise ``noise_sd``
    (number or array like the data); its Gram matrix is the Fisher information."""
    jacobian = central_jacobian(predict, theta, step, relative=True)
    return jacobian / np.ravel(np.broadcast_to(noise_sd, jacobian.shape[:1]))[:, None]


@dataclass(frozen=True)
class Identifiability:
    """Singular-value analysis of a noise-scaled Jacobian: ``singular_values`` (descending),
    ``directions`` (right singular vectors as columns, largest weight positive), parameter
    ``names``; ``standard_errors`` the Cramer-Rao bounds (inf for a parameter with weight on an
    unidentifiable direction)."""

    names: tuple[str, ...]
    singular_values: np.ndarray
    directions: np.ndarray
    standard_errors: np.ndarray
    relative_threshold: float

    @property
    def information(self) -> np.ndarray:
        """Eigenvalues of the Fisher information J^T J (descending)."""
        return self.singular_values ** 2

    @property
    def identifiable(self) -> np.ndarray:
        """Mask of directions whose singular value exceeds ``relative_threshold`` x the largest."""
        return self.singular_values > self.relative_threshold * self.singular_values[0]

    def unidentifiable_directions(self) -> list[dict[str, float]]:
        """The directions the data cannot see, as name -> weight (unit vectors)."""
        return [dict(zip(self.names, np.round(v, 6).tolist())) for v, ok in zip(self.directions.T, self.identifiable)
                if not ok]

    def summary(self) -> str:
        lines = []
        for value, vector, ok in zip(self.information, self.directions.T, self.identifiable):
            combo = " + ".join(f"{w:+.3f} {n}" for w, n in zip(vector, self.names) if abs(w) > 1e-3)
            lines.append(f"{'identifiable  ' if ok else 'NOT identified'} info {value:.3e}: {combo}")
        return "\n".join(lines)


def analyse(jacobian: np.ndarray, names, *, relative_threshold: float = 1e-4) -> Identifiability:
    """SVD of the noise-scaled ``jacobian`` (n, p); directions with singular value <=
    ``relative_threshold`` x the largest count as unidentifiable (1e-4 on singular values is 1e-8
    on the Fisher information), and the standard error of a parameter that loads on one is inf."""
    _, values, vt = np.linalg.svd(np.asarray(jacobian, dtype=float), full_matrices=False)
    vectors = vt.T
    vectors = vectors * np.where(vectors[np.argmax(np.abs(vectors), axis=0), range(vectors.shape[1])] < 0, -1, 1)
    ok = values > relative_threshold * values[0]
    variance = (vectors[:, ok] ** 2 / values[ok] ** 2).sum(axis=1)
    blind = (np.abs(vectors[:, ~ok]) > 1e-3).any(axis=1)   # loads on an unseen direction
    errors = np.where(blind, np.inf, np.sqrt(variance))
    return Identifiability(tuple(names), values, vectors, errors, relative_threshold)
