"""Interstitial fluid pressure (IFP) solve: cost against mesh size, serial vs MPI, vs a peer.

Problem: Baxter-Jain IFP in an isolated 2-D disc tumour, R = 4 mm, default tumour values
(``TissueProperties.defaults("tumour")``), Dirichlet ``p = 0`` on the surface, P1, solved by
:func:`hybrid.forward.ifp.solve_ifp` (CG + GAMG, rtol 1e-10). A ladder of uniform gmsh meshes
(``tumour_mesh(..., surface_mesh_size=mesh_size, refinement_width=0)``) from ~1e4 to ~1e6
DOFs (``--smoke``: a few hundred to a few thousand), plus one 3-D sphere. For every mesh:
DOFs, setup / solve time (best of ``--repeats``), Krylov iterations, DOFs/s and the max error
against the closed form (``hybrid.problems.exact.baxter_jain_pressure``), so speed and
accuracy sit side by side; a least-squares slope of log(solve time) vs log(DOFs) (1 = linear).

The script runs itself in ``--worker`` mode twice, once serially and once under
``mpirun -n 2``, and reports the speed-up per mesh. In the serial worker the same mesh (the
dolfinx mesh's vertices and cells, one process so nothing to gather) is handed to a peer,
scikit-fem + pyamg: it assembles the same P1 form ``K grad p . grad q + Lp S/V p q`` and rhs
``Lp S/V p_e q``, imposes the same Dirichlet nodes, and solves with CG (scipy) preconditioned by
pyamg smoothed aggregation to the same relative tolerance. The max difference between the two
FEM solutions at the vertices shows it is the same discretisation; the time ratio
hybrid/peer is measured in the same process.

Writes benchmarks/results/ifp_scaling.json (``--output`` to change). ``--smoke`` runs in well
under a minute.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
RADIUS = 4e-3          # m
RTOL = 1e-10
# (shape, mesh size in m); DOFs ~ 1.15 * area / h^2 for the disc
FULL = [("disc", 80e-6), ("disc", 40e-6), ("disc", 20e-6), ("disc", 10e-6), ("sphere", 110e-6),
        ("disc", 7e-6)]
SMOKE = [("disc", 400e-6), ("disc", 200e-6), ("disc", 100e-6), ("sphere", 800e-6)]


# ----------------------------------------------------------------------------------- worker
def _peer(domain, hybrid_pressure, tumour, repeats):
    """scikit-fem + pyamg on the dolfinx mesh (serial): times, iterations, solution difference."""
    import pyamg
    import scipy.sparse.linalg as spla
    import skfem
    from skfem.helpers import dot, grad

    mesh = domain.mesh
    dim = mesh.topology.dim
    nodes = np.ascontiguousarray(mesh.geometry.x[:, :dim].T)
    cells = np.asarray(mesh.geometry.dofmap, dtype=np.int64)
    MeshType, Element = {2: (skfem.MeshTri, skfem.ElementTriP1),
                         3: (skfem.MeshTet, skfem.ElementTetP1)}[dim]
    skmesh = MeshType(nodes, np.ascontiguousarray(cells.T))
    K, exchange, pe = tumour.hydraulic_conductivity, tumour.vascular_exchange, tumour.effective_pressure
    scale = 1.0 / K   # same O(1) scaling as solve_ifp in 2-D (irrelevant to the solution)

    @skfem.BilinearForm
    def a(u, v, _):
        return scale * (K * dot(grad(u), grad(v)) + exchange * u * v)

    @skfem.LinearForm
    def L(v, _):
        return scale * exchange * pe * v

    best = {"assemble_s": np.inf, "solve_s": np.inf}
    for _ in range(repeats):
        t0 = time.perf_counter()
        basis = skfem.Basis(skmesh, Element())
        A, b = a.assemble(basis), L.assemble(basis)
        boundary = skmesh.boundary_nodes()
        x = np.zeros(basis.N)
        A_i, b_i, x, interior = skfem.condense(A, b, D=boundary, x=x)
        t1 = time.perf_counter()
        ml = pyamg.smoothed_aggregation_solver(A_i.tocsr())
        count = [0]
        xi, info = spla.cg(A_i, b_i, rtol=RTOL, atol=0.0, maxiter=1000, M=ml.aspreconditioner(),
                           callback=lambda _: count.__setitem__(0, count[0] + 1))
        t2 = time.perf_counter()
        if info != 0:
            raise RuntimeError(f"peer CG did not converge (info {info})")
        x[interior] = xi
        best["assemble_s"] = min(best["assemble_s"], t1 - t0)
        best["solve_s"] = min(best["solve_s"], t2 - t1)
    # hybrid's P1 dofs at the mesh vertices: both dofmaps list a cell's vertices in the same order
    node_to_dof = np.empty(nodes.shape[1], dtype=np.int64)
    node_to_dof[cells.ravel()] = np.asarray(hybrid_pressure.function_space.dofmap.list).ravel()
    diff = np.abs(x - hybrid_pressure.x.array[node_to_dof]).max()
    return {"dofs": int(basis.N), "dirichlet_nodes": int(boundary.size),
            "assemble_s": best["assemble_s"], "solve_s": best["solve_s"],
            "total_s": best["assemble_s"] + best["solve_s"], "iterations": count[0],
            "amg_levels": len(ml.levels),
            "max_abs_diff_vs_hybrid_Pa": float(diff),
            "max_rel_diff_vs_hybrid": float(diff / pe)}


def worker(args) -> None:
    import hybrid.forward  # noqa: F401  (imports dolfinx_solver before dolfinx)
    from mpi4py import MPI

    from hybrid.forward.ifp import solve_ifp
    from hybrid.mesh import tumour_mesh
    from hybrid.problems.exact import baxter_jain_pressure
    from hybrid.problems.ifp import OuterBoundary, TissueProperties

    comm = MPI.COMM_WORLD
    tumour = TissueProperties.defaults("tumour")
    alpha = RADIUS * np.sqrt(tumour.vascular_exchange / tumour.hydraulic_conductivity)
    pe = tumour.effective_pressure
    wmax = lambda v: comm.allreduce(v, op=MPI.MAX)
    rows = []
    for entry in args.configs.split(","):
        shape, h = entry.split(":")
        h = float(h)
        comm.Barrier()
        t0 = time.perf_counter()
        domain = tumour_mesh(comm, shape, RADIUS, 0.0, h, h, 0.0)
        mesh_s = wmax(time.perf_counter() - t0)
        runs = []
        for _ in range(args.repeats):
            comm.Barrier()
            t0 = time.perf_counter()
            sol = solve_ifp(domain, tumour, OuterBoundary("dirichlet", 0.0),
                            petsc_options={"ksp_rtol": RTOL})
            total = time.perf_counter() - t0
            runs.append((wmax(sol.assemble_time_s), wmax(sol.solve_time_s), wmax(total),
                         sol.iterations))
        setup_s, solve_s, total_s = (min(r[i] for r in runs) for i in range(3))
        V = sol.pressure.function_space
        owned = V.dofmap.index_map.size_local
        xyz = V.tabulate_dof_coordinates()[:owned]
        exact = baxter_jain_pressure(domain.dim, np.linalg.norm(xyz, axis=1), RADIUS, alpha, pe)
        err = wmax(float(np.abs(sol.pressure.x.array[:owned] - exact).max()))
        row = {"shape": shape, "dim": domain.dim, "mesh_size_m": h, "dofs": sol.dofs,
               "cells": domain.mesh.topology.index_map(domain.dim).size_global,
               "mesh_build_s": mesh_s, "iterations": sol.iterations,
               "iterations_all_repeats": [r[3] for r in runs],
               "setup_s": setup_s, "solve_s": solve_s, "setup_plus_solve_s": setup_s + solve_s,
               "solve_ifp_total_s": total_s, "dofs_per_s": sol.dofs / solve_s,
               "max_abs_error_vs_closed_form_Pa": err, "max_rel_error_vs_closed_form": err / pe}
        if comm.size == 1 and args.peer and sol.dofs <= args.peer_max_dofs:
            repeats = args.repeats if sol.dofs <= args.peer_repeat_max_dofs else 1
            row["peer"] = _peer(domain, sol.pressure, tumour, repeats)
            row["peer"]["best_of"] = repeats
            row["ratio_hybrid_over_peer"] = {
                "setup_plus_solve": row["setup_plus_solve_s"] / row["peer"]["total_s"],
                "solve": solve_s / row["peer"]["solve_s"]}
        if comm.rank == 0:
            print(f"[{comm.size} rank(s)] {shape} h={h:.1e} m: {sol.dofs} DOFs, "
                  f"{sol.iterations} its, solve {solve_s:.3f} s", flush=True)
        rows.append(row)
        del sol, domain
        if comm.rank == 0:  # after every mesh, so a timed-out run keeps what it finished
            Path(args.worker_output).write_text(json.dumps({"ranks": comm.size, "rows": rows}))


# ----------------------------------------------------------------------------------- driver
def _version(dist):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _versions():
    out = {d: _version(d) for d in ("hybrid", "dolfinx-solver-real", "fenics-dolfinx", "scikit-fem",
                                    "pyamg", "scipy", "numpy", "gmsh", "mpi4py", "petsc4py")}
    code = ("import hybrid.forward, dolfinx; from petsc4py import PETSc; "
            "print(dolfinx.__version__); print('.'.join(map(str, PETSc.Sys.getVersion())))")
    try:
        lines = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               timeout=120).stdout.split()
        out["dolfinx"], out["petsc"] = lines[0], lines[1]
    except (subprocess.SubprocessError, IndexError):
        pass
    return out


def _run_worker(launcher, configs, args, peer):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "worker.json"
        cmd = [*launcher, sys.executable, str(HERE), "--worker", "--configs", configs,
               "--repeats", str(args.repeats), "--worker-output", str(out),
               "--peer-max-dofs", str(args.peer_max_dofs),
               "--peer-repeat-max-dofs", str(args.peer_repeat_max_dofs)] + (["--peer"] if peer else [])
        t0 = time.perf_counter()
        sys.stdout.flush()
        note = None
        try:
            proc = subprocess.run(cmd, text=True, stderr=subprocess.PIPE, timeout=args.timeout)
            if proc.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        except subprocess.TimeoutExpired:
            if not out.exists():
                raise
            note = f"timed out after {args.timeout} s; later meshes missing"
        result = json.loads(out.read_text())
        result["note"] = note
        result["wall_s"] = time.perf_counter() - t0
        result["command"] = " ".join(cmd)
        return result


def _slope(rows, key="solve_s"):
    rows = [r for r in rows if r["shape"] == "disc"]
    if len(rows) < 2:
        return None
    x, y = np.log([r["dofs"] for r in rows]), np.log([r[key] for r in rows])
    slope, intercept = np.polyfit(x, y, 1)
    return {"slope": float(slope), "fit": f"log({key}) = slope * log(dofs) + c, disc ladder",
            "dofs_range": [int(min(r["dofs"] for r in rows)), int(max(r["dofs"] for r in rows))]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny ladder, well under a minute")
    ap.add_argument("--output", type=Path, default=HERE.parent / "results" / "ifp_scaling.json")
    ap.add_argument("--repeats", type=int, default=3, help="timings are the best of this many")
    ap.add_argument("--ranks", type=int, default=2, help="MPI ranks of the parallel run (0: skip)")
    ap.add_argument("--mpi-max-dofs", type=float, default=2e6, help="skip larger meshes under MPI")
    ap.add_argument("--peer-max-dofs", type=float, default=7e5, help="skip larger meshes for the peer")
    ap.add_argument("--peer-repeat-max-dofs", type=float, default=2e5,
                    help="the peer is timed once (not best of --repeats) above this size")
    ap.add_argument("--timeout", type=float, default=1200, help="per worker run, seconds")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--configs", help=argparse.SUPPRESS)
    ap.add_argument("--worker-output", help=argparse.SUPPRESS)
    ap.add_argument("--peer", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)

    ladder = SMOKE if args.smoke else FULL
    configs = ",".join(f"{s}:{h!r}" for s, h in ladder)
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    serial = _run_worker([], configs, args, peer=True)
    ladder = [(s, h) for s, h in ladder if any(
        (r["shape"], r["mesh_size_m"]) == (s, h) for r in serial["rows"])]
    parallel, mpi_note = None, None
    if args.ranks > 1:
        mpirun = Path(sys.executable).parent / "mpirun"
        launcher = [str(mpirun) if mpirun.exists() else "mpirun", "-n", str(args.ranks)]
        keep = [(s, h) for (s, h), r in zip(ladder, serial["rows"]) if r["dofs"] <= args.mpi_max_dofs]
        if len(keep) < len(ladder):
            mpi_note = f"meshes above {args.mpi_max_dofs:.0f} DOFs skipped under MPI (--mpi-max-dofs)"
        parallel = _run_worker(launcher, ",".join(f"{s}:{h!r}" for s, h in keep), args, peer=False)
    by_key = {(r["shape"], r["mesh_size_m"]): r for r in (parallel or {}).get("rows", [])}
    table = []
    for r in serial["rows"]:
        p = by_key.get((r["shape"], r["mesh_size_m"]))
        entry = {"shape": r["shape"], "mesh_size_m": r["mesh_size_m"], "dofs": r["dofs"],
                 "serial": r, f"mpi{args.ranks}": p,
                 f"speedup_mpi{args.ranks}": None if p is None else {
                     "solve": r["solve_s"] / p["solve_s"],
                     "setup_plus_solve": r["setup_plus_solve_s"] / p["setup_plus_solve_s"]},
                 "peer": r.pop("peer", None),
                 "ratio_hybrid_over_peer": r.pop("ratio_hybrid_over_peer", None)}
        table.append(entry)
    disc = [r for r in serial["rows"] if r["shape"] == "disc"]
    peer_note = (f"peer skipped above {args.peer_max_dofs:.0f} DOFs (--peer-max-dofs) and timed once "
                 f"above {args.peer_repeat_max_dofs:.0f} DOFs: pyamg + scipy CG is slow there")
    report = {
        "benchmark": "ifp_scaling", "smoke": args.smoke,
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "problem": {"model": "Baxter-Jain steady IFP, -div(K grad p) = Lp S/V (p_e - p)",
                    "tissue": "TissueProperties.defaults('tumour')", "tumour_radius_m": RADIUS,
                    "boundary": "Dirichlet p = 0 on the tumour surface", "element": "P1",
                    "meshes": "gmsh via hybrid.mesh.tumour_mesh, uniform (surface_mesh_size = "
                              "mesh_size, refinement_width = 0); disc ladder plus one 3-D sphere",
                    "closed_form": "hybrid.problems.exact.baxter_jain_pressure at the P1 dofs "
                                   "(includes the polygonal-boundary geometry error)"},
        "solvers": {
            "hybrid": "hybrid.forward.ifp.solve_ifp: PETSc CG + GAMG, ksp_rtol 1e-10 "
                      "(PETSc default norm for CG: preconditioned residual)",
            "peer": "scikit-fem assembly of the same P1 form and rhs on the same mesh (the dolfinx "
                    "mesh's vertex coordinates and cell-vertex lists, serial run so no gather), "
                    "Dirichlet nodes condensed out (skfem.condense), scipy.sparse.linalg.cg "
                    "preconditioned by pyamg.smoothed_aggregation_solver(...).aspreconditioner(), "
                    "rtol 1e-10 on the unpreconditioned residual"},
        "timing_definitions": {
            "setup_s": "solve_ifp's assemble_time_s: coefficients, function space, forms (JIT "
                       "cache hit after the first repeat), matrix + rhs assembly with Dirichlet lifting",
            "solve_s": "solve_ifp's solve_time_s: GAMG set-up and the CG iterations (KSPSolve)",
            "setup_plus_solve_s": "setup_s + solve_s; compared with the peer's total_s",
            "solve_ifp_total_s": "whole solve_ifp call (pressure only: the Darcy flux is built on first access)",
            "peer.assemble_s": "skfem basis + matrix + rhs assembly + condensation",
            "peer.solve_s": "pyamg hierarchy setup + preconditioned CG",
            "dofs_per_s": "dofs / solve_s",
            "best_of": args.repeats, "mpi_times": "max over ranks, then best over repeats"},
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version(),
                    "load_average_before": list(load_before),
                    "load_average_after": list(os.getloadavg()),
                    "note": "shared machine; timings are best-of-N wall clock"},
        "versions": _versions(),
        "table": table,
        "scaling": {
            "serial_solve_slope": _slope(serial["rows"]),
            "serial_setup_plus_solve_slope": _slope(serial["rows"], "setup_plus_solve_s"),
            "mpi_solve_slope": _slope(parallel["rows"]) if parallel else None,
            "serial_iterations_range": [min(r["iterations"] for r in disc),
                                        max(r["iterations"] for r in disc)] if disc else None},
        "runs": {"serial": {k: serial[k] for k in ("command", "wall_s", "note")},
                 f"mpi{args.ranks}": {k: parallel[k] for k in ("command", "wall_s", "note")}
                 if parallel else None,
                 "notes": [n for n in (mpi_note, peer_note) if n]},
        "wall_s": time.perf_counter() - t_start,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    _print_table(report, args.ranks)
    print(f"wrote {args.output}")
    return report


def _print_table(report, ranks):
    print(f"{'shape':6s} {'DOFs':>9s} {'its':>4s} {'solve s':>8s} {'DOFs/s':>9s} {'rel err':>8s} "
          f"{'mpi' + str(ranks) + ' x':>7s} {'peer s':>8s} {'peer its':>8s} {'h/peer':>6s} {'diff/pe':>8s}")
    for e in report["table"]:
        s, p, q = e["serial"], e[f"mpi{ranks}"], e["peer"]
        sp = e[f"speedup_mpi{ranks}"]
        print(f"{e['shape']:6s} {e['dofs']:9d} {s['iterations']:4d} {s['solve_s']:8.3f} "
              f"{s['dofs_per_s']:9.3g} {s['max_rel_error_vs_closed_form']:8.1e} "
              f"{(sp['solve'] if sp else float('nan')):7.2f} "
              f"{(q['total_s'] if q else float('nan')):8.3f} {(q['iterations'] if q else -1):8d} "
              f"{(e['ratio_hybrid_over_peer']['setup_plus_solve'] if q else float('nan')):6.2f} "
              f"{(q['max_rel_diff_vs_hybrid'] if q else float('nan')):8.1e}")
    sc = report["scaling"]
    if sc["serial_solve_slope"]:
        print(f"slope log(solve s) vs log(DOFs): {sc['serial_solve_slope']['slope']:.2f} serial; "
              f"iterations {sc['serial_iterations_range']}")


if __name__ == "__main__":
    main()
