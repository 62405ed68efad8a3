"""Time-dependent Pennes bioheat equation (Pennes 1948 J Appl Physiol 1:93) with DOLFINx, under MPI.

Strong form (SI units, temperature T in kelvin)::

    rho c dT/dt = div(k grad T) + w_b rho_b c_b (T_a - T) + Q_m + Q_ext(x, t)     in the tissue
    T = T_a  |  -k grad T . n = h (T - T_a)  |  no flux                          on the outer boundary

Coefficients are piecewise constant per tagged region (:class:`BioheatProperties` per cell tag).
``Q_ext`` heats the cells of one region tag with a time protocol: a :class:`PowerSchedule`
(piecewise-constant power density) or a :class:`TargetTemperature` controller that, in each step
of its window, chooses the power that puts the region's mean temperature exactly on the target
(the equation is linear in T and Q, so the step's solution is the unheated one plus the power
times the response to unit power; the power is clipped to ``[0, max_power]``). After an abrupt
rise BDF2 extrapolates past the target for a step (the power is then 0); backward Euler holds it
monotonically.

Time stepping: BDF2 (order 2; first step backward Euler) or backward Euler (order 1) with the
persistent solver of :mod:`hybrid.forward.stepping` (CG + GAMG; matrix assembled once per step
size). Thermal dose: CEM43 [min] (Sapareto & Dewey 1984) accumulated at every P_k node with the
trapezoidal rule in time, rate from :func:`hybrid.problems.bioheat.cem43_rate`; the perfusion and
metabolic terms are :func:`hybrid.problems.bioheat.pennes_source`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import ufl
from mpi4py import MPI

import dolfinx.fem

from hybrid.forward.ifp import region_coefficient
from hybrid.forward.stepping import BDFScheme, PersistentSolver
from hybrid.mesh import TumourMesh
from hybrid.problems import bioheat
from hybrid.problems.namespace import NUMPY
from hybrid.problems.parameters import default

__all__ = ["BioheatProperties", "PowerSchedule", "TargetTemperature", "BioheatSolver", "HeatStep",
           "DEFAULT_HEAT_PETSC_OPTIONS"]

DEFAULT_HEAT_PETSC_OPTIONS = {
    "ksp_type": "cg",
    "pc_type": "gamg",
    "ksp_rtol": 1e-12,
    "ksp_atol": 1e-30,
    "ksp_max_it": 500,
    "ksp_error_if_not_converged": True,
}


@dataclass(frozen=True)
class BioheatProperties:
    """Pennes coefficients of one region, SI units."""

    conductivity: float            # k, W/(m K)
    density: float                 # rho, kg/m^3
    specific_heat: float           # c, J/(kg K)
    perfusion: float               # w_b, m^3 blood/(m^3 tissue s) = 1/s
    blood_density: float           # rho_b, kg/m^3
    blood_specific_heat: float     # c_b, J/(kg K)
    metabolic_heat: float = 0.0    # Q_m, W/m^3

    @classmethod
    def defaults(cls) -> "BioheatProperties":
        """Tumour values of the parameter table (k_th, rho_tissue, c_tissue, omega_b, rho_b, c_b, Q_m)."""
        return cls(default("k_th"), default("rho_tissue"), default("c_tissue"), default("omega_b"),
                   default("rho_b"), default("c_b"), default("Q_m"))

    @property
    def perfusion_coefficient(self) -> float:
        """w_b rho_b c_b [W/(m^3 K)]."""
        return bioheat.perfusion_coefficient(self.perfusion, self.blood_density, self.blood_specific_heat)


@dataclass(frozen=True)
class PowerSchedule:
    """Piecewise-constant heating power: ``intervals`` of (start [s], end [s], power [W/m^3])."""

    intervals: tuple[tuple[float, float, float], ...]

    def power(self, t: float) -> float:
        """Power density [W/m^3] at time ``t`` [s]."""
        return sum(q for start, end, q in self.intervals if start < t <= end)


@dataclass(frozen=True)
class TargetTemperature:
    """Hold the heated region's mean temperature at ``target`` [K] during ``start < t <= end`` [s],
    with a power density of at most ``max_power`` [W/m^3] (the ramp-up takes as long as that
    power needs)."""

    target: float
    start: float
    end: float
    max_power: float


@dataclass(frozen=True)
class HeatStep:
    """One time step: new time [s], heating power [W/m^3], region mean temperature [K]."""

    time: float
    power: float
    region_mean_temperature: float


class BioheatSolver:
    """Persistent Pennes solver on ``domain``; :meth:`step` advances the temperature.

    ``properties``: region tag -> :class:`BioheatProperties`. ``boundary``: ``"dirichlet"``
    (T = T_a), ``"no_flux"`` or ``("robin", h [W/(m^2 K)])``. ``heating`` is applied on the cells
    tagged ``heated_region`` (None: everywhere). ``extra_source`` (t -> UFL, W/m^3, ``t`` a
    DOLFINx constant holding the new time level) is for manufactured-solution tests.
    Fields: ``temperature`` [K] and ``thermal_dose`` (CEM43) [min], both Lagrange P_degree.
    """

    def __init__(self, domain: TumourMesh, properties: dict[int, BioheatProperties], *,
                 arterial_temperature: float | None = None, boundary="dirichlet",
                 heating: PowerSchedule | TargetTemperature | None = None, heated_region: int | None = None,
                 order: int = 2, degree: int = 1, initial_temperature: float | None = None,
                 petsc_options: dict | None = None, extra_source: Callable | None = None):
        mesh = domain.mesh
        self.domain, self.heating = domain, heating
        arterial_temperature = default("T_a") if arterial_temperature is None else arterial_temperature
        self.arterial_temperature = arterial_temperature
        self.time = 0.0
        V = dolfinx.fem.functionspace(mesh, ("Lagrange", degree))
        coefficient = lambda name, get: region_coefficient(domain, {t: get(p) for t, p in properties.items()}, name)
        k = coefficient("conductivity", lambda p: p.conductivity)
        heat_capacity = coefficient("heat_capacity", lambda p: p.density * p.specific_heat)
        perfusion = coefficient("perfusion_coefficient", lambda p: p.perfusion_coefficient)
        metabolic = coefficient("metabolic_heat", lambda p: p.metabolic_heat)
        self.temperature = dolfinx.fem.Function(V, name="temperature")
        self.temperature.x.array[:] = arterial_temperature if initial_temperature is None else initial_temperature
        self._history = [dolfinx.fem.Function(V), dolfinx.fem.Function(V)]
        for old in self._history:
            old.x.array[:] = self.temperature.x.array
        self.thermal_dose = dolfinx.fem.Function(V, name="thermal_dose")
        self._t = dolfinx.fem.Constant(mesh, 0.0)
        self._power = dolfinx.fem.Constant(mesh, 0.0)
        self.scheme = BDFScheme(mesh, order)

        T, v = self.temperature, ufl.TestFunction(V)
        T_a = dolfinx.fem.Constant(mesh, float(arterial_temperature))
        dx = ufl.Measure("dx", domain=mesh, subdomain_data=domain.cell_tags)
        ds = ufl.Measure("ds", domain=mesh, subdomain_data=domain.facet_tags)
        self._dx_heated = dx(heated_region) if heated_region is not None else dx
        dT = self.scheme.derivative(T, *self._history)
        sources = bioheat.pennes_source(T, perfusion_coeff=perfusion, arterial_temperature=T_a, metabolic_heat=metabolic)
        residual = (heat_capacity * dT * v + ufl.inner(k * ufl.grad(T), ufl.grad(v)) - sources * v) * dx \
            - self._power * v * self._dx_heated
        if extra_source is not None:
            residual -= extra_source(self._t) * v * dx
        bcs = []
        if boundary == "dirichlet":
            facets = np.concatenate([domain.facet_tags.find(t) for t in domain.outer_tags])
            dofs = dolfinx.fem.locate_dofs_topological(V, mesh.topology.dim - 1, facets)
            bcs.append(dolfinx.fem.dirichletbc(dolfinx.default_scalar_type(arterial_temperature), dofs, V))
        elif isinstance(boundary, tuple) and boundary[0] == "robin":
            for tag in domain.outer_tags:
                residual += boundary[1] * (T - T_a) * v * ds(tag)
        elif boundary != "no_flux":
            raise ValueError(f"bioheat boundary must be 'dirichlet', 'no_flux' or ('robin', h), got {boundary!r}")
        self.solver = PersistentSolver(residual, T, bcs, DEFAULT_HEAT_PETSC_OPTIONS | (petsc_options or {}),
                                       "hybrid_heat_", linear=True)
        self._unit_rhs = dolfinx.fem.form(v * self._dx_heated)
        self._unit_response = dolfinx.fem.Function(V) if isinstance(heating, TargetTemperature) else None
        self._unit_mean = None   # region mean [K] of the response to 1 W/m^3 over one step
        one = dolfinx.fem.Constant(mesh, 1.0)
        self._region_volume = self._integral(one * self._dx_heated)
        self._region_mean_form = dolfinx.fem.form(T * self._dx_heated)

    def _integral(self, integrand) -> float:
        form = integrand if isinstance(integrand, dolfinx.fem.Form) else dolfinx.fem.form(integrand)
        return self.domain.mesh.comm.allreduce(dolfinx.fem.assemble_scalar(form), op=MPI.SUM)

    def region_mean_temperature(self) -> float:
        """Mean temperature [K] over the heated region (the whole mesh without one)."""
        return self._integral(self._region_mean_form) / self._region_volume

    def step(self, dt: float) -> HeatStep:
        """Advance by ``dt`` [s]: solve the new temperature, choose the heating power, update CEM43."""
        matrix_changed = self.scheme.prepare(dt)
        new_time = self.time + dt
        self._t.value = new_time
        previous = self.temperature.x.array.copy()
        self._history[1].x.array[:] = self._history[0].x.array
        self._history[0].x.array[:] = previous
        heating = self.heating
        if isinstance(heating, TargetTemperature) and heating.start < new_time <= heating.end:
            self._power.value = 0.0
            self.solver.solve(matrix_changed)
            if matrix_changed or self._unit_mean is None:
                self.solver.solve_linear_rhs(self._unit_rhs, self._unit_response)
                self._unit_mean = self._integral(self._unit_response * self._dx_heated) / self._region_volume
            power = (heating.target - self.region_mean_temperature()) / self._unit_mean
            power = float(np.clip(power, 0.0, heating.max_power))
            self.temperature.x.array[:] += power * self._unit_response.x.array
            self._power.value = power
        else:
            self._power.value = heating.power(new_time) if isinstance(heating, PowerSchedule) else 0.0
            self.solver.solve(matrix_changed)
        self.scheme.steps_taken += 1
        rate = lambda temperature: bioheat.cem43_rate(temperature, NUMPY)
        self.thermal_dose.x.array[:] += 0.5 * dt / 60.0 * (rate(previous) + rate(self.temperature.x.array))
        self.time = new_time
        return HeatStep(new_time, float(self._power.value), self.region_mean_temperature())

    def close(self) -> None:
        """Free the PETSc objects."""
        self.solver.close()
