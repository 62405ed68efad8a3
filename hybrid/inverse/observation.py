"""The voxel-averaging observation operator in torch: what an image voxel sees of a PINN field.

Same rule as the FEM's ``hybrid.forward.image_sampling.observe_on_grid`` (and
:class:`hybrid.records.ObservationOperator`): the mean of the field over ``points_per_axis``
sub-voxel midpoints per axis, leaving out points outside the tissue (partial volume); voxels with
no point inside are not used.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from hybrid.records import Observations

__all__ = ["VoxelAverage"]


class VoxelAverage(nn.Module):
    """Observed values of one :class:`~hybrid.records.Observations` record and the points to
    predict them, in nondimensional units (``length`` [m], ``time`` [s], ``value_scale`` in the
    record's unit). ``contains(x~)`` tells which points lie in the tissue."""

    def __init__(self, observations: Observations, contains: Callable, *, length: float, time: float = 1.0,
                 value_scale: float = 1.0, dtype=torch.float64):
        super().__init__()
        self.quantity, self.unit = observations.quantity, observations.unit
        self.value_scale = float(value_scale)
        voxels, frames, values = observations.observed()
        points = observations.operator.voxel_points(observations.grid, voxels) / length   # (n, q, dim)
        inside = contains(torch.as_tensor(points, dtype=dtype)).numpy()
        keep = inside.any(axis=1)
        if not keep.any():
            raise ValueError(f"no observed {self.quantity} voxel overlaps the domain: check the grid affine "
                             "(mm) against the domain size (m)")
        points, inside, frames, values = points[keep], inside[keep], frames[keep], values[keep]
        times = observations.frame_times_s[frames] / time
        n, q, _ = points.shape
        flat = np.concatenate([points, np.broadcast_to(times[:, None, None], (n, q, 1))], axis=-1)
        self.register_buffer("points", torch.as_tensor(flat.reshape(n * q, -1), dtype=dtype))
        self.register_buffer("weights", torch.as_tensor(inside / inside.sum(axis=1, keepdims=True), dtype=dtype))
        self.register_buffer("values", torch.as_tensor(values / value_scale, dtype=dtype))
        self.noise = observations.noise_sd / value_scale

    @property
    def count(self) -> int:
        return int(self.values.numel())

    def predict(self, field: Callable[[torch.Tensor], torch.Tensor], with_time: bool) -> torch.Tensor:
        """Voxel means (n,) of ``field`` (nondimensional, in units of ``value_scale``), evaluated at
        (x~, t~) if ``with_time`` else at x~."""
        return self.predict_columns(lambda points: field(points).reshape(-1, 1), with_time)[:, 0]

    def predict_columns(self, field: Callable[[torch.Tensor], torch.Tensor], with_time: bool) -> torch.Tensor:
        """Voxel means (n, k) of the k columns of ``field`` (points (m, d) -> values (m, k)): several
        fields from one evaluation at the points (the voxel mean is linear, so a sum of columns
        averages like the sum)."""
        points = self.points if with_time else self.points[:, :-1]
        values = field(points).reshape(*self.weights.shape, -1)
        return (values * self.weights.unsqueeze(-1)).sum(dim=1)

    def same_points(self, other: "VoxelAverage") -> bool:
        """Whether ``other`` averages over the same points with the same weights (its predictions
        can be shared)."""
        return (self.points.shape == other.points.shape and self.weights.shape == other.weights.shape
                and bool(torch.equal(self.points, other.points)) and bool(torch.equal(self.weights, other.weights)))

    def mean_square_error(self, predicted: torch.Tensor) -> torch.Tensor:
        """Mean squared difference between ``predicted`` (n,) and the observed voxel values (nondimensional)."""
        return ((predicted - self.values) ** 2).mean()

    def misfit(self, field: Callable[[torch.Tensor], torch.Tensor], with_time: bool) -> torch.Tensor:
        """Mean squared difference between predicted and observed voxel values (nondimensional)."""
        return self.mean_square_error(self.predict(field, with_time))
