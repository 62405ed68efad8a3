"""Inverse problems set up from image records, and recovered fields put back on image grids
(torch; used by ``hybrid invert``, whose command module stays free of torch)."""

from __future__ import annotations

import numpy as np
import torch

from hybrid.inverse.geometry import Ball
from hybrid.inverse.problems import IFPProblem
from hybrid.inverse.unknowns import BoundedScalar
from hybrid.records import ObservationOperator, Observations, VoxelGrid

__all__ = ["disc_ifp_problem", "voxel_average"]


def disc_ifp_problem(radius: float, known: dict[str, float], unknowns: dict[str, dict], units: dict[str, str],
                     observations: Observations, *, far_pressure: float, pressure_scale: float,
                     seed: int) -> IFPProblem:
    """An :class:`IFPProblem` on the disc |x| <= ``radius`` [m] centred at the world origin:
    ``known`` coefficients [SI], ``unknowns`` name -> BoundedScalar keywords (lower, upper,
    initial, log) with ``units[name]``; networks initialised from ``seed``."""
    coefficients = dict(known) | {name: BoundedScalar(name, units[name], **spec) for name, spec in unknowns.items()}
    return IFPProblem(Ball(2, radius), coefficients, observations=observations, far_pressure=far_pressure,
                      pressure_scale=pressure_scale, generator=torch.Generator().manual_seed(seed))


def voxel_average(problem: IFPProblem, grid: VoxelGrid, operator: ObservationOperator) -> np.ndarray:
    """The problem's pressure [Pa] averaged like the data, over each voxel's sub-voxel points inside
    the domain; (nx, ny, nz), NaN where a voxel has no point inside."""
    voxels = np.argwhere(np.ones(grid.shape, dtype=bool))
    reference = next(problem.parameters())
    points = torch.as_tensor(operator.voxel_points(grid, voxels) / problem.geometry.length, dtype=reference.dtype)
    inside = problem.geometry.contains(points).numpy()
    with torch.no_grad():
        pressure = problem.pressure(points.reshape(-1, points.shape[-1]).to(reference.device)).cpu().numpy()
    pressure = pressure.reshape(inside.shape)
    count = inside.sum(axis=1)
    with np.errstate(invalid="ignore"):
        mean = np.where(count > 0, (pressure * inside).sum(axis=1) / count, np.nan)
    return mean.reshape(grid.shape)
