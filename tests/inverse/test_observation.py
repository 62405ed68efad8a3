"""The PINN's voxel-averaging operator matches the FEM's synthetic-image rule
(hybrid.forward.image_sampling.observe_on_grid), partial-volume voxels included."""

import numpy as np
import pytest
import torch
from mpi4py import MPI

import hybrid.forward  # noqa: F401  (imports DOLFINx the supported way)
import dolfinx.fem
import dolfinx.mesh

from hybrid.forward.image_sampling import observe_on_grid
from hybrid.inverse.geometry import Box
from hybrid.inverse.observation import VoxelAverage
from hybrid.records import ObservationOperator, Observations, VoxelGrid

HALF = 1e-3   # m


def _field_m(x, y):
    """A field linear in x and y (the FEM's P1 interpolant is then exact), x, y in m."""
    return 2.0 + 700.0 * x - 400.0 * y


@pytest.mark.parametrize("points_per_axis", [1, 3])
def test_voxel_average_matches_observe_on_grid(points_per_axis):
    mesh = dolfinx.mesh.create_rectangle(MPI.COMM_SELF, [[-HALF, -HALF], [HALF, HALF]], [8, 8])
    function = dolfinx.fem.Function(dolfinx.fem.functionspace(mesh, ("Lagrange", 1)))
    function.interpolate(lambda x: _field_m(x[0], x[1]))
    # 0.3 mm voxels starting outside the mesh: edge voxels are partly covered, corner ones not at all
    grid = VoxelGrid.regular([-1.17e-3, -1.13e-3, 0.0], [0.3e-3, 0.3e-3, 0.5e-3], (9, 9, 1))
    image = observe_on_grid(function, grid.shape, grid.affine_mm, points_per_axis=points_per_axis, slice_index=0)
    operator = ObservationOperator(points_per_axis=points_per_axis, dim=2)
    record = Observations("ifp", "Pa", grid, [0.0], np.where(np.isfinite(image), 0.0, np.nan), 0.0, operator)
    average = VoxelAverage(record, Box(2, HALF).contains, length=HALF)
    predicted = average.predict(lambda x: _field_m(x[:, 0] * HALF, x[:, 1] * HALF), with_time=False)
    voxels, _, _ = record.observed()
    assert predicted.shape[0] == np.isfinite(image).sum() > 0
    partial = np.isfinite(image) & (np.abs(grid.centres_m()[..., 0]) + 0.15e-3 > HALF)
    assert partial.any()   # the comparison covers partial-volume voxels
    np.testing.assert_allclose(predicted.numpy(), image[tuple(voxels.T)], rtol=1e-12, atol=1e-12)
