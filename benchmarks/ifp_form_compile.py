"""Form compilation of the IFP solver across meshes: solve_ifp (pressure, then the conservative
flux) on small spheres of three mesh sizes in one process, with an empty FFCx cache, and record
the assembly time of each (it includes form compilation). Where a conditioning factor enters the
forms as a plain float, every mesh compiles new forms; as a ``dolfinx.fem.Constant`` only the
first does.

    .venv/bin/python benchmarks/ifp_form_compile.py LABEL     # writes results/ifp_form_compile_LABEL.json
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

MESH_SIZES = (1.0e-3, 0.9e-3, 0.8e-3)   # m, tumour radius 4 mm, no host


def main(label: str) -> dict:
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="ffcx_cache_")   # fresh FFCx/cffi cache
    from mpi4py import MPI

    from hybrid.forward import solve_ifp
    from hybrid.mesh import tumour_mesh
    from hybrid.problems.ifp import OuterBoundary, TissueProperties

    tumour = TissueProperties.defaults("tumour")
    runs = []
    for size in MESH_SIZES:
        domain = tumour_mesh(MPI.COMM_WORLD, "sphere", 4.0e-3, 0.0, size)
        solution = solve_ifp(domain, tumour, OuterBoundary())
        start = time.perf_counter()
        solution.velocity   # the conservative flux (mixed RT solve), computed on first access
        runs.append({"mesh_size_m": size, "dofs": solution.dofs, "pressure_assemble_s": solution.assemble_time_s,
                     "pressure_solve_s": solution.solve_time_s, "flux_s": time.perf_counter() - start})
    result = {"label": label, "machine": "2-core shared box", "ranks": MPI.COMM_WORLD.size,
              "cache": "empty FFCx cache at start", "runs": runs}
    out = Path(__file__).parent / "results" / f"ifp_form_compile_{label}.json"
    if MPI.COMM_WORLD.rank == 0:
        out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1] if len(sys.argv) > 1 else "run"), indent=2))
