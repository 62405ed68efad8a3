"""The observation operator evaluates each sub-voxel point in the cell that contains it. DOLFINx
reports a cell as colliding with a point up to an absolute 1e-6 m away, so on meshes in metres a
point near an edge collides with both cells beside it; evaluated in the first one reported, a P1
field was extrapolated from the wrong side, and which cell came first depended on the partition
(``hybrid synthesize`` of the tumour-in-host twin differed by 7.9e-4 in released fraction between 1
and 2 ranks). Run again under ``mpirun -n 2``: the distributed image equals the serial one."""

import numpy as np
import pytest
from mpi4py import MPI

import hybrid.forward  # noqa: F401  (imports DOLFINx the supported way)
import dolfinx.fem
import dolfinx.geometry
import dolfinx.mesh

from hybrid.forward.image_sampling import observe_on_grid

pytestmark = pytest.mark.mpi

L = 1e-3   # m


def _point_image(function, point_m) -> float:
    """The one-voxel image (one sub-voxel point) of ``function`` at ``point_m`` (3,) [m]."""
    affine = np.eye(4)
    affine[:3, 3] = 1e3 * np.asarray(point_m)
    return float(observe_on_grid(function, (1, 1, 1), affine, points_per_axis=1)[0, 0, 0])


def test_a_point_beside_an_edge_takes_the_value_of_its_own_cell():
    """One square of side 1 mm cut along its diagonal (0, 0)-(L, L); f = x y / L^2 at the vertices
    is x / L in the upper triangle and y / L in the lower one. A point 0.14 um above the diagonal
    collides with both triangles (DOLFINx's tolerance) and must read x / L, not y / L."""
    mesh = dolfinx.mesh.create_unit_square(MPI.COMM_SELF, 1, 1)
    mesh.geometry.x[:] *= L
    corners = mesh.geometry.x[mesh.geometry.dofmaps[0]][:, :, :2]
    assert all(any(np.allclose(v, [0, 0]) for v in cell) and any(np.allclose(v, [L, L]) for v in cell)
               for cell in corners), "the test needs the diagonal (0, 0)-(L, L)"
    f = dolfinx.fem.Function(dolfinx.fem.functionspace(mesh, ("Lagrange", 1)))
    f.interpolate(lambda x: x[0] * x[1] / L ** 2)
    offset = 1e-4 * L
    point = np.array([0.5 * L - offset, 0.5 * L + offset, 0.0])
    tree = dolfinx.geometry.bb_tree(mesh, 2)
    colliding = dolfinx.geometry.compute_colliding_cells(
        mesh, dolfinx.geometry.compute_collisions_points(tree, point[None]), point[None])
    assert len(colliding.links(0)) == 2   # the premise: both triangles are reported
    assert _point_image(f, point) == pytest.approx(point[0] / L, rel=1e-12)   # not y / L = 0.5001


def test_distributed_image_equals_the_serial_one(comm):
    """A non-linear P1 field on a 2 x 2 mm structured mesh (0.2 mm squares cut along a diagonal)
    observed on 0.1 mm voxels with 3 x 3 points each, the grid shifted 0.3 um in x so that many
    points lie that close beside a diagonal edge: the image on the distributed mesh equals, to
    rounding, the one every rank computes on its own serial copy."""
    shape = (24, 24, 1)
    affine = np.diag([0.1, 0.1, 1.0, 1.0])
    affine[:2, 3] = [-1.15 + 3e-4, -1.15]   # voxel centres about -1.15 .. 1.15 mm: the outer ring off the mesh

    def image(communicator):
        mesh = dolfinx.mesh.create_rectangle(communicator, [[-L, -L], [L, L]], [10, 10],
                                             dolfinx.mesh.CellType.triangle)
        f = dolfinx.fem.Function(dolfinx.fem.functionspace(mesh, ("Lagrange", 1)))
        f.interpolate(lambda x: np.sin(3e3 * x[0]) * np.cos(2e3 * x[1]) + (x[0] / L) ** 2)
        return observe_on_grid(f, shape, affine, points_per_axis=3)

    distributed, serial = image(comm), image(MPI.COMM_SELF)
    assert np.array_equal(np.isnan(distributed), np.isnan(serial)) and np.isfinite(serial).sum() == 400
    np.testing.assert_allclose(distributed, serial, rtol=0.0, atol=1e-13)
