"""Closed-form IFP error against DOFs: gmsh-only meshes against meshes refined in parallel.

Problem: Baxter-Jain IFP, default tumour (and host) values, ``p = 0`` on the outer boundary, P1,
radially symmetric tumour of radius ``R`` (disc or sphere), alone or in a host shell. Mesh families,
each built by ``hybrid.mesh.geometry.build_mesh`` from a ``GeometryConfig`` (rim = sqrt(K/(Lp S/V))):

- ``gmsh_uniform``: gmsh at ``mesh_size = h`` everywhere;
- ``gmsh_graded``: gmsh at ``surface_mesh_size = s`` within 2 rim of the surface, growing to
  ``mesh_size = min(4 s, R / 2)`` over a further 2 rim (the builders' grading);
- ``uniform_refined``: ``gmsh_uniform`` at ``2 h`` refined once in parallel (``refinements = 1``);
- ``rim_refined``: gmsh at ``mesh_size = H`` everywhere, then ``rim_refinements = N`` (default band
  ``2 ln 2 N rim``), so ``h = H / 2^N`` at the surface;
- ``default_rim_refined``: ``mesh_size = H``, ``rim_refinements = N`` and the defaults of every
  other size (``GeometryConfig.resolved``), i.e. what a configuration naming only those two gives.

Errors: ``max`` = largest |p_h - p| at the pressure DOFs over p_e (what ``summary.json`` reports),
``l2`` = ||p_h - p|| / ||p|| over the domain (p interpolated in P3). Criterion: a refined mesh is
"not worse" where its error is <= the gmsh family's error interpolated (log-log in DOFs) at its DOFs;
``comparison`` holds these ratios (refined / gmsh; <= 1 meets it). Tet quality: 6 sqrt(2) V / l_rms^3
(1 for a regular tetrahedron), median and minimum.

    python benchmarks/refine_accuracy.py [--cases disc,sphere,sphere_host] [--output ...json]

Writes the JSON and, with matplotlib, a PNG beside it. Runs under mpirun too.
"""

from __future__ import annotations

import argparse
import json
import math
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
from hybrid.forward.sampling import nodal_samples
from hybrid.mesh.geometry import build_mesh
from hybrid.problems.ifp import OuterBoundary, TissueProperties, closed_form_pressure

TUMOUR, HOST, BOUNDARY = TissueProperties.defaults("tumour"), TissueProperties.defaults("host"), OuterBoundary()
RIM = TUMOUR.rim_thickness   # m
CASES = {   # shape, tumour radius [m], host thickness [m], families: name -> list of size arguments
    "disc": ("disc", 2e-3, 0.0, {
        "gmsh_uniform": [2e-4, 1.4e-4, 1e-4, 7e-5, 5e-5],
        "gmsh_graded": [1.4e-4, 1e-4, 7e-5, 5e-5, 3.5e-5],
        "uniform_refined": [2e-4, 1.4e-4, 1e-4, 7e-5],
        "rim_refined": [(4e-4, 2), (4e-4, 3), (8e-4, 4), (4e-4, 4)],
        "default_rim_refined": [(4e-4, 1), (4e-4, 2), (4e-4, 3)]}),
    "sphere": ("sphere", 2e-3, 0.0, {
        "gmsh_uniform": [3e-4, 2e-4, 1.5e-4, 1.2e-4, 1e-4, 8e-5, 6.5e-5],
        "gmsh_graded": [2e-4, 1.6e-4, 1.36e-4, 1.1e-4, 8.5e-5, 7e-5],
        "uniform_refined": [3e-4, 2e-4, 1.5e-4],
        "rim_refined": [(8e-4, 2), (6e-4, 2), (8e-4, 3), (6e-4, 3)],
        "default_rim_refined": [(8e-4, 1), (8e-4, 2)]}),
    "sphere_host": ("sphere", 2e-3, 1e-3, {
        "gmsh_uniform": [3e-4, 2e-4, 1.5e-4, 1e-4],
        "gmsh_graded": [2e-4, 1.6e-4, 1.36e-4, 1e-4],
        "uniform_refined": [3e-4, 2e-4],
        "rim_refined": [(8e-4, 2), (8e-4, 3)]}),
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
    coarse, levels = size
    if family == "rim_refined":
        return GeometryConfig(mesh_size=coarse, surface_mesh_size=coarse, rim_refinements=levels,
                              **base).resolved(RIM)
    return GeometryConfig(mesh_size=coarse, rim_refinements=levels, **base).resolved(RIM)   # default_rim_refined


def tet_quality(mesh) -> np.ndarray:
    """6 sqrt(2) V / l_rms^3 of this rank's cells (tetrahedra; empty in 2-D)."""
    if mesh.topology.dim != 3:
        return np.empty(0)
    nodes = np.asarray(mesh.geometry.dofmaps[0])[: mesh.topology.index_map(3).size_local]
    p = mesh.geometry.x[nodes]
    edges = [p[:, j] - p[:, i] for i in range(4) for j in range(i + 1, 4)]
    volume = np.abs(np.einsum("ij,ij->i", edges[0], np.cross(edges[1], edges[2]))) / 6
    l_rms = np.sqrt(sum((e ** 2).sum(axis=1) for e in edges) / 6)
    return 6 * math.sqrt(2) * volume / l_rms ** 3


def measure(comm, geometry: GeometryConfig, host: float) -> dict:
    """Build, solve, compare with the closed form: one row of the table."""
    dim = {"disc": 2, "sphere": 3}[geometry.shape]
    host_tissue = HOST if host > 0 else None
    exact = closed_form_pressure(dim, geometry.tumour_radius, TUMOUR, BOUNDARY, host_tissue, host)
    start = time.perf_counter()
    domain = build_mesh(geometry, comm)
    mesh_s = time.perf_counter() - start
    solution = solve_ifp(domain, TUMOUR, BOUNDARY, host_tissue)
    coords, values = nodal_samples(solution.pressure)
    nodal = np.abs(values - exact.pressure(np.linalg.norm(coords[:, :dim], axis=1)))
    cubic = dolfinx.fem.Function(dolfinx.fem.functionspace(domain.mesh, ("Lagrange", 3)))
    cubic.interpolate(lambda x: exact.pressure(np.linalg.norm(x[:dim], axis=0)))
    total = lambda form: comm.allreduce(dolfinx.fem.assemble_scalar(dolfinx.fem.form(form)), op=MPI.SUM)
    difference = solution.pressure - cubic
    quality = np.concatenate(comm.allgather(tet_quality(domain.mesh)))
    return {
        "dofs": solution.dofs,
        "cells": domain.mesh.topology.index_map(dim).size_global,
        "max_error_over_pe": comm.allreduce(float(nodal.max(initial=0.0)), op=MPI.MAX) / TUMOUR.effective_pressure,
        "l2_relative_error": math.sqrt(total(difference ** 2 * ufl.dx) / total(cubic ** 2 * ufl.dx)),
        "median_tet_quality": float(np.median(quality)) if quality.size else None,
        "min_tet_quality": float(quality.min()) if quality.size else None,
        "mesh_s": mesh_s,
        "geometry": {k: v for k, v in vars(geometry).items() if k in (
            "mesh_size", "surface_mesh_size", "refinement_width", "refinements", "rim_refinements", "rim_band")},
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
    for refined in ("uniform_refined", "rim_refined", "default_rim_refined"):
        for row in families.get(refined, []):
            for gmsh in ("gmsh_uniform", "gmsh_graded"):
                for key in ("max_error_over_pe", "l2_relative_error"):
                    reference = at_dofs(families[gmsh], row["dofs"], key)
                    if reference is not None:
                        out.setdefault(refined, []).append({
                            "dofs": row["dofs"], "against": gmsh, "error": key, "refined": row[key],
                            "gmsh_at_same_dofs": reference, "ratio": row[key] / reference})
    return out


def figure(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    cases = report["cases"]
    fig, axes = plt.subplots(2, len(cases), figsize=(4.2 * len(cases), 7), squeeze=False)
    for column, (case, result) in enumerate(cases.items()):
        for row, (key, label) in enumerate((("max_error_over_pe", "max nodal error / p_e"),
                                            ("l2_relative_error", "relative L2 error"))):
            ax = axes[row, column]
            for family, rows in result["families"].items():
                rows = sorted(rows, key=lambda r: r["dofs"])
                ax.loglog([r["dofs"] for r in rows], [r[key] for r in rows], "o-", label=family)
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_xlabel("P1 DOFs")
            ax.set_ylabel(label)
            ax.set_title(case)
            ax.grid(True, which="both", alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/refine_accuracy.json"))
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    report = {"mpi_ranks": comm.size, "machine": platform.node(), "rim_thickness_m": RIM,
              "units": {"lengths": "m", "errors": "fraction"}, "cases": {}}
    for case in args.cases.split(","):
        shape, radius, host, plan = CASES[case]
        families = {}
        for family, sizes in plan.items():
            for size in sizes:
                row = measure(comm, geometry_for(family, shape, radius, host, size), host)
                families.setdefault(family, []).append(row)
                if comm.rank == 0:
                    print(f"{case:12s} {family:18s} {str(size):14s} {row['dofs']:7d} DOFs  max "
                          f"{100 * row['max_error_over_pe']:.3f} %  L2 {100 * row['l2_relative_error']:.3f} %  "
                          f"q {row['median_tet_quality']}", flush=True)
        report["cases"][case] = {"shape": shape, "tumour_radius_m": radius, "host_thickness_m": host,
                                 "families": families, "comparison": compare(families)}
        if comm.rank == 0:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(report, indent=1) + "\n")
            try:
                figure(report, args.output.with_suffix(".png"))
            except ImportError:
                pass


if __name__ == "__main__":
    main()
