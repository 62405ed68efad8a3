"""Effect of albumin binding of free doxorubicin on the perivascular half-distance (issue 8 point 2).

Krogh annulus (table r_vessel, r_tissue), mouse free-doxorubicin bolus (table curve, 0.02 kg),
El-Kareh & Secomb uptake, table D_F, P_F, phi_T; the plasma curve is split into the unbound part
(1 - delta_alb), which crosses the wall with P_F, and the bound part delta_alb. Three models of
the albumin binding in the tissue:

- ``none``: no binding in the tissue (the bound plasma drug does not cross the wall);
- ``equilibrium``: instantaneous, immobile bound drug B C_F, B = table B_alb (``free_binding_ratio``);
- ``kinetic``: the bound species C_B with table k_a, k_d, D_Fb, P_Fb, fed by the bound plasma drug.

For each, the half-distance from the wall [um] (:func:`hybrid.problems.krogh.half_distance` of
:func:`hybrid.forward.exposure.distance_profile`) of the unbound free drug C_F, of all free drug
(unbound + bound), of the intracellular C_I and of the total (free + bound + cells) at the given
times after injection; Grantab et al. 2012 (BMC Cancer 12:214, Table 3) measured 24-43 um on total
fluorescence.

Writes benchmarks/results/albumin_binding.json; ``--smoke`` runs a coarse mesh and short times.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import time
from pathlib import Path

import numpy as np
from mpi4py import MPI

import hybrid.forward  # noqa: F401  (DOLFINx the supported way)
import dolfinx.fem

from hybrid.forward.exposure import distance_profile
from hybrid.forward.transport import AlbuminBinding, Carrier, CellUptake, TransportModel, TransportSolver
from hybrid.mesh import krogh_mesh
from hybrid.problems import uptake
from hybrid.problems.krogh import half_distance
from hybrid.problems.parameters import default
from hybrid.problems.pharmacokinetics import PlasmaCurve, dose_amount

MOUSE_MASS = 0.02   # kg
BINDINGS = ("none", "equilibrium", "kinetic")


def plasma_parts(dose_mg_kg: float) -> tuple[PlasmaCurve, PlasmaCurve]:
    """Unbound and albumin-bound parts [mol/m^3 of plasma] of the mouse free-drug plasma curve."""
    total = PlasmaCurve.free_doxorubicin(dose_amount(dose_mg_kg, "mg/kg", body_mass=MOUSE_MASS), body_mass=MOUSE_MASS)
    delta = default("delta_alb")
    part = lambda fraction: PlasmaCurve(tuple(fraction * a for a in total.amplitudes), total.rates,
                                        total.infusion_duration)
    return part(1.0 - delta), part(delta)


def model(binding: str, dose_mg_kg: float) -> TransportModel:
    unbound, bound = plasma_parts(dose_mg_kg)
    return TransportModel(
        free=Carrier(default("D_F"), default("P_F"), default("sigma_F")),
        uptake=CellUptake(lambda c_free, c_cell, xp: uptake.el_kareh_secomb_uptake(c_free, c_cell), linear=False),
        plasma_free=unbound, interstitial_fraction=default("phi_T"),
        free_binding_ratio=default("B_alb") if binding == "equilibrium" else 0.0,
        albumin=AlbuminBinding.defaults(bound) if binding == "kinetic" else None)


def run(comm, binding: str, dose_mg_kg: float, mesh_size: float, dt: float, times: list[float]) -> dict:
    domain = krogh_mesh(comm, default("r_vessel"), default("r_tissue"), mesh_size)
    solver = TransportSolver(domain, model(binding, dose_mg_kg))
    start, rows, records = time.perf_counter(), [], []
    for stop in times:
        while solver.time < stop - 1e-9:
            records.append(solver.step(min(dt, stop - solver.time)))
        parts = solver.species()
        c_free, c_cell = parts[1], parts[2]
        bound = {"none": 0.0, "equilibrium": default("B_alb") * c_free.x.array,
                 "kinetic": parts[3].x.array if len(parts) > 3 else 0.0}[binding]
        fields = {"unbound_free": c_free.x.array, "all_free": c_free.x.array + bound, "cell": c_cell.x.array,
                  "total": c_free.x.array + bound + c_cell.x.array}
        row = {"time_s": stop}
        scratch = dolfinx.fem.Function(c_free.function_space)
        for name, values in fields.items():
            scratch.x.array[:] = values
            distance, profile = distance_profile(domain, scratch, mesh_size)
            row[f"{name}_half_distance_um"] = half_distance(distance, profile) * 1e6
            row[f"{name}_wall_mol_m3"] = float(profile[0])
        rows.append(row)
    balance = max(abs(r.balance_residual) / max(r.entered_through_vessels, 1e-300) for r in records)
    nodes = solver.concentrations.function_space.dofmap.index_map.size_global
    solver.close()
    return {"binding": binding, "dose_mg_kg": dose_mg_kg, "mesh_size_m": mesh_size, "step_s": dt, "nodes": nodes,
            "wall_time_s": time.perf_counter() - start, "max_relative_balance_residual": balance,
            "min_concentration_mol_m3": [float(x) for x in np.min([r.minimum for r in records], axis=0)],
            "snapshots": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="coarse mesh, short times (seconds)")
    parser.add_argument("--doses", type=float, nargs="+", default=[25.0, 5.0], help="mg/kg [R]")
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    case = (dict(mesh_size=8e-6, dt=30.0, times=[60.0, 120.0]) if args.smoke
            else dict(mesh_size=2.5e-6, dt=5.0, times=[300.0, 600.0]))
    report = {"benchmark": "albumin_binding", "date": datetime.datetime.now(datetime.UTC).isoformat(),
              "cpus": os.cpu_count(), "load_average": os.getloadavg(), "mpi_ranks": comm.size, "smoke": args.smoke,
              "runs": [run(comm, binding, dose, **case) for dose in args.doses for binding in BINDINGS]}
    if comm.rank == 0:
        for r in report["runs"]:
            print(r["binding"], r["dose_mg_kg"], "mg/kg,", f"{r['wall_time_s']:.1f} s,",
                  f"balance {r['max_relative_balance_residual']:.1e}, min {min(r['min_concentration_mol_m3']):.2e}")
            for s in r["snapshots"]:
                print("   t", s["time_s"], {k: round(v, 1) for k, v in s.items() if k.endswith("_um")})
        path = Path(__file__).resolve().parent / "results" / ("albumin_binding_smoke.json" if args.smoke
                                                              else "albumin_binding.json")
        path.write_text(json.dumps(report, indent=1))
        print("wrote", path)


if __name__ == "__main__":
    main()
