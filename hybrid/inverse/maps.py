"""Known voxel maps (Ktrans, pH) as inputs of PINN coefficients.

A map is looked up as the imaging module's interpolation does (:func:`hybrid.imaging.grid.interpolate`
with ``outside="nearest"``: trilinear between voxel centres or the voxel containing the point,
continuous voxel indices clamped to the image, so the edge voxel's value beyond it; or, with
``outside="nan"``, as ``outside="fill"`` with NaN: NaN beyond the image's voxels), the lookup
the FEM uses to sample images onto meshes, so both sides see the same coefficient
(tests/inverse/test_maps.py checks the two agree). It runs in torch on the points' device (no host
round trip, so a CUDA graph can capture it). Maps are fixed inputs: no gradient in x.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from hybrid.imaging.grid import world_m_to_voxel
from hybrid.records import KnownMaps, VoxelGrid

__all__ = ["KnownMap", "KtransScale"]


class KnownMap:
    """``volume`` (nx, ny, nz) on ``grid`` as a function of nondimensional points x~ (n, dim),
    ``x = x~ length`` [m]; 2-D problems lie on slice ``slice_index`` (as the FEM's 2-D meshes).
    ``outside``: "nearest" (the edge voxel's value beyond the image) or "nan"; with ``method``
    "nearest" a NaN voxel gives NaN at its points (linear lookup needs a finite map)."""

    def __init__(self, volume, grid: VoxelGrid, length: float, *, slice_index: int = 0, method: str = "linear",
                 outside: str = "nearest"):
        volume = np.asarray(volume, dtype=float)
        if volume.shape != grid.shape:
            raise ValueError(f"map shape {volume.shape} does not match grid {grid.shape}")
        if method not in ("linear", "nearest"):
            raise ValueError(f"method must be 'linear' or 'nearest', got {method!r}")
        if outside not in ("nearest", "nan"):
            raise ValueError(f"outside must be 'nearest' or 'nan', got {outside!r}")
        if method == "linear" and not np.isfinite(volume).all():
            raise ValueError("the map has NaN/inf voxels: fill them first (e.g. np.nan_to_num or a median), or look "
                             "it up with method='nearest'")
        self.volume, self.grid, self.length = volume, grid, float(length)
        self.slice_index, self.method, self.outside = slice_index, method, outside
        self._tensors: dict = {}   # (device, dim) -> (volume, index matrix, index offset, last index)

    @classmethod
    def from_known_maps(cls, maps: KnownMaps, name: str, length: float, **kwargs) -> "KnownMap":
        """The map ``name`` ("ktrans_per_min" or "ph") of a :class:`~hybrid.records.KnownMaps` record."""
        volume = getattr(maps, name)
        if volume is None:
            raise ValueError(f"the known maps have no {name!r} map")
        return cls(volume, maps.grid, length, **kwargs)

    def _on(self, device: torch.device, dim: int) -> tuple[torch.Tensor, ...]:
        """The volume and the affine map x [m] -> continuous voxel indices ijk = x M + o (float64
        tensors on ``device``; made once per device and dimension, outside any CUDA graph capture)."""
        key = (str(device), dim)
        if key not in self._tensors:
            slice_index = self.slice_index if dim == 2 else None
            offset = world_m_to_voxel(self.grid.affine_mm, np.zeros((1, 3)), slice_index)[0]
            matrix = world_m_to_voxel(self.grid.affine_mm, np.eye(3)[:dim], slice_index) - offset   # (dim, 3)
            last = np.array(self.volume.shape, dtype=float) - 1.0
            self._tensors[key] = tuple(torch.as_tensor(a, dtype=torch.float64, device=device)
                                       for a in (self.volume, matrix, offset, last))
        return self._tensors[key]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Map values (n,) at nondimensional points ``x`` (n, dim), in ``x``'s dtype and device."""
        volume, matrix, offset, last = self._on(x.device, x.shape[1])
        raw = (x.detach().double() * self.length) @ matrix + offset
        q = torch.minimum(torch.clamp(raw, min=0.0), last)
        if self.method == "nearest":
            i, j, k = torch.floor(q + 0.5).long().unbind(dim=1)
            value = volume[i, j, k]
            if self.outside == "nan":   # beyond the outer voxels' faces
                value = torch.where(((raw >= -0.5) & (raw <= last + 0.5)).all(dim=1), value, torch.nan)
            return value.to(x.dtype)
        if self.outside == "nan":
            raise NotImplementedError("outside='nan' is for method='nearest'")
        low = torch.floor(q)
        fraction = q - low
        low = low.long()
        high = torch.minimum(low + 1, last.long())
        value = torch.zeros_like(fraction[:, 0])
        for corner in itertools.product((False, True), repeat=3):
            weight = torch.ones_like(value)
            index = []
            for axis, upper in enumerate(corner):
                weight = weight * (fraction[:, axis] if upper else 1.0 - fraction[:, axis])
                index.append(high[:, axis] if upper else low[:, axis])
            value = value + weight * volume[index[0], index[1], index[2]]
        return value.to(x.dtype)


class KtransScale:
    """Ktrans / its region mean [1] at nondimensional points, the factor by which the FEM scales
    S/V and Lp S/V with a ``[tissue] ktrans_map``
    (:func:`hybrid.forward.image_sampling.vascular_exchange_from_ktrans`): the nearest voxel's
    Ktrans [1/min] (negative counts as 0) over the mean of its region, 1 where there is no value
    (a NaN voxel, outside the image) and in a region without any value.

    ``volume`` (nx, ny, nz) on ``grid``; points x~ = x / ``length``; ``regions``: name -> a function
    of x~ (n, dim) giving a bool mask (n,), disjoint, the first the tumour; ``points`` (m, dim):
    x~ inside the domain spread evenly (e.g. a fine grid), over which each region's mean is taken
    (the FEM's is over its cells' midpoints: they agree to the quadrature's resolution). The
    means are ``means_per_min`` (None for a region without values); a tumour without any value is
    refused (a misplaced map), as in the FEM."""

    def __init__(self, volume, grid: VoxelGrid, length: float, regions: dict, points: torch.Tensor, *,
                 slice_index: int = 0, label: str = "Ktrans map"):
        volume = np.asarray(volume, dtype=float)
        if not np.isfinite(volume).any():
            raise ValueError(f"the {label} has no finite value")
        self.ktrans = KnownMap(np.maximum(volume, 0.0), grid, length, slice_index=slice_index, method="nearest",
                               outside="nan")   # NaN where there is no value
        self.regions, self.label = dict(regions), label
        value = self.ktrans(points.detach().to(torch.float64))
        covered = torch.isfinite(value)
        self.means_per_min = {}
        for name, region in self.regions.items():
            inside = region(points) & covered
            self.means_per_min[name] = float(value[inside].mean()) if inside.any() else None
        first = next(iter(self.regions))
        if self.means_per_min[first] is None:
            raise ValueError(f"the {label} has no finite value in the {first}: its affine or slice_index likely does "
                             "not place the fitted voxels over it")
        zero = [name for name, mean in self.means_per_min.items() if mean is not None and not mean > 0]
        if zero:
            raise ValueError(f"the {label} is zero over the {', '.join(zero)} it covers; check the map, its affine "
                             "and slice_index")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The scale (n,) [1] at nondimensional points ``x`` (n, dim), in ``x``'s dtype and device."""
        value = self.ktrans(x)
        covered = torch.isfinite(value)
        scale = torch.ones_like(value)
        for name, region in self.regions.items():
            mean = self.means_per_min[name]
            if mean is not None:
                scale = torch.where(region(x) & covered, value / mean, scale)
        return scale
