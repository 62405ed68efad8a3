"""Time-dependent transport of liposomal, free and intracellular doxorubicin with DOLFINx, under MPI.

State per tissue volume [mol/m^3]: ``C_L`` (drug encapsulated in liposomes), ``C_F`` (free
extracellular drug, unbound), ``C_I`` (drug inside cells) and, with kinetic albumin binding
(:class:`AlbuminBinding`), ``C_B`` (free drug bound to albumin). Conservative form, ``div(u C)``
rather than ``u . grad C`` (they differ by ``C div u``, large in the tumour; uptake of El-Kareh &
Secomb 2000 Neoplasia 2:325, exchange of Baxter & Jain 1989 Microvasc Res 37:77)::

    dC_L/dt + div(f_L u C_L / phi) = div(D_L grad C_L) + J_L - k_rel C_L - k_L C_L
    dC_F/dt + div(u C_F / phi)     = div(D_F grad C_F) + J_F + k_rel C_L - U(C_F, C_I) - R
    dC_I/dt                        = U(C_F, C_I)
    dC_B/dt + div(u C_B / phi)     = div(D_Fb grad C_B) + J_B + R

``R = k_a C_F - k_d C_B`` (:func:`hybrid.problems.binding.albumin_binding_rate`); bound drug
is not taken up by cells, and ``J_B`` is its exchange with the albumin-bound plasma drug
(permeability P_Fb).

``u`` is the conservative Darcy flux [m/s] of :mod:`hybrid.forward.ifp` (``IFPSolution.flux``),
``phi`` the interstitial fraction, ``U`` the cellular uptake [mol/(m^3 s)] (linear, or
El-Kareh & Secomb), ``k_rel`` the release rate [1/s] (a number or a field, e.g. k(T) of a
temperature). Transvascular exchange ``J`` is the Kedem-Katchalsky flux with the Patlak Peclet
correction (:func:`hybrid.problems.exchange.kedem_katchalsky_flux`) with the plasma
concentration of the species and ``C/phi``:

- perivascular meshes (resolved vessel walls): a flux condition on each wall,
  ``-(D grad C - w C) . n = J`` per wall area, with P [m/s] and the fluid leaving the vessel
  ``-u . n`` [m/s];
- tumour-scale meshes: a volume source with ``P S/V`` [1/s] and the vascular fluid source
  ``phi_V`` [1/s]; lymphatic drainage removes ``phi_Lymph C/phi``.

Outer boundary: no diffusive flux; drug leaves with the fluid where ``u . n > 0``.

Discretisation: continuous P1 for the three (four) species (one blocked space); reaction terms lumped at
the vertices, and so is the mass of every species whose cell Peclet number ``|w| h / (2 D)`` is at
most 1 (keeps diffusion-reaction solutions non-negative on the usual meshes). Above 1 the species
keeps its consistent mass (lumping it makes advected fronts oscillate) and, with
``stabilise="auto"``, gets SUPG (tau = (4|w|^2/h^2 + 9 (4D/h^2)^2)^-1/2, full residual, so the
scheme stays consistent: MMS rate 2 with SUPG on). Advection and SUPG terms use a degree-3
quadrature. Time: backward Euler (order 1, default) or BDF2 (order 2). One Newton solve per step with the
persistent solver of :mod:`hybrid.forward.stepping` (linear uptake: one linear solve, the
matrix factorised once per step size). Default linear solver: MUMPS LU on 1-D/2-D meshes (reused
factorisation), GMRES + block-Jacobi ILU on 3-D meshes.

Global mass balance: with the test function 1 every transfer between species cancels, so per
step ``d/dt(content) = entered through vessels - left through the boundary - cleared`` holds to
the solver tolerance; :meth:`TransportSolver.step` records it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import ufl
from mpi4py import MPI

import dolfinx.fem

from hybrid.forward.stepping import BDFScheme, PersistentSolver
from hybrid.mesh import TumourMesh
from hybrid.problems.binding import albumin_binding_rate
from hybrid.problems.exchange import kedem_katchalsky_flux
from hybrid.problems.namespace import UFL
from hybrid.problems.parameters import default

__all__ = ["AlbuminBinding", "Carrier", "CellUptake", "Flow", "TransportModel", "TransportSolver", "TransportStep",
           "SPECIES", "BOUND_SPECIES", "DEFAULT_TRANSPORT_PETSC_OPTIONS"]

SPECIES = ("liposomal_drug", "free_drug", "cell_drug")
"""Output names of the three state variables (all mol per m^3 of tissue)."""

BOUND_SPECIES = "bound_drug"
"""Output name of the fourth state variable with kinetic albumin binding (mol per m^3 of tissue)."""

DEFAULT_TRANSPORT_PETSC_OPTIONS = {
    "direct": {"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps"},
    "iterative": {"ksp_type": "gmres", "ksp_rtol": 1e-12, "ksp_atol": 1e-30, "ksp_max_it": 1000,
                  "ksp_pc_side": "right", "pc_type": "bjacobi", "sub_pc_type": "ilu",
                  "ksp_error_if_not_converged": True},
}


@dataclass(frozen=True)
class Carrier:
    """Transport coefficients of one drug form (free drug or liposomes), SI units."""

    diffusivity: float                 # D, m^2/s (effective, per tissue)
    vessel_permeability: float         # P, m/s
    reflection: float = 0.0            # sigma_s, solute reflection coefficient [1]
    hindrance: float = 1.0             # f, convective hindrance [1] (liposomes)
    clearance: float = 0.0             # k_L, loss of extravasated carrier [1/s]


@dataclass(frozen=True)
class CellUptake:
    """Net uptake into cells ``rate(c_free, c_cell, xp)`` [mol/(m^3 s)] (a rate law of
    :mod:`hybrid.problems.uptake`); ``linear``: affine in the concentrations."""

    rate: Callable
    linear: bool


@dataclass(frozen=True)
class AlbuminBinding:
    """Kinetic binding of free drug to albumin in the tissue (a fourth species C_B).

    ``association_rate`` k_a and ``dissociation_rate`` k_d [1/s]; ``carrier``: transport of the
    bound drug (D_Fb, P_Fb; convected with the interstitial flow, no clearance); ``plasma``: the
    albumin-bound plasma concentration [mol/m^3 of plasma] against time [s] (delta_alb of the total
    free-drug curve, whose unbound part is ``TransportModel.plasma_free``)."""

    association_rate: float
    dissociation_rate: float
    carrier: Carrier
    plasma: Callable[[float], float]

    @classmethod
    def defaults(cls, plasma: Callable[[float], float]) -> "AlbuminBinding":
        """Table k_a, k_d, D_Fb, P_Fb with the bound plasma curve ``plasma`` [mol/m^3]."""
        return cls(default("k_a"), default("k_d"), Carrier(default("D_Fb"), default("P_Fb")), plasma)


@dataclass(frozen=True)
class Flow:
    """Interstitial flow: Darcy ``flux`` u [m/s] (UFL vector, e.g. ``IFPSolution.flux``; None: no
    advection) and on tumour-scale meshes the ``vascular_fluid_source`` phi_V and
    ``lymphatic_fluid_sink`` [1/s]."""

    flux: object
    vascular_fluid_source: object = None
    lymphatic_fluid_sink: object = None


@dataclass
class TransportModel:
    """Everything the transport equations need besides the mesh.

    ``plasma_free`` / ``plasma_liposomal``: plasma concentration [mol/m^3 of plasma] against time
    [s] (e.g. :class:`hybrid.problems.pharmacokinetics.PlasmaCurve`); ``liposomal`` None solves
    free drug only (C_L stays 0). ``surface_to_volume`` S/V [1/m] (number or field): volume
    exchange (tumour-scale meshes); None on perivascular meshes, where the walls exchange.
    ``release_rate`` k_rel [1/s]: number or UFL expression of fields the caller updates.
    ``intravascular_release`` f [1] (number or UFL, None: none): fraction of the encapsulated drug
    released in the blood passing the tissue (thermosensitive liposomes in heated vessels,
    :func:`hybrid.problems.release.intravascular_released_fraction`); the vessel walls then see
    the plasma concentrations ``(1 - f) c_p,L`` and ``c_p,F + f c_p,L``.
    ``free_binding_ratio`` B [1]: free drug bound in the tissue (albumin) per unbound, at
    instantaneous equilibrium; ``C_F`` is then the unbound drug, the bound ``B C_F`` is immobile,
    does not cross walls or membranes, and the free-drug time term becomes ``(1 + B) dC_F/dt``.
    ``albumin`` (None: none): kinetic binding instead, a fourth species (not both).
    """

    free: Carrier
    uptake: CellUptake
    plasma_free: Callable[[float], float]
    interstitial_fraction: float = 1.0
    liposomal: Carrier | None = None
    plasma_liposomal: Callable[[float], float] | None = None
    release_rate: object = 0.0
    surface_to_volume: object = None
    extra_sources: Callable | None = field(default=None, repr=False)   # t -> one source per species, tests only
    intravascular_release: object = None
    free_binding_ratio: float = 0.0
    albumin: AlbuminBinding | None = None


@dataclass(frozen=True)
class TransportStep:
    """Record of one step: new time [s], amounts [mol per metre of depth in 2-D, mol in 3-D],
    cumulative exchanges since t = 0, the step's mass-balance residual and the smallest nodal
    value of each species [mol/m^3]."""

    time: float
    in_tissue: float                  # liposomal + free drug (bound free drug included)
    in_cells: float
    entered_through_vessels: float    # cumulative, net
    left_through_boundary: float      # cumulative
    cleared: float                    # cumulative (liposome clearance, lymphatics)
    balance_residual: float           # scheme's content change - dt x net gain, this step
    newton_iterations: int
    minimum: tuple[float, ...]        # per species, in TransportSolver.names order


def _lumped(measure, mesh, subdomain_data=None):
    """Vertex quadrature (mass lumping for P1). The facets of a 1-D mesh are points, where every
    rule is the point value (FFCx's vertex rule divides by their zero volume): plain ``ds`` there."""
    if measure == "ds" and mesh.topology.dim == 1:
        return ufl.Measure(measure, domain=mesh, subdomain_data=subdomain_data)
    return ufl.Measure(measure, domain=mesh, subdomain_data=subdomain_data,
                       metadata={"quadrature_rule": "vertex", "quadrature_degree": 1})


class TransportSolver:
    """Persistent solver of the three-species (four with kinetic albumin binding) transport on
    ``domain`` (module docstring).

    ``flow`` None: no interstitial flow. ``order`` 1 (backward Euler) or 2 (BDF2).
    ``stabilise``: ``"auto"`` (SUPG where the cell Peclet number exceeds 1), ``True`` or ``False``.
    ``concentrations`` (vector P1, components in :attr:`names` order: :data:`SPECIES`, then
    :data:`BOUND_SPECIES` with ``model.albumin``) holds the state (zero at first; set or
    interpolate it for other initial values); :meth:`species` gives named scalar copies for output.
    ``peclet`` and ``stabilised`` list the mobile species: liposomal, free (, bound).
    """

    def __init__(self, domain: TumourMesh, model: TransportModel, *, flow: Flow | None = None, order: int = 1,
                 stabilise="auto", petsc_options: dict | None = None):
        mesh = domain.mesh
        binding = model.albumin
        if binding is not None and model.free_binding_ratio:
            raise ValueError("albumin binding is either at equilibrium (free_binding_ratio) or kinetic (albumin); "
                             "set only one of them")
        self.domain, self.model = domain, model
        self.names = SPECIES + ((BOUND_SPECIES,) if binding is not None else ())
        count = len(self.names)
        self.time = 0.0
        self.scheme = BDFScheme(mesh, order)
        V = dolfinx.fem.functionspace(mesh, ("Lagrange", 1, (count,)))
        self.concentrations = dolfinx.fem.Function(V, name="concentrations")
        collapsed = [V.sub(i).collapse() for i in range(count)]
        self._species = [dolfinx.fem.Function(space, name=name) for (space, _), name in zip(collapsed, self.names)]
        self._species_dofs = [np.asarray(dofs) for _, dofs in collapsed]
        self._history = [dolfinx.fem.Function(V), dolfinx.fem.Function(V)]
        self._t = dolfinx.fem.Constant(mesh, 0.0)
        self._plasma = {"free": dolfinx.fem.Constant(mesh, 0.0), "liposomal": dolfinx.fem.Constant(mesh, 0.0),
                        "bound": dolfinx.fem.Constant(mesh, 0.0)}
        c, test = self.concentrations, ufl.TestFunction(V)
        phi = dolfinx.fem.Constant(mesh, float(model.interstitial_fraction))
        dxl = _lumped("dx", mesh)
        dxq = ufl.Measure("dx", domain=mesh, metadata={"quadrature_degree": 3})   # advection, SUPG
        dsl = _lumped("ds", mesh, domain.facet_tags)
        n = ufl.FacetNormal(mesh)
        h = ufl.CellDiameter(mesh)
        flux = flow.flux if flow is not None else None
        lipo = model.liposomal
        # mobile species (index into c): liposomal, free and, with kinetic binding, bound drug
        mobile = [0, 1] + ([3] if binding is not None else [])
        carriers = [(lipo or model.free), model.free] + ([binding.carrier] if binding is not None else [])
        plasma = [self._plasma["liposomal"], self._plasma["free"], self._plasma["bound"]][:len(mobile)]
        if lipo is not None and model.intravascular_release is not None:
            released = model.intravascular_release * plasma[0]
            plasma[0], plasma[1] = plasma[0] - released, plasma[1] + released
        active = [lipo is not None] + [True] * (len(mobile) - 1)

        # volumetric rates [mol/(m^3 s)] of each species (exchange, release, uptake, binding, clearance)
        release = model.release_rate if lipo is not None else 0.0
        uptake = model.uptake.rate(c[1], c[2], UFL)
        exchange, cleared = [0.0] * len(mobile), [0.0] * len(mobile)
        if model.surface_to_volume is not None:
            fluid = (flow.vascular_fluid_source if flow is not None and flow.vascular_fluid_source is not None
                     else dolfinx.fem.Constant(mesh, 0.0))
            for m, s in enumerate(mobile):
                if active[m]:
                    ps = carriers[m].vessel_permeability * model.surface_to_volume
                    exchange[m] = kedem_katchalsky_flux(plasma[m], c[s] / phi, fluid, carriers[m].reflection, ps, UFL)
        if flow is not None and flow.lymphatic_fluid_sink is not None:
            cleared = [flow.lymphatic_fluid_sink * c[s] / phi for s in mobile]
        if lipo is not None:
            cleared[0] = cleared[0] + lipo.clearance * c[0]
        sources = [exchange[0] - release * c[0] - cleared[0],
                   exchange[1] + release * c[0] - uptake - cleared[1],
                   uptake]
        if binding is not None:
            bound = albumin_binding_rate(c[1], c[3], association_rate=binding.association_rate,
                                         dissociation_rate=binding.dissociation_rate)
            sources[1] = sources[1] - bound
            sources.append(exchange[2] - cleared[2] + bound)
        if model.extra_sources is not None:
            extra = model.extra_sources(self._t)
            if len(extra) != count:
                raise ValueError(f"extra_sources must give {count} sources ({', '.join(self.names)}), got {len(extra)}")
            sources = [s + e for s, e in zip(sources, extra)]
        walls = [[] for _ in mobile]   # per mobile species: (wall tag, J [mol/(m^2 s)] into the tissue)
        wall_influx = -ufl.dot(flux, n) if flux is not None else dolfinx.fem.Constant(mesh, 0.0)
        for wall in domain.vessel_wall_tags:
            for m, s in enumerate(mobile):
                if active[m]:
                    walls[m].append((wall, kedem_katchalsky_flux(plasma[m], c[s] / phi, wall_influx,
                                                                 carriers[m].reflection,
                                                                 carriers[m].vessel_permeability, UFL)))

        derivative = self.scheme.derivative(c, *self._history)
        dc = [derivative[s] for s in range(count)]
        if model.free_binding_ratio:   # unbound + bound free drug: (1 + B) dC_F/dt
            dc[1] = (1.0 + model.free_binding_ratio) * dc[1]
        # cell Peclet numbers |w| h / (2 D) of the advected species; above 1 the species keeps its
        # consistent mass (lumping it makes advected fronts oscillate) and gets SUPG ("auto")
        velocity = [carrier.hindrance * flux / phi if flux is not None else None for carrier in carriers]
        self.peclet = [_max_cell_peclet(mesh, velocity[m], carriers[m].diffusivity) if flux is not None else 0.0
                       for m in range(len(mobile))]
        dominated = [p > 1.0 for p in self.peclet]
        self.stabilised = [stabilise is True or (stabilise == "auto" and d) for d in dominated]
        mass = [dxl] * count
        for m, s in enumerate(mobile):
            mass[s] = ufl.dx if dominated[m] else dxl
        residual = sum(dc[s] * test[s] * mass[s] - sources[s] * test[s] * dxl for s in range(count))
        outflow = [0.0] * len(mobile)
        for m, s in enumerate(mobile):
            D = carriers[m].diffusivity
            if D:   # an immobile species (D = 0) has no diffusion form
                residual += D * ufl.inner(ufl.grad(c[s]), ufl.grad(test[s])) * ufl.dx
            for wall, J in walls[m]:
                residual -= J * test[s] * dsl(wall)
            if flux is None:
                continue
            w = velocity[m]
            residual -= c[s] * ufl.inner(w, ufl.grad(test[s])) * dxq
            for tag in domain.outer_tags:
                outflow[m] = outflow[m] + ufl.max_value(ufl.dot(w, n), 0.0) * c[s] * dsl(tag)
                residual += ufl.max_value(ufl.dot(w, n), 0.0) * c[s] * test[s] * dsl(tag)
            if self.stabilised[m]:
                speed = ufl.sqrt(ufl.inner(w, w))
                tau = 1.0 / ufl.sqrt((2.0 * speed / h) ** 2 + 9 * (4 * D / h**2) ** 2)
                strong = dc[s] + ufl.div(w * c[s]) - sources[s]
                residual += tau * ufl.inner(w, ufl.grad(test[s])) * strong * dxq

        kind = "iterative" if mesh.topology.dim == 3 else "direct"
        options = DEFAULT_TRANSPORT_PETSC_OPTIONS[kind] | (petsc_options or {})
        # rows divided by the mean cell measure: entries O(1/dt) instead of O(h^dim / dt), which
        # ILU would take for zero pivots on um-to-mm cells
        scale = dolfinx.fem.Constant(mesh, 1.0 / _mean_cell_measure(mesh))
        self.solver = PersistentSolver(scale * residual, c, [], options, "hybrid_transport_",
                                       linear=model.uptake.linear)

        # mass-balance integrals (the same measures as the residual, so they balance exactly)
        total = self._compile
        in_tissue = c[0] + (1.0 + model.free_binding_ratio) * c[1] + (c[3] if binding is not None else 0.0)
        self._content_tissue = total(in_tissue * dxl)
        self._content_cells = total(c[2] * dxl)
        entered = [J * dsl(wall) for species_walls in walls for wall, J in species_walls]
        if model.surface_to_volume is not None:
            entered.append(sum(exchange) * dxl)
        if model.extra_sources is not None:
            entered.append(sum(model.extra_sources(self._t)) * dxl)
        self._entered = total(sum(entered[1:], entered[0])) if entered else None
        self._left = total(sum(outflow)) if flux is not None else None
        self._cleared = total(sum(cleared) * dxl) if any(not isinstance(x, float) for x in cleared) else None
        self._previous_content = None   # content at the previous time level (BDF2 balance)
        self._last_dt = None            # size of the last step [s] (adaptive error estimate)
        self._cumulative = {"entered": 0.0, "left": 0.0, "cleared": 0.0}

    @staticmethod
    def _compile(expr):
        """The compiled form of a UFL integral (None for a plain number: nothing to integrate)."""
        return None if expr is None or isinstance(expr, (int, float)) else dolfinx.fem.form(expr)

    def _integral(self, form) -> float:
        if form is None:
            return 0.0
        return self.domain.mesh.comm.allreduce(dolfinx.fem.assemble_scalar(form), op=MPI.SUM)

    def content(self) -> float:
        """Drug in the tissue (all species) [mol, or mol/m in 2-D]."""
        return self._integral(self._content_tissue) + self._integral(self._content_cells)

    def species(self) -> list[dolfinx.fem.Function]:
        """Scalar P1 copies of C_L, C_F, C_I (, C_B) named as in :attr:`names` [mol/m^3 of tissue],
        updated to the current state (the same Function objects every call: keep them for output)."""
        for part, dofs in zip(self._species, self._species_dofs):
            part.x.array[:] = self.concentrations.x.array[dofs]
        return self._species

    def step(self, dt: float, coefficients_changed: bool = False) -> TransportStep:
        """Advance by ``dt`` [s]. ``coefficients_changed``: a field in the matrix (release rate,
        flow) was updated since the last step."""
        matrix_changed = self.scheme.prepare(dt) or coefficients_changed
        new_time = self.time + dt
        self._t.value = new_time
        self._plasma["free"].value = float(self.model.plasma_free(new_time))
        if self.model.plasma_liposomal is not None:
            self._plasma["liposomal"].value = float(self.model.plasma_liposomal(new_time))
        if self.model.albumin is not None:
            self._plasma["bound"].value = float(self.model.albumin.plasma(new_time))
        self._history[1].x.array[:] = self._history[0].x.array
        self._history[0].x.array[:] = self.concentrations.x.array
        old = self.content()   # the state may have been set from outside since the last step
        older = old if self._previous_content is None else self._previous_content
        iterations = self.solver.solve(matrix_changed)
        self.scheme.steps_taken += 1
        self.time, self._last_dt = new_time, dt
        rates = {"entered": self._integral(self._entered), "left": self._integral(self._left),
                 "cleared": self._integral(self._cleared)}
        for key, rate in rates.items():
            self._cumulative[key] += dt * rate
        in_tissue, in_cells = self._integral(self._content_tissue), self._integral(self._content_cells)
        change = self.scheme.content_change(in_tissue + in_cells, old, older)
        self._previous_content = old
        residual = change - dt * (rates["entered"] - rates["left"] - rates["cleared"])
        count = len(self.names)
        values = self.concentrations.x.array.reshape(-1, count)[:self.concentrations.function_space.dofmap.index_map.size_local]
        minimum = tuple(self.domain.mesh.comm.allreduce(float(values[:, s].min(initial=np.inf)), op=MPI.MIN)
                        for s in range(count))
        return TransportStep(new_time, in_tissue, in_cells, self._cumulative["entered"], self._cumulative["left"],
                             self._cumulative["cleared"], residual, iterations, minimum)

    def advance_to(self, stop: float, dt: float, tolerance: float, max_step: float,
                   on_accept: Callable[[float], None] | None = None) -> tuple[list, float]:
        """Backward Euler steps from the current time to ``stop`` [s] with adaptive step sizes.

        Local error estimate of backward Euler (half the second difference)
        ``dt/(dt + dt_prev) |u^{n+1} - u^n - dt/dt_prev (u^n - u^{n-1})|``, per species relative to
        that species' largest value, against ``tolerance``; a step above it is rejected and
        retried with half the step, a step below a quarter of it lets the next one double (up to
        ``max_step``), so the step only changes by factors of 2 and the matrix is rebuilt rarely.
        The last step is shortened to land on ``stop``. Starts with ``dt``; returns the accepted
        step records and the step size to continue with. ``on_accept(dt)``, if given, is called
        after each accepted step with its size [s] (e.g. to accumulate exposure).
        """
        if self.scheme.order != 1:
            raise ValueError("adaptive steps need backward Euler (order 1): the BDF2 coefficients assume equal steps")
        records = []
        while self.time < stop * (1 - 1e-12):
            size = min(dt, stop - self.time)
            saved = self._save()
            record = self.step(size)
            ratio = self._error_ratio(saved, size, tolerance)
            if ratio > 1.0 and size > max_step * 2.0**-20:
                self._restore(saved)
                dt = 0.5 * size
                continue
            records.append(record)
            if on_accept is not None:
                on_accept(size)
            if ratio < 0.25 and size == dt:
                dt = min(2 * dt, max_step)
        return records, dt

    def _save(self) -> dict:
        return {"arrays": [f.x.array.copy() for f in (self.concentrations, *self._history)], "time": self.time,
                "steps": self.scheme.steps_taken, "previous_content": self._previous_content,
                "cumulative": dict(self._cumulative), "last_dt": self._last_dt}

    def _restore(self, saved: dict) -> None:
        for function, values in zip((self.concentrations, *self._history), saved["arrays"]):
            function.x.array[:] = values
        self.time, self.scheme.steps_taken = saved["time"], saved["steps"]
        self._previous_content, self._cumulative = saved["previous_content"], saved["cumulative"]
        self._last_dt = saved["last_dt"]

    def _error_ratio(self, saved: dict, dt: float, tolerance: float) -> float:
        """Largest estimated local error over ``tolerance`` x the species' largest value (0 on the
        first step, which has no previous step to compare with)."""
        previous_dt = saved["last_dt"]
        if previous_dt is None:
            return 0.0
        n, count = self.concentrations.function_space.dofmap.index_map.size_local, len(self.names)
        new, old, older = (a.reshape(-1, count)[:n] for a in
                           (self.concentrations.x.array, saved["arrays"][0], saved["arrays"][1]))
        estimate = dt / (dt + previous_dt) * np.abs(new - old - dt / previous_dt * (old - older))
        comm = self.domain.mesh.comm
        worst, scale = np.empty(count), np.empty(count)
        comm.Allreduce(estimate.max(axis=0, initial=0.0), worst, op=MPI.MAX)
        comm.Allreduce(np.abs(new).max(axis=0, initial=0.0), scale, op=MPI.MAX)
        return float(np.max(worst / (tolerance * np.maximum(scale, 1e-300))))

    def close(self) -> None:
        """Free the PETSc objects."""
        self.solver.close()


def _mean_cell_measure(mesh) -> float:
    """Mean cell length/area/volume [m^dim] over all ranks."""
    tdim = mesh.topology.dim
    cells = mesh.topology.index_map(tdim).size_local
    one = dolfinx.fem.Constant(mesh, 1.0)
    measure = mesh.comm.allreduce(dolfinx.fem.assemble_scalar(dolfinx.fem.form(one * ufl.dx)), op=MPI.SUM)
    return measure / mesh.comm.allreduce(cells, op=MPI.SUM)


def _max_cell_peclet(mesh, velocity, diffusivity: float) -> float:
    """Largest cell Peclet number |w| h / (2 D) over the mesh (w evaluated at cell midpoints)."""
    tdim = mesh.topology.dim
    midpoint = mesh.basix_cell()
    import basix

    point = basix.geometry(midpoint).mean(axis=0, keepdims=True)[:, :tdim]
    speed = dolfinx.fem.Expression(ufl.sqrt(ufl.inner(velocity, velocity)), point)
    cells = np.arange(mesh.topology.index_map(tdim).size_local, dtype=np.int32)
    values = speed.eval(mesh, cells).ravel()
    h = mesh.h(tdim, cells)
    local = float((values * h / (2 * diffusivity)).max(initial=0.0))
    return mesh.comm.allreduce(local, op=MPI.MAX)
