"""Known maps enter PINN coefficients with the imaging interpolation: a pH-triggered release
rate of a CEST pH map, with an unknown pH_50."""

import numpy as np
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
    gives: trilinear or nearest, edge values beyond the image, a 2-D slice or 3-D, an oblique affine."""
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
