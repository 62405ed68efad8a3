"""Quality-guarded smoothing: tagged and boundary vertices stay or slide on their circle/sphere,
no cell is inverted, the worst quality does not fall, and the mesh is the same on any number of ranks."""

import numpy as np
import pytest
from mpi4py import MPI

import hybrid.mesh  # noqa: F401
import dolfinx.fem
import ufl

from hybrid.mesh import tags, tumour_mesh
from hybrid.mesh.refine import bisect_cells, curved_surfaces
from hybrid.mesh.smooth import cell_quality, smooth_vertices

pytestmark = pytest.mark.mpi
COMM = MPI.COMM_WORLD
R, H = 2e-3, 1e-3


def _bisected(comm, shape: str, h: float, host: float = H):
    """A tumour in a host of thickness ``host`` [m] (0: the tumour alone) with the cells of midpoint
    x > 0 bisected twice: graded, flattened cells."""
    domain = tumour_mesh(comm, shape, R, host, h)
    for _ in range(2):
        mesh = domain.mesh
        nodes = np.asarray(mesh.geometry.dofmaps[0])[: mesh.topology.index_map(domain.dim).size_local]
        domain = bisect_cells(domain, np.flatnonzero(mesh.geometry.x[nodes, 0].mean(axis=1) > 0))
    return domain


def _vertex_positions(domain) -> np.ndarray:
    """(vertices, dim) positions of the owned P1 dofs (one per vertex), as a vector Function."""
    mesh = domain.mesh
    dim = domain.dim
    position = dolfinx.fem.Function(dolfinx.fem.functionspace(mesh, ("Lagrange", 1, (dim,))))
    position.interpolate(lambda x: x[:dim])
    return position


def _regions(domain) -> dict[int, float]:
    """Volume of each cell tag [m^dim], over all ranks."""
    dx = ufl.Measure("dx", domain.mesh, subdomain_data=domain.cell_tags)
    one = dolfinx.fem.Constant(domain.mesh, 1.0)
    return {t: COMM.allreduce(dolfinx.fem.assemble_scalar(dolfinx.fem.form(one * dx(t))), op=MPI.SUM)
            for t in (tags.TUMOUR, tags.HOST)}


@pytest.mark.parametrize("shape, h", [("disc", 4e-4), ("sphere", 8e-4)])
def test_smoothing_keeps_tagged_vertices_and_raises_the_worst_quality(shape, h):
    domain = _bisected(COMM, shape, h)
    mesh = domain.mesh
    position = _vertex_positions(domain)
    before_x, before_regions = position.x.array.copy(), _regions(domain)
    vertices = position.function_space
    tdim = mesh.topology.dim
    mesh.topology.create_connectivity(tdim - 1, tdim)
    pinned = dolfinx.fem.locate_dofs_topological(vertices, tdim - 1, np.union1d(
        dolfinx.mesh.exterior_facet_indices(mesh.topology), domain.facet_tags.indices))
    nodes = np.asarray(mesh.geometry.dofmaps[0])[: mesh.topology.index_map(tdim).size_local]
    orientation = np.sign(cell_quality(mesh.geometry.x[nodes, :tdim]))
    report = smooth_vertices(mesh, domain.facet_tags, 3)
    position.interpolate(lambda x: x[:domain.dim])
    moved = np.linalg.norm((position.x.array - before_x).reshape(-1, domain.dim), axis=1)
    assert moved[pinned].max(initial=0.0) <= 1e-12 * R   # surfaces and regions stay (interpolation round-off)
    assert COMM.allreduce(int((moved > 1e-3 * h).sum()), op=MPI.SUM) > 0   # interior vertices move
    assert _regions(domain) == pytest.approx(before_regions, rel=1e-12)
    assert np.all(np.sign(cell_quality(mesh.geometry.x[nodes, :tdim])) == orientation)   # none inverted
    assert report["min_quality_after"] > report["min_quality_before"] > 0
    assert 0 < report["max_move_m"] < h


@pytest.mark.parametrize("shape, h", [("disc", 4e-4), ("sphere", 8e-4)])
@pytest.mark.parametrize("host", [H, 0.0], ids=["in_host", "alone"])
def test_surface_vertices_slide_on_their_sphere(shape, h, host):
    """With ``surfaces``, the vertices of the tumour surface and the outer boundary (the tumour
    surface itself when alone) move along their circle/sphere and stay on it; no cell is
    inverted, the worst quality rises."""
    domain = _bisected(COMM, shape, h, host)
    mesh, dim = domain.mesh, domain.dim
    surfaces = curved_surfaces(domain)
    position = _vertex_positions(domain)
    before = position.x.array.copy().reshape(-1, dim)
    nodes = np.asarray(mesh.geometry.dofmaps[0])[: mesh.topology.index_map(dim).size_local]
    orientation = np.sign(cell_quality(mesh.geometry.x[nodes, :dim]))
    report = smooth_vertices(mesh, domain.facet_tags, 3, surfaces)
    position.interpolate(lambda x: x[:dim])
    after = position.x.array.reshape(-1, dim)
    moved = np.linalg.norm(after - before, axis=1)
    sliding = 0
    for tag, (centre, radius) in surfaces.items():
        on = dolfinx.fem.locate_dofs_topological(position.function_space, dim - 1, domain.facet_tags.find(tag))
        assert np.allclose(np.linalg.norm(after[on] - centre[:dim], axis=1), radius, rtol=1e-12, atol=0)
        sliding += COMM.allreduce(int((moved[on] > 1e-3 * h).sum()), op=MPI.SUM)
    # (on a circle bisection leaves the vertices evenly spaced but where the grading changes, and
    # there the guard keeps most of them)
    assert sliding > 0
    assert np.all(np.sign(cell_quality(mesh.geometry.x[nodes, :dim])) == orientation)
    assert report["min_quality_after"] > report["min_quality_before"] > 0


@pytest.mark.parametrize("sliding", [False, True], ids=["interior", "sliding"])
def test_smoothed_mesh_is_the_same_on_one_rank_and_on_all(sliding):
    """Each vertex, found by its position before smoothing, ends at the same place (round-off)."""
    def smoothed_pairs(comm):
        domain = _bisected(comm, "sphere", 8e-4)
        position = _vertex_positions(domain)
        before = position.x.array.reshape(-1, 3)[: position.function_space.dofmap.index_map.size_local].copy()
        smooth_vertices(domain.mesh, domain.facet_tags, 3, curved_surfaces(domain) if sliding else None)
        position.interpolate(lambda x: x)
        after = position.x.array.reshape(-1, 3)[: len(before)]
        pairs = np.hstack([before, after])
        pairs = np.concatenate(COMM.allgather(pairs)) if comm is COMM else pairs
        return pairs[np.lexsort(np.round(pairs[:, :3], 12).T[::-1])]

    alone, distributed = smoothed_pairs(MPI.COMM_SELF), smoothed_pairs(COMM)
    assert alone.shape == distributed.shape
    assert np.abs(alone[:, :3] - distributed[:, :3]).max() <= 1e-14 * R   # the same vertices (interpolation round-off)
    assert np.abs(alone[:, 3:] - distributed[:, 3:]).max() <= 1e-12 * R


def test_smoothing_refuses_negative_sweeps():
    domain = tumour_mesh(COMM, "disc", R, H, 4e-4)
    with pytest.raises(ValueError, match="sweeps must be >= 0"):
        smooth_vertices(domain.mesh, domain.facet_tags, -1)
