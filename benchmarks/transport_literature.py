"""Drug transport against three literature figures, with the parameter-table defaults (issue 8).

(a) Perivascular penetration (Grantab et al. 2012 BMC Cancer 12:214, Table 3: doxorubicin
    fluorescence falls to half at 24-43 um from the vessel; Patel 2009: profiles taken ~10 min
    after injection). Krogh annulus (table r_vessel, r_tissue), free doxorubicin bolus with mouse
    plasma curve, unbound fraction at the wall, El-Kareh & Secomb saturable uptake; radial
    profiles of free (C_F), intracellular (C_I) and total (C_F + C_I) drug; half-distance from
    the wall. The table's linear sink k_up is run as well (it was derived from the same data,
    see its source in hybrid/problems/parameters.py, so it is not an independent check).
(b) Thermosensitive liposomes + hyperthermia versus free drug (Gasselhuber et al. 2010 Int J
    Hyperthermia 26:499: tumour drug 9.3 vs 3.0 ug/g, ~3x, at 0.7 mg/kg, human-scale model).
    Disc tumour (table R) with the steady IFP and its Darcy flux, volume exchange through S/V,
    Pennes bioheat holding the tumour at 42 C for 30 min from injection, k(T) release in the
    interstitium and in the blood passing the heated tissue (fraction 1 - exp(-k(T) tau_v), table
    tau_v), human plasma curves; also without the intravascular release, to show its share.
(c) Release of non-triggered liposomes over days (Laginha et al. 2005 Clin Cancer Res 11:6944,
    4T1 mouse tumours: 49 % of liposomal drug bioavailable by day 7; Doxil/free tumour AUC(0-7 d)
    87). Same disc, PEGylated liposomes with the mouse half-life, baseline release k_rel_L (the
    table derived it from the same 49 % ignoring clearance, so only clearance and transport can
    move the result), El-Kareh uptake; and free drug at the same dose for the AUC ratio.

Mouse plasma curves (a, c): the table's curves with ``body_mass`` 0.02 kg. With mg/kg doses and
volumes of distribution proportional to body mass the concentrations do not depend on the mass;
the half-lives are the human ones for free drug (no mouse values in the table) and 25 h for
liposomes (middle of the mouse/rat 20-30 h, table source of t_half_L). Doses not in the table
(Grantab: 25 mg/kg, also 5 and 1 mg/kg to show the dose dependence; Laginha: 6 mg/kg) are
recalled [R] and are arguments.

Writes benchmarks/results/transport_literature.json and transport_literature.png;
``--smoke`` runs coarse meshes and short times (seconds). Runs under ``mpirun`` too.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from mpi4py import MPI

import hybrid.forward  # noqa: F401  (DOLFINx the supported way)
import ufl
import dolfinx.fem

from hybrid.forward.transport import Carrier, CellUptake, Flow, TransportModel, TransportSolver
from hybrid.problems import release, uptake
from hybrid.problems.krogh import half_distance
from hybrid.problems.namespace import UFL
from hybrid.problems.parameters import default
from hybrid.problems.pharmacokinetics import PlasmaCurve, dose_amount

HERE = Path(__file__).resolve()
MOUSE_MASS = 0.02                     # kg
MOUSE_LIPOSOME_HALF_LIFE = 25 * 3600.0  # s, mouse/rat 20-30 h (Soundararajan et al. 2009 Nucl Med Biol 36:515) [V]
UG_PER_G = default("MW_DOX") * 1e3     # mol/m^3 of tissue -> ug/g (1 g/mL tissue)
GRANTAB_RANGE_UM = (24.0, 43.0)
GASSELHUBER_RATIO = 9.3 / 3.0
LAGINHA_FRACTION, LAGINHA_AUC_RATIO = 0.49, 87.0


def unbound(curve: PlasmaCurve) -> PlasmaCurve:
    """The part of a free-drug plasma curve not bound to albumin (what crosses the vessel wall)."""
    fraction = 1.0 - default("delta_alb")
    return PlasmaCurve(tuple(fraction * a for a in curve.amplitudes), curve.rates, curve.infusion_duration)


def free_plasma(dose_mg_kg: float, body_mass: float | None) -> PlasmaCurve:
    amount = dose_amount(dose_mg_kg, "mg/kg", body_mass=body_mass)
    return unbound(PlasmaCurve.free_doxorubicin(amount, body_mass=body_mass))


def el_kareh():
    return CellUptake(lambda c_free, c_cell, xp: uptake.el_kareh_secomb_uptake(c_free, c_cell), linear=False)


def free_carrier() -> Carrier:
    return Carrier(default("D_F"), default("P_F"), default("sigma_F"))


def liposome_carrier() -> Carrier:
    return Carrier(default("D_L"), default("P_L"), default("sigma_L"), default("f_L"), default("k_L"))


# --- (a) perivascular half-distance ---------------------------------------------------------------

def radial_profile(function, r_vessel: float, width: float, comm) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged profile of a P1 function on a Krogh annulus: the wall value (nodes on
    the wall) followed by means over rings of ``width`` [m]; radii [m], values."""
    space = function.function_space
    owned = space.dofmap.index_map.size_local
    r = np.linalg.norm(space.tabulate_dof_coordinates()[:owned, :2], axis=1)
    values = function.x.array[:owned]
    gathered = comm.allgather((r, values))
    r = np.concatenate([g[0] for g in gathered])
    values = np.concatenate([g[1] for g in gathered])
    on_wall = r < r_vessel * (1 + 1e-3)
    edges = np.arange(r_vessel, r.max() + width, width)
    ring = np.digitize(r, edges) - 1
    radii, means = [r_vessel], [values[on_wall].mean()]
    for i in range(len(edges) - 1):
        inside = (ring == i) & ~on_wall
        if inside.any():
            radii.append(r[inside].mean())
            means.append(values[inside].mean())
    return np.array(radii), np.array(means)


def perivascular(comm, mesh_size: float, dt: float, times: list[float], dose: float, law: str) -> dict:
    from hybrid.mesh import krogh_mesh

    r_v, r_t = default("r_vessel"), default("r_tissue")
    domain = krogh_mesh(comm, r_v, r_t, mesh_size)
    rate = el_kareh() if law == "el_kareh_secomb" else CellUptake(
        lambda c_free, c_cell, xp: uptake.linear_uptake(c_free), linear=True)
    model = TransportModel(free=free_carrier(), uptake=rate, plasma_free=free_plasma(dose, MOUSE_MASS),
                           interstitial_fraction=default("phi_T"))
    solver = TransportSolver(domain, model)
    snapshots, start = [], time.perf_counter()
    for stop in times:
        while solver.time < stop - 1e-9:
            record = solver.step(min(dt, stop - solver.time))
        species = dict(zip(solver.names, solver.species()))   # three, or four with kinetic albumin binding
        c_f, c_i = species["free_drug"], species["cell_drug"]
        total = dolfinx.fem.Function(c_f.function_space)
        total.x.array[:] = c_f.x.array + c_i.x.array
        row = {"time_s": stop}
        for name, function in (("free", c_f), ("cell", c_i), ("total", total)):
            radii, values = radial_profile(function, r_v, mesh_size, comm)
            row[f"{name}_half_distance_um"] = half_distance(radii, values) * 1e6
            row[f"{name}_profile_ug_g"] = (values * UG_PER_G).tolist()
            row["radii_um"] = (radii * 1e6).tolist()
        snapshots.append(row)
    nodes = solver.concentrations.function_space.dofmap.index_map.size_global
    solver.close()
    return {"uptake": law, "dose_mg_kg": dose, "mesh_size_m": mesh_size, "step_s": dt, "nodes": nodes,
            "wall_time_s": time.perf_counter() - start, "min_concentration": list(record.minimum),
            "balance_residual_relative": abs(record.balance_residual) / max(record.entered_through_vessels, 1e-300),
            "snapshots": snapshots}


# --- (b), (c) tumour-scale runs -------------------------------------------------------------------

def tumour_domain(comm, mesh_size: float):
    """Disc tumour (table R) with its steady IFP: the mesh and the flow (Darcy flux, Starling source)."""
    from hybrid.forward import solve_ifp
    from hybrid.mesh import tumour_mesh
    from hybrid.problems.exchange import starling_fluid_flux
    from hybrid.problems.ifp import OuterBoundary, TissueProperties

    tumour = TissueProperties.defaults("tumour")
    domain = tumour_mesh(comm, "disc", default("R"), 0.0, mesh_size)
    ifp = solve_ifp(domain, tumour, OuterBoundary("dirichlet", 0.0))
    flow = Flow(ifp.flux, vascular_fluid_source=starling_fluid_flux(ifp.pressure, tumour.vascular_exchange,
                                                                      tumour.effective_pressure))
    return domain, flow


class Tally:
    """Tumour-mean concentrations [mol/m^3 of tissue] of the three species and the cumulative
    amounts released from liposomes and cleared as liposomes (k_L C_L) [mol/m^3], after every step."""

    def __init__(self, solver: TransportSolver, model: TransportModel):
        mesh = solver.domain.mesh
        c = solver.concentrations
        dxl = ufl.Measure("dx", domain=mesh, metadata={"quadrature_rule": "vertex", "quadrature_degree": 1})
        self.solver = solver
        self.forms = [dolfinx.fem.form(c[s] * dxl) for s in range(3)]
        lipo = model.liposomal is not None
        self.rate_forms = [dolfinx.fem.form(model.release_rate * c[0] * dxl) if lipo else None,
                           dolfinx.fem.form(model.liposomal.clearance * c[0] * dxl) if lipo else None]
        one = dolfinx.fem.Constant(mesh, 1.0)
        self.area = self._integral(dolfinx.fem.form(one * dxl))
        self.rows, self.cumulative = [], [0.0, 0.0]

    def _integral(self, form) -> float:
        if form is None:
            return 0.0
        return self.solver.domain.mesh.comm.allreduce(dolfinx.fem.assemble_scalar(form), op=MPI.SUM)

    def sample(self, dt: float) -> None:
        for i, form in enumerate(self.rate_forms):   # backward Euler: rates at the new state
            self.cumulative[i] += dt * self._integral(form) / self.area
        means = [self._integral(f) / self.area for f in self.forms]
        self.rows.append([self.solver.time, *means, *self.cumulative])

    def table(self) -> np.ndarray:
        """Columns: time [s], C_L, C_F, C_I, released, cleared liposomal [mol/m^3]."""
        return np.array(self.rows)


def run_tumour(domain, flow, model: TransportModel, end: float, dt: float, heat=None) -> np.ndarray:
    solver = TransportSolver(domain, model, flow=flow)
    tally = Tally(solver, model)
    while solver.time < end - 1e-9:
        step = min(dt, end - solver.time)
        if heat is not None:
            heat.step(step)
        solver.step(step, coefficients_changed=heat is not None)
        tally.sample(step)
    solver.close()
    return tally.table()


def thermosensitive(comm, mesh_size: float, dt: float, end: float, heating_end: float, dose: float) -> dict:
    from hybrid.forward.heat import BioheatProperties, BioheatSolver, TargetTemperature

    domain, flow = tumour_domain(comm, mesh_size)
    target = default("T_a") + 5.0
    phi, sv = default("phi_T"), default("SV_T")
    amount = dose_amount(dose, "mg/kg")                       # human reference patient
    liposomes = PlasmaCurve.liposomal(amount)
    free = unbound(PlasmaCurve.free_doxorubicin(amount))
    tables = {}
    tables["free"] = run_tumour(domain, flow, TransportModel(
        free=free_carrier(), uptake=el_kareh(), plasma_free=free, interstitial_fraction=phi,
        surface_to_volume=sv), end, dt)
    for name, intravascular in (("tsl_heat", True), ("tsl_heat_interstitial_only", False)):
        heat = BioheatSolver(domain, {1: BioheatProperties.defaults()}, boundary="no_flux",
                             heating=TargetTemperature(target, 0.0, heating_end, 1e7), order=1)
        k_T = release.thermal_release_rate(heat.temperature, xp=UFL)
        tables[name] = run_tumour(domain, flow, TransportModel(
            free=free_carrier(), uptake=el_kareh(), plasma_free=PlasmaCurve.constant(0.0), interstitial_fraction=phi,
            liposomal=liposome_carrier(), plasma_liposomal=liposomes, release_rate=k_T, surface_to_volume=sv,
            intravascular_release=release.intravascular_released_fraction(k_T) if intravascular else None),
            end, dt, heat)
        heat.close()
    result = {"dose_mg_kg": dose, "plasma": "human (70 kg table patient)", "target_temperature_C": target - 273.15,
              "heating_s": [0.0, heating_end], "end_s": end, "step_s": dt, "mesh_size_m": mesh_size,
              "peak_plasma_ug_ml": {"free_total": float(PlasmaCurve.free_doxorubicin(amount)(0.0)) * UG_PER_G,
                                    "liposomal": float(liposomes(0.0)) * UG_PER_G}}
    for stamp, label in ((heating_end, "end_of_heating"), (end, "end")):
        row = {}
        for name, table in tables.items():
            at = table[np.argmin(np.abs(table[:, 0] - stamp))]
            row[name] = {"total_ug_g": float(at[1:4].sum() * UG_PER_G),
                         "released_and_free_ug_g": float(at[2:4].sum() * UG_PER_G),
                         "encapsulated_ug_g": float(at[1] * UG_PER_G)}
        free_total = row["free"]["total_ug_g"]
        for name in ("tsl_heat", "tsl_heat_interstitial_only"):
            row[name]["ratio_total_vs_free"] = row[name]["total_ug_g"] / free_total
            row[name]["ratio_unencapsulated_vs_free"] = row[name]["released_and_free_ug_g"] / free_total
        result[label] = row
    result["series"] = {name: table.tolist() for name, table in tables.items()}
    return result


def non_triggered(comm, mesh_size: float, dt: float, end: float, dose: float) -> dict:
    domain, flow = tumour_domain(comm, mesh_size)
    phi, sv = default("phi_T"), default("SV_T")
    amount = dose_amount(dose, "mg/kg", body_mass=MOUSE_MASS)
    liposomes = PlasmaCurve.liposomal(amount, MOUSE_LIPOSOME_HALF_LIFE, body_mass=MOUSE_MASS)
    lipo = run_tumour(domain, flow, TransportModel(
        free=free_carrier(), uptake=el_kareh(), plasma_free=PlasmaCurve.constant(0.0), interstitial_fraction=phi,
        liposomal=liposome_carrier(), plasma_liposomal=liposomes, release_rate=default("k_rel_L"),
        surface_to_volume=sv), end, dt)
    free = run_tumour(domain, flow, TransportModel(
        free=free_carrier(), uptake=el_kareh(), plasma_free=free_plasma(dose, MOUSE_MASS),
        interstitial_fraction=phi, surface_to_volume=sv), end, dt)
    total = lipo[:, 1:4].sum(axis=1)
    extravasated = lipo[:, 1] + lipo[:, 4] + lipo[:, 5]   # encapsulated now + released + cleared as liposomes
    auc = lambda table: float(np.trapezoid(np.r_[0.0, table[:, 1:4].sum(axis=1)], np.r_[0.0, table[:, 0]]))
    return {"dose_mg_kg": dose, "plasma": "mouse (0.02 kg), liposome half-life 25 h", "end_s": end, "step_s": dt,
            "mesh_size_m": mesh_size, "k_rel_L_per_s": default("k_rel_L"), "k_L_per_s": default("k_L"),
            "bioavailable_fraction_of_tumour_drug": float((lipo[-1, 2] + lipo[-1, 3]) / total[-1]),
            "intracellular_fraction_of_tumour_drug": float(lipo[-1, 3] / total[-1]),
            "released_fraction_of_extravasated": float(lipo[-1, 4] / extravasated[-1]),
            "released_fraction_of_retained": float(lipo[-1, 4] / (lipo[-1, 1] + lipo[-1, 4])),
            "cleared_fraction_of_extravasated": float(lipo[-1, 5] / extravasated[-1]),
            "tumour_total_end_ug_g": {"liposomal": float(total[-1] * UG_PER_G),
                                      "free": float(free[-1, 1:4].sum() * UG_PER_G)},
            "auc_ratio_liposomal_vs_free": auc(lipo) / auc(free),
            "series": {"liposomal": lipo.tolist(), "free": free.tolist()}}


def figure(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    for run in report["perivascular"]:
        snap = run["snapshots"][min(1, len(run["snapshots"]) - 1)]
        r = np.array(snap["radii_um"]) - snap["radii_um"][0]
        for name, style in (("cell", "-"), ("free", "--")):
            p = np.array(snap[f"{name}_profile_ug_g"])
            ax.plot(r, p / p[0], style,
                    label=f"{run['uptake']} {run['dose_mg_kg']:g} mg/kg: {name} ({snap['time_s'] / 60:.0f} min)")
    ax.axvspan(*GRANTAB_RANGE_UM, color="0.85", label="Grantab 2012 half-distance")
    ax.axhline(0.5, color="k", lw=0.5)
    ax.set(xlabel="distance from vessel wall [um]", ylabel="relative to wall", title="(a) perivascular profile")
    ax.legend(fontsize=7)
    ax = axes[1]
    tsl = report["thermosensitive"]
    for name, table in tsl["series"].items():
        table = np.array(table)
        ax.plot(table[:, 0] / 60, table[:, 1:4].sum(axis=1) * UG_PER_G, label=name)
    ax.axvspan(*(np.array(tsl["heating_s"]) / 60), color="mistyrose", label="42 C")
    ax.set(xlabel="time [min]", ylabel="tumour drug [ug/g]", yscale="log",
           title=f"(b) TSL + heat vs free (Gasselhuber: {GASSELHUBER_RATIO:.1f}x)")
    ax.legend(fontsize=7)
    ax = axes[2]
    lipo = np.array(report["non_triggered"]["series"]["liposomal"])
    total = lipo[:, 1:4].sum(axis=1)
    ax.plot(lipo[:, 0] / 86400, (lipo[:, 2] + lipo[:, 3]) / total, label="free + cells / tumour drug")
    ax.plot(lipo[:, 0] / 86400, lipo[:, 4] / (lipo[:, 1] + lipo[:, 4] + lipo[:, 5]), label="released / extravasated")
    ax.axhline(LAGINHA_FRACTION, color="k", ls=":", label="Laginha 2005: 49 % by day 7")
    ax.set(xlabel="time [d]", ylabel="fraction", title="(c) non-triggered liposomes")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="coarse meshes, short times (seconds)")
    parser.add_argument("--grantab-doses", type=float, nargs="+", default=[25.0, 5.0, 1.0],
                        help="free doxorubicin bolus doses, mg/kg (Tannock-lab studies: 25 [R]); the "
                             "saturable uptake makes the profile depend on the dose")
    parser.add_argument("--gasselhuber-dose", type=float, default=0.7, help="mg/kg (Gasselhuber et al. 2010)")
    parser.add_argument("--laginha-dose", type=float, default=6.0, help="liposomal doxorubicin, mg/kg [R]")
    parser.add_argument("--output", type=Path, default=HERE.parent / "results" / "transport_literature.json")
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    if args.smoke:
        krogh = dict(mesh_size=8e-6, dt=30.0, times=[60.0, 120.0])
        tsl = dict(mesh_size=1e-3, dt=300.0, end=1200.0, heating_end=600.0)
        lip = dict(mesh_size=1e-3, dt=86400.0, end=2 * 86400.0)
    else:
        krogh = dict(mesh_size=2.5e-6, dt=5.0, times=[300.0, 600.0, 1800.0])
        tsl = dict(mesh_size=1e-4, dt=30.0, end=3600.0, heating_end=1800.0)
        lip = dict(mesh_size=1e-4, dt=3600.0, end=7 * 86400.0)
    start = time.perf_counter()
    report = {"benchmark": "transport_literature", "date": datetime.datetime.now(datetime.UTC).isoformat(),
              "machine": platform.platform(), "cpus": os.cpu_count(), "load_average": os.getloadavg(),
              "mpi_ranks": comm.size, "smoke": args.smoke,
              "targets": {"grantab_2012_half_distance_um": GRANTAB_RANGE_UM,
                          "gasselhuber_2010_tsl_over_free": GASSELHUBER_RATIO,
                          "laginha_2005_bioavailable_fraction_7d": LAGINHA_FRACTION,
                          "laginha_2005_auc_ratio": LAGINHA_AUC_RATIO}}
    doses = args.grantab_doses[:1] if args.smoke else args.grantab_doses
    report["perivascular"] = ([perivascular(comm, law="el_kareh_secomb", dose=dose, **krogh) for dose in doses]
                              + [perivascular(comm, law="linear", dose=doses[0], **krogh)])
    report["thermosensitive"] = thermosensitive(comm, dose=args.gasselhuber_dose, **tsl)
    report["non_triggered"] = non_triggered(comm, dose=args.laginha_dose, **lip)
    report["wall_time_s"] = time.perf_counter() - start
    if comm.rank == 0:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=1) + "\n")
        figure(report, args.output.with_suffix(".png"))
        for run in report["perivascular"]:
            for s in run["snapshots"]:
                print(f"(a) {run['uptake']:>16} {run['dose_mg_kg']:g} mg/kg t = {s['time_s'] / 60:5.1f} min: half-distance free "
                      f"{s['free_half_distance_um']:.1f} um, cells {s['cell_half_distance_um']:.1f} um, "
                      f"total {s['total_half_distance_um']:.1f} um (Grantab 24-43 um)")
        for label in ("end_of_heating", "end"):
            row = report["thermosensitive"][label]
            print(f"(b) {label}: free {row['free']['total_ug_g']:.3g} ug/g; TSL + heat "
                  f"{row['tsl_heat']['total_ug_g']:.3g} ug/g ({row['tsl_heat']['ratio_total_vs_free']:.2f}x); "
                  f"without intravascular release {row['tsl_heat_interstitial_only']['total_ug_g']:.3g} ug/g "
                  f"({row['tsl_heat_interstitial_only']['ratio_total_vs_free']:.2f}x) (Gasselhuber ~3.1x)")
        c = report["non_triggered"]
        print(f"(c) bioavailable {c['bioavailable_fraction_of_tumour_drug']:.3f}, released/extravasated "
              f"{c['released_fraction_of_extravasated']:.3f}, released/retained {c['released_fraction_of_retained']:.3f}, "
              f"cleared/extravasated {c['cleared_fraction_of_extravasated']:.3f} (Laginha 0.49); AUC ratio "
              f"{c['auc_ratio_liposomal_vs_free']:.1f} (Laginha 87); written {args.output}")


if __name__ == "__main__":
    main()
