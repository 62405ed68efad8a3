"""Closed-form IFP error against DOFs: gmsh-only meshes against meshes refined in parallel.

Problem: Baxter-Jain IFP, default tumour (and host) values, ``p = 0`` on the outer boundary, P1,
radially symmetric tumour of radius ``R`` (disc or sphere), alone or in a host shell. Mesh families,
each built by ``hybrid.mesh.geometry.build_mesh`` from a ``GeometryConfig`` (rim = sqrt(K/(Lp S/V))):

- ``gmsh_uniform``: gmsh at ``mesh_size = h`` everywhere;
- ``gmsh_graded``: gmsh at ``surface_mesh_size = s`` within 2 rim of the surface, growing to
  ``mesh_size = min(4 s, R / 2)`` over a further 2 rim (the builders' grading);
- ``uniform_refined``: ``gmsh_uniform`` at ``2 h`` refined once in parallel (``refinements = 1``);
- ``graded_refined``: ``gmsh_graded`` at ``2 s`` (``mesh_size = min(8 s, R / 2)``) refined once;
- ``rim_refined``: gmsh at ``mesh_size = H`` everywhere, then ``rim_refinements = N`` (default band
  ``2 ln 2 N rim``), so ``h = H / 2^N`` at the surface;
- ``rim_refined_unsnapped``: the same without moving the new boundary vertices onto the sphere
  (``snap = False``): how much of the error is the geometry of the coarse chords;
- ``default_rim_refined``: ``mesh_size = H``, ``rim_refinements = N`` and the defaults of every
  other size (``GeometryConfig.resolved``), i.e. what a configuration naming only those two gives;
- ``adaptive``: gmsh at ``mesh_size = H`` everywhere, then refined adaptively up to
  ``adaptive_dofs = B`` P1 DOFs (``hybrid.forward.adaptive``: residual indicator, Doerfler
  marking, longest-edge bisection in parallel, guarded smoothing); its ``mesh_s`` includes the
  solves of the steps.

Cases: ``disc`` and ``disc_host`` (R = 2 mm, alone and in a 1 mm host), ``sphere`` (R = 2 mm, alone),
``sphere_host`` (R = 2 mm in a 1 mm host: the case the adaptive strategy was chosen on) and
``sphere_host_thick`` (R = 1.5 mm in a 1.5 mm host, not tuned on).

Errors: ``max`` = largest |p_h - p| at the pressure DOFs over p_e (what ``summary.json`` reports),
``l2`` = ||p_h - p|| / ||p|| over the domain (p interpolated in P3). Where the max sits:
``max_error_distance_m`` = |x| - R at that DOF (> 0 in the host), and ``max_error_by_region``
the max over the DOFs of four shells (tumour core beyond 2 rim, tumour rim, host rim, host beyond).
``interpolation_max_error_over_pe``: the largest |I_h p - p| (P1 interpolant of the closed form)
at the P3 nodes over p_e: what the mesh can approximate at all, without any solve. Criterion: a
refined mesh is "not worse" where its error is <= the gmsh family's error interpolated (log-log in
DOFs) at its DOFs; ``comparison`` holds these ratios (refined / gmsh; <= 1 meets it), ``criterion``
their range per family and error and whether every one meets it. Tet quality:
6 sqrt(2) V / l_rms^3 (1 for a regular tetrahedron), median and minimum.

    python benchmarks/refine_accuracy.py [--cases disc,disc_host,sphere,sphere_host,sphere_host_thick] [--output ...json]

Writes the JSON (the cases run replace theirs in an existing file, the others are kept; with
``--families``, only those families of a case are run and replaced; each case says its ranks and the
load average after its last run) and, with
matplotlib, a PNG beside it. Runs under mpirun too.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
from mpi4py import MPI

import hybrid.forward  # noqa: F401  (dolfinx_solver before dolfinx)
import dolfinx.fem
import ufl

from hybrid.config.geometry import GeometryConfig
from hybrid.forward import solve_ifp
from hybrid.forward.adaptive import adapt_to_budget
from hybrid.forward.sampling import nodal_samples
from hybrid.mesh import tumour_mesh
from hybrid.mesh.geometry import build_mesh
from hybrid.mesh.refine import refine_near_surface
from hybrid.mesh.smooth import cell_quality
from hybrid.problems.ifp import OuterBoundary, TissueProperties, closed_form_pressure

TUMOUR, HOST, BOUNDARY = TissueProperties.defaults("tumour"), TissueProperties.defaults("host"), OuterBoundary()
RIM = TUMOUR.rim_thickness   # m
CASES = {   # shape, tumour radius [m], host thickness [m], families: name -> list of size arguments
    "disc": ("disc", 2e-3, 0.0, {
        "gmsh_uniform": [2e-4, 1.4e-4, 1e-4, 7e-5, 5e-5],
        "gmsh_graded": [1.4e-4, 1e-4, 7e-5, 5e-5, 3.5e-5],
        "uniform_refined": [2e-4, 1.4e-4, 1e-4, 7e-5],
        "rim_refined": [(4e-4, 2), (4e-4, 3), (8e-4, 4), (4e-4, 4)],
        "default_rim_refined": [(4e-4, 1), (4e-4, 2), (4e-4, 3)],
        "adaptive": [(4e-4, 1550), (4e-4, 3106)]}),
    "disc_host": ("disc", 2e-3, 1e-3, {
        "gmsh_uniform": [2e-4, 1.4e-4, 1e-4, 7e-5],
        "adaptive": [(4e-4, 1800), (4e-4, 3500)]}),
    "sphere": ("sphere", 2e-3, 0.0, {
        "gmsh_uniform": [3e-4, 2e-4, 1.5e-4, 1.2e-4, 1e-4, 8e-5, 6.5e-5],
        "gmsh_graded": [2e-4, 1.6e-4, 1.36e-4, 1.1e-4, 8.5e-5, 7e-5],
        "uniform_refined": [3e-4, 2e-4, 1.5e-4],
        "graded_refined": [2e-4, 1.36e-4, 1e-4],
        "rim_refined": [(8e-4, 2), (6e-4, 2), (8e-4, 3), (6e-4, 3)],
        "rim_refined_unsnapped": [(8e-4, 2), (8e-4, 3)],
        "default_rim_refined": [(8e-4, 1), (8e-4, 2)],
        "adaptive": [(8e-4, 8327), (8e-4, 15743), (8e-4, 48255)]}),
    "sphere_host": ("sphere", 2e-3, 1e-3, {
        "gmsh_uniform": [3e-4, 2e-4, 1.5e-4, 1e-4],
        "gmsh_graded": [2e-4, 1.6e-4, 1.36e-4, 1e-4, 7e-5],
        "uniform_refined": [3e-4, 2e-4, 1e-4],
        "graded_refined": [2e-4, 1.4e-4, 1e-4, 7e-5],
        "rim_refined": [(8e-4, 2), (8e-4, 3)],
        "rim_refined_unsnapped": [(8e-4, 2), (8e-4, 3)],
        "adaptive": [(8e-4, 12653), (8e-4, 26629), (8e-4, 84871)]}),
    "sphere_host_thick": ("sphere", 1.5e-3, 1.5e-3, {
        "gmsh_uniform": [3e-4, 2e-4, 1.5e-4],
        "gmsh_graded": [2e-4, 1.6e-4, 1.36e-4],
        "adaptive": [(8e-4, 6000), (8e-4, 12431), (8e-4, 25000)]}),
}


def geometry_for(family: str, shape: str, radius: float, host: float, size) -> GeometryConfig:
    """The ``[geometry]`` of one mesh of ``family`` at ``size`` (see the module docstring)."""
    base = dict(shape=shape, tumour_radius=radius, host_thickness=host)
    if family == "gmsh_uniform":
        return GeometryConfig(mesh_size=size, surface_mesh_size=size, **base).resolved(RIM)
    if family == "gmsh_graded":
        return GeometryConfig(mesh_size=min(4 * size, radius / 2), surface_mesh_size=size, **base).resolved(RIM)
    if family == "uniform_refined":
        return GeometryConfig(mesh_size=2 * size, surface_mesh_size=2 * size, refinements=1, **base).resolved(RIM)
    if family == "graded_refined":
        return GeometryConfig(mesh_size=min(8 * size, radius / 2), surface_mesh_size=2 * size, refinements=1,
                              **base).resolved(RIM)
    coarse, levels = size
    if family == "adaptive":
        return GeometryConfig(mesh_size=coarse, surface_mesh_size=coarse, adaptive_dofs=levels, **base).resolved(RIM)
    if family in ("rim_refined", "rim_refined_unsnapped"):
        return GeometryConfig(mesh_size=coarse, surface_mesh_size=coarse, rim_refinements=levels,
                              **base).resolved(RIM)
    return GeometryConfig(mesh_size=coarse, rim_refinements=levels, **base).resolved(RIM)   # default_rim_refined


def tet_quality(mesh) -> np.ndarray:
    """6 sqrt(2) V / l_rms^3 of this rank's cells (tetrahedra; empty in 2-D)."""
    if mesh.topology.dim != 3:
        return np.empty(0)
    nodes = np.asarray(mesh.geometry.dofmaps[0])[: mesh.topology.index_map(3).size_local]
    return np.abs(cell_quality(mesh.geometry.x[nodes]))


def unsnapped_mesh(comm, geometry: GeometryConfig):
    """``geometry``'s rim-refined mesh with the new boundary vertices left on the coarse chords."""
    coarse = tumour_mesh(comm, geometry.shape, geometry.tumour_radius, geometry.host_thickness,
                         geometry.mesh_size, geometry.surface_mesh_size, geometry.refinement_width)
    return refine_near_surface(coarse, geometry.rim_refinements, geometry.rim_band, snap=False)


REGIONS = {"tumour_core": (-math.inf, -2 * RIM), "tumour_rim": (-2 * RIM, 0.0), "host_rim": (0.0, 2 * RIM),
           "host_beyond": (2 * RIM, math.inf)}   # shells of |x| - R [m]


def where_largest(comm, errors: np.ndarray, distance: np.ndarray) -> dict:
    """Signed distance |x| - R [m] of the largest of ``errors`` (over all ranks) and the largest
    error in each shell of :data:`REGIONS` (None where a shell holds no DOF)."""
    local = int(np.argmax(errors)) if errors.size else -1
    best = comm.allreduce((float(errors[local]) if errors.size else -1.0,
                           float(distance[local]) if errors.size else math.nan), op=MPI.MAX)
    by_region = {}
    for name, (low, high) in REGIONS.items():
        inside = (distance > low) & (distance <= high)
        value = comm.allreduce(float(errors[inside].max(initial=-1.0)), op=MPI.MAX)
        by_region[name] = value if value >= 0 else None
    return {"max_error_distance_m": best[1], "max_error_by_region": by_region}


def measure(comm, geometry: GeometryConfig, host: float, snap: bool = True) -> dict:
    """Build, solve, compare with the closed form: one row of the table."""
    dim = {"disc": 2, "sphere": 3}[geometry.shape]
    host_tissue = HOST if host > 0 else None
    exact = closed_form_pressure(dim, geometry.tumour_radius, TUMOUR, BOUNDARY, host_tissue, host)
    pressure = lambda x: exact.pressure(np.linalg.norm(x[:dim], axis=0))
    start = time.perf_counter()
    domain = build_mesh(geometry, comm) if snap else unsnapped_mesh(comm, geometry)
    if geometry.adaptive_dofs:
        domain = adapt_to_budget(domain, lambda mesh: solve_ifp(mesh, TUMOUR, BOUNDARY, host_tissue),
                                 geometry.adaptive_dofs)
    mesh_s = time.perf_counter() - start
    solution = solve_ifp(domain, TUMOUR, BOUNDARY, host_tissue)
    coords, values = nodal_samples(solution.pressure)
    radius = np.linalg.norm(coords[:, :dim], axis=1)
    nodal = np.abs(values - exact.pressure(radius)) / TUMOUR.effective_pressure
    cubic = dolfinx.fem.Function(dolfinx.fem.functionspace(domain.mesh, ("Lagrange", 3)))
    cubic.interpolate(pressure)
    linear = dolfinx.fem.Function(solution.pressure.function_space)
    linear.interpolate(pressure)
    interpolant = dolfinx.fem.Function(cubic.function_space)
    interpolant.interpolate(linear)
    interpolation = np.abs(interpolant.x.array - cubic.x.array).max(initial=0.0) / TUMOUR.effective_pressure
    total = lambda form: comm.allreduce(dolfinx.fem.assemble_scalar(dolfinx.fem.form(form)), op=MPI.SUM)
    difference = solution.pressure - cubic
    quality = np.concatenate(comm.allgather(tet_quality(domain.mesh)))
    return {
        "dofs": solution.dofs,
        "cells": domain.mesh.topology.index_map(dim).size_global,
        "max_error_over_pe": comm.allreduce(float(nodal.max(initial=0.0)), op=MPI.MAX),
        "l2_relative_error": math.sqrt(total(difference ** 2 * ufl.dx) / total(cubic ** 2 * ufl.dx)),
        **where_largest(comm, nodal, radius - geometry.tumour_radius),
        "interpolation_max_error_over_pe": comm.allreduce(float(interpolation), op=MPI.MAX),
        "median_tet_quality": float(np.median(quality)) if quality.size else None,
        "min_tet_quality": float(quality.min()) if quality.size else None,
        "mesh_s": mesh_s,
        "geometry": {k: v for k, v in vars(geometry).items() if k in (
            "mesh_size", "surface_mesh_size", "refinement_width", "refinements", "rim_refinements", "rim_band",
            "adaptive_dofs")},
        "adaptive_steps": domain.geometry.get("adaptive_steps"),
    }


def at_dofs(rows: list[dict], dofs: float, key: str) -> float | None:
    """``key`` of a family interpolated log-log at ``dofs``; None outside its range."""
    x = np.log([r["dofs"] for r in rows])
    y = np.log([r[key] for r in rows])
    order = np.argsort(x)
    if not x.min() <= math.log(dofs) <= x.max():
        return None
    return float(np.exp(np.interp(math.log(dofs), x[order], y[order])))


def compare(families: dict[str, list[dict]]) -> dict:
    """Refined / gmsh error ratio at each refined mesh's DOFs, for both gmsh families and errors."""
    out = {}
    for refined in ("uniform_refined", "graded_refined", "rim_refined", "rim_refined_unsnapped",
                    "default_rim_refined", "adaptive"):
        for row in families.get(refined, []):
            for gmsh in ("gmsh_uniform", "gmsh_graded"):
                if gmsh not in families:
                    continue
                for key in ("max_error_over_pe", "l2_relative_error", "interpolation_max_error_over_pe"):
                    reference = at_dofs(families[gmsh], row["dofs"], key)
                    if reference is not None:
                        out.setdefault(refined, []).append({
                            "dofs": row["dofs"], "against": gmsh, "error": key, "refined": row[key],
                            "gmsh_at_same_dofs": reference, "ratio": row[key] / reference})
    return out


def criterion(comparison: dict) -> dict:
    """Per refined family, gmsh family and error: the range of the ratios and whether every one is
    <= 1 (the issue's "not worse than the gmsh-only mesh of the same size")."""
    out = {}
    for refined, rows in comparison.items():
        for row in rows:
            entry = out.setdefault(refined, {}).setdefault(row["against"], {}).setdefault(
                row["error"], {"ratio_min": math.inf, "ratio_max": 0.0, "points": 0})
            entry["ratio_min"] = min(entry["ratio_min"], row["ratio"])
            entry["ratio_max"] = max(entry["ratio_max"], row["ratio"])
            entry["points"] += 1
            entry["not_worse"] = entry["ratio_max"] <= 1.0
    return out


def figure(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    cases = report["cases"]
    families = dict.fromkeys(f for result in cases.values() for f in result["families"])
    colours = {family: f"C{i}" for i, family in enumerate(families)}   # the same family, the same colour
    fig, axes = plt.subplots(2, len(cases), figsize=(4.2 * len(cases), 7), squeeze=False)
    for column, (case, result) in enumerate(cases.items()):
        for row, (key, label) in enumerate((("max_error_over_pe", "max nodal error / p_e"),
                                            ("l2_relative_error", "relative L2 error"))):
            ax = axes[row, column]
            for family, rows in result["families"].items():
                rows = sorted(rows, key=lambda r: r["dofs"])
                ax.loglog([r["dofs"] for r in rows], [r[key] for r in rows], "o-", label=family,
                          color=colours[family])
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_xlabel("P1 DOFs")
            ax.set_ylabel(label)
            ax.set_title(case)
            ax.grid(True, which="both", alpha=0.3)
    for ax in axes[0]:
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--families", default=None, help="only these families (comma-separated); the others "
                        "are kept from the existing JSON")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/refine_accuracy.json"))
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    previous = json.loads(args.output.read_text()) if args.output.exists() else {}
    report = {"mpi_ranks": comm.size, "machine": platform.node(), "rim_thickness_m": RIM,
              "units": {"lengths": "m", "errors": "fraction"}, "cases": previous.get("cases", {})}
    for case in args.cases.split(","):
        shape, radius, host, plan = CASES[case]
        families = report["cases"].get(case, {}).get("families", {}) if args.families else {}
        run = set(args.families.split(",")) if args.families else set(plan)
        for family in run:
            families.pop(family, None)
        for family, sizes in ((f, sizes) for f, sizes in plan.items() if f in run):
            for size in sizes:
                row = measure(comm, geometry_for(family, shape, radius, host, size), host,
                              snap=family != "rim_refined_unsnapped")
                families.setdefault(family, []).append(row)
                if comm.rank == 0:
                    print(f"{case:12s} {family:18s} {str(size):14s} {row['dofs']:7d} DOFs  max "
                          f"{100 * row['max_error_over_pe']:.3f} % at {1e3 * row['max_error_distance_m']:+.3f} mm  "
                          f"L2 {100 * row['l2_relative_error']:.3f} %  "
                          f"interp {100 * row['interpolation_max_error_over_pe']:.3f} %  "
                          f"q {row['median_tet_quality']}", flush=True)
        report["cases"][case] = {"mpi_ranks": comm.size, "load_average_after": os.getloadavg(),
                                 "shape": shape, "tumour_radius_m": radius, "host_thickness_m": host,
                                 "families": families, "comparison": compare(families)}
        report["cases"][case]["criterion"] = criterion(report["cases"][case]["comparison"])
        if comm.rank == 0:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(report, indent=1) + "\n")
            try:
                figure(report, args.output.with_suffix(".png"))
            except ImportError:
                pass


if __name__ == "__main__":
    main()
