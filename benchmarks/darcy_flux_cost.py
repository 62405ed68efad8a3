"""Memory and time of the conservative Darcy flux against the pressure solve it comes from.

Problem: Baxter-Jain IFP in a 3-D sphere tumour (R = 4 mm) in a 2 mm host shell, default tissue
values, p = 0 on the outer sphere, P1; a uniform gmsh mesh refined once in parallel
(``refine_uniformly``), as ``hybrid forward`` builds it. Per run and rank: peak resident memory
(getrusage) after the mesh, after the pressure solve, after the flux (``IFPSolution.flux``,
RT1 + DG0 multiplier) and after its P1 output copy (``IFPSolution.velocity``); the pressure solve
and flux times (wall and process CPU, the slowest rank; CPU time is the steadier of the two on a
loaded machine), the flux solver's Krylov iterations (from PETSc's converged-reason line), the cell
balance (max |int_T (div u - source)| over the largest |int_T source|) and the tumour-surface
outflow against the closed form. Peak RSS only grows, so a stage's increase is what it needed
beyond the stages before it.

Each case runs in its own process (``--worker``), serially at two sizes and under
``mpirun -n 2`` at the smaller one. Results are merged into benchmarks/results/darcy_flux_cost.json
under ``--label`` (e.g. ``before`` for the solver of an older commit, ``after`` for this one).
PETSc options after ``--`` (``-hybrid_flux_*``) reach the flux solver and win over
:data:`hybrid.forward.ifp.FLUX_PETSC_OPTIONS` (e.g. ``-hybrid_flux_ksp_gmres_restart 30`` or GAMG
tuning); an older solver is measured by putting that commit's ``hybrid/`` first on ``PYTHONPATH``
(before commit 6ce4104, options that FLUX_PETSC_OPTIONS sets were overwritten by it).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
RADIUS, HOST = 4e-3, 2e-3       # m
VERTICES_TIMES_H3 = 9.0e-7       # m^3: gmsh vertices of this sphere-in-host at size h, times h^3
GROWTH = 7.6                     # P1 DOFs per refinement
CASES = [{"dofs": 5e4, "ranks": 1}, {"dofs": 1.5e5, "ranks": 1}, {"dofs": 5e4, "ranks": 2}]
CONVERGED = re.compile(r"Linear hybrid_flux_ solve converged due to (\w+) iterations (\d+)")


def worker(args) -> None:
    import numpy as np
    import ufl
    from mpi4py import MPI

    import hybrid.forward  # noqa: F401  (dolfinx_solver before dolfinx)
    import dolfinx.fem
    from hybrid.collective import peak_memory_mib
    from hybrid.forward import solve_ifp
    from hybrid.mesh import tags, tumour_mesh
    from hybrid.mesh.refine import refine_uniformly
    from hybrid.problems.exact import radial_pressure
    from hybrid.problems.ifp import OuterBoundary, TissueProperties

    comm = MPI.COMM_WORLD
    total = lambda form: comm.allreduce(dolfinx.fem.assemble_scalar(dolfinx.fem.form(form)), op=MPI.SUM)
    tumour, host = TissueProperties.defaults("tumour"), TissueProperties.defaults("host")
    h = (VERTICES_TIMES_H3 * GROWTH / args.dofs) ** (1 / 3)
    domain = refine_uniformly(tumour_mesh(comm, "sphere", RADIUS, HOST, h), 1)
    memory = {"mesh": peak_memory_mib(comm)}
    cpu = time.process_time()
    start = time.perf_counter()
    solution = solve_ifp(domain, tumour, OuterBoundary("dirichlet", 0.0), host)
    pressure_s = comm.allreduce(time.perf_counter() - start, op=MPI.MAX)
    pressure_cpu_s = comm.allreduce(time.process_time() - cpu, op=MPI.MAX)
    memory["pressure"] = peak_memory_mib(comm)
    cpu = time.process_time()
    flux = solution.flux
    flux_cpu_s = comm.allreduce(time.process_time() - cpu, op=MPI.MAX)
    flux_s = comm.allreduce(solution.flux_time_s, op=MPI.MAX)
    memory["flux"] = peak_memory_mib(comm)
    start = time.perf_counter()
    solution.velocity
    velocity_s = comm.allreduce(time.perf_counter() - start, op=MPI.MAX)
    memory["velocity"] = peak_memory_mib(comm)

    mesh = domain.mesh
    test = ufl.TestFunction(dolfinx.fem.functionspace(mesh, ("DG", 0)))
    residual = dolfinx.fem.assemble_vector(dolfinx.fem.form((ufl.div(flux) - solution.fluid_source) * test * ufl.dx))
    size = dolfinx.fem.assemble_vector(dolfinx.fem.form(abs(solution.fluid_source) * test * ufl.dx))
    balance = (comm.allreduce(float(np.abs(residual.array).max(initial=0.0)), op=MPI.MAX)
               / comm.allreduce(float(size.array.max(initial=0.0)), op=MPI.MAX))
    dx = ufl.Measure("dx", domain=mesh, subdomain_data=domain.cell_tags)
    regions = [tumour.radial_region(RADIUS), host.radial_region(RADIUS + HOST)]
    exact = 4 * np.pi * RADIUS**2 * radial_pressure(3, regions, 0.0).velocity(np.array([RADIUS]))[0]
    outflow = total(ufl.div(flux) * dx(tags.TUMOUR))
    flux_dofs = flux.function_space.dofmap.index_map.size_global * flux.function_space.dofmap.index_map_bs
    if comm.rank == 0:
        print("RESULT " + json.dumps({
            "ranks": comm.size, "pressure_dofs": solution.dofs, "flux_dofs": flux_dofs,
            "cells": mesh.topology.index_map(3).size_global, "pressure_s": pressure_s,
            "pressure_iterations": solution.iterations, "flux_s": flux_s,
            "pressure_cpu_s": pressure_cpu_s, "flux_cpu_s": flux_cpu_s, "velocity_s": velocity_s,
            "peak_memory_MiB_per_rank": memory, "cell_balance": balance,
            "margin_outflow_relative_error": outflow / exact - 1}), flush=True)


def run_case(case: dict, solver: list[str]) -> dict:
    command = [sys.executable, str(HERE), "--worker", "--dofs", str(case["dofs"])]
    if case["ranks"] > 1:
        command = [str(Path(sys.executable).with_name("mpirun")), "-n", str(case["ranks"]), *command]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1",
                               "PETSC_OPTIONS": " ".join(["-hybrid_flux_ksp_converged_reason", *solver])})
    if done.returncode:
        raise RuntimeError(f"worker failed ({done.returncode}): {done.stderr[-2000:]}")
    result = json.loads(next(line[7:] for line in done.stdout.splitlines() if line.startswith("RESULT ")))
    reason, iterations = CONVERGED.search(done.stdout).groups()
    return {**result, "flux_converged_reason": reason, "flux_iterations": int(iterations)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dofs", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--label", default="after", help="name of this run in the JSON report")
    parser.add_argument("--note", default="", help="what this run measures, e.g. the commit of an older solver")
    parser.add_argument("--cases", type=int, nargs="*", help="indices into the case list (default all)")
    parser.add_argument("--output", type=Path, default=HERE.parent / "results" / "darcy_flux_cost.json")
    parser.add_argument("solver", nargs="*", help="extra PETSc options after --, e.g. -hybrid_flux_ksp_type gmres")
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    cases = [CASES[i] for i in args.cases] if args.cases else CASES
    rows = []
    for case in cases:
        row = run_case(case, args.solver)
        rows.append(row)
        m = row["peak_memory_MiB_per_rank"]
        print(f"{row['ranks']} rank(s) {row['pressure_dofs']:>8d} p-DOFs {row['flux_dofs']:>8d} flux DOFs: "
              f"pressure {row['pressure_s']:.1f} s (CPU {row['pressure_cpu_s']:.1f}), flux {row['flux_s']:.1f} s "
              f"(CPU {row['flux_cpu_s']:.1f}, {row['flux_iterations']} it), "
              f"P1 copy {row['velocity_s']:.1f} s; peak MiB/rank pressure {max(m['pressure']):.0f} "
              f"flux {max(m['flux']):.0f} velocity {max(m['velocity']):.0f}; balance {row['cell_balance']:.1e}, "
              f"outflow error {row['margin_outflow_relative_error']:+.2e}", flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=HERE.parent).stdout.strip()
    report = json.loads(args.output.read_text()) if args.output.exists() else {"runs": {}}
    report["problem"] = ("Baxter-Jain IFP, sphere tumour R = 4 mm in a 2 mm host shell, default tissue values, "
                         "p = 0 outside, P1 pressure, RT1 + DG0 flux; uniform gmsh mesh refined once")
    report["runs"][args.label] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit, "note": args.note, "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "load_average": os.getloadavg(), "solver_options": args.solver, "cases": rows}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
