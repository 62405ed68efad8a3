"""Typed records that cross from the FEM and the images to the inverse PINN (numpy only, SI units).

Read top to bottom, this is the data flow of an inversion:

1. :class:`VoxelGrid` — where the images live: NIfTI affine (voxel index -> world **mm**) and shape.
2. :class:`ObservationOperator` — how an image voxel sees a field: the mean of the field over
   ``points_per_axis`` sub-voxel midpoints per axis (points outside the tissue left out), on one
   slice for 2-D problems; the same rule as ``hybrid.forward.image_sampling.observe_on_grid``.
3. :class:`Observations` — the measured frames of one quantity: values (nx, ny, nz, frames) in
   ``unit``, frame times [s after injection], Gaussian noise sd (same unit).
4. :class:`KnownMaps` — maps measured by other imaging and used as known inputs: Ktrans [1/min]
   (DCE-MRI), extracellular pH [1] (CEST-MRI), on the same grid.
5. :class:`Truth` — what a twin experiment used (parameters with units, true fields on the grid),
   for reporting errors only; an inversion never reads it.
6. :class:`FemSnapshots` — nodal FEM fields in time (a forward solve the PINN is warm-started on,
   ``[training] warm_start = "fem"`` of ``hybrid invert``).

``hybrid maps`` hands its fits to the output stage (and to 4.) as :class:`ParameterMaps`.

Nothing here imports torch or DOLFINx: the FEM side writes these records, the PINN reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hybrid.imaging.grid import voxel_to_world_m

__all__ = ["VoxelGrid", "ObservationOperator", "Observations", "KnownMaps", "Truth", "ParameterMaps", "FemSnapshots"]


@dataclass(frozen=True)
class VoxelGrid:
    """An image grid: ``affine_mm`` (4 x 4, voxel index -> world mm) and ``shape`` (nx, ny, nz)."""

    affine_mm: np.ndarray
    shape: tuple[int, int, int]

    def __post_init__(self):
        affine = np.asarray(self.affine_mm, dtype=float)
        if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
            raise ValueError(f"affine_mm must be a finite 4 x 4 matrix, got shape {affine.shape}")
        if abs(np.linalg.det(affine[:3, :3])) == 0.0:
            raise ValueError("affine_mm is singular: its 3 x 3 block must be invertible")
        shape = tuple(int(n) for n in self.shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"shape must be 3 positive voxel counts, got {self.shape}")
        object.__setattr__(self, "affine_mm", affine)
        object.__setattr__(self, "shape", shape)

    @classmethod
    def regular(cls, origin_m, spacing_m, shape) -> "VoxelGrid":
        """Axis-aligned grid: centre of voxel (0, 0, 0) at ``origin_m`` [m], voxel size ``spacing_m`` [m]."""
        affine = np.eye(4)
        affine[:3, :3] = np.diag(np.asarray(spacing_m, dtype=float) * 1e3)
        affine[:3, 3] = np.asarray(origin_m, dtype=float) * 1e3
        return cls(affine, tuple(shape))

    def centres_m(self) -> np.ndarray:
        """World coordinates [m] of every voxel centre, shape (nx, ny, nz, 3)."""
        ijk = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in self.shape], indexing="ij"), axis=-1)
        return voxel_to_world_m(self.affine_mm, ijk)


@dataclass(frozen=True)
class ObservationOperator:
    """Voxel averaging: mean over ``points_per_axis`` sub-voxel midpoints along each of the first
    ``dim`` axes (2-D problems: on slice ``slice_index``, world z ignored); points outside the
    tissue are left out of the mean (partial volume)."""

    points_per_axis: int = 3
    dim: int = 2
    slice_index: int = 0

    def __post_init__(self):
        if self.points_per_axis < 1:
            raise ValueError(f"points_per_axis must be >= 1, got {self.points_per_axis}")
        if self.dim not in (1, 2, 3):
            raise ValueError(f"dim must be 1, 2 or 3, got {self.dim}")

    def voxel_points(self, grid: VoxelGrid, voxels: np.ndarray) -> np.ndarray:
        """Sub-voxel points [m] of each voxel index in ``voxels`` (n, 3): shape (n, q, dim)."""
        sub = (np.arange(self.points_per_axis) + 0.5) / self.points_per_axis - 0.5
        axes = [sub if axis < self.dim else np.array([0.0]) for axis in range(3)]
        offsets = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
        points = voxel_to_world_m(grid.affine_mm, np.asarray(voxels, float)[:, None, :] + offsets[None])
        return points[..., :self.dim]

    def describe(self) -> str:
        return (f"mean over {self.points_per_axis}^{self.dim} sub-voxel midpoints inside the tissue"
                + (f" on slice {self.slice_index}" if self.dim == 2 else ""))


@dataclass(frozen=True)
class Observations:
    """Frames of one ``quantity`` (e.g. "total_drug", "released_fraction", "ifp") on ``grid``.

    ``values`` (nx, ny, nz, frames) in ``unit`` (NaN = not observed), ``frame_times_s`` [s after
    injection; a steady quantity has one frame at 0], ``noise_sd`` in ``unit``.
    """

    quantity: str
    unit: str
    grid: VoxelGrid
    frame_times_s: np.ndarray
    values: np.ndarray
    noise_sd: float
    operator: ObservationOperator = field(default_factory=ObservationOperator)

    def __post_init__(self):
        values = np.asarray(self.values, dtype=float)
        times = np.atleast_1d(np.asarray(self.frame_times_s, dtype=float))
        if values.ndim == 3:
            values = values[..., None]
        if values.shape != (*self.grid.shape, times.size):
            raise ValueError(f"{self.quantity}: values shape {values.shape} does not match grid "
                             f"{self.grid.shape} x {times.size} frame times")
        if not np.isfinite(values).any():
            raise ValueError(f"{self.quantity}: no finite value to fit")
        if not (np.isfinite(self.noise_sd) and self.noise_sd >= 0):
            raise ValueError(f"{self.quantity}: noise_sd must be finite and >= 0 {self.unit}")
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "frame_times_s", times)

    def observed(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Finite entries as (voxel indices (n, 3), frame index (n,), value (n,))."""
        index = np.argwhere(np.isfinite(self.values))
        return index[:, :3], index[:, 3], self.values[tuple(index.T)]


@dataclass(frozen=True)
class KnownMaps:
    """Imaging maps used as known inputs on ``grid``: ``ktrans_per_min`` [1/min], ``ph`` [1]
    (either may be None), each (nx, ny, nz)."""

    grid: VoxelGrid
    ktrans_per_min: np.ndarray | None = None
    ph: np.ndarray | None = None

    def __post_init__(self):
        for name in ("ktrans_per_min", "ph"):
            value = getattr(self, name)
            if value is not None and np.shape(value) != self.grid.shape:
                raise ValueError(f"{name} shape {np.shape(value)} does not match grid {self.grid.shape}")


@dataclass(frozen=True)
class Truth:
    """What a twin experiment used: ``parameters`` name -> (value, unit) and true ``fields``
    name -> (array on the grid, unit). For error reports only."""

    parameters: dict[str, tuple[float, str]]
    fields: dict[str, tuple[np.ndarray, str]] = field(default_factory=dict)

    def relative_error(self, name: str, estimate: float) -> float:
        """|estimate - truth| / |truth| of parameter ``name``."""
        value = self.parameters[name][0]
        return abs(estimate - value) / abs(value)


@dataclass(frozen=True)
class ParameterMaps:
    """What ``hybrid maps`` fitted on ``grid``: ``images`` name -> (nx, ny, nz) array in
    ``units[name]`` (floats NaN outside ``mask`` or where a fit failed; uint8 flags for
    ``ph_valid`` and ``dce_reason``) and ``mask`` (nx, ny, nz), True where voxels were fitted."""

    grid: VoxelGrid
    mask: np.ndarray
    images: dict[str, np.ndarray]
    units: dict[str, str]

    def __post_init__(self):
        for name, image in {"mask": self.mask, **self.images}.items():
            if np.shape(image) != self.grid.shape:
                raise ValueError(f"{name} shape {np.shape(image)} does not match grid {self.grid.shape}")
        missing = sorted(set(self.images) - set(self.units))
        if missing:
            raise ValueError(f"no unit for map(s) {', '.join(missing)}")

    def known_maps(self) -> KnownMaps:
        """The Ktrans [1/min] and pH maps (where fitted) as known inputs of an inversion."""
        return KnownMaps(self.grid, ktrans_per_min=self.images.get("Ktrans"), ph=self.images.get("pH"))


@dataclass(frozen=True)
class FemSnapshots:
    """Nodal values of FEM fields at a sequence of times: ``coordinates`` (nodes, dim) [m],
    ``times`` (snapshots,) [s, increasing], ``values`` (snapshots, len(species), nodes) in
    [mol/m^3 of tissue], ``species`` the field names in the order of ``values``' second axis."""

    coordinates: np.ndarray
    times: np.ndarray
    values: np.ndarray
    species: tuple[str, ...]

    def __post_init__(self):
        coordinates = np.asarray(self.coordinates, dtype=float)
        times = np.asarray(self.times, dtype=float)
        values = np.asarray(self.values, dtype=float)
        if coordinates.ndim != 2 or times.ndim != 1 or times.size < 2 or np.any(np.diff(times) <= 0):
            raise ValueError(f"snapshots need (nodes, dim) coordinates and >= 2 increasing times, got shapes "
                             f"{coordinates.shape} and {times.shape}")
        if values.shape != (times.size, len(self.species), coordinates.shape[0]):
            raise ValueError(f"values shape {values.shape} is not (times, species, nodes) = "
                             f"({times.size}, {len(self.species)}, {coordinates.shape[0]})")
        object.__setattr__(self, "coordinates", coordinates)
        object.__setattr__(self, "times", times)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "species", tuple(self.species))
