"""``hybrid compare CONFIG.toml``: the delivery scenarios of issue 8 point 7 on one mesh.

Composition only. CONFIG is a ``hybrid transport`` configuration plus an optional ``[compare]``
section (schema: hybrid/config/compare.py)::

    [compare]
    radiation_dose_Gy = 28.8       # Gy, dose of the irradiated variants (default: table D_RT_ref)
    [heating]                      # hyperthermia of the thermosensitive scenarios (default below)
    target_temperature = 315.15    # K

Eight runs: free doxorubicin, non-triggered (``liposomal``), pH-sensitive and thermosensitive
liposomes with hyperthermia, each without and with radiation, on one mesh built once; the steady
IFP and its flux are solved once per set of IFP coefficients (twice with ``[flow] model =
"darcy"``: without and with radiation). ``[drug] formulation`` and (for
the other formulations) ``[heating]`` of CONFIG are replaced per scenario, and ``[radiation]``
(optional: its response factors) gets ``dose_Gy = radiation_dose_Gy`` in the irradiated runs and
is left out of the others; everything else is shared. Without ``[heating]`` the thermosensitive scenarios heat
every cell to 42 C (315.15 K) from t = 0 to the end of the run, at most 1 MW/m^3. With
``[plasma] model = "dose"`` every scenario gets the same dose; with ``"constant"`` the free
scenario uses ``free_concentration`` and the liposomal ones ``liposomal_concentration``.

Writes into the output directory: ``<scenario>/transport.xdmf`` and ``<scenario>/summary.json``
(as ``hybrid transport``), ``compare.csv`` and ``compare.json`` (one row per scenario: lethal
fraction, mean survival, mean AUCs, peak intracellular drug, IFP and, on perivascular meshes,
the distal lethal fraction and half-distances), ``lethal_fraction.png``, ``exposure_maps.png``
(peak intracellular drug, 2-D meshes) and on perivascular meshes ``penetration_profiles.png``;
``compare.json`` also holds the compare TOML as read (``config``), the answer to the question of
point 7 as numbers, the meshing time ``mesh_s`` [s] and the number of IFP solves ``ifp_solves``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from mpi4py import MPI

from hybrid.commands.transport import build_domain, run_transport
from hybrid.config.compare import SCENARIOS
from hybrid.config.transport import PERIVASCULAR, TransportConfig

__all__ = ["run_compare"]

COLUMNS = ("scenario", "formulation", "radiation_dose_Gy", "lethal_fraction", "lethal_fraction_distal",
           "mean_survival_fraction", "mean_survival_fraction_distal", "mean_auc_free_drug_mol_s_m3",
           "mean_auc_cell_drug_mol_s_m3", "peak_cell_drug_max_ng_per_1e5_cells", "half_distance_peak_cell_drug_m",
           "half_distance_auc_free_drug_m", "ifp_max_Pa", "cem43_max_min", "balance_error_relative")


def _row(name: str, config: TransportConfig, summary: dict) -> dict:
    """One table row (COLUMNS) from a scenario's summary; None where a number does not apply."""
    exposure = summary["exposure"]
    profiles = exposure.get("profiles", {})
    return {
        "scenario": name, "formulation": config.drug.formulation,
        "radiation_dose_Gy": 0.0 if config.radiation is None else config.radiation.dose_Gy,
        "lethal_fraction": exposure["lethal_fraction"], "lethal_fraction_distal": exposure.get("lethal_fraction_distal"),
        "mean_survival_fraction": exposure["mean_survival_fraction"],
        "mean_survival_fraction_distal": exposure.get("mean_survival_fraction_distal"),
        "mean_auc_free_drug_mol_s_m3": exposure["mean_auc_free_drug_mol_s_m3"],
        "mean_auc_cell_drug_mol_s_m3": exposure["mean_auc_cell_drug_mol_s_m3"],
        "peak_cell_drug_max_ng_per_1e5_cells": exposure["peak_cell_drug_max_ng_per_1e5_cells"],
        "half_distance_peak_cell_drug_m": profiles.get("peak_cell_drug", {}).get("half_distance_m"),
        "half_distance_auc_free_drug_m": profiles.get("auc_free_drug", {}).get("half_distance_m"),
        "ifp_max_Pa": summary.get("ifp", {}).get("max_Pa"),
        "cem43_max_min": summary.get("heating", {}).get("cem43_max_min"),
        "balance_error_relative": summary["mass_balance"]["final_balance_error_relative"],
    }


def _answer(rows: dict[str, dict], distal_distance: float | None) -> dict:
    """The question of issue 8 point 7 in numbers: lethal fraction (distal and whole tumour) of each
    triggered formulation against free drug, and the change radiation makes for each formulation."""
    where = "lethal_fraction_distal" if distal_distance is not None else "lethal_fraction"
    triggered = {}
    for formulation in ("ph_sensitive", "thermosensitive"):
        row, free = rows[formulation], rows["free"]
        triggered[formulation] = {
            "lethal_fraction": row["lethal_fraction"], "free_drug_lethal_fraction": free["lethal_fraction"],
            where: row[where], f"free_drug_{where}": free[where],
            "lethal_beyond_gradient": bool(row[where] is not None and row[where] > 0.0),
            "mean_auc_cell_drug_over_free_drug": row["mean_auc_cell_drug_mol_s_m3"] / free["mean_auc_cell_drug_mol_s_m3"]
            if free["mean_auc_cell_drug_mol_s_m3"] > 0 else None}
    radiation = {}
    for formulation in SCENARIOS:
        plain, treated = rows[formulation], rows[formulation + "_radiation"]
        radiation[formulation] = {
            "lethal_fraction": [plain["lethal_fraction"], treated["lethal_fraction"]],
            "mean_auc_cell_drug_ratio": treated["mean_auc_cell_drug_mol_s_m3"] / plain["mean_auc_cell_drug_mol_s_m3"]
            if plain["mean_auc_cell_drug_mol_s_m3"] > 0 else None,
            "ifp_max_Pa": [plain["ifp_max_Pa"], treated["ifp_max_Pa"]]}
    return {"distal_distance_m": distal_distance,
            "triggered_release_vs_free_drug": triggered,
            "radiation_without_vs_with": radiation,
            "note": "lethal = peak intracellular amount >= [exposure] lethal_amount_per_cell; distal = farther than "
                    "[exposure] distal_distance from every vessel (perivascular meshes only)"}


def run_compare(scenarios: list[tuple[str, TransportConfig]], output: Path, comm: MPI.Comm, log,
                source: dict) -> dict:
    """Run the ``scenarios`` into ``output`` (collective) and write the table, the answer and the
    figures (rank 0). ``source``: the compare TOML as read, echoed as ``config``. Returns the
    compare document."""
    from hybrid.config.validate import with_output_directory
    from hybrid.io.summary import write_summary

    first = scenarios[0][1]
    stages: dict[str, float] = {}
    domain, flows = build_domain(first, comm, log, stages), {}   # the scenarios share [geometry]
    rows, summaries = {}, {}
    for index, (name, config) in enumerate(scenarios, start=1):
        log(f"scenario {index}/{len(scenarios)}: {name}")
        summary = run_transport(with_output_directory(config, output / name), comm, log, domain, flows)
        rows[name], summaries[name] = _row(name, config, summary), summary
    perivascular = first.geometry.shape in PERIVASCULAR
    document = {"command": "compare", "config": source, "mpi_ranks": comm.size,
                "mesh_s": stages["mesh_s"],
                "ifp_solves": sum("ifp_s" in summary["stages_s"] for summary in summaries.values()),
                "columns": list(COLUMNS), "rows": list(rows.values()),
                "answer": _answer(rows, first.exposure.distal_distance if perivascular else None)}
    write_summary(output / "compare.json", document, comm)
    if comm.rank == 0:
        with (output / "compare.csv").open("w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows.values())
        _figures(output, rows, summaries, perivascular, first)
    comm.barrier()
    return document


def _figures(output: Path, rows: dict, summaries: dict, perivascular: bool, config: TransportConfig) -> None:
    """The PNG figures of the comparison (rank 0)."""
    from hybrid.io.fields import read_point_data
    from hybrid.problems.uptake import ng_per_1e5_cells
    from hybrid.report.compare import plot_exposure_maps, plot_lethal_fractions, plot_penetration_profiles

    plot_lethal_fractions(rows, output / "lethal_fraction.png")
    if perivascular:   # peak intracellular drug per cell (each scenario's cell density) against distance
        profiles = {}
        for name, summary in summaries.items():
            exposure = summary["exposure"]
            profile = exposure["profiles"]["peak_cell_drug"]
            profiles[name] = (np.asarray(profile["distance_m"]),
                              ng_per_1e5_cells(np.asarray(profile["mean"]), exposure["cell_density_per_m3"]))
        lethal = next(iter(summaries.values()))["exposure"]["lethal_amount_ng_per_1e5_cells"]
        plot_penetration_profiles(profiles, lethal, config.exposure.distal_distance,
                                  output / "penetration_profiles.png")
    maps = {}
    for name in summaries:
        points, _, fields = read_point_data(output / name / "transport.xdmf")
        maps[name] = (points, fields["peak_cell_drug"])
    plot_exposure_maps(maps, config.geometry.mesh_size, output / "exposure_maps.png")
