"""Warm start of a release PINN on a FEM forward solve (torch, numpy, scipy; never DOLFINx).

``hybrid invert`` with ``[training] warm_start = "fem"`` solves the forward problem at the unknowns'
start values (the FEM side, in :mod:`hybrid.commands.invert`), hands its nodal fields over as a
:class:`hybrid.records.FemSnapshots`, and regresses the problem's state networks onto them before
the inversion (benchmarks/pinn_release_warmstart.py: the release law then no longer drifts from
untrained networks). No truth enters: the FEM runs at the values the inversion starts from.

- :class:`SnapshotInterpolant`: the snapshots at nondimensional (x~, t~) points, P1 on the
  Delaunay triangulation of the nodes in space, linear between snapshots in time, the nearest node
  outside the nodes' hull (between the mesh polygon and the circle of a disc).
- :func:`fit_states`: Adam (cosine schedule) then L-BFGS on the mean square of each state's error
  relative to that state's largest target value, on a fixed sample of the problem's own
  collocation points; returns the relative L2 errors on fresh points and the seconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from hybrid.records import FemSnapshots

__all__ = ["SnapshotInterpolant", "StateFit", "fit_states"]

FIT_LEARNING_RATE = 1e-3
"""Adam learning rate [1] at the start of the cosine schedule."""
FIT_FINAL_LEARNING_RATE = 1e-5
"""Adam learning rate [1] at the end of the cosine schedule."""
FIT_LBFGS_HISTORY = 50
"""Curvature pairs [count] kept by L-BFGS."""


class SnapshotInterpolant:
    """``snapshots`` at nondimensional points: x = x~ ``length`` [m], t = t~ ``time_scale`` [s]
    (clipped to the snapshots' time span); returns (n, species) [mol/m^3] in the order of
    ``species`` (default: the snapshots' own). Space: linear in each Delaunay simplex of the nodes
    (the P1 field on the FEM's own triangles up to the triangulation), the nearest node outside
    their hull; time: linear between consecutive snapshots."""

    def __init__(self, snapshots: FemSnapshots, length: float, time_scale: float,
                 species: tuple[str, ...] | None = None):
        from scipy.spatial import Delaunay, cKDTree

        if snapshots.coordinates.shape[1] < 2:
            raise ValueError("the snapshot interpolant needs nodes in 2-D or 3-D (Delaunay); got 1-D coordinates")
        species = snapshots.species if species is None else tuple(species)
        missing = [name for name in species if name not in snapshots.species]
        if missing:
            raise ValueError(f"the FEM snapshots hold {', '.join(snapshots.species)}, not {', '.join(missing)}")
        self.snapshots, self.length, self.time_scale = snapshots, float(length), float(time_scale)
        self.order = [snapshots.species.index(name) for name in species]
        self.triangulation, self.tree = Delaunay(snapshots.coordinates), cKDTree(snapshots.coordinates)

    def __call__(self, xt: np.ndarray) -> np.ndarray:
        """Values (n, species) [mol/m^3] at nondimensional points ``xt`` (n, dim + 1)."""
        times, dim = self.snapshots.times, self.snapshots.coordinates.shape[1]
        xt = np.asarray(xt, dtype=float)
        x = xt[:, :dim] * self.length
        t = np.clip(xt[:, dim] * self.time_scale, times[0], times[-1])
        simplex = self.triangulation.find_simplex(x)
        inside = simplex >= 0
        transform = self.triangulation.transform[simplex[inside]]
        barycentric = np.einsum("nij,nj->ni", transform[:, :dim], x[inside] - transform[:, dim])
        weights, vertices = np.zeros((len(x), dim + 1)), np.zeros((len(x), dim + 1), dtype=int)
        weights[inside] = np.column_stack([barycentric, 1.0 - barycentric.sum(axis=1)])
        vertices[inside] = self.triangulation.simplices[simplex[inside]]
        weights[~inside, 0] = 1.0
        vertices[~inside, 0] = self.tree.query(x[~inside])[1]
        k = np.clip(np.searchsorted(times, t) - 1, 0, len(times) - 2)
        theta = ((t - times[k]) / (times[k + 1] - times[k]))[:, None, None]
        values = self.snapshots.values[:, self.order]   # (times, species, nodes)
        before = values[k[:, None], :, vertices]         # (n, dim + 1, species)
        after = values[k[:, None] + 1, :, vertices]
        return (((1.0 - theta) * before + theta * after) * weights[:, :, None]).sum(axis=1)


@dataclass(frozen=True)
class StateFit:
    """What :func:`fit_states` reached: ``relative_l2`` [1] per state name on fresh points, the
    fitted mean square ``final_loss`` [1] (relative to each state's largest target value) on the
    fit's own points after the last step, and the ``seconds`` it took."""

    relative_l2: dict[str, float]
    final_loss: float
    seconds: float


def fit_states(problem, target, *, seed: int, adam_steps: int, lbfgs_steps: int, points: int) -> StateFit:
    """Regress ``problem.network`` (its states ``problem.states``, named ``problem.STATES``) onto
    ``target`` (nondimensional (n, dim + 1) numpy points -> (n, states) [mol/m^3] in that order,
    e.g. a :class:`SnapshotInterpolant`): ``adam_steps`` Adam steps (cosine schedule from
    ``FIT_LEARNING_RATE`` to ``FIT_FINAL_LEARNING_RATE``) then ``lbfgs_steps`` L-BFGS iterations on
    the mean square of each state's error over its largest target value, at ``points`` collocation
    points of the problem drawn with ``seed``; only the networks move (not the unknowns). Runs in
    the problem's dtype and device. ``hybrid invert``'s defaults (``[training] warm_start_*``,
    hybrid/config/invert.py): 4000 Adam steps, 1000 L-BFGS iterations, 2048 points, those of
    benchmarks/pinn_release_warmstart.py (1.2 / 1.9 / 2.3 % relative L2 for C_L / C_F / C_I on the
    pH-release twin)."""
    start = time.perf_counter()
    parameter = next(problem.network.parameters())
    generator = torch.Generator().manual_seed(seed)

    def sample():
        xt = problem.sample_collocation(points, generator).to(device=parameter.device, dtype=parameter.dtype)
        return xt, torch.as_tensor(target(xt.detach().cpu().numpy()), dtype=xt.dtype, device=xt.device)

    xt, values = sample()
    names = problem.STATES[:len(problem.states(xt[:1]))]
    if values.shape[1] != len(names):
        raise ValueError(f"the warm-start target gives {values.shape[1]} fields for the {len(names)} states "
                         f"{', '.join(names)}")
    scale = values.abs().amax(dim=0)
    if not bool((scale > 0).all()):
        zero = [name for name, s in zip(names, scale.tolist()) if s == 0]
        raise ValueError(f"the warm-start target is zero everywhere for {', '.join(zero)}: nothing to fit; "
                         "use [training] warm_start = \"none\"")
    parameters = list(problem.network.parameters())

    def closure():
        optimiser.zero_grad()
        loss = (((torch.cat(problem.states(xt), dim=1) - values) / scale) ** 2).mean()
        loss.backward()
        return loss

    optimiser = torch.optim.Adam(parameters, lr=FIT_LEARNING_RATE)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, max(adam_steps, 1),
                                                          eta_min=FIT_FINAL_LEARNING_RATE)
    for _ in range(adam_steps):
        closure()
        optimiser.step()
        schedule.step()
    if lbfgs_steps:
        optimiser = torch.optim.LBFGS(parameters, max_iter=lbfgs_steps, history_size=FIT_LBFGS_HISTORY,
                                      line_search_fn="strong_wolfe", tolerance_grad=0.0, tolerance_change=0.0)
        optimiser.step(closure)
    for p in problem.parameters():
        p.grad = None
    test, reference = sample()
    with torch.no_grad():
        final = float((((torch.cat(problem.states(xt), dim=1) - values) / scale) ** 2).mean())
        error = torch.cat(problem.states(test), dim=1) - reference
    return StateFit({name: float(error[:, i].norm() / reference[:, i].norm()) for i, name in enumerate(names)},
                    final, time.perf_counter() - start)
