"""Adaptive refinement of a distributed mesh for the IFP: solve, estimate, mark, refine, to a DOF budget.

Each step solves the IFP on the current mesh, computes the residual indicator of every owned cell
(:mod:`hybrid.forward.error_indicator`), marks the cells whose indicators make up
:data:`DOERFLER_FRACTION` of the estimate (Doerfler marking, global threshold), bisects the
longest edge of each marked cell, in parallel (:func:`hybrid.mesh.refine.bisect_cells`: every rank
refines what it owns, Plaza closure, tags carried, curved boundaries snapped), and smooths the
result (:func:`smooth_refined`: :data:`SMOOTHING_SWEEPS` quality-guarded Laplacian sweeps,
:func:`hybrid.mesh.smooth.smooth_vertices`, the vertices of the tumour surface and the outer
boundary sliding on their spheres). It stops at the last mesh within ``dof_budget``: when the next
Doerfler step would exceed it, only the cells with the largest indicators that fit are refined.
The final mesh is returned unsolved.

Measured (benchmarks/results/adaptive_max_error.json, from a 0.8 mm gmsh mesh to the DOFs of a
uniform gmsh mesh; ratios of the largest nodal error to gmsh's): 2 mm tumour alone 0.99x (1.74 %
of p_e against 1.75 % at 15.7k DOFs; 1.41x unsmoothed), 2 mm in a 1 mm host 0.84x (0.86x), 1.5 mm
in a 1.5 mm host 0.46x (0.47x), L2 0.55-0.75x; but a 1.5 mm tumour alone, not in the criterion,
1.10x (1.40x unsmoothed). The smoothing met the criterion pre-registered there at its second try
(interior vertices only: 1.04x for the 2 mm tumour alone), narrowly: 1, 2 or 5 sweeps instead of
3 give 1.03-1.12x for the 2 mm tumour alone (``sliding_sweeps_N`` there). Why bisection of the longest edge and
not the 8 Plaza children of every marked cell: marking all edges grows the DOFs 3-5x per step
against 1.4-1.8x and gives 1.4-2.3x gmsh's max error (``all_edges`` there, with the DOFs of every
step).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable

from mpi4py import MPI

from hybrid.forward.error_indicator import doerfler_marking, largest_cells, residual_indicator
from hybrid.mesh import TumourMesh
from hybrid.mesh.refine import bisect_cells, curved_surfaces
from hybrid.mesh.smooth import smooth_vertices

__all__ = ["adapt_to_budget", "smooth_refined", "DOERFLER_FRACTION", "SMOOTHING_SWEEPS"]

DOERFLER_FRACTION = 0.5
"""Share of the squared estimate whose cells each step refines (0.3 gave 1.29x, 0.87x, 0.60x
gmsh's max error against 0.5's 1.41x, 0.86x, 0.47x, unsmoothed: ``doerfler_0.3`` and ``residual``
in benchmarks/results/adaptive_max_error.json)."""

SMOOTHING_SWEEPS = 3
"""Guarded Laplacian sweeps after each bisection (the number the benchmark measured)."""

_FIT_TRIES = 4   # shrinking the last step's marked set to fit the budget


def _dofs(domain: TumourMesh) -> int:
    """Global P1 DOFs (mesh vertices) of ``domain``."""
    return domain.mesh.topology.index_map(0).size_global


def _fit(domain: TumourMesh, eta2, count: int, refined_dofs: int, dof_budget: int, refine: Callable):
    """(marked cells, ``refine``-d mesh) of the cells with the largest ``eta2`` whose refinement
    stays within ``dof_budget``, from a step that marked ``count`` cells for ``refined_dofs``;
    (None, None) where not even a few cells fit."""
    comm, dofs = domain.mesh.comm, _dofs(domain)
    for _ in range(_FIT_TRIES):
        count = int(0.9 * count * (dof_budget - dofs) / (refined_dofs - dofs))   # DOFs ~ marked cells
        if count < 1:
            break
        marked = largest_cells(eta2, count, comm)
        refined = refine(domain, marked)
        refined_dofs = _dofs(refined)
        if refined_dofs <= dof_budget:
            return marked, refined
    return None, None


def smooth_refined(domain: TumourMesh, sweeps: int = SMOOTHING_SWEEPS) -> None:
    """The smoothing of each refined mesh kept: ``sweeps`` guarded sweeps, the curved surfaces'
    vertices sliding on them (in place)."""
    smooth_vertices(domain.mesh, domain.facet_tags, sweeps, curved_surfaces(domain))


def adapt_to_budget(domain: TumourMesh, solve: Callable, dof_budget: int,
                    indicator: Callable = residual_indicator, *, doerfler_fraction: float = DOERFLER_FRACTION,
                    refine: Callable = bisect_cells, smooth: Callable | None = smooth_refined) -> TumourMesh:
    """``domain`` refined adaptively (see the module docstring) until its P1 DOFs would exceed
    ``dof_budget``. ``solve(domain)`` returns the P1 ``IFPSolution`` on a mesh (collective);
    ``indicator(solution)`` the non-negative value per owned cell that the marking ranks (default
    :func:`residual_indicator`'s ``eta_T^2``), ``doerfler_fraction`` the share of its sum marked per
    step, ``refine(domain, cells)`` the refinement of the marked local cells (default
    :func:`bisect_cells`), ``smooth(domain)`` what is done in place to each refined mesh kept
    (default :func:`smooth_refined`; None: nothing); benchmarks/adaptive_max_error.py measures
    other choices.

    ``geometry`` of the result adds ``adaptive_dofs`` (the budget), ``adaptive_steps`` (refinements
    made) and ``adaptive_history``, one entry per solved mesh: its DOFs, the estimate
    ``sqrt(sum eta_T^2)`` [sqrt(Pa m^dim / s)] and the cells then marked and refined. The mesh a
    refinement within the budget ends on is not solved, so the history has ``adaptive_steps``
    entries; where not even a few of the largest cells fit the budget, the last step is given up
    and the final mesh is the last solved one: ``adaptive_steps + 1`` entries, the last with
    ``marked_cells`` 0. ``timings`` adds ``adaptive_s`` (solves, indicators and refinements).
    """
    comm = domain.mesh.comm
    start = time.perf_counter()
    if _dofs(domain) > dof_budget:
        raise ValueError(f"[geometry] adaptive_dofs = {dof_budget} is below the {_dofs(domain)} DOFs of the "
                         f"initial mesh; raise adaptive_dofs or mesh_size")
    history, steps, last = [], 0, False
    while not last:
        eta2 = indicator(solve(domain))
        marked = doerfler_marking(eta2, doerfler_fraction, comm)
        refined = refine(domain, marked)
        if _dofs(refined) > dof_budget:
            marked, refined = _fit(domain, eta2, comm.allreduce(len(marked), op=MPI.SUM), _dofs(refined), dof_budget,
                                   refine)
            last = True
        history.append({"dofs": _dofs(domain), "estimate": comm.allreduce(float(eta2.sum()), op=MPI.SUM) ** 0.5,
                        "marked_cells": comm.allreduce(len(marked), op=MPI.SUM) if refined is not None else 0})
        if refined is not None:
            if smooth is not None:
                smooth(refined)
            domain, steps = refined, steps + 1
    geometry = {**domain.geometry, "adaptive_dofs": dof_budget, "adaptive_steps": steps, "adaptive_history": history}
    timings = {**domain.timings, "adaptive_s": time.perf_counter() - start}
    return replace(domain, geometry=geometry, timings=timings)
