"""Small closed-form twin experiments shared by the inverse tests (1-D slab, voxel-averaged, noisy)."""

import math

import numpy as np
import torch

from hybrid.inverse import BoundedScalar, Box, IFPProblem, TransportProblem
from hybrid.problems.exact import baxter_jain_pressure
from hybrid.records import ObservationOperator, Observations, VoxelGrid

# IFP slab: alpha = R sqrt(Lp S/V / K) = 4.4, rim sqrt(K / Lp S/V) = 0.459 mm
R, K, LPSV, PE = 2e-3, 4.0e-13, 1.9e-6, 1500.0
# release: slab |x| < L, zero drug on the boundary, liposomes released at k_rel and free drug taken up
L, T, C0 = 1e-3, 3600.0, 2e-3
D_L, D_F, K_REL, K_UP = 1e-12, 1.5e-10, 2e-4, 5e-4
OPERATOR = ObservationOperator(points_per_axis=3, dim=1)


def slab_grid(half_width, voxels):
    return VoxelGrid.regular([-half_width + half_width / voxels, 0, 0], [2 * half_width / voxels, 1e-3, 1e-3],
                             (voxels, 1, 1))


def voxel_points(grid):
    """Sub-voxel x [m] (voxels, 3) of the observation operator."""
    return OPERATOR.voxel_points(grid, np.argwhere(np.ones(grid.shape)))[..., 0]


def ifp_pressure(x, rim, pe):
    return baxter_jain_pressure(1, x, R, R / rim, pe)


def ifp_observations(noise=0.02, voxels=40, seed=0):
    grid = slab_grid(R, voxels)
    clean = ifp_pressure(voxel_points(grid), math.sqrt(K / LPSV), PE).mean(axis=1)
    sd = noise * PE
    noisy = clean + sd * np.random.default_rng(seed).standard_normal(voxels)
    return Observations("ifp", "Pa", grid, [0.0], noisy.reshape(voxels, 1, 1), sd, OPERATOR)


def ifp_problem(observations, seed=0, unknown_exchange=False):
    coefficients = {"conductivity": BoundedScalar("conductivity", "m^2/(Pa s)", 1e-14, 1e-11),
                    "vascular_exchange": LPSV,
                    "effective_pressure": BoundedScalar("effective_pressure", "Pa", 0.0, 5000.0, log=False)}
    if unknown_exchange:
        coefficients["vascular_exchange"] = BoundedScalar("vascular_exchange", "1/(Pa s)", 1e-7, 1e-5)
    return IFPProblem(Box(1, R), coefficients, observations=observations, pressure_scale=1000.0,
                      generator=torch.Generator().manual_seed(seed))


def release_solution(x, t, k_rel=K_REL):
    """Closed form (C_L, C_F) [mol/m^3] (tests/inverse/test_residuals.py checks it solves the PDEs)."""
    mu = (math.pi / (2 * L)) ** 2
    b_l, b_f = D_L * mu + k_rel, D_F * mu + K_UP
    mode = np.cos(math.pi * x / (2 * L))
    return C0 * mode * np.exp(-b_l * t), k_rel * C0 * (np.exp(-b_l * t) - np.exp(-b_f * t)) / (b_f - b_l) * mode


def release_observations(noise=0.05, voxels=20, times=(600.0, 1800.0, 3600.0), seed=0):
    grid, times = slab_grid(L, voxels), np.asarray(times)
    x = voxel_points(grid)
    rng = np.random.default_rng(seed)
    records = []
    for quantity in ("total_drug", "free_drug"):
        frames = []
        for t in times:
            lipo, free = release_solution(x, t)
            frames.append((lipo + free if quantity == "total_drug" else free).mean(axis=1))
        clean = np.stack(frames, axis=-1)
        sd = noise * np.abs(clean).max()
        noisy = clean + sd * rng.standard_normal(clean.shape)
        records.append(Observations(quantity, "mol/m^3", grid, times, noisy.reshape(voxels, 1, 1, -1), sd, OPERATOR))
    return tuple(records)


def release_problem(observations, seed=0):
    return TransportProblem(
        Box(1, L), {"diffusivity_lipo": D_L, "diffusivity_free": D_F, "uptake_rate": K_UP,
                    "release_rate": BoundedScalar("release_rate", "1/s", 1e-6, 1e-2)},
        end_time=T, concentration_scale=C0, observations=observations,
        initial_lipo=lambda x: C0 * torch.cos(math.pi * x[:, 0] / 2), width=32, depth=3, features=16,
        generator=torch.Generator().manual_seed(seed))


def disc_ifp_observations(noise=0.05, voxels=20, seed=0):
    """2-D disc tumour (radius R) on a voxel grid 10 % wider than the disc: edge voxels are partial
    volumes (mean over their sub-voxel points inside the disc), corner voxels see no tissue (NaN)."""
    operator = ObservationOperator(points_per_axis=3, dim=2)
    h = 2 * R / voxels * 1.1
    corner = -(voxels - 1) / 2 * h
    grid = VoxelGrid.regular([corner, corner, 0.0], [h, h, 1e-3], (voxels, voxels, 1))
    points = operator.voxel_points(grid, np.argwhere(np.ones(grid.shape)))
    r = np.linalg.norm(points, axis=-1)
    inside = r <= R

    def image(rim, pe):
        p = np.where(inside, baxter_jain_pressure(2, np.minimum(r, R), R, R / rim, pe), 0.0)
        with np.errstate(invalid="ignore"):
            return np.where(inside.any(axis=1), (p * inside).sum(axis=1) / inside.sum(axis=1), np.nan)

    sd = noise * PE
    noisy = image(math.sqrt(K / LPSV), PE) + sd * np.random.default_rng(seed).standard_normal(voxels * voxels)
    return Observations("ifp", "Pa", grid, [0.0], noisy.reshape(voxels, voxels, 1), sd, operator), image
