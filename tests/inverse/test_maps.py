"""Known maps enter PINN coefficients with the imaging interpolation: a pH-triggered release
rate of a CEST pH map, with an unknown pH_50."""

import numpy as np
import pytest
import torch

from hybrid.imaging.grid import interpolate, world_m_to_voxel
from hybrid.inverse import BoundedScalar, Box, TransportProblem
from hybrid.inverse.maps import KnownMap
from hybrid.problems.release import ph_release_rate
from hybrid.records import KnownMaps, VoxelGrid

HALF = 1e-3


def test_ph_map_drives_the_release_rate_through_the_shared_rate_law():
    grid = VoxelGrid.regular([-0.9e-3, -0.9e-3, 0.0], [0.2e-3, 0.2e-3, 1e-3], (10, 10, 1))
    centres = grid.centres_m()
    ph = 7.2 - 0.8 * np.exp(-(centres[..., 0] ** 2 + centres[..., 1] ** 2) / (0.5e-3) ** 2)   # acidic core
    maps = KnownMaps(grid, ph=ph)
    ph_map = KnownMap.from_known_maps(maps, "ph", HALF)
    problem = TransportProblem(
        Box(2, HALF), {"diffusivity_lipo": 1e-12, "diffusivity_free": 1e-10,
                       "ph_50": BoundedScalar("ph_50", "1", 6.0, 7.4, initial=6.8, log=False),
                       "release_rate": lambda x, v: ph_release_rate(ph_map(x), ph_50=v["ph_50"])},
        end_time=3600.0, concentration_scale=1e-3, generator=torch.Generator().manual_seed(0))
    x = torch.rand(50, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2 - 1
    rate = problem.coefficient("release_rate", x)
    xyz = np.concatenate([x.numpy() * HALF, np.zeros((50, 1))], axis=1)
    expected_ph, _ = interpolate(ph, world_m_to_voxel(grid.affine_mm, xyz, 0))
    np.testing.assert_allclose(rate.detach().numpy(), ph_release_rate(expected_ph, ph_50=6.8), rtol=1e-10)
    # the unknown enters with its gradient: the rate grows with pH_50 (more release at a given pH)
    rate.sum().backward()
    assert problem.unknowns["ph_50"].raw.grad > 0
    assert problem.estimates()["ph_50"] == (problem.unknowns["ph_50"]().item(), "1")


def test_the_torch_lookup_is_the_imaging_interpolation_inside_and_outside_the_image():
    """KnownMap looks maps up in torch (capturable on CUDA); it must give what the FEM's numpy lookup
    gives: trilinear or nearest, edge values beyond the image, a 2-D slice or 3-D, an oblique affine;
    nearest with NaN voxels and NaN beyond the image (outside="nan", the imaging lookup's "fill")."""
    rng = np.random.default_rng(0)
    volume = rng.normal(7.0, 0.3, (6, 5, 4))
    affine = np.array([[0.20, 0.03, 0.00, -0.6], [-0.02, 0.25, 0.01, -0.5], [0.00, 0.02, 0.30, -0.4], [0, 0, 0, 1]])
    grid = VoxelGrid(affine, volume.shape)
    for dim, slice_index in ((3, None), (2, 2)):
        x = torch.as_tensor(rng.uniform(-1.4, 1.4, (400, dim)))   # x~, length 1 mm: partly outside the image
        xyz = np.concatenate([x.numpy() * HALF, np.zeros((400, 3 - dim))], axis=1)
        ijk = world_m_to_voxel(affine, xyz, slice_index)
        for method in ("linear", "nearest"):
            expected, inside = interpolate(volume, ijk, method=method, outside="nearest")
            assert 0 < inside.sum() < len(inside)
            looked_up = KnownMap(volume, grid, HALF, slice_index=slice_index or 0, method=method)(x)
            assert looked_up.dtype == torch.float64 and looked_up.shape == (400,)
            np.testing.assert_allclose(looked_up.numpy(), expected, rtol=0, atol=1e-12)
            single = KnownMap(volume, grid, HALF, slice_index=slice_index or 0, method=method)(x.float())
            assert single.dtype == torch.float32
        holes = np.where(rng.random(volume.shape) < 0.2, np.nan, volume)   # nearest: NaN voxels, NaN outside
        expected, _ = interpolate(holes, ijk, method="nearest", outside="fill", fill_value=np.nan)
        looked_up = KnownMap(holes, grid, HALF, slice_index=slice_index or 0, method="nearest", outside="nan")(x)
        assert np.isnan(expected).any() and np.isfinite(expected).any()
        np.testing.assert_array_equal(looked_up.numpy(), expected)


def test_ktrans_scale_is_the_fems_at_its_cells():
    """The PINN's Ktrans scale (hybrid.inverse.maps.KtransScale) against the FEM's
    (vascular_exchange_from_ktrans) at the cell midpoints of a tumour disc (1 mm) in 1 mm of host:
    the same nearest voxel and the same cells without a value (NaN, beyond the mask: scale 1),
    exactly; each over its region's mean Ktrans, an integral over the region that the FEM takes
    over its cells and the PINN over a grid of points. Measured host mean [1/min], a region whose
    band at the interface holds voxels of tumour Ktrans (6x): FEM 0.07131 / 0.07142 / 0.07170 at
    100 / 50 / 25 um cells, PINN 0.07246 / 0.07220 / 0.07198 with 200 / 400 / 800 points per axis
    (both converging, to about 0.0718); tumour 0.3602 / 0.3596 / 0.3600 and 0.3611 / 0.3603 / 0.3602."""
    from mpi4py import MPI

    from hybrid.forward.image_sampling import vascular_exchange_from_ktrans
    from hybrid.inverse.coupled import TumourInHost
    from hybrid.inverse.images import ktrans_scale
    from hybrid.mesh import tags, tumour_mesh
    from hybrid.problems.ifp import TissueProperties

    domain = tumour_mesh(MPI.COMM_SELF, "disc", 1e-3, 1e-3, 1e-4)
    n, voxel = 20, 0.2e-3   # a 4 mm field of view, voxel corners on the axes
    grid = VoxelGrid.regular([-1.9e-3, -1.9e-3, 0.0], [voxel, voxel, 1e-3], (n, n, 1))
    centres = grid.centres_m()
    r = np.hypot(centres[..., 0], centres[..., 1])
    rng = np.random.default_rng(0)
    ktrans = np.where(r < 1e-3, 0.3, 0.05) * (1 + 0.5 * rng.random(r.shape))   # 1/min, tumour ~6x host
    ktrans[rng.random(r.shape) < 0.1] = np.nan   # failed fits
    ktrans[r > 1.7e-3] = np.nan   # outside the fitted mask
    _, fem, stats = vascular_exchange_from_ktrans(domain, ktrans, grid.affine_mm, TissueProperties.defaults("tumour"),
                                                  TissueProperties.defaults("host"))
    geometry = TumourInHost(2, 2e-3, tumour_radius=1e-3)
    pinn = ktrans_scale({"ktrans_map": {"volume": ktrans, "grid": grid, "slice_index": 0, "label": "map"}},
                        geometry, {"tumour": geometry.in_tumour,
                                   "host": lambda x: geometry.contains(x) & ~geometry.in_tumour(x)})
    fem_means = {"tumour": stats["mean_tumour_ktrans_per_min"], "host": stats["mean_host_ktrans_per_min"]}
    for region, mean in fem_means.items():   # quadratures of one integral (docstring): 0.02 % and 0.9 %
        assert pinn.means_per_min[region] == pytest.approx(mean, rel=0.015), region
    midpoints = dolfinx_midpoints(domain)
    scale = pinn(torch.as_tensor(midpoints / 2e-3)).numpy()
    on_mesh = fem.x.array[fem.function_space.dofmap.list.ravel()]
    in_tumour = np.isin(np.arange(len(on_mesh)), domain.cell_tags.find(tags.TUMOUR))
    same_region = in_tumour == (np.hypot(*midpoints.T) < 1e-3)
    assert same_region.mean() > 0.97
    no_value = scale == 1.0
    assert 0.2 < no_value.mean() < 0.6 and np.array_equal(no_value, on_mesh == 1.0)
    means = lambda which: np.where(in_tumour, which["tumour"], which["host"])
    np.testing.assert_allclose((scale * means(pinn.means_per_min))[same_region & ~no_value],
                               (on_mesh * means(fem_means))[same_region & ~no_value], rtol=1e-12)


def dolfinx_midpoints(domain) -> np.ndarray:
    """Cell midpoints (n_cells, 2) [m] of a 2-D mesh, in the cells' local order."""
    import dolfinx

    mesh = domain.mesh
    count = mesh.topology.index_map(2).size_local + mesh.topology.index_map(2).num_ghosts
    return dolfinx.mesh.compute_midpoints(mesh, 2, np.arange(count, dtype=np.int32))[:, :2]
