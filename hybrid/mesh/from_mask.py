"""2-D tumour mesh from a binary mask (e.g. a NIfTI segmentation), in world coordinates.

The mask's slice ``slice_index`` is smoothed (Gaussian, ``smoothing_voxels``), its 0.5 iso-line
is traced (contourpy, shipped with matplotlib) and the largest closed contour becomes the tumour
outline. Voxel indices go to world metres through the NIfTI affine (mm -> m), with the plane
``z = 0`` of the mesh laid on the slice, the same convention as
:func:`hybrid.imaging.grid.world_m_to_voxel` with ``slice_index``. With ``host=True`` the rest of
the image's field of view (voxel edges) is meshed as host tissue. Tags: :mod:`hybrid.mesh.tags`.
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI
from scipy import ndimage

from hybrid.imaging.grid import voxel_to_world_m
from hybrid.mesh import tags
from hybrid.mesh.builders import TumourMesh, _check_positive, _distribute, _refine_near_curves

__all__ = ["mask_outline", "mask_mesh"]


def _signed_area(polygon: np.ndarray) -> float:
    """Shoelace area of a closed polygon (n, 2), positive when counter-clockwise."""
    x, y = polygon[:, 0], polygon[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def mask_outline(mask, affine_mm, slice_index: int = 0, smoothing_voxels: float = 1.0) -> np.ndarray:
    """Closed tumour outline (n, 2) [m, world x-y], counter-clockwise, without repeated end point."""
    import contourpy

    volume = np.asarray(mask)
    if volume.ndim == 2:
        volume = volume[:, :, None]
    if volume.ndim != 3:
        raise ValueError(f"mask must be 2-D or 3-D, got shape {volume.shape}")
    if not 0 <= slice_index < volume.shape[2]:
        raise ValueError(f"slice_index {slice_index} outside the mask's {volume.shape[2]} slices")
    plane = volume[:, :, slice_index].astype(float)
    if plane.sum() < 4:
        raise ValueError(f"mask slice {slice_index} has fewer than 4 tumour voxels; nothing to mesh")
    padded = np.pad(plane, 1)  # so outlines touching the image edge still close
    smooth = ndimage.gaussian_filter(padded, smoothing_voxels) if smoothing_voxels > 0 else padded
    i, j = np.meshgrid(np.arange(padded.shape[0]) - 1.0, np.arange(padded.shape[1]) - 1.0, indexing="ij")
    lines = contourpy.contour_generator(i, j, smooth).lines(0.5)
    closed = [line[:-1] for line in lines if len(line) > 4 and np.allclose(line[0], line[-1])]
    if not closed:
        raise ValueError("no closed tumour outline found in the mask")
    ij = max(closed, key=lambda p: abs(_signed_area(p)))
    ijk = np.column_stack([ij, np.full(len(ij), float(slice_index))])
    xy = voxel_to_world_m(affine_mm, ijk)[:, :2]
    return xy if _signed_area(xy) > 0 else xy[::-1]


def mask_mesh(comm: MPI.Comm, mask, affine_mm, mesh_size: float, *, slice_index: int = 0,
              host: bool = True, smoothing_voxels: float = 1.0, surface_mesh_size: float | None = None,
              refinement_width: float = 0.0) -> TumourMesh:
    """Triangle mesh of the tumour in ``mask`` (and of the surrounding field of view if ``host``)."""
    _check_positive(mesh_size=mesh_size)
    outline = mask_outline(mask, affine_mm, slice_index, smoothing_voxels) if comm.rank == 0 else None
    outline = comm.bcast(outline, root=0)
    shape = np.asarray(mask).shape
    corners_ijk = np.array([[-0.5, -0.5], [shape[0] - 0.5, -0.5], [shape[0] - 0.5, shape[1] - 0.5],
                            [-0.5, shape[1] - 0.5]])
    corners = voxel_to_world_m(affine_mm, np.column_stack([corners_ijk, np.full(4, float(slice_index))]))[:, :2]
    surface_mesh_size = surface_mesh_size or mesh_size
    geometry = {"source": "mask", "slice_index": slice_index, "tumour_area_m2": float(_signed_area(outline)),
                "outline_points": len(outline), "host": host}

    def polygon(occ, points):
        ids = [occ.addPoint(x, y, 0) for x, y in points]
        curves = [occ.addLine(a, b) for a, b in zip(ids, ids[1:] + ids[:1])]
        return occ.addPlaneSurface([occ.addCurveLoop(curves)])

    def build(model):
        occ = model.occ
        tumour = polygon(occ, outline)
        tumour_surfaces, host_surfaces = [tumour], []
        if host:
            _, pieces = occ.fragment([(2, polygon(occ, corners))], [(2, tumour)])
            tumour_surfaces = [t for _, t in pieces[1]]
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
