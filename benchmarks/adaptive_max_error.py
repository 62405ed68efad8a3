"""Where the 3-D max IFP error of adaptive refinement sits for a tumour alone, and variants aimed at it.

Problem as in benchmarks/refine_accuracy.py: Baxter-Jain IFP, default tumour (and host) values,
``p = 0`` on the outer boundary, P1. Cases: a sphere alone of R = 2 mm against gmsh at 0.12 mm
(the case of the tumour-alone test in tests/mesh/test_refine.py), one of 1.5 mm against gmsh at 0.1 mm
(not tuned on), and refine_accuracy's host cases (2 mm in a 1 mm host, 1.5 mm in 1.5 mm; gmsh at
0.2 mm). Every adaptive mesh starts from gmsh at 0.8 mm and is refined up to the gmsh mesh's DOFs
(``hybrid.forward.adaptive.adapt_to_budget``, Doerfler fraction 0.5).

``locate`` (tumours alone, the residual indicator, unsmoothed bisection), gmsh and adaptive: per shell of
depth R - |x| [m] the cells (by midpoint), their median longest edge [m] and tet quality
(6 sqrt(2) V / l_rms^3), the indicator's share, the largest and the mean signed nodal error over p_e;
the node of the largest error: its depth, signed error, the quality of its cells and their rank
by indicator (0 = largest); the surface triangulation: median longest edge [m], sag of the facet
centroids below the sphere [m], volume deficit; and the max error after the mesh is scaled
radially to the exact volume (what the mean chord shrink of the Dirichlet surface costs).

``variants``: adaptive max and L2 errors (and their ratios to gmsh's), the DOFs of every solved
mesh (``history_dofs``) and the median and smallest tet quality, with the cell value marked
(Doerfler 0.5 on it) being
- ``residual``: the library's ``eta_T^2`` [Pa m^3 / s, as K Pa^2 m], unsmoothed bisection;
- ``residual_geometry``: plus, on cells with a facet F on the curved Dirichlet boundary, the energy
  ``K |grad p_h|^2 |F| delta_F`` of the sliver between the chord facet and the sphere (delta_F [m]:
  sag of the facet centroid), the error energy the discrete domain leaves out;
- ``max_norm``: the square of the local max-norm estimate ``h_T eta_T / sqrt(K_T |T|)`` [Pa]
  (``|e| ~ h |grad e|`` on the cell);
- ``max_norm_geometry``: the square of 1/8 of it (the P1 interpolation constant, ``h^2 |p''| / 8``)
  plus the boundary shift ``delta_F |grad p_h|`` [Pa] of cells on the curved Dirichlet boundary;

or with ``residual`` marking and another step:
- ``doerfler_0.3``: Doerfler fraction 0.3 instead of 0.5;
- ``all_edges``: every edge of the marked cells bisected (Plaza: 8 children per marked cell)
  instead of the longest;
- ``smoothed_each_step``: after each bisection, 3 sweeps of quality-guarded Laplacian smoothing of
  the interior vertices (``hybrid.mesh.smooth.smooth_vertices``: tagged and boundary vertices stay,
  a move is taken back where it lowers the worst quality around the vertex);
- ``smoothed_at_end``: the same 3 sweeps once, on the final mesh only;
- ``smoothed_sliding_each_step``: as ``smoothed_each_step``, and the vertices of the tumour surface
  and of the outer boundary slide on their spheres (``surfaces = curved_surfaces(domain)``);
- ``sliding_sweeps_N``: the same with N sweeps instead of 3 (N in :data:`SWEEP_COUNTS`; measured
  after the criterion's verdict, to see how much it depends on the number of sweeps).

Pre-registered before the smoothing variants were first run (issue 10, tumour-alone max error):
smoothing fixes it if one of the two smoothing variants has ``max_over_gmsh <= 1.00`` for
``sphere_2mm`` AND ``max_over_gmsh <= 0.86`` for both ``sphere_host`` and ``sphere_host_thick``
(their ``residual`` ratios lie in 0.47-0.86x; 0.86 is the top of refine_accuracy.json's 0.59-0.86x)
AND ``l2_over_gmsh <= 1.00`` in all three. ``sphere_1.5mm`` is reported, not part of the criterion.
Met: that variant becomes the adaptive default. Missed: the smoothing stays out of the library's
adaptive path and the tumour-alone xfail stays.

Result (1 rank, load 3.7-6.0): missed. ``smoothed_each_step`` 1.04x gmsh's max for ``sphere_2mm``
(1.82 % against 1.75 %; ``residual`` 1.41x), 0.79x and 0.59x in the hosts (``residual`` 0.86x,
0.47x), L2 0.77x, 0.56x, 0.57x; ``smoothed_at_end`` 1.22x, 0.79x, 0.45x. Median tet quality 0.628 ->
0.664 (sphere_2mm; gmsh 0.763), smallest 0.226 -> 0.301. ``sphere_1.5mm``: 1.07x (``residual`` 1.40x).

Second and last attempt, pre-registered after that result and before its first run: the
variant ``smoothed_sliding_each_step`` against the same criterion (same three cases, same bounds).

Result (1 rank, load 5.6-5.3): met, narrowly. ``smoothed_sliding_each_step`` 0.99x gmsh's max for
``sphere_2mm`` (1.740 % against 1.755 %, now 0.5 mm deep), 0.84x and 0.46x in the hosts, L2 0.75x,
0.55x, 0.57x; median tet quality 0.668, smallest 0.285. Not in the criterion: ``sphere_1.5mm``
1.10x (1.31 % against 1.19 %). It became ``hybrid.forward.adaptive``'s default
(``smooth_refined``); the other variants name ``smooth=None`` (unsmoothed) or their own smoothing.
Measured after the verdict (``sliding_sweeps_N``, 1 rank, load 3.6-4): the pass depends on the
3 sweeps: 1, 2 and 5 sweeps give 1.12x, 1.12x, 1.03x for ``sphere_2mm`` (1.16x, 1.13x, 1.13x
for ``sphere_1.5mm``; hosts 0.65-0.76x and 0.44-0.53x), all well below plain bisection's 1.41x
but above 1. So the smoothing closes most of the gap and the tumour alone is at par with uniform
gmsh meshes, not reliably better.

    python benchmarks/adaptive_max_error.py [--output benchmarks/results/adaptive_max_error.json]

Serial (the locate diagnostics gather per-cell arrays; the variants run under mpirun too);
``--variants`` runs some of them (the reference ``gmsh_uniform`` always; the ``locate`` diagnostics
with ``residual``) and replaces their rows in an existing JSON, keeping the others.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
from mpi4py import MPI

import hybrid.forward  # noqa: F401  (dolfinx_solver before dolfinx)
import dolfinx.fem
import dolfinx.mesh
import ufl

from hybrid.forward import solve_ifp
from hybrid.forward.adaptive import SMOOTHING_SWEEPS, adapt_to_budget, smooth_refined
from hybrid.forward.error_indicator import cellwise_values, residual_indicator
from hybrid.mesh import tumour_mesh
from hybrid.mesh.refine import bisect_edges
from hybrid.mesh.smooth import smooth_vertices
from hybrid.problems.ifp import closed_form_pressure

sys.path.insert(0, str(Path(__file__).resolve().parent))
from refine_accuracy import BOUNDARY, HOST, TUMOUR, tet_quality  # noqa: E402

CASES = {   # tumour radius [m], host thickness [m], uniform gmsh mesh size [m]
    "sphere_2mm": (2e-3, 0.0, 1.2e-4), "sphere_1.5mm": (1.5e-3, 0.0, 1.0e-4),
    "sphere_host": (2e-3, 1e-3, 2e-4), "sphere_host_thick": (1.5e-3, 1.5e-3, 2e-4)}
COARSE = 8e-4      # m, gmsh mesh the adaptive refinement starts from
SHELLS = [0.0, 0.05e-3, 0.1e-3, 0.2e-3, 0.3e-3, 0.5e-3, 0.8e-3, 1.2e-3, math.inf]   # depths R - |x| [m]
INDICATORS = ("residual", "residual_geometry", "max_norm", "max_norm_geometry")
SWEEP_COUNTS = (1, 2, 5)   # the sensitivity of smoothed_sliding_each_step to its 3 sweeps
VARIANTS = INDICATORS + ("doerfler_0.3", "all_edges", "smoothed_each_step", "smoothed_at_end",
                         "smoothed_sliding_each_step") + tuple(f"sliding_sweeps_{n}" for n in SWEEP_COUNTS)


def solver(host: float):
    """``solve(domain)``: the default-tissue IFP (host tissue where ``host`` [m] > 0)."""
    return lambda domain: solve_ifp(domain, TUMOUR, BOUNDARY, HOST if host > 0 else None)


def dofs(domain) -> int:
    return domain.mesh.topology.index_map(0).size_global


def boundary_sag(mesh, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Per owned cell: the largest sag [m] below the sphere of ``radius`` of its facets on the
    outer boundary, and the sum of |F| times that sag [m^3] (0 for cells off the boundary)."""
    tdim = mesh.topology.dim
    cells = np.arange(mesh.topology.index_map(tdim).size_local)
    mesh.topology.create_connectivity(tdim, tdim - 1)
    mesh.topology.create_connectivity(tdim - 1, tdim)
    facets = np.asarray(mesh.topology.connectivity(tdim, tdim - 1).array).reshape(-1, tdim + 1)[cells]
    rows, columns = np.nonzero(np.isin(facets, dolfinx.mesh.exterior_facet_indices(mesh.topology)))
    x = mesh.geometry.x[dolfinx.mesh.entities_to_geometry(mesh, tdim - 1, facets[rows, columns])]
    sag = radius - np.linalg.norm(x.mean(axis=1), axis=1)
    area = 0.5 * np.linalg.norm(np.cross(x[:, 1] - x[:, 0], x[:, 2] - x[:, 0]), axis=1)
    largest, sliver = np.zeros(len(cells)), np.zeros(len(cells))
    np.maximum.at(largest, rows, sag)
    np.add.at(sliver, rows, area * sag)
    return largest, sliver


def indicator(kind: str, outer_radius: float):
    """The cell value ``kind`` (module docstring) of an ``IFPSolution``, for ``adapt_to_budget``."""
    def value(solution):
        eta2 = residual_indicator(solution)
        if kind == "residual":
            return eta2
        mesh = solution.pressure.function_space.mesh
        k = cellwise_values(mesh, solution.coefficients["hydraulic_conductivity"])
        gradient = cellwise_values(mesh, ufl.sqrt(ufl.inner(ufl.grad(solution.pressure), ufl.grad(solution.pressure))))
        sag, sliver = boundary_sag(mesh, outer_radius)
        if kind == "residual_geometry":
            return eta2 + k * gradient ** 2 * sliver
        h, volume = cellwise_values(mesh, ufl.CellDiameter(mesh)), cellwise_values(mesh, ufl.CellVolume(mesh))
        local = h * np.sqrt(eta2 / (k * volume))
        return local ** 2 if kind == "max_norm" else (local / 8 + sag * gradient) ** 2
    return value


def all_edges(domain, cells: np.ndarray):
    """``domain`` with every edge of the local ``cells`` bisected (Plaza), tags carried, snapped."""
    mesh, tdim = domain.mesh, domain.mesh.topology.dim
    mesh.topology.create_entities(1)
    mesh.topology.create_connectivity(tdim, 1)
    edges = dolfinx.mesh.compute_incident_entities(mesh.topology, np.asarray(cells, dtype=np.int32), tdim, 1)
    return bisect_edges(domain, edges)


def smoothed(domain):
    """``domain`` after :data:`SMOOTHING_SWEEPS` guarded Laplacian sweeps of its interior vertices (in place)."""
    smooth_vertices(domain.mesh, domain.facet_tags, SMOOTHING_SWEEPS)
    return domain


def adapted(comm, variant: str, radius: float, host: float, dof_budget: int):
    """The 0.8 mm gmsh sphere refined adaptively up to ``dof_budget`` by ``variant`` (module docstring)."""
    coarse = tumour_mesh(comm, "sphere", radius, host, COARSE)
    if variant in INDICATORS:
        return adapt_to_budget(coarse, solver(host), dof_budget, indicator(variant, radius + host), smooth=None)
    if variant == "doerfler_0.3":
        return adapt_to_budget(coarse, solver(host), dof_budget, doerfler_fraction=0.3, smooth=None)
    if variant == "all_edges":
        return adapt_to_budget(coarse, solver(host), dof_budget, refine=all_edges, smooth=None)
    if variant == "smoothed_each_step":
        return adapt_to_budget(coarse, solver(host), dof_budget, smooth=smoothed)
    if variant == "smoothed_sliding_each_step":   # the library's default since it met the criterion
        return adapt_to_budget(coarse, solver(host), dof_budget)
    if variant.startswith("sliding_sweeps_"):
        sweeps = int(variant.removeprefix("sliding_sweeps_"))
        return adapt_to_budget(coarse, solver(host), dof_budget, smooth=partial(smooth_refined, sweeps=sweeps))
    return smoothed(adapt_to_budget(coarse, solver(host), dof_budget, smooth=None))   # smoothed_at_end


def quality_summary(comm, domain) -> dict:
    """Median and smallest tet quality of ``domain`` (over all ranks)."""
    values = np.concatenate(comm.allgather(tet_quality(domain.mesh)))
    return {"median_tet_quality": float(np.median(values)), "min_tet_quality": float(values.min())}


def errors(comm, domain, radius: float, host: float) -> dict:
    """Max nodal |p_h - p| / p_e, where it sits (|x| - R [m]) and ||p_h - p|| / ||p|| (p in P3);
    the closed form is taken at min(|x|, outer radius) so a mesh scaled past it stays comparable."""
    exact = closed_form_pressure(3, radius, TUMOUR, BOUNDARY, HOST if host > 0 else None, host)
    pressure = lambda r: exact.pressure(np.minimum(r, radius + host))
    solution = solver(host)(domain)
    space = solution.pressure.function_space
    owned = space.dofmap.index_map.size_local
    r = np.linalg.norm(space.tabulate_dof_coordinates()[:owned], axis=1)
    nodal = np.abs(solution.pressure.x.array[:owned] - pressure(r)) / TUMOUR.effective_pressure
    largest, where = comm.allreduce((float(nodal.max(initial=-1.0)),
                                     float(r[np.argmax(nodal)] - radius) if owned else math.nan), op=MPI.MAX)
    cubic = dolfinx.fem.Function(dolfinx.fem.functionspace(domain.mesh, ("Lagrange", 3)))
    cubic.interpolate(lambda x: pressure(np.linalg.norm(x, axis=0)))
    total = lambda form: comm.allreduce(dolfinx.fem.assemble_scalar(dolfinx.fem.form(form)), op=MPI.SUM)
    l2 = math.sqrt(total((solution.pressure - cubic) ** 2 * ufl.dx) / total(cubic ** 2 * ufl.dx))
    return {"dofs": solution.dofs, "max_error_over_pe": largest, "max_error_distance_m": where,
            "l2_relative_error": l2}


def located(domain, radius: float) -> dict:
    """The ``locate`` diagnostics (module docstring) of ``domain``, a sphere alone (serial)."""
    mesh = domain.mesh
    solution = solver(0.0)(domain)
    space = solution.pressure.function_space
    exact = closed_form_pressure(3, radius, TUMOUR, BOUNDARY, None, 0.0)
    cells = np.arange(mesh.topology.index_map(3).size_local)
    dofmap = np.asarray(space.dofmap.list)[cells]
    points = space.tabulate_dof_coordinates()
    depth = radius - np.linalg.norm(points, axis=1)
    signed = (solution.pressure.x.array - exact.pressure(np.minimum(radius - depth, radius))) / TUMOUR.effective_pressure
    cell_depth = depth[dofmap].mean(axis=1)   # of the midpoint, to within the P1 midpoint's |x| error
    longest, quality, eta2 = cellwise_values(mesh, ufl.CellDiameter(mesh)), tet_quality(mesh), residual_indicator(solution)
    shells = []
    for low, high in zip(SHELLS[:-1], SHELLS[1:]):
        inside, nodes = (cell_depth >= low) & (cell_depth < high), (depth >= low) & (depth < high)
        shells.append({"depth_m": [low, high if math.isfinite(high) else None], "cells": int(inside.sum()),
                       "median_longest_edge_m": float(np.median(longest[inside])),
                       "median_quality": float(np.median(quality[inside])),
                       "indicator_share": float(eta2[inside].sum() / eta2.sum()),
                       "max_error_over_pe": float(np.abs(signed[nodes]).max(initial=0.0)),
                       "mean_signed_error_over_pe": float(signed[nodes].mean()) if nodes.any() else None})
    worst = int(np.argmax(np.abs(signed)))
    around = np.flatnonzero((dofmap == worst).any(axis=1))
    rank = np.argsort(np.argsort(-eta2))
    sag, _ = boundary_sag(mesh, radius)
    mesh.topology.create_connectivity(2, 3)
    surface = dolfinx.mesh.entities_to_geometry(mesh, 2, dolfinx.mesh.exterior_facet_indices(mesh.topology))
    x = mesh.geometry.x[surface]
    edges = np.max([np.linalg.norm(x[:, i] - x[:, j], axis=1) for i, j in ((0, 1), (1, 2), (0, 2))], axis=0)
    centroid_sag = radius - np.linalg.norm(x.mean(axis=1), axis=1)
    volume = dolfinx.fem.assemble_scalar(dolfinx.fem.form(dolfinx.fem.Constant(mesh, 1.0) * ufl.dx))
    deficit = 1 - volume / (4 / 3 * math.pi * radius ** 3)
    before = errors(MPI.COMM_SELF, domain, radius, 0.0)
    mesh.geometry.x[:] *= (1 - deficit) ** (-1 / 3)
    return {"dofs": dofs(domain), "shells": shells,
            "max_node": {"depth_m": float(depth[worst]), "signed_error_over_pe": float(signed[worst]),
                         "cell_quality": quality[around].round(3).tolist(),
                         "cell_longest_edge_m": longest[around].tolist(),
                         "cell_indicator_rank": sorted(rank[around].tolist()), "ranked_cells": len(cells),
                         "cell_indicator_share": float(eta2[around].sum() / eta2.sum())},
            "surface": {"facets": len(x), "median_longest_edge_m": float(np.median(edges)),
                        "median_centroid_sag_m": float(np.median(centroid_sag)),
                        "max_centroid_sag_m": float(centroid_sag.max()), "boundary_cells": int((sag > 0).sum()),
                        "volume_deficit": deficit},
            "errors": before, "errors_scaled_to_exact_volume": errors(MPI.COMM_SELF, domain, radius, 0.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/adaptive_max_error.json"))
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    previous = json.loads(args.output.read_text()) if args.output.exists() else {}
    report = {"machine": {"node": platform.node(), "ranks": comm.size, "load_average_before": os.getloadavg()},
              "problem": __doc__.split("\n\n")[1], "smoothing_sweeps": SMOOTHING_SWEEPS,
              "locate": previous.get("locate", {}), "variants": previous.get("variants", {})}
    if previous:
        report["machine"]["previous_runs"] = previous["machine"].get("previous_runs", []) + [
            {key: value for key, value in previous["machine"].items() if key != "previous_runs"}
            | {"wall_s": previous.get("wall_s")}]
    variants = args.variants.split(",")
    start = time.perf_counter()
    for name in args.cases.split(","):
        radius, host, size = CASES[name]
        gmsh = tumour_mesh(comm, "sphere", radius, host, size)
        if host == 0 and comm.size == 1 and "residual" in variants:
            adaptive = adapt_to_budget(tumour_mesh(comm, "sphere", radius, 0.0, COARSE), solver(0.0), dofs(gmsh),
                                       smooth=None)
            report["locate"][name] = {"gmsh": located(gmsh, radius), "adaptive": located(adaptive, radius)}
            gmsh = tumour_mesh(comm, "sphere", radius, host, size)   # located() scaled it
        reference = errors(comm, gmsh, radius, host)
        rows = {"gmsh_uniform": reference | {"mesh_size_m": size} | quality_summary(comm, gmsh)}
        for kind in variants:
            domain = adapted(comm, kind, radius, host, reference["dofs"])
            row = errors(comm, domain, radius, host) | quality_summary(comm, domain)
            rows[kind] = row | {"max_over_gmsh": row["max_error_over_pe"] / reference["max_error_over_pe"],
                                "l2_over_gmsh": row["l2_relative_error"] / reference["l2_relative_error"],
                                "history_dofs": [step["dofs"] for step in domain.geometry["adaptive_history"]]}
            if comm.rank == 0:
                print(f"{name:18s} {kind:18s} {row['dofs']:6d} DOFs  max {rows[kind]['max_over_gmsh']:.2f}x  "
                      f"L2 {rows[kind]['l2_over_gmsh']:.2f}x gmsh's ({reference['max_error_over_pe']:.4f}, "
                      f"{reference['l2_relative_error']:.4f})  quality median {row['median_tet_quality']:.3f} "
                      f"min {row['min_tet_quality']:.3f}", flush=True)
        report["variants"][name] = report["variants"].get(name, {}) | rows
    report["wall_s"] = time.perf_counter() - start
    report["machine"]["load_average_after"] = os.getloadavg()
    if comm.rank == 0:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=1))
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
