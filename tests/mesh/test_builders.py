"""gmsh builders: physical groups, distribution over ranks, seeded vessel placement."""

import numpy as np
import pytest
from mpi4py import MPI

import hybrid.mesh  # noqa: F401
import dolfinx.fem
import ufl

from hybrid.mesh import krogh_mesh, place_vessels, tags, tumour_mesh, vessel_patch_mesh

pytestmark = pytest.mark.mpi
COMM = MPI.COMM_WORLD


@pytest.mark.parametrize("shape, host, cells, facets", [
    ("slab", 0.0, {tags.TUMOUR}, {tags.TUMOUR_SURFACE}),
    ("slab", 1e-3, {tags.TUMOUR, tags.HOST}, {tags.TUMOUR_SURFACE, tags.OUTER_BOUNDARY}),
    ("disc", 0.0, {tags.TUMOUR}, {tags.TUMOUR_SURFACE}),
    ("disc", 1e-3, {tags.TUMOUR, tags.HOST}, {tags.TUMOUR_SURFACE, tags.OUTER_BOUNDARY}),
    ("sphere", 1e-3, {tags.TUMOUR, tags.HOST}, {tags.TUMOUR_SURFACE, tags.OUTER_BOUNDARY}),
])
def test_tumour_mesh_groups_and_measures(shape, host, cells, facets, global_tags, global_integral):
    R = 2e-3
    domain = tumour_mesh(COMM, shape, R, host, mesh_size=4e-4)
    assert global_tags(domain.cell_tags) == cells
    assert global_tags(domain.facet_tags) == facets
    dx = ufl.Measure("dx", domain=domain.mesh, subdomain_data=domain.cell_tags)
    one = dolfinx.fem.Constant(domain.mesh, 1.0)
    exact = {"slab": 2 * R, "disc": np.pi * R**2, "sphere": 4 / 3 * np.pi * R**3}[shape]
    assert global_integral(one * dx(tags.TUMOUR)) == pytest.approx(exact, rel=0.03)


def test_surface_refinement_makes_small_cells_near_the_surface():
    domain = tumour_mesh(COMM, "disc", 2e-3, 0.0, 4e-4, surface_mesh_size=5e-5, refinement_width=2e-4)
    mesh = domain.mesh
    n = mesh.topology.index_map(2).size_local
    h = mesh.h(2, np.arange(n, dtype=np.int32))
    midpoints = dolfinx.mesh.compute_midpoints(mesh, 2, np.arange(n, dtype=np.int32))
    rim = np.linalg.norm(midpoints[:, :2], axis=1) > 2e-3 - 1.5e-4
    assert COMM.allreduce(float(h[rim].max(initial=0)), op=MPI.MAX) < 1.5e-4
    assert COMM.allreduce(float(h[~rim].max(initial=0)), op=MPI.MAX) > 3e-4


def test_krogh_wall_and_outer_circle_lengths(global_integral):
    domain = krogh_mesh(COMM, 10e-6, 120e-6, mesh_size=10e-6, wall_mesh_size=2e-6)
    ds = ufl.Measure("ds", domain=domain.mesh, subdomain_data=domain.facet_tags)
    one = dolfinx.fem.Constant(domain.mesh, 1.0)
    assert global_integral(one * ds(tags.VESSEL_WALL)) == pytest.approx(2 * np.pi * 10e-6, rel=0.01)
    assert global_integral(one * ds(tags.OUTER_BOUNDARY)) == pytest.approx(2 * np.pi * 120e-6, rel=0.01)


def test_vessel_patch_tags_each_wall(global_tags, global_integral):
    domain = vessel_patch_mesh(COMM, 300e-6, 8e-6, 4, 60e-6, mesh_size=15e-6, seed=2)
    expected = {tags.TUMOUR}
    assert global_tags(domain.cell_tags) == expected
    assert global_tags(domain.facet_tags) == {tags.OUTER_BOUNDARY} | {tags.patch_vessel_wall(i) for i in range(4)}
    ds = ufl.Measure("ds", domain=domain.mesh, subdomain_data=domain.facet_tags)
    one = dolfinx.fem.Constant(domain.mesh, 1.0)
    for i in range(4):
        assert global_integral(one * ds(tags.patch_vessel_wall(i))) == pytest.approx(2 * np.pi * 8e-6, rel=0.02)


def test_vessel_placement_is_seeded_and_spaced():
    a = place_vessels(8, 500e-6, 10e-6, 80e-6, seed=7)
    b = place_vessels(8, 500e-6, 10e-6, 80e-6, seed=7)
    np.testing.assert_array_equal(a, b)
    distances = np.hypot(*(a[:, None, :] - a[None, :, :]).transpose(2, 0, 1))
    assert distances[np.triu_indices(8, 1)].min() >= 80e-6
    assert not np.array_equal(a, place_vessels(8, 500e-6, 10e-6, 80e-6, seed=8))


def test_impossible_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="could place only"):
        place_vessels(50, 200e-6, 10e-6, 80e-6, seed=0)
    with pytest.raises(ValueError, match="tumour_radius must be a positive"):
        tumour_mesh(COMM, "disc", 0.0, 0.0, 1e-4)
    with pytest.raises(ValueError, match="must exceed vessel_radius"):
        krogh_mesh(COMM, 20e-6, 10e-6, 5e-6)


def ellipse_mask(centred_grid, n=64, voxel_mm=0.25, semi_axes_mm=(5.0, 3.5)):
    """A binary ellipse on an n x n x 1 grid centred at the origin, with its NIfTI affine (mm)."""
    affine, x, y = centred_grid(n, voxel_mm, centre_offset=n / 2)
    return ((x / semi_axes_mm[0]) ** 2 + (y / semi_axes_mm[1]) ** 2 <= 1)[:, :, None], affine


def test_mask_mesh_tumour_area_and_field_of_view(global_tags, global_integral, centred_grid):
    from hybrid.mesh import mask_mesh

    mask, affine = ellipse_mask(centred_grid)
    domain = mask_mesh(COMM, mask, affine, 5e-4, surface_mesh_size=1e-4, refinement_width=3e-4)
    assert global_tags(domain.cell_tags) == {tags.TUMOUR, tags.HOST}
    assert global_tags(domain.facet_tags) == {tags.TUMOUR_SURFACE, tags.OUTER_BOUNDARY}
    dx = ufl.Measure("dx", domain=domain.mesh, subdomain_data=domain.cell_tags)
    one = dolfinx.fem.Constant(domain.mesh, 1.0)
    assert global_integral(one * dx(tags.TUMOUR)) == pytest.approx(np.pi * 5e-3 * 3.5e-3, rel=0.02)
    assert global_integral(one * dx) == pytest.approx((64 * 0.25e-3) ** 2, rel=1e-9)


def test_mask_outline_follows_affine_and_rejects_empty_masks(centred_grid):
    from hybrid.mesh import mask_outline

    mask, affine = ellipse_mask(centred_grid)
    shifted = affine.copy()
    shifted[:3, 3] += [10.0, -4.0, 0.0]   # mm
    a, b = mask_outline(mask, affine), mask_outline(mask, shifted)
    np.testing.assert_allclose(b - a, np.tile([10e-3, -4e-3], (len(a), 1)), atol=1e-12)
    with pytest.raises(ValueError, match="fewer than 4 tumour voxels"):
        mask_outline(np.zeros((8, 8, 1), bool), affine)


def test_meshes_are_reproducible_run_to_run():
    counts = [COMM.allreduce(tumour_mesh(COMM, "sphere", 1e-3, 0.0, 2e-4, 1e-4, 2e-4).mesh.topology.index_map(0)
                             .size_local, op=MPI.SUM) for _ in range(2)]
    assert counts[0] == counts[1]
