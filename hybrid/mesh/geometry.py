"""From a geometry description to a distributed mesh: :func:`build_mesh` picks the gmsh builder
for the shape, :func:`check_mesh_size` refuses meshes that would not fit in memory.

``geometry`` is any object with the fields of ``hybrid.config.GeometryConfig`` (shape, sizes in m,
vessel layout, mask path, refinements, rim refinements, partitioner); this module does not read
configurations.
"""

from __future__ import annotations

import math
import os

from mpi4py import MPI

DIMENSION = {"slab": 1, "disc": 2, "sphere": 3}
"""Spatial dimension of the radially symmetric tumour shapes."""

BYTES_PER_CELL = 500
"""Lower bound of the memory one cell costs on the meshing rank (gmsh model + DOLFINx mesh) [B]."""

_CELL_MEASURE = {1: 1.0, 2: math.sqrt(3) / 4, 3: 1 / (6 * math.sqrt(2))}   # of a regular cell of edge 1


def build_mesh(geometry, comm: MPI.Comm):
    """The mesh that ``geometry`` describes, distributed over ``comm``: gmsh on rank 0 at
    ``mesh_size``, then ``refinements`` uniform refinements and ``rim_refinements`` refinements in
    the band ``rim_band`` [m] around the tumour surface, in parallel (hybrid.mesh.refine)."""
    from hybrid.collective import everywhere
    from hybrid.mesh.builders import krogh_mesh, tumour_mesh, vessel_patch_mesh
    from hybrid.mesh.from_mask import mask_mesh
    from hybrid.mesh.refine import refine_near_surface, refine_uniformly

    if geometry.shape in DIMENSION:
        coarse = tumour_mesh(comm, geometry.shape, geometry.tumour_radius, geometry.host_thickness,
                             geometry.mesh_size, geometry.surface_mesh_size, geometry.refinement_width,
                             partitioner=geometry.partitioner)
    elif geometry.shape == "krogh":
        coarse = krogh_mesh(comm, geometry.vessel_radius, geometry.tissue_radius, geometry.mesh_size,
                            geometry.surface_mesh_size, partitioner=geometry.partitioner)
    elif geometry.shape == "mask":  # partitioned by the default partitioner
        from hybrid.io.nifti import read_volume

        mask, affine_mm = everywhere(comm, lambda: read_volume(geometry.mask))
        coarse = mask_mesh(comm, mask > 0, affine_mm, geometry.mesh_size, slice_index=geometry.slice_index,
                           host=geometry.field_of_view_host, surface_mesh_size=geometry.surface_mesh_size,
                           refinement_width=geometry.refinement_width)
    else:
        coarse = vessel_patch_mesh(comm, geometry.patch_size, geometry.vessel_radius, geometry.n_vessels,
                                   geometry.min_spacing, geometry.mesh_size, geometry.seed,
                                   geometry.surface_mesh_size, partitioner=geometry.partitioner)
    refined = refine_uniformly(coarse, geometry.refinements)
    return refine_near_surface(refined, geometry.rim_refinements, geometry.rim_band)


def check_mesh_size(geometry, memory_bytes: float | None = None) -> float:
    """Estimated number of cells of ``geometry``'s mesh (domain measure over the measure of a
    regular cell of edge ``mesh_size``, plus the refined band at the surface size); ValueError when
    at ``BYTES_PER_CELL`` they would not fit in ``memory_bytes`` (default: this machine's memory)."""
    g = geometry
    if g.shape in DIMENSION:
        dim = DIMENSION[g.shape]
        outer = g.tumour_radius + g.host_thickness
        measure = {1: 2 * outer, 2: math.pi * outer ** 2, 3: 4 / 3 * math.pi * outer ** 3}[dim]
        surface = {1: 2.0, 2: 2 * math.pi * g.tumour_radius, 3: 4 * math.pi * g.tumour_radius ** 2}[dim]
    elif g.shape == "mask":
        import nibabel

        dim = 2
        header = nibabel.load(str(g.mask)).header  # the header only: the grid's field of view
        nx, ny = header.get_data_shape()[:2]
        dx, dy = (1e-3 * z for z in header.get_zooms()[:2])
        measure, surface = nx * dx * ny * dy, 2 * (nx * dx + ny * dy)
    else:  # krogh, vessels: the vessel walls are refined to a quarter of the vessel radius
        dim = 2
        walls = 1 if g.shape == "krogh" else g.n_vessels
        measure = math.pi * g.tissue_radius ** 2 if g.shape == "krogh" else g.patch_size ** 2
        surface = walls * 2 * math.pi * g.vessel_radius
    cells = measure / (_CELL_MEASURE[dim] * g.mesh_size ** dim)
    if g.shape in ("krogh", "vessels"):
        fine, width = min(g.mesh_size, g.vessel_radius / 4), 4 * g.vessel_radius
    else:
        fine, width = g.surface_mesh_size or g.mesh_size, 1.5 * (g.refinement_width or 0.0)
    if fine < g.mesh_size:
        cells += min(surface * width, measure) / (_CELL_MEASURE[dim] * fine ** dim)
    if memory_bytes is None:
        memory_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if cells * BYTES_PER_CELL > memory_bytes:
        raise ValueError(f"[geometry] mesh_size = {g.mesh_size:g} m (surface {fine:g} m) would give about "
                         f"{cells:.2g} cells, {cells * BYTES_PER_CELL / 1e9:.3g} GB at {BYTES_PER_CELL} B per "
                         f"cell, beyond this machine's {memory_bytes / 1e9:.3g} GB; use larger mesh sizes")
    return cells
