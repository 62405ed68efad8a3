"""Parallel uniform refinement of a distributed mesh, with its tags, curved boundaries snapped back.

The builders make a coarse gmsh mesh on rank 0 and distribute it; :func:`refine_uniformly` then
refines it ``refinements`` times with DOLFINx (Plaza edge bisection: each triangle into 4, each
tetrahedron into 8, so the DOFs of P1 grow about 2^dim times per refinement). Every rank refines
the cells it owns, so no rank ever holds the fine mesh whole; the children stay on their parent's
rank. Cell and facet tags are carried to the children (``dolfinx.mesh.transfer_meshtag``).

The new vertices that bisection puts on a boundary are the midpoints of straight chords, inside a
curved surface by about ``h^2 / (8 R)``. :func:`refine_uniformly` moves every vertex of a facet
tagged as a circle or sphere (tumour surface, host outer boundary, vessel walls; the table is
:func:`curved_surfaces`) radially onto that circle or sphere after each refinement, so the refined
mesh approximates the true geometry as well as a gmsh mesh of the same size. Lengths in metres.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

import hybrid._fem_stack  # noqa: F401  (before dolfinx)
import dolfinx.fem
import dolfinx.mesh

from hybrid.mesh import tags
from hybrid.mesh.builders import TumourMesh

__all__ = ["refine_uniformly", "curved_surfaces", "snap_to_surfaces"]


def curved_surfaces(domain: TumourMesh) -> dict[int, tuple[np.ndarray, float]]:
    """Facet tag -> (centre [m], radius [m]) of each tagged boundary that is a circle or a sphere.

    Slabs (points), mask outlines (traced polygons) and the square edges of a vessel patch have
    none: their refined facets already lie on the meshed boundary.
    """
    g = domain.geometry
    origin = np.zeros(3)
    if domain.shape in ("sphere", "disc"):
        surfaces = {tags.TUMOUR_SURFACE: (origin, g["tumour_radius"])}
        if g["host_thickness"] > 0:
            surfaces[tags.OUTER_BOUNDARY] = (origin, g["outer_radius"])
        return surfaces
    if domain.shape == "krogh":
        return {tags.VESSEL_WALL: (origin, g["vessel_radius"]), tags.OUTER_BOUNDARY: (origin, g["tissue_radius"])}
    if domain.shape == "vessels":
        return {tags.patch_vessel_wall(i): (np.array([x, y, 0.0]), g["vessel_radius"])
                for i, (x, y) in enumerate(g["centres"])}
    return {}


def snap_to_surfaces(mesh: dolfinx.mesh.Mesh, facet_tags: dolfinx.mesh.MeshTags,
                     surfaces: dict[int, tuple[np.ndarray, float]]) -> float:
    """Move the vertices of the facets tagged in ``surfaces`` radially onto their circle or sphere.

    Every rank moves its own copies (owned and ghost) of such vertices, including copies whose
    tagged facet only another rank holds, so the geometry stays consistent across ranks. Returns
    the largest distance [m] a vertex moved (over all ranks). Affine (degree-1) geometry only.
    """
    from mpi4py import MPI

    gdim, fdim = mesh.geometry.dim, mesh.topology.dim - 1
    mesh.topology.create_connectivity(fdim, mesh.topology.dim)
    vertices = dolfinx.fem.functionspace(mesh, ("Lagrange", 1))   # one dof per vertex
    vertex_to_node = np.empty(vertices.dofmap.index_map.size_local + vertices.dofmap.index_map.num_ghosts,
                              dtype=np.int64)
    vertex_to_node[np.asarray(vertices.dofmap.list).ravel()] = np.asarray(mesh.geometry.dofmaps[0]).ravel()
    x = mesh.geometry.x
    moved = 0.0
    for tag, (centre, radius) in surfaces.items():
        # remote=True (default): also the dofs of vertices whose tagged facet is on another rank
        on_surface = dolfinx.fem.locate_dofs_topological(vertices, fdim, facet_tags.find(tag))
        nodes = vertex_to_node[on_surface]
        offset = x[nodes, :gdim] - centre[:gdim]
        distance = np.linalg.norm(offset, axis=1)
        if np.any(distance <= 0.5 * radius):
            raise ValueError(f"facets tagged {tag} are not near the surface of radius {radius} m "
                             f"around {centre[:gdim]}: cannot snap them")
        snapped = centre[:gdim] + offset * (radius / distance)[:, None]
        moved = max(moved, float(np.abs(distance - radius).max(initial=0.0)))
        x[nodes, :gdim] = snapped
    return mesh.comm.allreduce(moved, op=MPI.MAX)


def refine_uniformly(domain: TumourMesh, refinements: int) -> TumourMesh:
    """``domain`` refined uniformly ``refinements`` times in parallel, tags carried to the children
    and curved boundaries snapped (see the module docstring). ``refinements = 0`` returns it as is.

    ``geometry`` of the result adds ``refinements`` and ``max_snap_distance_m`` (how far the last
    refinement's boundary midpoints lay off the true surface), ``timings`` adds ``refinement_s``.
    """
    if refinements < 0:
        raise ValueError(f"refinements must be >= 0, got {refinements}")
    if refinements == 0:
        return domain
    surfaces = curved_surfaces(domain)
    mesh, cell_tags, facet_tags = domain.mesh, domain.cell_tags, domain.facet_tags
    snapped = 0.0
    start = time.perf_counter()
    for _ in range(refinements):
        tdim = mesh.topology.dim
        mesh.topology.create_entities(1)
        mesh.topology.create_connectivity(tdim - 1, tdim)
        # partitioner=None: children stay on their parent's rank, no ghost cells (as the gmsh mesh);
        # with the default (ghost layer rebuilt) transfer_meshtag crashed under MPI in DOLFINx 0.11
        fine, parent_cell, parent_facet = dolfinx.mesh.refine(
            mesh, partitioner=None, option=dolfinx.mesh.RefinementOption.parent_cell_and_facet)
        fine.topology.create_connectivity(tdim - 1, tdim)
        cell_tags = dolfinx.mesh.transfer_meshtag(cell_tags, fine, parent_cell)
        facet_tags = dolfinx.mesh.transfer_meshtag(facet_tags, fine, parent_cell, parent_facet)
        snapped = snap_to_surfaces(fine, facet_tags, surfaces)
        mesh = fine
    mesh.name = domain.mesh.name
    cell_tags.name, facet_tags.name = domain.cell_tags.name, domain.facet_tags.name
    geometry = {**domain.geometry, "refinements": refinements, "max_snap_distance_m": snapped}
    timings = {**domain.timings, "refinement_s": time.perf_counter() - start}
    return replace(domain, mesh=mesh, cell_tags=cell_tags, facet_tags=facet_tags, geometry=geometry, timings=timings)
