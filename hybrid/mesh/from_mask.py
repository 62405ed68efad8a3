"""2-D tumour mesh from a binary mask (e.g. a NIfTI segmentation), in world coordinates.

The mask's slice ``slice_index`` is smoothed (Gaussian, ``smoothing_voxels``) and the region above
its 0.5 iso-level is traced (contourpy, shipped with matplotlib): every component becomes a tumour
surface with its holes. Voxel indices go to world metres through the NIfTI affine (mm -> m), with
the plane ``z = 0`` of the mesh laid on the slice, the same convention as
:func:`hybrid.imaging.grid.world_m_to_voxel` with ``slice_index``. With ``host=True`` the rest of
the image's field of view (voxel edges), holes included, is meshed as host tissue.

The traced area must match the mask's (voxel count x voxel area) within ``AREA_TOLERANCE``;
otherwise (speckle, components or holes of a few voxels that smoothing erases) the mask is refused
with a line that says what it holds. Tags: :mod:`hybrid.mesh.tags`.
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI
from scipy import ndimage

from hybrid.collective import on_rank0
from hybrid.imaging.grid import voxel_to_world_m
from hybrid.mesh import tags
from hybrid.mesh.builders import TumourMesh, _check_positive, _distribute, _refine_near_curves

__all__ = ["mask_regions", "mask_outline", "mask_mesh", "AREA_TOLERANCE"]


def _signed_area(polygon: np.ndarray) -> float:
    """Shoelace area of a closed polygon (n, 2), positive when counter-clockwise."""
    x, y = polygon[:, 0], polygon[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


AREA_TOLERANCE = 0.05
"""Largest relative difference between the traced tumour area and the mask's area."""

MIN_VOXELS = 4


def _plane(mask, slice_index: int) -> np.ndarray:
    volume = np.asarray(mask)
    if volume.ndim == 2:
        volume = volume[:, :, None]
    if volume.ndim != 3:
        raise ValueError(f"mask must be 2-D or 3-D, got shape {volume.shape}")
    if not 0 <= slice_index < volume.shape[2]:
        raise ValueError(f"slice_index {slice_index} outside the mask's {volume.shape[2]} slices "
                         f"(0..{volume.shape[2] - 1})")
    plane = volume[:, :, slice_index] > 0
    if plane.sum() < MIN_VOXELS:
        raise ValueError(f"mask slice {slice_index} has fewer than {MIN_VOXELS} tumour voxels "
                         f"({int(plane.sum())}); nothing to mesh (check slice_index and the mask)")
    return plane


def _to_world(ij: np.ndarray, affine_mm, slice_index: int) -> np.ndarray:
    ijk = np.column_stack([ij, np.full(len(ij), float(slice_index))])
    return voxel_to_world_m(affine_mm, ijk)[:, :2]


def _describe(plane: np.ndarray) -> str:
    """What a binary slice holds: components (sizes in voxels) and enclosed holes."""
    labels, n = ndimage.label(plane)
    sizes = np.sort(np.bincount(labels.ravel())[1:])[::-1]
    background, n_background = ndimage.label(~np.pad(plane, 1))
    holes = n_background - 1   # background pieces that do not touch the (padded) border
    shown = ", ".join(str(int(v)) for v in sizes[:5]) + (", ..." if n > 5 else "")
    return f"{n} component(s) of {shown} voxels and {holes} hole(s)"


def mask_regions(mask, affine_mm, slice_index: int = 0, smoothing_voxels: float = 1.0):
    """Tumour regions of a mask slice, each ``(outer, holes)``: closed polygons (n, 2) [m, world
    x-y] without repeated end point, outer counter-clockwise and holes clockwise; and a dict with
    the mask's and the traced area [m^2] and what the slice holds. ValueError when the traced area
    differs from the mask's by more than ``AREA_TOLERANCE``."""
    import contourpy

    plane = _plane(mask, slice_index)
    padded = np.pad(plane.astype(float), 1)  # so outlines touching the image edge still close
    smooth = ndimage.gaussian_filter(padded, smoothing_voxels) if smoothing_voxels > 0 else padded
    i, j = np.meshgrid(np.arange(padded.shape[0]) - 1.0, np.arange(padded.shape[1]) - 1.0, indexing="ij")
    generator = contourpy.contour_generator(i, j, smooth, fill_type="OuterOffset")
    regions = []
    for points, offsets in zip(*generator.filled(0.5, max(1.0, float(smooth.max())) + 1.0)):
        rings = [_to_world(points[a:b - 1], affine_mm, slice_index) for a, b in zip(offsets[:-1], offsets[1:])]
        rings = [ring for ring in rings if len(ring) >= 3]
        if rings:
            outer, holes = rings[0], rings[1:]
            regions.append((outer if _signed_area(outer) > 0 else outer[::-1],
                            [h if _signed_area(h) < 0 else h[::-1] for h in holes]))
    voxel_area = abs(np.linalg.det(1e-3 * np.asarray(affine_mm, dtype=float)[:2, :2]))
    mask_area = float(plane.sum()) * voxel_area
    traced = sum(_signed_area(outer) + sum(_signed_area(h) for h in holes) for outer, holes in regions)
    info = {"mask_area_m2": mask_area, "tumour_area_m2": traced, "area_ratio": traced / mask_area,
            "components": len(regions), "holes": sum(len(h) for _, h in regions), "mask_holds": _describe(plane)}
    if abs(traced / mask_area - 1.0) > AREA_TOLERANCE:
        raise ValueError(f"mask slice {slice_index} holds {info['mask_holds']}; the traced outlines cover "
                         f"{100 * traced / mask_area:.0f} % of its area. The mesher meshes every component and "
                         f"hole that survives a {smoothing_voxels:g}-voxel smoothing (about 3x3 voxels or "
                         f"larger) within {100 * AREA_TOLERANCE:.0f} %; remove speckle and tiny holes "
                         "(e.g. scipy.ndimage.binary_opening / binary_fill_holes) or resample the mask")
    return regions, info


def mask_outline(mask, affine_mm, slice_index: int = 0, smoothing_voxels: float = 1.0) -> np.ndarray:
    """Outline of the largest tumour region (n, 2) [m, world x-y], counter-clockwise, without
    repeated end point (see :func:`mask_regions` for all of them)."""
    regions, _ = mask_regions(mask, affine_mm, slice_index, smoothing_voxels)
    return max((outer for outer, _ in regions), key=_signed_area)


def mask_mesh(comm: MPI.Comm, mask, affine_mm, mesh_size: float, *, slice_index: int = 0,
              host: bool = True, smoothing_voxels: float = 1.0, surface_mesh_size: float | None = None,
              refinement_width: float = 0.0) -> TumourMesh:
    """Triangle mesh of every tumour region in ``mask`` (with its holes), and of the rest of the
    field of view as host if ``host``. Traced on rank 0; a mask that cannot be meshed raises
    :class:`hybrid.collective.RunError` on every rank."""
    _check_positive(mesh_size=mesh_size)
    regions, info = comm.bcast(on_rank0(comm, lambda: mask_regions(mask, affine_mm, slice_index, smoothing_voxels)),
                               root=0)
    shape = np.asarray(mask).shape
    corners_ijk = np.array([[-0.5, -0.5], [shape[0] - 0.5, -0.5], [shape[0] - 0.5, shape[1] - 0.5],
                            [-0.5, shape[1] - 0.5]])
    corners = _to_world(corners_ijk, affine_mm, slice_index)
    surface_mesh_size = surface_mesh_size or mesh_size
    geometry = {"source": "mask", "slice_index": slice_index, **info,
                "outline_points": sum(len(o) + sum(len(h) for h in hs) for o, hs in regions), "host": host}

    def loop(occ, points):
        ids = [occ.addPoint(x, y, 0) for x, y in points]
        return occ.addCurveLoop([occ.addLine(a, b) for a, b in zip(ids, ids[1:] + ids[:1])])

    def build(model):
        occ = model.occ
        tumour_surfaces = [occ.addPlaneSurface([loop(occ, outer)] + [loop(occ, h) for h in holes])
                           for outer, holes in regions]
        host_surfaces = []
        if host:
            field_of_view = occ.addPlaneSurface([loop(occ, corners)])
            _, pieces = occ.fragment([(2, field_of_view)], [(2, t) for t in tumour_surfaces])
            tumour_surfaces = [t for piece in pieces[1:] for _, t in piece]
            host_surfaces = [t for _, t in pieces[0] if t not in tumour_surfaces]
        occ.synchronize()
        model.addPhysicalGroup(2, tumour_surfaces, tags.TUMOUR, "tumour")
        boundary_of = lambda surfaces: {abs(t) for _, t in model.getBoundary([(2, s) for s in surfaces],
                                                                              oriented=False)}
        surface_curves = boundary_of(tumour_surfaces)
        model.addPhysicalGroup(1, sorted(surface_curves), tags.TUMOUR_SURFACE, "tumour_surface")
        if host_surfaces:
            model.addPhysicalGroup(2, host_surfaces, tags.HOST, "host")
            outer = boundary_of(host_surfaces) - surface_curves
            model.addPhysicalGroup(1, sorted(outer), tags.OUTER_BOUNDARY, "outer_boundary")
        _refine_near_curves(model, sorted(surface_curves), mesh_size, surface_mesh_size, refinement_width)

    outer_tags = (tags.OUTER_BOUNDARY,) if host else (tags.TUMOUR_SURFACE,)
    return _distribute(comm, build, 2, "mask", geometry, outer_tags)
