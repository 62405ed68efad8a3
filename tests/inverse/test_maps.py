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
