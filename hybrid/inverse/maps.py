"""Known voxel maps (Ktrans, pH) as inputs of PINN coefficients.

A map is looked up with the imaging module's own interpolation (:func:`hybrid.imaging.grid.interpolate`,
trilinear between voxel centres, nearest edge voxel outside), the same lookup the FEM uses to
sample images onto meshes, so both sides see the same coefficient. Maps are fixed inputs: the
lookup runs in numpy on detached points and returns a constant tensor (no gradient in x; on CUDA
it costs one host round trip per evaluation).
"""

from __future__ import annotations

import numpy as np
import torch

from hybrid.imaging.grid import interpolate, world_m_to_voxel
from hybrid.records import KnownMaps, VoxelGrid

__all__ = ["KnownMap"]


class KnownMap:
    """``volume`` (nx, ny, nz) on ``grid`` as a function of nondimensional points x~ (n, dim),
    ``x = x~ length`` [m]; 2-D problems lie on slice ``slice_index`` (as the FEM's 2-D meshes)."""

    def __init__(self, volume, grid: VoxelGrid, length: float, *, slice_index: int = 0, method: str = "linear"):
        volume = np.asarray(volume, dtype=float)
        if volume.shape != grid.shape:
            raise ValueError(f"map shape {volume.shape} does not match grid {grid.shape}")
        if not np.isfinite(volume).all():
            raise ValueError("the map has NaN/inf voxels: fill them first (e.g. np.nan_to_num or a median)")
        self.volume, self.grid, self.length = volume, grid, float(length)
        self.slice_index, self.method = slice_index, method

    @classmethod
    def from_known_maps(cls, maps: KnownMaps, name: str, length: float, **kwargs) -> "KnownMap":
        """The map ``name`` ("ktrans_per_min" or "ph") of a :class:`~hybrid.records.KnownMaps` record."""
        volume = getattr(maps, name)
        if volume is None:
            raise ValueError(f"the known maps have no {name!r} map")
        return cls(volume, maps.grid, length, **kwargs)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        points = x.detach().cpu().double().numpy() * self.length
        dim = points.shape[1]
        xyz = np.concatenate([points, np.zeros((points.shape[0], 3 - dim))], axis=1)
        ijk = world_m_to_voxel(self.grid.affine_mm, xyz, self.slice_index if dim == 2 else None)
        values, _ = interpolate(self.volume, ijk, method=self.method, outside="nearest")
        return torch.as_tensor(values, dtype=x.dtype, device=x.device)
