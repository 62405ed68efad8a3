"""Margin pressure and margin outflow of a 4 mm disc tumour in 2 mm of host tissue against the
host's lymphatic coefficient LpL SL/V, FEM and closed form (Dirichlet p = 0 and no-flux outer boundary).

    python benchmarks/ifp_lymphatics.py [--output benchmarks/results/ifp_lymphatics.json]

Runs under mpirun too. Prints the table that README.md ("Interstitial fluid pressure") quotes.
"""

import argparse
import json
from pathlib import Path

from mpi4py import MPI

from hybrid.forward.verification import lymphatic_sensitivity
from hybrid.problems.parameters import MMHG_TO_PA


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/ifp_lymphatics.json"))
    parser.add_argument("--values", type=float, nargs="+", default=[0.0, 1e-8, 3e-8, 7.54e-8, 3e-7])
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    rows = lymphatic_sensitivity(comm, args.values)
    if comm.rank == 0:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"mpi_ranks": comm.size, "rows": rows}, indent=2) + "\n")
        print("| LpL SL/V [1/(Pa s)] | outer boundary | margin p FEM / exact [mmHg] | "
              "margin u FEM / exact [um/s] |")
        for row in rows:
            p_fem, p_exact = row["margin_pressure_Pa"] / MMHG_TO_PA, row["margin_pressure_exact_Pa"] / MMHG_TO_PA
            print(f"| {row['lymphatic_filtration_per_Pa_s']:.3g} | {row['outer_boundary']} | "
                  f"{p_fem:.2f} / {p_exact:.2f} | "
                  f"{row['margin_velocity_m_s'] * 1e6:.4f} / {row['margin_velocity_exact_m_s'] * 1e6:.4f} |")


if __name__ == "__main__":
    main()
