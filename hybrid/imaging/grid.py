"""Voxel grids: voxel <-> world coordinates and interpolation of a volume at world points.

Convention: ``affine_mm`` (4, 4) maps voxel indices (i, j, k) to world millimetres, as in NIfTI;
the FEM works in metres, so ``world_m = 1e-3 * (affine_mm @ [i, j, k, 1])[:3]``. Voxel (i, j, k)
covers the index box [i - 0.5, i + 0.5] x ... around its centre; a point is inside the image when
its continuous index lies within [-0.5, n - 0.5] on every axis.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["MM_PER_M", "voxel_to_world_m", "world_m_to_voxel", "interpolate", "METHODS", "OUTSIDE"]

MM_PER_M = 1e3
METHODS = {"nearest": 0, "linear": 1}
OUTSIDE = ("fill", "nearest")


def _affine(affine_mm) -> np.ndarray:
    a = np.asarray(affine_mm, dtype=float)
    if a.shape != (4, 4) or not np.all(np.isfinite(a)) or abs(np.linalg.det(a[:3, :3])) < 1e-12:
        raise ValueError(f"affine_mm must be a finite, invertible 4x4 voxel-to-mm matrix, got {a.tolist()}")
    return a


def voxel_to_world_m(affine_mm, ijk) -> np.ndarray:
    """World coordinates [m] (..., 3) of continuous voxel indices ``ijk`` (..., 3)."""
    a = _affine(affine_mm)
    return (np.asarray(ijk, dtype=float) @ a[:3, :3].T + a[:3, 3]) / MM_PER_M


def world_m_to_voxel(affine_mm, xyz_m, slice_index: int | None = None) -> np.ndarray:
    """Continuous voxel indices (..., 3) of world points [m] (..., 3).

    With ``slice_index`` (for 2-D meshes) the third index is fixed to it and (i, j) are solved
    from the world x, y alone: the plane z = 0 of the mesh is laid on that slice, whatever the
    slice's world z (the in-plane block of the affine must then be invertible)."""
    a = _affine(affine_mm)
    x = np.asarray(xyz_m, dtype=float) * MM_PER_M
    if slice_index is None:
        return (x - a[:3, 3]) @ np.linalg.inv(a[:3, :3]).T
    block = a[:2, :2]
    if abs(np.linalg.det(block)) < 1e-12:
        raise ValueError("a 2-D mesh needs an affine whose in-plane (x, y) block is invertible "
                         "(axial slices)")
    ij = (x[..., :2] - a[:2, 3] - a[:2, 2] * slice_index) @ np.linalg.inv(block).T
    return np.concatenate([ij, np.full(ij.shape[:-1] + (1,), float(slice_index))], axis=-1)


def interpolate(volume, ijk, *, method: str = "linear", outside: str = "nearest",
                fill_value: float = np.nan) -> tuple[np.ndarray, np.ndarray]:
    """Values of a 3-D ``volume`` at continuous voxel indices ``ijk`` (..., 3), and the inside mask.

    ``method``: "linear" (trilinear between voxel centres) or "nearest" (voxel containing the
    point). Between the outermost voxel centres and the image edge (half a voxel) the edge value
    is used. Outside the image (see the module docstring): ``outside="nearest"`` takes the
    nearest edge voxel, ``"fill"`` gives ``fill_value``."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if outside not in OUTSIDE:
        raise ValueError(f"outside must be one of {', '.join(OUTSIDE)}, got {outside!r}")
    vol = np.asarray(volume, dtype=float)
    if vol.ndim != 3:
        raise ValueError(f"volume must be 3-D (a 2-D image as (nx, ny, 1)), got shape {vol.shape}")
    q = np.asarray(ijk, dtype=float)
    n = np.array(vol.shape, dtype=float)
    inside = np.all((q >= -0.5) & (q <= n - 0.5), axis=-1)
    clamped = np.clip(q, 0.0, n - 1.0).reshape(-1, 3).T
    if method == "nearest":
        clamped = np.floor(clamped + 0.5)
    values = ndimage.map_coordinates(vol, clamped, order=METHODS[method], mode="nearest")
    values = values.reshape(q.shape[:-1])
    if outside == "fill":
        values = np.where(inside, values, fill_value)
    return values, inside
