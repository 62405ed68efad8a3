"""Forward runs at cluster scale: strong and weak scaling of ``hybrid forward``, each point beside a
bare DOLFINx CG + GAMG solve of the same size on the same ranks, in the same process.

Problem: Baxter-Jain IFP in a 3-D sphere tumour (R = 4 mm) in a host shell (2 mm), default tissue
values, ``p = 0`` on the outer boundary, P1. Meshes: a coarse uniform gmsh mesh on rank 0
(``surface_mesh_size = mesh_size``), distributed, then refined ``refinements`` times in parallel
(``[geometry] refinements``), i.e. exactly ``hybrid.commands.forward.run_forward`` from mesh to files.

Bare solve, on the mesh the hybrid run made: P1, ``a = (grad u . grad v + k2 u v) dx`` with
``k2 = Lp S/V / K`` of the tumour everywhere, ``L = k2 p_e v dx``, ``u = 0`` on the outer boundary,
assembled with ``dolfinx.fem.petsc`` and solved by PETSc CG + GAMG to the same ``rtol`` (1e-10) as
the project. ``solve_s`` of both is the KSP solve (GAMG set-up + iterations), max over ranks.

Points, in this order so that the most important come first when time runs short:
``big`` (>= 10M DOFs on the most ranks), strong scaling at ~1M DOFs (1..N ranks), weak scaling at
~250k DOFs per rank (1..N), strong scaling at ~8M DOFs (N..1). Fields written: the pressure
(``[output] velocity = false``) unless ``--velocity``. ``--smoke`` shrinks every size
about 40 times (a local 2-core check). ``--points study:ranks,...`` runs just those points, in
that order (e.g. the ones a shorter earlier session could not reach); ``--append`` keeps the
points already in the output JSON (refused if its problem settings differ: partitioner, outputs),
a point measured again replaces its row (a failed or skipped one never replaces a measured row),
and stamps every new row with this run's machine and time. Each point is one ``mpirun -n R`` of this script in
``--worker`` mode; the driver writes the JSON (and, with matplotlib, a PNG) after every point.

    python benchmarks/cluster_scaling.py --ranks 1,2,4,8,16 --budget-s 540
    python benchmarks/cluster_scaling.py --points weak_250k:16,strong_8M:16 --append --budget-s 300
    python benchmarks/cluster_scaling.py --smoke --ranks 1,2
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
RADIUS, HOST = 4e-3, 2e-3          # m
VERTICES_TIMES_H3 = 9.0e-7         # m^3: gmsh vertices of this sphere-in-host at size h, times h^3 (measured)
GROWTH = 7.6                       # DOFs (vertices) per refinement, measured 7.3 (first) to 7.9
STUDIES = ("big", "strong_1M", "weak_250k", "strong_8M")


def mesh_size_for(dofs: float, refinements: int) -> float:
    """Coarse gmsh size [m] that gives about ``dofs`` P1 DOFs after ``refinements`` refinements."""
    return (VERTICES_TIMES_H3 * GROWTH ** refinements / dofs) ** (1 / 3)


def scaling_point(study: str, ranks: int, smoke: bool) -> dict:
    """One point of ``study`` on ``ranks`` ranks: its target DOFs, refinements and coarse mesh size."""
    scale = 1 / 40 if smoke else 1.0
    dofs, refinements = {"big": (max(12e6 * scale * ranks / 16, 1e5 if smoke else 1.2e7), 3),
                         "strong_1M": (1e6 * scale, 2), "weak_250k": (2.5e5 * scale * ranks, 2),
                         "strong_8M": (8e6 * scale, 2)}[study]
    return {"study": study, "ranks": ranks, "dofs": dofs, "refinements": refinements,
            "mesh_size_m": mesh_size_for(dofs, refinements)}


def plan(ranks: list[int], smoke: bool) -> list[dict]:
    """The points, most important first."""
    return ([scaling_point("big", max(ranks), smoke)]
            + [scaling_point("strong_1M", r, smoke) for r in ranks]
            + [scaling_point("weak_250k", r, smoke) for r in ranks]
            + [scaling_point("strong_8M", r, smoke) for r in reversed(ranks)])


def chosen_points(spec: str, smoke: bool) -> list[dict]:
    """``"study:ranks,..."`` -> those points, in that order."""
    chosen = []
    for item in spec.split(","):
        study, _, ranks = item.partition(":")
        if study not in STUDIES or not ranks.isdigit() or int(ranks) < 1:
            raise SystemExit(f"--points: {item!r} is not study:ranks with study one of {', '.join(STUDIES)}")
        chosen.append(scaling_point(study, int(ranks), smoke))
    return chosen


# ----------------------------------------------------------------------------------- worker
def bare_solve(domain, tumour, rtol: float) -> dict:
    """Bare DOLFINx P1 reaction-diffusion solve with CG + GAMG on ``domain``'s mesh (see above)."""
    import dolfinx.fem
    import dolfinx.fem.petsc
    import numpy as np
    import ufl
    from mpi4py import MPI
    from petsc4py import PETSc

    from hybrid.mesh import tags

    mesh, comm = domain.mesh, domain.mesh.comm
    comm.Barrier()
    t0 = time.perf_counter()
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    k2 = dolfinx.fem.Constant(mesh, tumour.vascular_exchange / tumour.hydraulic_conductivity)
    pe = dolfinx.fem.Constant(mesh, tumour.effective_pressure)
    a = dolfinx.fem.form((ufl.inner(ufl.grad(u), ufl.grad(v)) + k2 * u * v) * ufl.dx)
    L = dolfinx.fem.form(k2 * pe * v * ufl.dx)
    facets = np.concatenate([domain.facet_tags.find(t) for t in domain.outer_tags])
    bc = dolfinx.fem.dirichletbc(0.0, dolfinx.fem.locate_dofs_topological(V, mesh.topology.dim - 1, facets), V)
    A = dolfinx.fem.petsc.assemble_matrix(a, bcs=[bc])
    A.assemble()
    b = dolfinx.fem.petsc.assemble_vector(L)
    dolfinx.fem.petsc.apply_lifting(b, [a], bcs=[[bc]])
    b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
    dolfinx.fem.petsc.set_bc(b, [bc])
    t1 = time.perf_counter()
    ksp = PETSc.KSP().create(comm)
    ksp.setOperators(A)
    ksp.setType("cg")
    ksp.getPC().setType("gamg")
    ksp.setTolerances(rtol=rtol, atol=1e-30, max_it=1000)
    x = A.createVecRight()
    ksp.solve(b, x)
    t2 = time.perf_counter()
    iterations, reason = ksp.getIterationNumber(), ksp.getConvergedReason()
    for obj in (ksp, A, b, x):
        obj.destroy()
    wmax = lambda value: comm.allreduce(value, op=MPI.MAX)
    return {"dofs": V.dofmap.index_map.size_global, "assemble_s": wmax(t1 - t0), "solve_s": wmax(t2 - t1),
            "iterations": iterations, "converged_reason": reason}


def worker(args) -> None:
    import hybrid.forward  # noqa: F401  (dolfinx_solver before dolfinx)
    from mpi4py import MPI

    from hybrid.config import forward_config_from_dict
    from hybrid.collective import peak_memory_mib
    from hybrid.commands.forward import run_forward

    comm = MPI.COMM_WORLD
    point = json.loads(args.point)
    scratch = Path(comm.bcast(tempfile.mkdtemp(prefix="hybrid-scaling-", dir=args.scratch) if comm.rank == 0
                              else None, root=0))
    h = point["mesh_size_m"]
    document = {"geometry": {"shape": "sphere", "tumour_radius": RADIUS, "host_thickness": HOST, "mesh_size": h,
                             "surface_mesh_size": h, "refinement_width": 0.0,
                             "refinements": point["refinements"], "partitioner": args.partitioner},
                "output": {"directory": str(scratch), "velocity": args.velocity}}
    config = forward_config_from_dict(document, "benchmarks/cluster_scaling.py")
    comm.Barrier()
    t0 = time.perf_counter()
    run = run_forward(config, comm)
    wall = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
    s = run.summary
    wmax = lambda value: comm.allreduce(value, op=MPI.MAX)
    hybrid = {"dofs": s["dofs"], "cells": s["mesh"]["cells"], "iterations": s["iterations"],
              "solve_s": wmax(s["solve_time_s"]), "assemble_s": wmax(s["wall_time_s"]["assemble_s"]),
              "stages_s_rank0": s["wall_time_s"], "wall_mesh_to_files_s": wall,
              "fields_bytes": s["outputs"]["fields_bytes"], "fields_write_s": s["outputs"]["fields_write_s"],
              "peak_memory_MiB": s["peak_memory_MiB"], "max_snap_distance_m": s["mesh"]["max_snap_distance_m"],
              "closed_form_max_error_over_pe": s["closed_form"]["max_error_over_tumour_pe"]}
    bare = bare_solve(run.domain, config.tumour, 1e-10)
    memory = peak_memory_mib(comm)
    if comm.rank == 0:
        shutil.rmtree(scratch, ignore_errors=True)
        row = {**point, "hybrid": hybrid, "bare": bare, "peak_memory_MiB_per_rank_end": memory,
               "solve_ratio_hybrid_over_bare": hybrid["solve_s"] / bare["solve_s"],
               "dofs_per_rank": hybrid["dofs"] / comm.size,
               "memory_per_dof_B": 2**20 * sum(s["peak_memory_MiB"]["per_rank"]) / hybrid["dofs"]}
        Path(args.worker_output).write_text(json.dumps(row))
        print(f"[{point['study']} {comm.size} rank(s)] {hybrid['dofs']} DOFs: hybrid solve {hybrid['solve_s']:.2f} s "
              f"({hybrid['iterations']} its), bare {bare['solve_s']:.2f} s ({bare['iterations']} its), "
              f"mesh->files {wall:.1f} s, peak {max(s['peak_memory_MiB']['per_rank']):.0f} MiB/rank", flush=True)


# ----------------------------------------------------------------------------------- driver
def figure(report: dict, path: Path) -> None:
    """Solve time (hybrid, bare) and wall time mesh->files against ranks, one panel per study."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    studies = [s for s in STUDIES[1:] + STUDIES[:1]
               if any(r["study"] == s and "hybrid" in r for r in report["points"])]
    if not studies:
        return
    fig, axes = plt.subplots(1, len(studies), figsize=(4.2 * len(studies), 3.6), squeeze=False)
    for ax, study in zip(axes[0], studies):
        rows = sorted((r for r in report["points"] if r["study"] == study and "hybrid" in r), key=lambda r: r["ranks"])
        ranks = [r["ranks"] for r in rows]
        ax.plot(ranks, [r["hybrid"]["solve_s"] for r in rows], "o-", label="hybrid solve")
        ax.plot(ranks, [r["bare"]["solve_s"] for r in rows], "s--", label="bare DOLFINx solve")
        ax.plot(ranks, [r["hybrid"]["wall_mesh_to_files_s"] for r in rows], "^-", label="hybrid mesh -> files")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("MPI ranks")
        ax.set_ylabel("wall time [s]")
        dofs = ", ".join(f"{r['hybrid']['dofs'] / 1e6:.2g}M" for r in rows)
        ax.set_title(f"{study} ({dofs} DOFs)", fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", default="1,2", help="comma-separated rank counts")
    ap.add_argument("--smoke", action="store_true", help="sizes about 40 times smaller")
    ap.add_argument("--output", type=Path, default=HERE.parent / "results" / "cluster_scaling.json")
    ap.add_argument("--budget-s", type=float, default=3600, help="stop starting points after this many seconds")
    ap.add_argument("--studies", default=",".join(STUDIES))
    ap.add_argument("--points", default=None, help="study:ranks,... : just these points, in this order "
                                                   "(instead of --ranks/--studies)")
    ap.add_argument("--append", action="store_true",
                    help="keep the points already in --output (a point run again replaces its row)")
    ap.add_argument("--partitioner", default="scotch")
    ap.add_argument("--velocity", action="store_true",
                    help="also compute and write the conservative Darcy flux (a mixed RT solve, ~10x the "
                         "pressure solve and most of the memory)")
    ap.add_argument("--mpirun", default=None, help="default: mpirun beside this Python, else on PATH")
    ap.add_argument("--scratch", default=None, help="where the runs write their fields (then deleted)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--point", help=argparse.SUPPRESS)
    ap.add_argument("--worker-output", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)

    ranks = [int(r) for r in args.ranks.split(",")]
    studies = args.studies.split(",")
    mpirun = args.mpirun or (str(Path(sys.executable).parent / "mpirun")
                             if (Path(sys.executable).parent / "mpirun").exists() else "mpirun")
    start = time.perf_counter()
    report = {
        "benchmark": "cluster_scaling", "smoke": args.smoke,
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "problem": {"model": "Baxter-Jain steady IFP, sphere tumour in host shell, P1",
                    "tumour_radius_m": RADIUS, "host_thickness_m": HOST, "boundary": "p = 0 on the outer sphere",
                    "mesh": "uniform gmsh on rank 0 + parallel uniform refinement (hybrid.mesh.refine)",
                    "partitioner": args.partitioner,
                    "outputs": "ifp.xdmf/h5 with pressure" + (" and velocity" if args.velocity else
                                                              " only ([output] velocity = false)")},
        "solvers": {"hybrid": "hybrid.commands.forward.run_forward: solve_ifp CG + GAMG, rtol 1e-10; the whole run "
                              "mesh -> ifp.xdmf/h5 + summary.json",
                    "bare": "same mesh: dolfinx.fem.petsc assembly of grad.grad + k2 mass, CG + GAMG rtol 1e-10"},
        "timing_definitions": {"solve_s": "KSP solve (GAMG set-up + iterations), max over ranks",
                               "assemble_s": "hybrid: coefficients, spaces, form JIT, matrix/rhs assembly; "
                                             "bare: space, forms (JIT cached after the first point), assembly",
                               "wall_mesh_to_files_s": "run_forward from gmsh to summary.json, max over ranks",
                               "memory_per_dof_B": "sum over ranks of peak RSS (getrusage) / DOFs"},
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "load_average_before": list(os.getloadavg())},
        "points": [],
    }
    todo = (chosen_points(args.points, args.smoke) if args.points else
            [p for p in plan(ranks, args.smoke) if p["study"] in studies])
    if args.append and args.output.exists():
        earlier = json.loads(args.output.read_text())
        for what in ("smoke", "problem"):
            if earlier[what] != report[what]:
                raise SystemExit(f"--append: {args.output} has {what} {earlier[what]}, this run {report[what]}")
        stamp = {"timestamp": report["timestamp"], "machine": report["machine"]}   # this run's, on each new row
        report = earlier
    else:
        stamp = {}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    for point in todo:
        left = args.budget_s - (time.perf_counter() - start)
        if left < 5:
            _add_row(report, {**point, "skipped": "time budget spent", **stamp})
            continue
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "row.json"
            cmd = [mpirun, "-n", str(point["ranks"]), sys.executable, str(HERE), "--worker",
                   "--point", json.dumps(point), "--worker-output", str(out), "--partitioner", args.partitioner]
            cmd += ["--velocity"] if args.velocity else []
            if args.scratch:
                cmd += ["--scratch", args.scratch]
            t0 = time.perf_counter()
            try:
                proc = subprocess.run(cmd, text=True, stderr=subprocess.PIPE, timeout=left)
                row = json.loads(out.read_text()) if proc.returncode == 0 and out.exists() else \
                    {**point, "failed": f"exit {proc.returncode}: {proc.stderr[-3000:]}"}
            except subprocess.TimeoutExpired:
                row = {**point, "skipped": f"timed out after {left:.0f} s (time budget)"}
            row["launch_wall_s"] = time.perf_counter() - t0
        row.update(stamp)
        if "failed" in row:
            print(f"[{point['study']} {point['ranks']} rank(s)] FAILED\n{row['failed']}", flush=True)
        if stamp:
            row["load_average_after"] = list(os.getloadavg())
        _add_row(report, row)
        if not stamp:
            report["wall_s"] = time.perf_counter() - start
            report["machine"]["load_average_after"] = list(os.getloadavg())
        args.output.write_text(json.dumps(report, indent=2) + "\n")
        figure(report, args.output.with_suffix(".png"))
    print_table(report)
    return report


def _add_row(report: dict, row: dict) -> None:
    """Append ``row``; a measured row replaces every earlier row of its study and ranks, a failed or
    skipped one is added only where no measured row of them exists (an --append run never loses one)."""
    key = (row["study"], row["ranks"])
    same = [p for p in report["points"] if (p["study"], p["ranks"]) == key]
    if "hybrid" in row or not any("hybrid" in p for p in same):
        report["points"] = [p for p in report["points"] if p not in same] + [row]


def print_table(report: dict) -> None:
    print(f"{'study':10s} {'ranks':>5s} {'DOFs':>10s} {'DOFs/rank':>9s} {'its':>4s} {'solve':>7s} {'bare':>7s} "
          f"{'ratio':>5s} {'mesh->files':>11s} {'refine':>6s} {'gmsh':>6s} {'write':>6s} {'MiB/rank':>8s} {'B/DOF':>6s}")
    for r in report["points"]:
        if "hybrid" not in r:
            reason = r.get("skipped") or (r.get("failed", "").strip().splitlines() or [""])[-1]
            print(f"{r['study']:10s} {r['ranks']:5d} {'':>10s} {reason[:100]}")
            continue
        h, b, st = r["hybrid"], r["bare"], r["hybrid"]["stages_s_rank0"]
        print(f"{r['study']:10s} {r['ranks']:5d} {h['dofs']:10d} {r['dofs_per_rank']:9.0f} {h['iterations']:4d} "
              f"{h['solve_s']:7.2f} {b['solve_s']:7.2f} {r['solve_ratio_hybrid_over_bare']:5.2f} "
              f"{h['wall_mesh_to_files_s']:11.1f} {st.get('refinement_s', 0):6.1f} {st['meshing_s']:6.1f} "
              f"{st['write_s']:6.1f} {max(h['peak_memory_MiB']['per_rank']):8.0f} {r['memory_per_dof_B']:6.0f}")


if __name__ == "__main__":
    main()
