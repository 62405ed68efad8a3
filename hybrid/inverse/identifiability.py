"""Practical identifiability: which combinations of unknowns the data determine (numpy only).

For a forward model ``predict(theta) -> predicted data`` (any implementation: a closed form, the
FEM, a trained PINN) and Gaussian noise of standard deviation ``noise_sd``, the Fisher information
``F = J^T J / sd^2`` (J = d predict / d theta by central differences) bounds the covariance of any
unbiased estimate from below (Cramer-Rao). Eigenvectors of F with eigenvalues near 0 are directions
the data cannot see: e.g. a steady IFP image fixes only K / (Lp S/V) and the plateau p_e, so in
(log K, log Lp S/V, p_e) the vector (1, 1, 0)/sqrt 2 has eigenvalue 0. Never report an estimate
along such a direction. Positive unknowns should enter as logarithms (relative sensitivities).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["fisher_information", "Identifiability", "analyse"]


def fisher_information(predict: Callable[[np.ndarray], np.ndarray], theta, noise_sd, *,
                       step: float = 1e-5) -> np.ndarray:
    """Fisher information (p, p) of the parameters ``theta`` (p,) for data ``predict(theta)`` with
    independent Gaussian noise ``noise_sd`` (number or array like the data); central differences
    with step ``step`` x max(|theta_i|, 1)."""
    theta = np.asarray(theta, dtype=float)
    columns = []
    for i in range(theta.size):
        h = step * max(abs(theta[i]), 1.0)
        up, down = theta.copy(), theta.copy()
        up[i] += h
        down[i] -= h
        columns.append((np.ravel(predict(up)) - np.ravel(predict(down))) / (2 * h))
    jacobian = np.stack(columns, axis=1) / np.ravel(np.broadcast_to(noise_sd, np.shape(columns[0])))[:, None]
    return jacobian.T @ jacobian


@dataclass(frozen=True)
class Identifiability:
    """Eigen-analysis of a Fisher information: ``eigenvalues`` (descending), ``eigenvectors``
    (columns), parameter ``names``; ``standard_errors`` the Cramer-Rao bounds (inf along
    unidentifiable directions)."""

    names: tuple[str, ...]
    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    standard_errors: np.ndarray
    relative_threshold: float

    @property
    def identifiable(self) -> np.ndarray:
        """Mask of eigen-directions whose information exceeds ``relative_threshold`` x the largest."""
        return self.eigenvalues > self.relative_threshold * self.eigenvalues[0]

    def unidentifiable_directions(self) -> list[dict[str, float]]:
        """The directions the data cannot see, as name -> weight (unit vectors)."""
        return [dict(zip(self.names, np.round(v, 6))) for v, ok in zip(self.eigenvectors.T, self.identifiable)
                if not ok]

    def summary(self) -> str:
        lines = []
        for value, vector, ok in zip(self.eigenvalues, self.eigenvectors.T, self.identifiable):
            combo = " + ".join(f"{w:+.3f} {n}" for w, n in zip(vector, self.names) if abs(w) > 1e-3)
            lines.append(f"{'identifiable  ' if ok else 'NOT identified'} info {value:.3e}: {combo}")
        return "\n".join(lines)


def analyse(fisher: np.ndarray, names, *, relative_threshold: float = 1e-8) -> Identifiability:
    """Eigen-decompose ``fisher`` (p, p); directions with eigenvalue <= ``relative_threshold`` x the
    largest count as unidentifiable, and the standard error of a parameter that loads on one is inf."""
    fisher = 0.5 * (fisher + fisher.T)
    values, vectors = np.linalg.eigh(fisher)
    order = np.argsort(values)[::-1]
    values, vectors = values[order], vectors[:, order]
    vectors = vectors * np.where(vectors[np.argmax(np.abs(vectors), axis=0), range(vectors.shape[1])] < 0, -1, 1)
    ok = values > relative_threshold * values[0]
    variance = (vectors[:, ok] ** 2 / values[ok]).sum(axis=1)
    blind = (np.abs(vectors[:, ~ok]) > 1e-3).any(axis=1)   # loads on an unseen direction
    errors = np.where(blind, np.inf, np.sqrt(variance))
    return Identifiability(tuple(names), values, vectors, errors, relative_threshold)
