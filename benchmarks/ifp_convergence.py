"""Observed convergence rates of the IFP solver (manufactured solution), P1 and P2, L2 and H1.

    python benchmarks/ifp_convergence.py [--output benchmarks/results/ifp_convergence.json]

Runs under mpirun too. Writes the error table and the rates between successive meshes.
"""

import argparse
import json
from pathlib import Path

from mpi4py import MPI

from hybrid.forward.verification import convergence_study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/ifp_convergence.json"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    studies = [convergence_study(comm, degree, tuple(args.sizes)) for degree in (1, 2)]
    if comm.rank == 0:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"mpi_ranks": comm.size, "studies": studies}, indent=2) + "\n")
        for study in studies:
            print(f"P{study['degree']}: L2 rates {[round(r, 3) for r in study['l2_rate']]}, "
                  f"H1 rates {[round(r, 3) for r in study['h1_rate']]}")


if __name__ == "__main__":
    main()
