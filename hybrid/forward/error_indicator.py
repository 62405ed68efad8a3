"""A-posteriori error indicator of the P1 IFP solution and the cell marking of adaptive refinement.

Residual estimator of the energy norm ``||K^1/2 grad(p - p_h)||`` (Verfuerth), per cell ``T``::

    eta_T^2 = h_T^2 ||r||_T^2 / K_T  +  sum over the interior facets F of T of  1/2 h_T ||[K grad p_h . n]||_F^2 / K_T

with ``r = Lp S/V (p_e - p_h) - LpL SL/V (p_h - p_L)`` the fluid source (``div(K grad p_h) = 0``
inside a P1 cell with piecewise-constant K), ``h_T`` the longest edge [m] and ``[.]`` the jump of
the normal flux across F. Outer-boundary facets carry no term (exact for a Dirichlet boundary;
the Robin and no-flux boundary residuals are left out). ``eta_T^2`` is in Pa m^dim / s.

MPI: each rank computes the indicators of the cells it owns. The flux jump of a facet shared by
two ranks (no ghost cells) is summed over the ranks on DOLFINx's facet index map, so an indicator
does not depend on the partition; the marking threshold is found with global reductions.
"""

from __future__ import annotations

import math

import numpy as np
import ufl
from mpi4py import MPI

import dolfinx.fem
import dolfinx.la
import dolfinx.mesh

__all__ = ["residual_indicator", "doerfler_marking", "largest_cells", "cellwise_values"]


def cellwise_values(mesh: dolfinx.mesh.Mesh, expression) -> np.ndarray:
    """``expression`` (UFL, cellwise constant or evaluated at the midpoint) per owned cell."""
    space = dolfinx.fem.functionspace(mesh, ("DG", 0))
    values = dolfinx.fem.Function(space)
    values.interpolate(dolfinx.fem.Expression(expression, space.element.interpolation_points))
    cells = np.arange(mesh.topology.index_map(mesh.topology.dim).size_local)
    return values.x.array[space.dofmap.list[cells, 0]]


def residual_indicator(solution) -> np.ndarray:
    """``eta_T^2`` [Pa m^dim / s] of the P1 ``solution`` (an ``IFPSolution``) on each cell this rank
    owns, in local cell order (see the module docstring). Piecewise-constant K (region values or
    a DG0 field) and affine simplex meshes only."""
    pressure = solution.pressure
    space = pressure.function_space
    mesh = space.mesh
    tdim, gdim = mesh.topology.dim, mesh.geometry.dim
    if space.element.basix_element.degree != 1:
        raise ValueError("the residual error indicator needs a P1 pressure; use [solver] degree = 1 "
                         "with adaptive refinement")
    if tdim != gdim or tdim not in (2, 3):
        raise ValueError(f"the residual error indicator needs a 2-D or 3-D mesh in its own space, got "
                         f"topology {tdim}-D in {gdim}-D")
    conductivity = solution.coefficients["hydraulic_conductivity"]
    cells = np.arange(mesh.topology.index_map(tdim).size_local, dtype=np.int32)
    k = cellwise_values(mesh, conductivity)
    x = mesh.geometry.x[np.asarray(mesh.geometry.dofmaps[0])[cells], :tdim]          # (cells, tdim+1, tdim)
    diameter = np.max([np.linalg.norm(x[:, i] - x[:, j], axis=1)
                       for i in range(tdim + 1) for j in range(i)], axis=0)       # h_T, longest edge [m]
    # element residual h_T^2 ||r||_T^2 (quadrature of the P1-dependent source), per owned cell
    dg0 = dolfinx.fem.functionspace(mesh, ("DG", 0))
    residual = dolfinx.fem.assemble_vector(dolfinx.fem.form(solution.fluid_source ** 2 * ufl.TestFunction(dg0) * ufl.dx))
    eta2 = diameter ** 2 * residual.array[dg0.dofmap.list[cells, 0]] / k

    # flux jumps: grad of the barycentric coordinates; facet j of a simplex is opposite vertex j,
    # its outward normal times its measure is -dim |T| grad(lambda_j)
    edges = x[:, 1:] - x[:, :1]
    inverse = np.linalg.inv(edges)                                                   # columns: grad lambda_1..d
    grad_lambda = np.concatenate([-inverse.sum(axis=2, keepdims=True), inverse], axis=2).transpose(0, 2, 1)
    p = pressure.x.array[np.asarray(space.dofmap.list)[cells]]                       # (cells, tdim+1)
    flux = k[:, None] * np.einsum("cj,cjd->cd", p, grad_lambda)                      # K grad p_h
    volume = np.abs(np.linalg.det(edges)) / math.factorial(tdim)
    normal_measure = -tdim * volume[:, None, None] * grad_lambda                     # n_F |F| per local facet
    outflow = np.einsum("cd,cjd->cj", flux, normal_measure)                          # K grad p_h . n |F|
    mesh.topology.create_connectivity(tdim, tdim - 1)
    mesh.topology.create_connectivity(tdim - 1, tdim)
    facets = np.asarray(mesh.topology.connectivity(tdim, tdim - 1).array).reshape(-1, tdim + 1)[cells]
    jump = dolfinx.la.vector(mesh.topology.index_map(tdim - 1))
    jump.array[:] = 0.0
    np.add.at(jump.array, facets.ravel(), outflow.ravel())
    jump.scatter_reverse(dolfinx.la.InsertMode.add)
    jump.scatter_forward()
    jump.array[dolfinx.mesh.exterior_facet_indices(mesh.topology)] = 0.0
    facet_measure = np.linalg.norm(normal_measure, axis=2)
    eta2 += 0.5 * diameter / k * (jump.array[facets] ** 2 / facet_measure).sum(axis=1)
    return eta2


def _threshold(eta2: np.ndarray, comm: MPI.Comm, holds) -> tuple[float, float]:
    """Bisection over all ranks for a property ``holds(eta2 >= t)`` that holds for small t, not for
    large: (largest t found where it holds, smallest where it does not); ``holds`` gets the local
    mask and must reduce globally."""
    low, high = 0.0, comm.allreduce(float(eta2.max(initial=0.0)), op=MPI.MAX)
    for _ in range(64):
        middle = 0.5 * (low + high)
        if holds(eta2 >= middle):
            low = middle
        else:
            high = middle
    return low, high


def doerfler_marking(eta2: np.ndarray, fraction: float, comm: MPI.Comm) -> np.ndarray:
    """Local indices of the cells with the largest indicators whose ``eta2`` sum to at least
    ``fraction`` of the global total (Doerfler / bulk marking)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"the Doerfler fraction must be in (0, 1], got {fraction}")
    total = comm.allreduce(float(eta2.sum()), op=MPI.SUM)
    low, _ = _threshold(eta2, comm, lambda mask: comm.allreduce(float(eta2[mask].sum()), op=MPI.SUM)
                        >= fraction * total)
    return np.flatnonzero(eta2 >= low).astype(np.int32)


def largest_cells(eta2: np.ndarray, count: int, comm: MPI.Comm) -> np.ndarray:
    """Local indices of the cells with the largest indicators, at most ``count`` over all ranks
    (cells of equal indicators are taken or left together; all of them when more than ``count``
    share the largest)."""
    _, high = _threshold(eta2, comm, lambda mask: comm.allreduce(int(mask.sum()), op=MPI.SUM) > count)
    return np.flatnonzero(eta2 >= high).astype(np.int32)
