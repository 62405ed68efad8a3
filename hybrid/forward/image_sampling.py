"""Images <-> DOLFINx meshes: voxel maps as FEM coefficients, FEM fields as synthetic images.

Coordinates: NIfTI affines map voxel indices to world **millimetres**; meshes are in **metres**.
A mesh point x [m] is looked up at voxel index ``inv(A) (1e3 x - b)`` (``hybrid.imaging.grid``).
Voxel (i, j, k) covers [i - 1/2, i + 1/2] x ... in index space.

2-D meshes (z = 0 plane) are laid on one slice ``k = slice_index`` of the image: the mesh (x, y) are
matched to the world x, y of that slice (its world z is ignored); the affine's in-plane block must
be invertible (axial slices).

Parallel: ``sample_image`` fills every local degree of freedom (owned and ghost) from its own
coordinates, so no communication is needed. ``observe_on_grid`` is collective and returns the full
image on **every** rank.
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

import hybrid._fem_stack  # noqa: F401  (before dolfinx)
import dolfinx.fem
import dolfinx.geometry

from hybrid.imaging.grid import interpolate, voxel_to_world_m, world_m_to_voxel
from hybrid.problems.exchange import ktrans_to_permeability_surface

__all__ = ["sample_image", "observe_on_grid", "permeability_surface_field",
           "vascular_exchange_from_ktrans",
           "ph_field", "mask_field", "SPACES"]

SPACES = {"P1": ("Lagrange", 1), "DG0": ("DG", 0)}


def _mesh(domain_or_mesh):
    """The dolfinx mesh of a :class:`hybrid.mesh.TumourMesh` or of a mesh itself."""
    return getattr(domain_or_mesh, "mesh", domain_or_mesh)


def _slice(mesh, volume_shape, slice_index):
    """Slice rule for 2-D meshes (None for 3-D meshes)."""
    tdim = mesh.topology.dim
    if tdim == 3:
        return None
    if tdim != 2:
        raise ValueError(f"image sampling needs a 2-D or 3-D mesh, got topological dimension {tdim}")
    if slice_index is None:
        if volume_shape[2] != 1:
            raise ValueError(f"a 2-D mesh samples one slice: pass slice_index (0..{volume_shape[2] - 1})")
        return 0
    if not 0 <= slice_index < volume_shape[2]:
        raise ValueError(f"slice_index {slice_index} outside 0..{volume_shape[2] - 1}")
    return int(slice_index)


def sample_image(domain_or_mesh, volume, affine_mm, *, space: str = "P1", method: str = "linear",
                 outside: str = "nearest", fill_value: float = np.nan, slice_index: int | None = None,
                 name: str = "image") -> dolfinx.fem.Function:
    """A voxel map as a DOLFINx Function: P1 (values at vertices) or DG0 (at cell midpoints).

    ``volume`` (nx, ny, nz) in the map's own unit; ``affine_mm`` voxel -> world mm. ``method``
    "linear" (trilinear) or "nearest" voxel; outside the image ``outside="nearest"`` takes the
    nearest edge voxel and ``"fill"`` the ``fill_value``. 2-D meshes: see the module docstring."""
    if space not in SPACES:
        raise ValueError(f"space must be one of {', '.join(SPACES)}, got {space!r}")
    vol = np.asarray(volume, dtype=float)
    if vol.ndim != 3:
        raise ValueError(f"volume must be 3-D (nx, ny, nz), got shape {vol.shape}")
    mesh = _mesh(domain_or_mesh)
    k = _slice(mesh, vol.shape, slice_index)
    function = dolfinx.fem.Function(dolfinx.fem.functionspace(mesh, SPACES[space]), name=name)
    ijk = world_m_to_voxel(affine_mm, function.function_space.tabulate_dof_coordinates(), k)
    function.x.array[:], _ = interpolate(vol, ijk, method=method, outside=outside, fill_value=fill_value)
    return function


def _finite(function: dolfinx.fem.Function, what: str) -> dolfinx.fem.Function:
    bad = function.function_space.mesh.comm.allreduce(int(np.sum(~np.isfinite(function.x.array))), op=MPI.SUM)
    if bad:
        raise ValueError(f"the {what} map is NaN/inf at {bad} mesh points: fill or mask it first "
                         "(e.g. np.nan_to_num, or outside='nearest')")
    return function


def permeability_surface_field(domain_or_mesh, ktrans_per_min, affine_mm, **kwargs) -> dolfinx.fem.Function:
    """PS/V [1/s] on the mesh from a Ktrans map [1/min]
    (``hybrid.problems.exchange.ktrans_to_permeability_surface``); ``kwargs`` as for
    ``sample_image``. Raises ValueError where the sampled map is not finite."""
    ps_per_s = ktrans_to_permeability_surface(np.asarray(ktrans_per_min, dtype=float))
    return _finite(sample_image(domain_or_mesh, ps_per_s, affine_mm, name="permeability_surface", **kwargs),
                   "Ktrans")


def ph_field(domain_or_mesh, ph_map, affine_mm, **kwargs) -> dolfinx.fem.Function:
    """Extracellular pH (unitless) on the mesh from a pH_e map; ``kwargs`` as for ``sample_image``.
    Raises ValueError where the sampled map is not finite (fill invalid CEST voxels first)."""
    return _finite(sample_image(domain_or_mesh, ph_map, affine_mm, name="pH_e", **kwargs), "pH")


def mask_field(domain_or_mesh, mask, affine_mm, *, slice_index: int | None = None) -> dolfinx.fem.Function:
    """DG0 indicator (1 inside, 0 outside) of ``mask > 0``, nearest voxel to each cell midpoint;
    points outside the image are 0."""
    return sample_image(domain_or_mesh, (np.asarray(mask) > 0).astype(float), affine_mm, space="DG0",
                        method="nearest", outside="fill", fill_value=0.0, slice_index=slice_index, name="mask")


def _nearest_owned_cell(mesh, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``points`` (n, 3) [m], the owned cell of ``mesh`` nearest to it among those
    DOLFINx reports as colliding and the squared distance to it [m^2] (0 inside); -1 and inf where
    none collides. DOLFINx counts a cell as colliding within an absolute 1e-6 m (squared distance
    below 1e-12 m^2), so on meshes in metres the first colliding cell may be a neighbour that does
    not contain the point; a P1 field evaluated there is extrapolated, and which neighbour comes
    first depends on the partition (the tumour-in-host twin of tests/test_coupled_cli.py, 0.25 mm
    voxels: released fraction 7.9e-4 relative l2 off, 5.3e-3 of its largest value)."""
    tdim = mesh.topology.dim
    owned_cells = np.arange(mesh.topology.index_map(tdim).size_local, dtype=np.int32)
    tree = dolfinx.geometry.bb_tree(mesh, tdim, entities=owned_cells)
    colliding = dolfinx.geometry.compute_colliding_cells(
        mesh, dolfinx.geometry.compute_collisions_points(tree, points), points)
    counts = np.diff(colliding.offsets)
    point_of = np.repeat(np.arange(len(points)), counts)
    squared = (dolfinx.geometry.squared_distance(mesh, tdim, colliding.array, points[point_of])
               if colliding.array.size else np.zeros(0))
    order = np.lexsort((squared, point_of))   # by point, then nearest first: each point's entries stay in place
    found = counts > 0
    first = colliding.offsets[:-1][found]
    cells = np.full(len(points), -1, dtype=np.int32)
    distance = np.full(len(points), np.inf)
    cells[found] = colliding.array[order[first]]
    distance[found] = squared[order[first]]
    return cells, distance


def observe_on_grid(function: dolfinx.fem.Function, shape, affine_mm, *, points_per_axis: int = 3,
                    slice_index: int | None = None) -> np.ndarray:
    """Synthetic image of a scalar FEM field: the mean of ``function`` over each voxel of a
    ``shape`` grid with ``affine_mm``, by the midpoint rule on ``points_per_axis`` sub-voxel points
    per axis (exact for fields linear in each voxel). Points outside the mesh are left out of the
    mean (partial-volume voxels average the covered part); voxels with no point in the mesh are
    NaN. 2-D meshes fill slice ``slice_index`` only (see the module docstring), other slices NaN.

    Collective over the mesh's communicator; every rank returns the same full (nx, ny, nz) image.
    Each point is evaluated in the owned cell nearest to it (:func:`_nearest_owned_cell`), by one
    rank only (the lowest of those with the nearest cell), so the image does not depend on the
    partition beyond rounding."""
    if function.function_space.value_size != 1:
        raise ValueError("observe_on_grid takes a scalar function; observe vector components one by one")
    if points_per_axis < 1:
        raise ValueError(f"points_per_axis must be >= 1, got {points_per_axis}")
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be 3 positive voxel counts, got {shape}")
    mesh = function.function_space.mesh
    comm = mesh.comm
    k = _slice(mesh, shape, slice_index)

    sub = (np.arange(points_per_axis) + 0.5) / points_per_axis - 0.5
    grids = [np.arange(n, dtype=float) for n in shape[:2]] + [np.arange(shape[2], dtype=float) if k is None
                                                               else np.array([float(k)])]
    voxels = np.stack(np.meshgrid(*grids, indexing="ij"), axis=-1).reshape(-1, 3)
    offsets = np.stack(np.meshgrid(sub, sub, sub if k is None else [0.0], indexing="ij"), axis=-1).reshape(-1, 3)
    voxel_id = np.ravel_multi_index(voxels.astype(int).T, shape)

    # keep voxels near the mesh's bounding box (a voxel's half-diagonal of slack)
    x = mesh.geometry.x
    lo = x.min(axis=0) if x.size else np.full(3, np.inf)
    hi = x.max(axis=0) if x.size else np.full(3, -np.inf)
    comm.Allreduce(MPI.IN_PLACE, lo, op=MPI.MIN)
    comm.Allreduce(MPI.IN_PLACE, hi, op=MPI.MAX)
    centres = voxel_to_world_m(affine_mm, voxels)
    if k is not None:
        centres[:, 2] = 0.0
    half = 0.5 * np.abs(np.asarray(affine_mm, dtype=float)[:3, :3]).sum(axis=1) / 1e3
    near = np.all((centres >= lo - half - 1e-12) & (centres <= hi + half + 1e-12), axis=1)
    voxels, voxel_id = voxels[near], voxel_id[near]

    points = voxel_to_world_m(affine_mm, (voxels[:, None, :] + offsets[None]).reshape(-1, 3))
    point_voxel = np.repeat(voxel_id, offsets.shape[0])
    if k is not None:
        points[:, 2] = 0.0
    points = np.ascontiguousarray(points)
    cells, distance = _nearest_owned_cell(mesh, points)
    nearest = distance.copy()
    comm.Allreduce(MPI.IN_PLACE, nearest, op=MPI.MIN)
    owner = np.where(np.isfinite(distance) & (distance == nearest), comm.rank, comm.size).astype(np.int32)
    comm.Allreduce(MPI.IN_PLACE, owner, op=MPI.MIN)
    mine = np.flatnonzero(owner == comm.rank)
    values = function.eval(points[mine], cells[mine]).reshape(-1) if mine.size else np.zeros(0)

    n_voxels = int(np.prod(shape))
    sums = np.bincount(point_voxel[mine], weights=values, minlength=n_voxels)
    hits = np.bincount(point_voxel[mine], minlength=n_voxels).astype(float)
    comm.Allreduce(MPI.IN_PLACE, sums, op=MPI.SUM)
    comm.Allreduce(MPI.IN_PLACE, hits, op=MPI.SUM)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(hits > 0, sums / hits, np.nan).reshape(shape)


def vascular_exchange_from_ktrans(domain, ktrans_per_min, affine_mm, tumour, host=None, *,
                                  slice_index: int | None = None, label: str = "Ktrans map"
                                  ) -> tuple[dolfinx.fem.Function, dolfinx.fem.Function, dict]:
    """Lp S/V [1/(Pa s)] per cell scaled by a Ktrans map [1/min], the scale [1] and its statistics.

    Assumption (documented, not measured): within a region the vessel surface density is
    proportional to Ktrans, i.e. a uniform wall permeability, so
    ``Lp S/V(x) = (Lp S/V)_region * Ktrans(x) / mean_region``, where ``mean_region`` is the
    volume-weighted mean Ktrans over the cells of that region (tumour or host) that have a value:
    each region's average keeps its table value, and the tumour/host contrast stays the table's.
    Ktrans is taken at cell midpoints (nearest voxel); negative Ktrans counts as 0. Cells without
    a value (NaN voxel: outside the fitted mask or a failed fit; or outside the image) keep their
    region's table value (scale 1); so does a host with no value anywhere.

    Returns ``(exchange, scale, stats)``: DG0 ``exchange = (Lp S/V)_region * scale`` and the DG0
    ``scale = Ktrans / mean_region`` (1 without a value), by which any other vessel surface density
    (e.g. the drug's S/V [1/m]) scales alike. ``label`` names the map in errors (e.g. its file).
    Raises ValueError where the map has no finite value, none at any tumour cell (an affine or
    ``slice_index`` that misplaces the map), or is zero over the cells of a region it covers.
    """
    import ufl

    from hybrid.forward.ifp import region_coefficient
    from hybrid.mesh import tags

    volume = np.asarray(ktrans_per_min, dtype=float)
    if not np.isfinite(volume).any():
        raise ValueError(f"the {label} has no finite value")
    sampled = sample_image(domain, np.maximum(volume, 0.0), affine_mm, space="DG0", method="nearest",
                           outside="fill", fill_value=np.nan, slice_index=slice_index, name="Ktrans")
    known = np.isfinite(sampled.x.array)
    values = dolfinx.fem.Function(sampled.function_space)
    values.x.array[:] = np.where(known, sampled.x.array, 0.0)
    weight = dolfinx.fem.Function(sampled.function_space)
    weight.x.array[:] = known
    comm = domain.mesh.comm
    dx = ufl.Measure("dx", domain=domain.mesh, subdomain_data=domain.cell_tags)
    integral = lambda f, tag: comm.allreduce(dolfinx.fem.assemble_scalar(dolfinx.fem.form(f * dx(tag))), op=MPI.SUM)
    regions = {tags.TUMOUR: ("tumour", tumour)}
    if host is not None and comm.allreduce(bool(np.any(domain.cell_tags.values == tags.HOST)), op=MPI.LOR):
        regions[tags.HOST] = ("host", host)   # decided on every rank alike: the sums below are collective
    scale = region_coefficient(domain, {tag: 1.0 for tag in regions}, "ktrans_scale")
    stats = {}
    for tag, (name, _) in regions.items():
        covered = integral(weight, tag)
        region_volume = integral(dolfinx.fem.Constant(domain.mesh, 1.0), tag)
        mean = integral(values, tag) / covered if covered > 0 else None
        if mean is None and tag == tags.TUMOUR:
            k = _slice(domain.mesh, volume.shape, slice_index)
            where = "3-D mesh" if k is None else f"slice_index {k}"
            raise ValueError(f"the {label} has no finite value at any tumour cell ({where}): its affine or "
                             "slice_index likely does not place the fitted voxels over the tumour")
        if mean is not None and not mean > 0:
            raise ValueError(f"the {label} is zero over the {name} cells it covers; "
                             "check the map, its affine and slice_index")
        if mean is not None:
            cells = _region_dofs(domain, sampled.function_space, tag)
            cells = cells[known[cells]]
            scale.x.array[cells] = sampled.x.array[cells] / mean
        stats[f"mean_{name}_ktrans_per_min"] = mean
        stats[f"{name}_volume_fraction_with_ktrans"] = covered / region_volume
    scale.x.scatter_forward()
    exchange = region_coefficient(domain, {tag: props.vascular_exchange for tag, (_, props) in regions.items()},
                                  "vascular_exchange")
    exchange.x.array[:] *= scale.x.array
    stats["assumption"] = ("vessel surface density proportional to Ktrans within each region (uniform wall "
                           "permeability); each region's mean Ktrans keeps its table Lp S/V; cells without a "
                           "Ktrans value keep the table Lp S/V")
    return exchange, scale, stats


def _region_dofs(domain, dg0_space, tag: int) -> np.ndarray:
    """Local DG0 degrees of freedom of the cells tagged ``tag``."""
    return dg0_space.dofmap.list[domain.cell_tags.find(tag)].ravel()
