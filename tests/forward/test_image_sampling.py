"""Image <-> mesh: trilinear sampling reproduces linear fields exactly (also through a rotated,
anisotropic affine with the mm -> m conversion), the outside rules, 2-D slices, physics converters,
and the observation operator against analytic voxel means. Run again under ``mpirun -n 2``."""

import numpy as np
import pytest
from mpi4py import MPI

import hybrid.forward  # noqa: F401  (imports DOLFINx the supported way)
import dolfinx.fem
import dolfinx.mesh

from hybrid.forward.image_sampling import (
    mask_field, observe_on_grid, permeability_surface_field, ph_field, sample_image)
from hybrid.imaging.grid import voxel_to_world_m
from hybrid.problems.exchange import ktrans_to_permeability_surface

pytestmark = pytest.mark.mpi

COMM = MPI.COMM_WORLD
GRAD = np.array([3.0, -2.0, 5.0])   # linear test field f = GRAD . x [per m] + 7
SHAPE = (40, 40, 12)                # rotated test grid


def _rotated_affine():
    """Voxel (0.5, 0.4, 1.2) mm, rotated 30 deg about z and 10 deg about x; the centre of the
    (40, 40, 12) grid at world (0.3, -0.2, 0.1) mm."""
    a, b = np.deg2rad(30.0), np.deg2rad(10.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag([0.5, 0.4, 1.2])
    affine[:3, 3] = np.array([0.3, -0.2, 0.1]) - affine[:3, :3] @ (0.5 * (np.array(SHAPE) - 1))
    return affine


def _linear_volume(shape, affine):
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    return voxel_to_world_m(affine, ijk) @ GRAD + 7.0


@pytest.fixture(scope="module")
def cube():
    """[-2, 2]^3 mm, well inside the rotated image."""
    return dolfinx.mesh.create_box(COMM, [[-2e-3] * 3, [2e-3] * 3], [6, 6, 6])


@pytest.mark.parametrize("space", ["P1", "DG0"])
def test_trilinear_is_exact_for_linear_fields_through_rotated_affine(cube, space):
    """A field linear in world metres, stored on a rotated anisotropic grid in mm, is recovered
    exactly at the mesh's dofs (P1 vertices, DG0 midpoints): checks mm -> m and the rotation."""
    affine = _rotated_affine()
    f = sample_image(cube, _linear_volume(SHAPE, affine), affine, space=space)
    x = f.function_space.tabulate_dof_coordinates()
    assert np.max(np.abs(f.x.array - (x @ GRAD + 7.0))) < 1e-11


def test_mm_to_m_scaling_matters(cube):
    """An affine in metres read as mm would put the mesh 1000x off: exactness is lost."""
    affine = _rotated_affine()
    wrong = affine.copy()
    wrong[:3, :] *= 1e-3
    f = sample_image(cube, _linear_volume(SHAPE, affine), wrong)
    x = f.function_space.tabulate_dof_coordinates()
    assert np.max(np.abs(f.x.array - (x @ GRAD + 7.0))) > 1e-3


def test_outside_rules():
    """Mesh [0, 4] mm, image covers voxel centres 0..9 at 0.25 mm (edge at 2.375 mm): 'fill' gives
    the fill value beyond the edge, 'nearest' the edge voxel; nearest-voxel sampling inside."""
    mesh = dolfinx.mesh.create_box(COMM, [[0.0] * 3, [4e-3, 1e-3, 1e-3]], [16, 2, 2])
    affine = np.diag([0.25, 0.25, 0.25, 1.0])
    volume = np.broadcast_to(np.arange(10.0)[:, None, None], (10, 6, 6)).copy()
    x = dolfinx.fem.functionspace(mesh, ("Lagrange", 1)).tabulate_dof_coordinates()[:, 0]
    beyond = x > 2.375e-3 + 1e-12
    filled = sample_image(mesh, volume, affine, outside="fill", fill_value=-1.0)
    assert np.all(filled.x.array[beyond] == -1.0) and np.all(filled.x.array[~beyond] >= 0.0)
    edge = sample_image(mesh, volume, affine, outside="nearest")
    assert np.all(edge.x.array[beyond] == 9.0)
    nearest = sample_image(mesh, volume, affine, method="nearest")
    inside = x < 2.25e-3 - 1e-9
    assert np.allclose(nearest.x.array[inside], np.floor(x[inside] / 0.25e-3 + 0.5))
    with pytest.raises(ValueError, match="outside must be one of"):
        sample_image(mesh, volume, affine, outside="zero")


def test_2d_mesh_samples_chosen_slice():
    """A 2-D mesh is laid on slice k; other slices are ignored; multi-slice needs slice_index."""
    mesh = dolfinx.mesh.create_rectangle(COMM, [[-1e-3, -1e-3], [1e-3, 1e-3]], [8, 8])
    affine = np.diag([0.1, 0.1, 2.0, 1.0])
    affine[:3, 3] = [-3.0, -3.0, -5.0]
    shape = (61, 61, 3)
    volume = _linear_volume(shape, affine) + 100.0 * np.arange(3)[None, None, :]
    f = sample_image(mesh, volume, affine, slice_index=2)
    xy = f.function_space.tabulate_dof_coordinates()[:, :2]
    assert np.max(np.abs(f.x.array - (xy @ GRAD[:2] + 7.0 + GRAD[2] * (-5e-3 + 4e-3) + 200.0))) < 1e-10
    with pytest.raises(ValueError, match="slice_index"):
        sample_image(mesh, volume, affine)


def test_converters_and_mask(cube):
    """Ktrans 0.6 /min -> PS/V 0.01 /s; pH and mask fields; NaN maps are refused."""
    affine = np.diag([0.5, 0.5, 0.5, 1.0])
    affine[:3, 3] = -5.0
    shape = (21, 21, 21)
    assert ktrans_to_permeability_surface(0.6) == pytest.approx(0.01)
    ps = permeability_surface_field(cube, np.full(shape, 0.6), affine)
    assert ps.name == "permeability_surface" and np.allclose(ps.x.array, 0.01)
    assert np.allclose(ph_field(cube, np.full(shape, 6.8), affine).x.array, 6.8)
    mask = np.zeros(shape)
    mask[:10] = 1.0                       # x index < 10 -> world x < -0.25 mm
    m = mask_field(cube, mask, affine)
    mid = m.function_space.tabulate_dof_coordinates()[:, 0]
    assert np.all(m.x.array[mid < -0.3e-3] == 1.0) and np.all(m.x.array[mid > -0.2e-3] == 0.0)
    bad = np.full(shape, 6.8)
    bad[10, 10, 10] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ph_field(cube, bad, affine)


@pytest.mark.parametrize("n", [2, 4])
def test_observe_matches_analytic_voxel_means(n):
    """f = x^2 + y z (P2, exact on the mesh): the midpoint rule on n^3 points per voxel gives
    c_x^2 + c_y c_z + h_x^2/12 (1 - 1/n^2); the exact voxel mean is c_x^2 + c_y c_z + h_x^2/12.
    Voxels off the mesh are NaN, and every rank holds the same image."""
    mesh = dolfinx.mesh.create_box(COMM, [[0.0] * 3, [2e-3, 2e-3, 1e-3]], [5, 5, 3])
    space = dolfinx.fem.functionspace(mesh, ("Lagrange", 2))
    f = dolfinx.fem.Function(space)
    f.interpolate(lambda x: x[0] ** 2 + x[1] * x[2])
    h = np.array([0.25, 0.2, 0.25])                  # voxel size [mm]
    affine = np.diag([*h, 1.0])
    affine[:3, 3] = 0.5 * h                          # voxel (0,0,0) spans [0, h]
    shape = (10, 12, 5)                              # x: 2.5 mm > mesh, y: 2.4 mm > mesh
    image = observe_on_grid(f, shape, affine, points_per_axis=n)
    c = voxel_to_world_m(affine, np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1))
    hx = h[0] * 1e-3
    exact = c[..., 0] ** 2 + c[..., 1] * c[..., 2] + hx ** 2 / 12
    covered = image[:8, :10, :4]
    assert np.allclose(covered, exact[:8, :10, :4] - hx ** 2 / (12 * n ** 2), rtol=1e-9, atol=1e-16)
    assert np.max(np.abs(covered - exact[:8, :10, :4])) <= hx ** 2 / (12 * n ** 2) * (1 + 1e-6)
    assert np.all(np.isnan(image[8:])) and np.all(np.isnan(image[:, 10:])) and np.all(np.isnan(image[:, :, 4:]))
    gathered = COMM.allgather(image)
    assert all(np.array_equal(g, image, equal_nan=True) for g in gathered)


def test_round_trip_image_mesh_image(cube):
    """Linear map -> P1 on the mesh -> voxel means on the same grid gives the map back exactly in
    voxels away from the image edge; the outer half-voxel band holds the edge value (documented
    rule), which reaches into the mesh cells (0.67 mm) touching it, so voxels within two of the
    edge differ: at most by the largest vertex error, |grad f|_1 h / 2 (a vertex lies at most half a
    voxel beyond the outermost centres; P1 interpolation and averaging cannot exceed it)."""
    affine = np.diag([0.5, 0.5, 0.5, 1.0])
    affine[:3, 3] = -1.75                            # voxels tile [-2, 2] mm exactly: 8^3
    shape = (8, 8, 8)
    volume = _linear_volume(shape, affine)
    f = sample_image(cube, volume, affine)
    back = observe_on_grid(f, shape, affine, points_per_axis=3)
    assert np.max(np.abs(back - volume)[2:-2, 2:-2, 2:-2]) < 1e-9
    assert np.max(np.abs(back - volume)) <= np.abs(GRAD).sum() * 0.5e-3 / 2
