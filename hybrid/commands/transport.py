"""``hybrid transport CONFIG.toml``: mesh -> (IFP and Darcy flux) -> drug transport in time -> outputs.

Composition only: the physics lives in :mod:`hybrid.problems`, the solvers in
:mod:`hybrid.forward`. Writes into ``directory``:

- ``transport.xdmf`` (+ ``.h5``): one file kept open for the run, P1 point data
  ``liposomal_drug``, ``free_drug``, ``cell_drug`` [mol/m^3 of tissue] at every output time
  (and the final time);
- ``summary.json``: configuration echo, versions, ranks, dofs, wall time per stage, solver
  counts, the mass-balance record of every step, the smallest concentrations and, for the
  Krogh verification case (free drug, linear uptake, constant plasma, no flow), the maximum
  error of ``free_drug`` against the steady closed form (:mod:`hybrid.problems.krogh`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from mpi4py import MPI

import hybrid._fem_stack  # noqa: F401  (before dolfinx)
import dolfinx.fem
import dolfinx.io
import ufl

from hybrid.commands.plasma import bound_plasma_curve, plasma_curves
from hybrid.config.transport import PERIVASCULAR, TransportConfig
from hybrid.forward.exposure import EXPOSURE_UNITS, Exposure, distal_mean, distance_profile
from hybrid.forward.ifp import region_coefficient
from hybrid.forward.sampling import region_mean
from hybrid.forward.transport import (BOUND_SPECIES, SPECIES, AlbuminBinding, Carrier, CellUptake, Flow,
                                      TransportModel, TransportSolver)
from hybrid.mesh import tags
from hybrid.problems import release, uptake
from hybrid.problems.exchange import starling_fluid_flux
from hybrid.problems.krogh import half_distance, krogh_concentration
from hybrid.problems.namespace import UFL
from hybrid.problems.parameters import default

__all__ = ["run_transport", "setup_transport", "build_domain", "TransportSetup", "irradiated", "FIELD_UNITS"]

FIELD_UNITS = ({name: "mol/m^3 of tissue" for name in SPECIES + (BOUND_SPECIES,)} | EXPOSURE_UNITS
               | {"temperature": "K (with [heating])", "thermal_dose": "CEM43 min (with [heating])"})


def _release_rate(config: TransportConfig, temperature=None, ph=None, law=None):
    """Release rate k_rel [1/s] of the formulation (0 for free drug): a number, or for
    thermosensitive liposomes under ``[heating]`` k(T) of the ``temperature`` field, for
    pH-sensitive liposomes with ``[release] ph_map`` k(pH) of the ``ph`` field (UFL).
    ``law`` replaces the formulation's: a rate [1/s], or for pH-sensitive liposomes a function
    of the pH_e (the ``ph`` field, else the uniform ``[release] ph``) giving the rate [1/s]."""
    if law is not None and (not callable(law) or isinstance(law, ufl.core.expr.Expr)):   # a number or Constant
        return law
    if law is not None:
        if config.drug.formulation != "ph_sensitive":
            raise ValueError(f"a release rate law of the pH needs formulation \"ph_sensitive\", "
                             f"got {config.drug.formulation!r}")
        return law(ph if ph is not None else config.release.ph)
    if config.drug.formulation == "thermosensitive" and temperature is not None:
        return release.thermal_release_rate(temperature, xp=UFL)
    if config.drug.formulation == "ph_sensitive" and ph is not None:
        return release.ph_release_rate(ph, xp=UFL)
    return {"free": lambda: 0.0,
            "liposomal": lambda: default("k_rel_L"),
            "ph_sensitive": lambda: float(release.ph_release_rate(config.release.ph)),
            "thermosensitive": lambda: float(release.thermal_release_rate(config.release.temperature)),
            }[config.drug.formulation]()


def _images(config: TransportConfig, domain, log) -> dict:
    """Image-derived fields (collective): ``ph`` (P1 pH_e from ``[release] ph_map``),
    ``vascular_exchange`` (DG0 Lp S/V [1/(Pa s)] scaled by ``[tissue] ktrans_map`` / its region mean) and
    ``ktrans_scale`` (that DG0 scale [1]), each None without its map, and ``stats`` of the Ktrans scaling."""
    from hybrid.collective import everywhere
    from hybrid.forward.image_sampling import ph_field, vascular_exchange_from_ktrans
    from hybrid.io.nifti import read_volume

    comm = domain.mesh.comm
    slice_of = lambda volume: config.geometry.slice_index if domain.dim == 2 and volume.shape[2] > 1 else None
    images = {"ph": None, "vascular_exchange": None, "ktrans_scale": None, "stats": None}
    if config.release.ph_map is not None:
        ph_map, affine = everywhere(comm, lambda: read_volume(config.release.ph_map))
        filled = np.where(np.isfinite(ph_map), ph_map, config.release.ph)   # invalid CEST voxels
        images["ph"] = ph_field(domain, filled, affine, slice_index=slice_of(filled))
        log(f"pH_e sampled from {config.release.ph_map} (non-finite voxels: pH {config.release.ph:g})")
    if config.tissue.ktrans_map is not None:
        ktrans, affine = everywhere(comm, lambda: read_volume(config.tissue.ktrans_map))
        images["vascular_exchange"], images["ktrans_scale"], images["stats"] = vascular_exchange_from_ktrans(
            domain, ktrans, affine, config.tumour, config.host, slice_index=slice_of(ktrans),
            label=f"Ktrans map {config.tissue.ktrans_map}")
        log(f"S/V and Lp S/V scaled by Ktrans / region mean from {config.tissue.ktrans_map}")
    return images


def _surface_to_volume(config: TransportConfig, domain, ktrans_scale=None):
    """S/V [1/m] of the volume exchange on tumour-scale meshes: ``[tissue] surface_to_volume`` in
    the tumour and ``[host] vessel_surface_density`` in the host (then a DG0 field), times
    ``ktrans_scale`` (the DG0 Ktrans / region mean [1] that also scales Lp S/V) where given."""
    surface = config.tissue.surface_to_volume
    if config.host is not None:
        surface = region_coefficient(domain, {tags.TUMOUR: surface, tags.HOST: config.host.vessel_surface_density},
                                     "surface_to_volume")
    return surface if ktrans_scale is None else surface * ktrans_scale


def _model(config: TransportConfig, domain, perivascular: bool, temperature=None,
           images: dict | None = None, release_law=None) -> TransportModel:
    images = images or {}
    free, phi = config.free_drug, config.tissue.interstitial_fraction
    if free.uptake == "linear":
        rate = lambda c_free, c_cell, xp: uptake.linear_uptake(c_free, free.uptake_rate)
    else:
        rho = config.tissue.cell_density
        rate = lambda c_free, c_cell, xp: uptake.el_kareh_secomb_uptake(c_free, c_cell, interstitial_fraction=phi,
                                                                        cell_density=rho)
    plasma_free, plasma_liposomal = plasma_curves(config)
    lipo = config.liposome
    rate_of_release = _release_rate(config, temperature, images.get("ph"), release_law)
    surface = None if perivascular else _surface_to_volume(config, domain, images.get("ktrans_scale"))
    intravascular = None   # thermosensitive liposomes also release in the blood passing the heated tissue
    if config.drug.formulation == "thermosensitive":
        intravascular = release.intravascular_released_fraction(rate_of_release, config.release.transit_time)
    return TransportModel(
        free=Carrier(free.diffusivity, free.vessel_permeability, free.reflection),
        uptake=CellUptake(rate, linear=free.uptake == "linear"),
        plasma_free=plasma_free, interstitial_fraction=phi,
        liposomal=None if lipo is None else Carrier(lipo.diffusivity, lipo.vessel_permeability,
                                                    lipo.reflection, lipo.hindrance, lipo.clearance),
        plasma_liposomal=plasma_liposomal, release_rate=rate_of_release,
        surface_to_volume=surface, intravascular_release=intravascular,
        free_binding_ratio=default("B_alb") if free.albumin_binding == "equilibrium" else 0.0,
        albumin=AlbuminBinding(free.association_rate, free.dissociation_rate,
                               Carrier(free.bound_diffusivity, free.bound_vessel_permeability), bound_plasma_curve(config))
        if free.albumin_binding == "kinetic" else None)


def irradiated(config: TransportConfig) -> TransportConfig:
    """``config`` with the ``[radiation]`` factors m(dose) (:mod:`hybrid.problems.radiation`) applied
    to the tumour's K, Lp and p_v, the vessel permeabilities and the cell density (unchanged
    without ``[radiation]``). The ``[host]`` IFP coefficients are not irradiated; permeabilities and
    cell density are one value for both regions, so the host's change with them."""
    if config.radiation is None:
        return config
    m = config.radiation.factors(config.radiation.dose_Gy)
    tumour = config.tumour
    tumour = replace(tumour, hydraulic_conductivity=tumour.hydraulic_conductivity * m["hydraulic_conductivity"],
                     filtration_coefficient=tumour.filtration_coefficient * m["filtration_coefficient"],
                     vascular_pressure=tumour.vascular_pressure * m["vascular_pressure"])
    permeable = lambda carrier: carrier and replace(
        carrier, vessel_permeability=carrier.vessel_permeability * m["vessel_permeability"])
    return replace(config, tumour=tumour, free_drug=permeable(config.free_drug), liposome=permeable(config.liposome),
                   tissue=replace(config.tissue, cell_density=config.tissue.cell_density * m["cell_density"]))


def _flow(config: TransportConfig, domain, perivascular: bool, stages: dict, log,
          vascular_exchange=None) -> tuple[Flow | None, dict | None, dolfinx.fem.Function | None]:
    """The conservative Darcy flux of the steady IFP (and on tumour-scale meshes the vascular
    fluid source and lymphatic sink at that pressure, with the coefficients of each region) with
    the IFP numbers (largest and mean pressure [Pa], with a host also the mean of each region) and
    the pressure itself [Pa], or (None, None, None) for ``[flow] model = "none"``.
    ``vascular_exchange``: an Lp S/V field [1/(Pa s)] replacing the region values (Ktrans map)."""
    if config.flow.model == "none":
        return None, None, None
    from hybrid.forward import solve_ifp
    from hybrid.problems.ifp import OuterBoundary

    start = time.perf_counter()
    ifp = solve_ifp(domain, config.tumour, OuterBoundary(config.flow.boundary, config.flow.far_field_pressure),
                    config.host, fields={} if vascular_exchange is None else {"vascular_exchange": vascular_exchange})
    flux = ifp.flux
    stages["ifp_s"] = time.perf_counter() - start
    log(f"IFP solved ({ifp.dofs} dofs) and conservative Darcy flux reconstructed in {stages['ifp_s']:.1f} s")
    p = ifp.pressure
    comm, owned = domain.mesh.comm, p.function_space.dofmap.index_map.size_local
    area = comm.allreduce(dolfinx.fem.assemble_scalar(dolfinx.fem.form(1.0 * ufl.dx(domain=domain.mesh))), op=MPI.SUM)
    numbers = {"max_Pa": comm.allreduce(float(p.x.array[:owned].max(initial=-np.inf)), op=MPI.MAX),
               "mean_Pa": comm.allreduce(dolfinx.fem.assemble_scalar(dolfinx.fem.form(p * ufl.dx)), op=MPI.SUM) / area}
    if config.host is not None:
        numbers |= {"mean_tumour_Pa": region_mean(p, domain, tags.TUMOUR), "mean_host_Pa": region_mean(p, domain, tags.HOST)}
    if perivascular:
        return Flow(flux), numbers, p
    c = ifp.coefficients
    return Flow(flux, vascular_fluid_source=starling_fluid_flux(p, c["vascular_exchange"], c["effective_pressure"]),
                lymphatic_fluid_sink=c["lymphatic_filtration"] * (p - c["lymphatic_pressure"])), numbers, p


def _heat(config: TransportConfig, domain):
    """The Pennes solver of ``[heating]`` (table tumour values in every region; the tumour cells
    heated, on perivascular meshes all tissue), or None."""
    if config.heating is None:
        return None
    from hybrid.forward.heat import BioheatProperties, BioheatSolver, TargetTemperature

    heating = config.heating
    present = set(np.unique(domain.cell_tags.values).tolist())
    regions = sorted(set().union(*domain.mesh.comm.allgather(present)))   # tags on any rank
    properties = {tag: BioheatProperties.defaults() for tag in regions}
    controller = TargetTemperature(heating.target_temperature, heating.start, heating.end, heating.max_power)
    return BioheatSolver(domain, properties, boundary=heating.boundary, heating=controller,
                         heated_region=tags.TUMOUR, order=config.time.order)


def _krogh_error(config: TransportConfig, solver: TransportSolver, comm) -> dict | None:
    """Max nodal error of free_drug against the steady Krogh closed form, where it applies."""
    free, geometry = config.free_drug, config.geometry
    applies = (geometry.shape == "krogh" and config.drug.formulation == "free" and free.uptake == "linear"
               and config.plasma.model == "constant" and config.flow.model == "none"
               and free.uptake_rate > 0)
    if not applies:
        return None
    phi = config.tissue.interstitial_fraction
    # C = phi c with c the interstitial-fluid concentration: D lap(c) = k c, -D phi c' = P (c_p - c)
    exact = lambda r: phi * krogh_concentration(
        r, diffusivity=free.diffusivity * phi, sink_rate=free.uptake_rate * phi,
        r_vessel=geometry.vessel_radius, r_tissue=geometry.tissue_radius,
        vessel_concentration=config.plasma.free_concentration, permeability=free.vessel_permeability)
    c_free = solver.species()[1]
    space = c_free.function_space
    owned = space.dofmap.index_map.size_local
    r = np.linalg.norm(space.tabulate_dof_coordinates()[:owned, :2], axis=1)
    error = comm.allreduce(float(np.abs(c_free.x.array[:owned] - exact(r)).max(initial=0.0)), op=MPI.MAX)
    wall = float(exact(np.array([geometry.vessel_radius]))[0])
    return {"case": "steady Krogh annulus, linear uptake, Robin vessel wall (hybrid.problems.krogh)",
            "free_drug_max_abs_error_mol_m3": error, "free_drug_at_wall_exact_mol_m3": wall,
            "relative_to_wall_value": error / wall}


def _exposure_summary(config: TransportConfig, domain, exposure: Exposure, perivascular: bool) -> dict:
    """Tumour exposure numbers and, on perivascular meshes, the profiles of the exposure fields
    and the final free drug against distance to the nearest vessel wall with their half-distances."""
    numbers = exposure.summary()
    if perivascular:
        fields = {"free_drug": exposure.free} | {name: exposure.fields[name]
                                                   for name in ("auc_free_drug", "auc_cell_drug", "peak_cell_drug")}
        distal = config.exposure.distal_distance
        numbers["distal_distance_m"] = distal
        for key, name in (("lethal_fraction_distal", "lethal"), ("mean_survival_fraction_distal", "survival_fraction")):
            value = distal_mean(domain, exposure.fields[name], distal)
            numbers[key] = None if np.isnan(value) else value   # None: no tissue that far from the vessels
        numbers["profiles"] = {}
        for name, function in fields.items():
            distance, value = distance_profile(domain, function, config.exposure.profile_bin_width)
            half = half_distance(distance, value)
            numbers["profiles"][name] = {"distance_m": distance.tolist(), "mean": value.tolist(),
                                         "half_distance_m": None if np.isnan(half) else half}
    return numbers


def _heating_summary(heat, records, comm) -> dict:
    """Temperature, power and CEM43 numbers of the heating run."""
    dose = heat.thermal_dose.x.array[:heat.thermal_dose.function_space.dofmap.index_map.size_local]
    return {"final_mean_temperature_K": records[-1].region_mean_temperature,
            "max_mean_temperature_K": max(r.region_mean_temperature for r in records),
            "max_power_W_m3": max(r.power for r in records),
            "cem43_max_min": comm.allreduce(float(dose.max(initial=0.0)), op=MPI.MAX),
            "cem43_min_min": comm.allreduce(float(dose.min(initial=np.inf)), op=MPI.MIN)}


@dataclass
class TransportSetup:
    """The assembled transport problem of a (irradiated) configuration, before any time step."""

    config: TransportConfig               # with the [radiation] factors applied
    domain: object                        # hybrid.mesh.TumourMesh
    perivascular: bool
    images: dict                          # see _images
    flow: Flow | None                     # Darcy flux and fluid sources (flow = darcy)
    ifp_numbers: dict | None              # largest and mean IFP [Pa] (flow = darcy)
    pressure: dolfinx.fem.Function | None   # steady IFP [Pa] (flow = darcy)
    heat: object | None                   # BioheatSolver of [heating]
    solver: TransportSolver


def build_domain(config: TransportConfig, comm: MPI.Comm, log, stages: dict):
    """The mesh of ``config.geometry`` (collective); its wall time goes into ``stages["mesh_s"]`` [s]."""
    from hybrid.mesh.geometry import build_mesh

    start = time.perf_counter()
    log(f"meshing {config.geometry.shape} (mesh_size {config.geometry.mesh_size:g} m)")
    domain = build_mesh(config.geometry, comm)
    stages["mesh_s"] = time.perf_counter() - start
    return domain


def setup_transport(config: TransportConfig, comm: MPI.Comm, log, stages: dict, domain=None,
                    flows: dict | None = None, release_rate=None) -> TransportSetup:
    """Mesh, image-derived fields, steady IFP and flux, heating and the transport solver of
    ``config`` (collective); wall times go into ``stages`` [s]. Close ``solver`` (and ``heat``) after use.
    ``domain``: the mesh of ``config.geometry``, built before (None: built here). ``flows``: the
    IFP results (:func:`_flow`) of earlier runs on ``domain`` by the coefficients they depend on;
    a run with the same (irradiated) coefficients reuses its entry, a new one is added.
    ``release_rate``: replaces the formulation's release rate law (None: keep it): a rate [1/s]
    (e.g. a recovered k_rel, or a ``dolfinx.fem.Constant`` to change between runs), or for
    pH-sensitive liposomes a function of the pH_e (UFL field of ``[release] ph_map`` or the
    uniform ``[release] ph``) returning the rate [1/s], e.g. ``ph_release_rate`` with recovered
    ``ph_50`` and ``steepness``."""
    config = irradiated(config)
    domain = domain or build_domain(config, comm, log, stages)
    perivascular = config.geometry.shape in PERIVASCULAR
    images = _images(config, domain, log)
    key = (config.tumour, config.host, config.flow, config.tissue.ktrans_map)
    if flows is not None and key in flows:
        flow, ifp_numbers, pressure = flows[key]
        if ifp_numbers is not None:
            log("IFP and Darcy flux of an earlier run on this mesh reused (same coefficients)")
    else:
        flow, ifp_numbers, pressure = _flow(config, domain, perivascular, stages, log, images["vascular_exchange"])
        if flows is not None:
            flows[key] = flow, ifp_numbers, pressure
    start = time.perf_counter()
    heat = _heat(config, domain)
    model = _model(config, domain, perivascular, heat and heat.temperature, images, release_rate)
    solver = TransportSolver(domain, model, flow=flow,
                             order=config.time.order, petsc_options=config.solver.petsc_options)
    stages["setup_s"] = time.perf_counter() - start
    return TransportSetup(config, domain, perivascular, images, flow, ifp_numbers, pressure, heat, solver)


def run_transport(config: TransportConfig, comm: MPI.Comm, log, domain=None, flows: dict | None = None) -> dict:
    """Run the configured transport problem and write the outputs into ``config.output.directory``
    (collective). Returns the summary. ``domain`` and ``flows``: as for :func:`setup_transport`
    (``stages_s`` then holds no ``mesh_s``, and ``ifp_s`` only where the IFP was solved)."""
    from hybrid.io.summary import software_versions, write_summary

    stages: dict[str, float] = {}
    setup = setup_transport(config, comm, log, stages, domain, flows)
    config, domain, perivascular, images = setup.config, setup.domain, setup.perivascular, setup.images
    ifp_numbers, heat, solver = setup.ifp_numbers, setup.heat, setup.solver
    out = Path(config.output.directory)
    start = time.perf_counter()
    exposures = [Exposure(domain, *solver.species()[1:3], cell_density=config.tissue.cell_density,
                          lethal_amount=config.exposure.lethal_amount_per_cell,
                          kill_coefficient=config.exposure.kill_coefficient, region=region)
                 for region in [tags.TUMOUR] + ([tags.HOST] if config.host is not None else [])]
    exposure = exposures[0]

    def accumulate(dt: float) -> None:
        solver.species()   # refresh the scalar copies the exposure reads
        for region in exposures:
            region.accumulate(dt)
    stages["setup_s"] += time.perf_counter() - start
    adaptive = config.time.adaptive
    interval = config.time.output_interval
    if adaptive:   # outputs every output_interval; steps chosen by the error estimate in between
        stops = list(np.arange(1, int(np.ceil(config.time.end / interval - 1e-9)) + 1) * interval)
        stops[-1] = config.time.end
        dt, every = config.time.step, 1
    else:
        steps = int(round(config.time.end / config.time.step))
        dt = config.time.end / steps
        stops = [dt * index for index in range(1, steps + 1)]
        every = max(1, int(round(interval / dt)))
    log(f"{'adaptive steps from' if adaptive else f'{len(stops)} steps of'} {dt:g} s, "
        f"{'backward Euler' if config.time.order == 1 else 'BDF2'}, "
        f"{solver.concentrations.function_space.dofmap.index_map.size_global} nodes x 3 species")
    records, heat_records, output_s = [], [], 0.0
    if comm.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    comm.barrier()
    stepping = time.perf_counter()
    # the file and the solvers are closed on success only: after a failure on one rank the CLI ends
    # every rank, where a collective close would wait for the ranks still stepping
    xdmf = dolfinx.io.XDMFFile(comm, str(out / "transport.xdmf"), "w")
    xdmf.write_mesh(domain.mesh)
    for index, stop in enumerate(stops, start=1):
        if adaptive:
            accepted, dt = solver.advance_to(stop, dt, config.time.tolerance, interval, accumulate)
            records.extend(accepted)
        else:
            if heat is not None:
                heat_records.append(heat.step(dt))
            records.append(solver.step(dt, coefficients_changed=heat is not None))
            accumulate(dt)
        if index % every == 0 or index == len(stops):
            write = time.perf_counter()
            extra = [heat.temperature, heat.thermal_dose] if heat is not None else []
            for function in solver.species() + list(exposure.fields.values()) + extra:
                xdmf.write_function(function, records[-1].time)
            output_s += time.perf_counter() - write
    xdmf.close()
    stages["time_stepping_s"] = time.perf_counter() - stepping - output_s
    stages["output_s"] = output_s
    closed_form = _krogh_error(config, solver, comm)
    exposure_numbers = _exposure_summary(config, domain, exposure, perivascular)
    heating = _heating_summary(heat, heat_records, comm) if heat is not None else None
    timings = solver.solver.timings
    solver.close()
    if heat is not None:
        heat.close()
    last = records[-1]
    entered = max(abs(last.entered_through_vessels), 1e-300)
    balance = {
        "definition": "per step: (scheme content change) - dt (entered through vessels - left through the "
                      "outer boundary - cleared); amounts in mol (3-D) or mol per metre of depth (2-D)",
        "entered_through_vessels": last.entered_through_vessels,
        "in_tissue": last.in_tissue, "in_cells": last.in_cells,
        "left_through_boundary": last.left_through_boundary, "cleared": last.cleared,
        "final_balance_error": (last.entered_through_vessels - last.in_tissue - last.in_cells
                                - last.left_through_boundary - last.cleared),
        "final_balance_error_relative": (last.entered_through_vessels - last.in_tissue - last.in_cells
                                         - last.left_through_boundary - last.cleared) / entered,
        "max_step_residual_relative": max(abs(r.balance_residual) for r in records) / entered,
        "steps": {key: [getattr(r, key) for r in records] for key in
                  ("time", "in_tissue", "in_cells", "entered_through_vessels", "left_through_boundary",
                   "cleared", "balance_residual")},
    }
    summary = {
        "command": "transport", "config": config.source, "versions": software_versions(), "mpi_ranks": comm.size,
        "formulation": config.drug.formulation, "flow": config.flow.model,
        "nodes": solver.concentrations.function_space.dofmap.index_map.size_global,
        "dofs": len(solver.names) * solver.concentrations.function_space.dofmap.index_map.size_global,
        "time_steps": len(records), "adaptive": adaptive,
        "time_step_s": {"min": float(np.min(np.diff([0.0] + [r.time for r in records]))),
                        "max": float(np.max(np.diff([0.0] + [r.time for r in records])))},
        "scheme": "backward Euler (order 1)" if config.time.order == 1 else "BDF2 (order 2)",
        "stabilised_supg": dict(zip(("liposomal_drug", "free_drug", BOUND_SPECIES), solver.stabilised)),
        "max_cell_peclet": dict(zip(("liposomal_drug", "free_drug", BOUND_SPECIES), solver.peclet)),
        "fields": FIELD_UNITS,
        "stages_s": stages,
        "solver": {"matrix_assemblies": timings.matrix_assemblies, "linear_solves": timings.solves,
                   "assemble_matrix_s": timings.assemble_matrix_s, "assemble_vector_s": timings.assemble_vector_s,
                   "solve_s": timings.solve_s},
        "minimum_concentration_mol_m3": dict(zip(solver.names, np.min([r.minimum for r in records], axis=0))),
        "final_amounts": {"in_tissue": last.in_tissue, "in_cells": last.in_cells},
        "mass_balance": balance,
    }
    summary["exposure"] = exposure_numbers
    if config.host is not None:
        summary["exposure_host"] = exposures[1].summary()
    if images["stats"] is not None:
        summary["ktrans"] = images["stats"]
    if ifp_numbers is not None:
        summary["ifp"] = ifp_numbers
    if config.radiation is not None:
        summary["radiation"] = {"dose_Gy": config.radiation.dose_Gy,
                                "factors": {name: float(m) for name, m in
                                            config.radiation.factors(config.radiation.dose_Gy).items()}}
    if closed_form is not None:
        summary["closed_form"] = closed_form
    if heating is not None:
        summary["heating"] = heating
    write_summary(out / "summary.json", summary, comm)
    log(f"mass balance: entered {last.entered_through_vessels:.4g}, error {balance['final_balance_error_relative']:.2e} "
        "of it" + (f"; Krogh closed form max error {closed_form['free_drug_max_abs_error_mol_m3']:.3g} mol/m^3"
                   if closed_form else ""))
    return summary
