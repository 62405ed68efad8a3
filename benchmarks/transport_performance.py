"""Issue-8 performance case: a 3-D tumour-scale transport run of a day, and cost per step vs DOFs.

The problem is the one of ``transport_steps.py`` (sphere R = 1.5 mm, steady IFP and its Darcy
flux, liposomal + free + intracellular doxorubicin, volume exchange through S/V, bolus of
liposomes, linear uptake, backward Euler, three species written to XDMF every step); this script
reuses its ``run_case`` and only chooses the runs:

- a ladder of coarser meshes (``--ladder``) for ``--ladder-steps`` steps each: cost per step
  against DOFs (slope of log time per later step against log DOFs; 1 = linear);
- the full case on ``--mesh-size`` (default 4.5e-5 m: >= 100k nodes per species) for ``--end``
  (a day) with ``--step`` (15 min): time per step (first and later), total, and the shares of
  matrix assembly, vector assembly, linear solves and output (XDMF) in the total.

A later step reuses the matrix and the preconditioner of the first (linear uptake, fixed step),
so ``first_over_later`` well above 1 is the reuse at work. Run serially and under
``mpirun -n 2``; writes benchmarks/results/transport_performance[_npN].json. ``--smoke``: tiny
meshes, two steps.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from mpi4py import MPI

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))
from transport_steps import run_case  # noqa: E402  (the shared problem definition)


def shares_of_total(row: dict) -> dict:
    """Wall-time split of one run [fraction of setup + stepping + output]."""
    stepping = row["total_stepping_s"]
    total = row["setup_s"] + stepping + row["output_s"]
    split = {key: share * stepping / total for key, share in row["share_of_stepping"].items()}
    split["output"] = row["output_s"] / total
    split["setup"] = row["setup_s"] / total
    split["other"] = 1.0 - sum(split.values())
    return {"total_s": total, "share_of_total": split}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ladder", type=float, nargs="*", default=[1.6e-4, 1.1e-4, 7.5e-5],
                        help="mesh sizes [m] of the cost-per-step ladder")
    parser.add_argument("--ladder-steps", type=int, default=4)
    parser.add_argument("--mesh-size", type=float, default=4.5e-5, help="full case mesh size [m]")
    parser.add_argument("--end", type=float, default=86400.0, help="full case simulated time [s]")
    parser.add_argument("--step", type=float, default=900.0, help="time step [s]")
    parser.add_argument("--smoke", action="store_true", help="tiny meshes, two steps")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    if args.smoke:
        args.ladder, args.ladder_steps, args.mesh_size, args.end = [6e-4], 2, 4e-4, 2 * args.step
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(comm.bcast(scratch if comm.rank == 0 else None, root=0))
        ladder = [run_case(comm, h, args.ladder_steps * args.step, args.step, "linear", scratch) for h in args.ladder]
        full = run_case(comm, args.mesh_size, args.end, args.step, "linear", scratch)
    full |= shares_of_total(full)
    rows = ladder + [full]
    dofs = np.array([r["nodes_per_species"] for r in rows], float)
    later = np.array([r["later_step_mean_s"] for r in rows])
    slope = float(np.polyfit(np.log(dofs), np.log(later), 1)[0]) if len(rows) > 1 else None
    report = {"benchmark": "transport_performance", "date": datetime.datetime.now(datetime.UTC).isoformat(),
              "machine": platform.platform(), "cpus": os.cpu_count(), "load_average": os.getloadavg(),
              "mpi_ranks": comm.size, "step_s": args.step, "ladder": ladder, "full": full,
              "full_meets_100k_nodes_per_species": full["nodes_per_species"] >= 100_000,
              "slope_log_time_per_step_vs_log_nodes": slope, "wall_time_s": time.perf_counter() - start}
    if comm.rank == 0:
        suffix = "" if comm.size == 1 else f"_np{comm.size}"
        out = args.output or HERE.parent / "results" / f"transport_performance{suffix}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"{'nodes':>8} {'steps':>5} {'first [s]':>9} {'later [s]':>9} {'ratio':>6}")
        for r in rows:
            print(f"{r['nodes_per_species']:>8} {r['steps']:>5} {r['first_step_s']:>9.3f} "
                  f"{r['later_step_mean_s']:>9.3f} {r['first_over_later']:>6.1f}")
        s = full["share_of_total"]
        print(f"full case: {full['nodes_per_species']} nodes x 3 species, {full['steps']} steps of {args.step:g} s, "
              f"total {full['total_s']:.1f} s; shares: assemble A {s['assemble_matrix']:.2f}, b "
              f"{s['assemble_vector']:.2f}, solve {s['solve']:.2f}, output {s['output']:.2f}, setup {s['setup']:.2f}, "
              f"other {s['other']:.2f}; slope {slope}; written {out}")


if __name__ == "__main__":
    main()
