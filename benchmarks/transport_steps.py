"""Drug transport (three species) on a 3-D tumour: cost per time step against DOFs, reuse between steps.

Problem: a sphere tumour (R = 1.5 mm, default IFP values, p = 0 on the surface), the conservative
Darcy flux of the steady IFP, liposomal + free + intracellular doxorubicin with volume exchange
through S/V (table values), a bolus dose of liposomes (0.7 mg/kg), baseline release, and linear
(default; the matrix is then assembled and preconditioned once) or El-Kareh uptake (``--uptake
el_kareh_secomb``: Newton, matrix every iteration). Backward Euler, ``--step`` seconds up to
``--end``; the three species are written to an XDMF file every step (I/O share).

For every mesh (``--sizes``: gmsh mesh sizes in m) it records nodes per species, the first
step's time (includes the preconditioner set-up) against the mean of the later ones, and the
shares of matrix assembly, vector assembly, solves and output in the stepping time, plus the
least-squares slope of log(time per later step) against log(DOFs) (1 = linear cost).
Run serially or under ``mpirun -n 2``; writes benchmarks/results/transport_steps[_npN].json.
The issue's full case (>= 100k DOFs per species, a day of simulated time) is
``--sizes 1.2e-4 8e-5 5.5e-5 --end 86400 --step 600``; ``--smoke`` runs in well under a minute.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from mpi4py import MPI

import hybrid.forward  # noqa: F401  (DOLFINx the supported way)
import dolfinx.io

HERE = Path(__file__).resolve()
RADIUS = 1.5e-3   # m


def run_case(comm, mesh_size: float, end: float, step: float, uptake_law: str, output_dir: Path) -> dict:
    from hybrid.forward import solve_ifp
    from hybrid.forward.transport import Carrier, CellUptake, Flow, TransportModel, TransportSolver
    from hybrid.mesh import tumour_mesh
    from hybrid.problems import uptake
    from hybrid.problems.exchange import starling_fluid_flux
    from hybrid.problems.ifp import OuterBoundary, TissueProperties
    from hybrid.problems.parameters import default
    from hybrid.problems.pharmacokinetics import PlasmaCurve, dose_amount

    tumour = TissueProperties.defaults("tumour")
    domain = tumour_mesh(comm, "sphere", RADIUS, 0.0, mesh_size)
    ifp = solve_ifp(domain, tumour, OuterBoundary("dirichlet", 0.0))
    flow = Flow(ifp.flux, vascular_fluid_source=starling_fluid_flux(ifp.pressure, tumour.vascular_exchange,
                                                                      tumour.effective_pressure))
    phi = default("phi_T")
    linear = uptake_law == "linear"
    rate = ((lambda c_free, c_cell, xp: uptake.linear_uptake(c_free)) if linear else
            (lambda c_free, c_cell, xp: uptake.el_kareh_secomb_uptake(c_free, c_cell)))
    model = TransportModel(
        free=Carrier(1.2e-10, default("P_F"), default("sigma_F")), uptake=CellUptake(rate, linear),
        plasma_free=PlasmaCurve.constant(0.0), interstitial_fraction=phi,
        liposomal=Carrier(2e-12, default("P_L"), default("sigma_L"), clearance=default("k_L")),
        plasma_liposomal=PlasmaCurve.liposomal(dose_amount(0.7, "mg/kg")), release_rate=default("k_rel_L"),
        surface_to_volume=default("SV_T"))
    start = time.perf_counter()
    solver = TransportSolver(domain, model, flow=flow)
    setup_s = time.perf_counter() - start
    nodes = solver.concentrations.function_space.dofmap.index_map.size_global
    step_times, output_s = [], 0.0
    with dolfinx.io.XDMFFile(comm, str(output_dir / f"transport_{nodes}.xdmf"), "w") as xdmf:
        xdmf.write_mesh(domain.mesh)
        for _ in range(int(round(end / step))):
            comm.barrier()
            t0 = time.perf_counter()
            record = solver.step(step)
            comm.barrier()
            step_times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for function in solver.species():
                xdmf.write_function(function, record.time)
            output_s += time.perf_counter() - t0
    timings = solver.solver.timings
    solver.close()
    stepping = sum(step_times)
    later = step_times[1:] or step_times
    return {"mesh_size_m": mesh_size, "nodes_per_species": nodes, "dofs": 3 * nodes, "steps": len(step_times),
            "setup_s": setup_s, "first_step_s": step_times[0], "later_step_mean_s": float(np.mean(later)),
            "first_over_later": step_times[0] / float(np.mean(later)), "total_stepping_s": stepping,
            "output_s": output_s, "matrix_assemblies": timings.matrix_assemblies,
            "share_of_stepping": {"assemble_matrix": timings.assemble_matrix_s / stepping,
                                  "assemble_vector": timings.assemble_vector_s / stepping,
                                  "solve": timings.solve_s / stepping},
            "krylov_iterations_per_solve": timings.krylov_iterations / max(timings.solves, 1),
            "supg": solver.stabilised, "max_cell_peclet": solver.peclet,
            "balance_residual_relative_last": abs(record.balance_residual) / max(record.entered_through_vessels, 1e-300),
            "min_concentration": list(record.minimum)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=float, nargs="+", default=[2.4e-4, 1.6e-4, 1.1e-4, 7.5e-5])
    parser.add_argument("--end", type=float, default=3600.0, help="simulated time [s]")
    parser.add_argument("--step", type=float, default=600.0, help="time step [s]")
    parser.add_argument("--uptake", choices=("linear", "el_kareh_secomb"), default="linear")
    parser.add_argument("--smoke", action="store_true", help="two tiny meshes, two steps")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    sizes, end, step = ([6e-4, 4e-4], 2 * args.step, args.step) if args.smoke else (args.sizes, args.end, args.step)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(comm.bcast(scratch if comm.rank == 0 else None, root=0))
        rows = [run_case(comm, h, end, step, args.uptake, scratch) for h in sizes]
    dofs = np.array([r["dofs"] for r in rows], float)
    later = np.array([r["later_step_mean_s"] for r in rows])
    slope = float(np.polyfit(np.log(dofs), np.log(later), 1)[0]) if len(rows) > 1 else None
    report = {"benchmark": "transport_steps", "date": datetime.datetime.now(datetime.UTC).isoformat(),
              "machine": platform.platform(), "cpus": os.cpu_count(), "load_average": os.getloadavg(),
              "mpi_ranks": comm.size, "uptake": args.uptake, "end_s": end, "step_s": step, "rows": rows,
              "slope_log_time_per_step_vs_log_dofs": slope}
    if comm.rank == 0:
        suffix = "" if comm.size == 1 else f"_np{comm.size}"
        out = args.output or HERE.parent / "results" / f"transport_steps{suffix}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"{'nodes':>9} {'first [s]':>10} {'later [s]':>10} {'ratio':>6} {'asm A':>6} {'asm b':>6} {'solve':>6} {'I/O [s]':>8}")
        for r in rows:
            s = r["share_of_stepping"]
            print(f"{r['nodes_per_species']:>9} {r['first_step_s']:>10.3f} {r['later_step_mean_s']:>10.3f} "
                  f"{r['first_over_later']:>6.1f} {s['assemble_matrix']:>6.2f} {s['assemble_vector']:>6.2f} "
                  f"{s['solve']:>6.2f} {r['output_s']:>8.2f}")
        print(f"slope log(time per step) / log(DOFs): {slope}; written {out}")


if __name__ == "__main__":
    main()
