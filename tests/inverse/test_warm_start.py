"""hybrid.inverse.warm_start: the space-time interpolant of FEM snapshots (exact on a field linear
in space and time inside the nodes' hull, the nearest node outside it) and the supervised fit of a
release problem's state networks onto a smooth field."""

import math

import numpy as np
import pytest
import torch

from hybrid.inverse import Ball, TransportProblem
from hybrid.inverse.warm_start import SnapshotInterpolant, fit_states
from hybrid.records import FemSnapshots

torch.set_num_threads(1)   # two shared cores: one thread is faster than two contending

R, T, C0 = 1.0e-3, 3600.0, 1.0e-3   # disc radius [m], end time [s], concentration scale [mol/m^3]
SPECIES = ("liposomal_drug", "free_drug", "cell_drug")


def _disc_nodes(rings: int = 8) -> np.ndarray:
    """Nodes [m] on concentric rings of the disc |x| <= R (a polygon inside the circle)."""
    nodes = [np.zeros((1, 2))]
    for ring in range(1, rings + 1):
        angles = np.linspace(0.0, 2 * math.pi, 6 * ring, endpoint=False)
        nodes.append(R * ring / rings * np.column_stack([np.cos(angles), np.sin(angles)]))
    return np.concatenate(nodes)


def _snapshots(field, nodes: np.ndarray, times: np.ndarray) -> FemSnapshots:
    """``field(x [m] (n, 2), t [s]) -> (3, n)`` sampled at the nodes and times."""
    return FemSnapshots(nodes, times, np.stack([field(nodes, t) for t in times]), SPECIES)


def _linear(x, t):
    return np.stack([1.0 + 200.0 * x[:, 0] - 300.0 * x[:, 1] + 1e-3 * t,
                     2.0 - 500.0 * x[:, 0] + 2e-4 * t,
                     0.5 + 100.0 * x[:, 1] - 1e-4 * t])


def test_interpolant_is_exact_on_a_linear_field_and_takes_the_nearest_node_outside():
    nodes, times = _disc_nodes(), np.array([0.0, 60.0, 300.0, 3600.0])
    interpolant = SnapshotInterpolant(_snapshots(_linear, nodes, times), R, T)
    rng = np.random.default_rng(0)
    radius, angle = 0.95 * np.sqrt(rng.random(500)), 2 * math.pi * rng.random(500)   # x~ inside the nodes' hull
    xt = np.column_stack([radius * np.cos(angle), radius * np.sin(angle), rng.random(500)])
    expected = _linear(xt[:, :2] * R, xt[:, 2] * T).T
    assert np.abs(interpolant(xt) - expected).max() < 1e-12 * np.abs(expected).max()
    outside = np.array([[0.0, 1.2, 0.5], [-1.1, 0.0, 2.0]])   # beyond the hull; t~ = 2 is past the last snapshot
    nearest = [np.argmin(np.linalg.norm(nodes - point[:2] * R, axis=1)) for point in outside]
    values = _linear(nodes[nearest], np.minimum(outside[:, 2] * T, times[-1])).T
    assert np.allclose(interpolant(outside), values, rtol=1e-12)
    reordered = SnapshotInterpolant(_snapshots(_linear, nodes, times), R, T, species=SPECIES[::-1])
    assert np.array_equal(reordered(xt), interpolant(xt)[:, ::-1])
    with pytest.raises(ValueError, match="not pressure"):
        SnapshotInterpolant(_snapshots(_linear, nodes, times), R, T, species=("pressure",))


def _smooth(x, t):
    """Drug-like fields [mol/m^3], zero at t = 0 (the release ansatz C = t N keeps that exactly)."""
    r2, s = (x ** 2).sum(axis=1) / R ** 2, t / T
    return C0 * np.stack([s * (1.0 - 0.4 * r2) * np.exp(-s),
                          0.02 * s * (1.0 - s) * (1.0 + 0.5 * x[:, 0] / R),
                          0.5 * s ** 2 * (1.0 - 0.3 * r2)])


def test_fit_reaches_a_smooth_field():
    """Measured (300 Adam + 600 L-BFGS, 1024 points, float64, width 32 x depth 2, 8 Fourier
    features; 22 s at load 5 on the shared 2-core box): relative L2 0.65 / 0.61 / 0.61 % for
    C_L / C_F / C_I (with 512 points 1.6 / 1.5 / 1.7 %: the fixed sample limits it). The bound 2 %
    is 3 times the measured error; an untrained network or targets in the wrong order or scale are
    off by O(1)."""
    nodes, times = _disc_nodes(12), np.linspace(0.0, T, 61)
    problem = TransportProblem(Ball(2, R), {"diffusivity_lipo": 1e-12, "diffusivity_free": 1e-10,
                                            "release_rate": 1e-5},
                               end_time=T, concentration_scale=C0, boundary="free", cell_drug=True,
                               state_scales=(1.0, 0.02, 1.0), width=32, depth=2, features=8,
                               generator=torch.Generator().manual_seed(0)).double()
    before = {name: p.detach().clone() for name, p in problem.named_parameters()}
    fit = fit_states(problem, SnapshotInterpolant(_snapshots(_smooth, nodes, times), R, T), seed=1,
                     adam_steps=300, lbfgs_steps=600, points=1024)
    assert set(fit.relative_l2) == set(SPECIES) and fit.seconds > 0
    assert all(error < 0.02 for error in fit.relative_l2.values())
    changed = {name for name, p in problem.named_parameters() if not torch.equal(p, before[name])}
    assert changed and all(name.startswith("network.") for name in changed)
