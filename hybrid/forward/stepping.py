"""Persistent implicit time stepping shared by the bioheat and drug-transport solvers.

:class:`BDFScheme` holds the backward-differentiation coefficients as DOLFINx constants, so the
forms that use them are compiled once: order 1 is backward Euler, order 2 is BDF2 (its first
step is backward Euler, which keeps the global error O(dt^2)). Time derivative at t_{n+1}::

    du/dt ~ (a0 u^{n+1} + a1 u^n + a2 u^{n-1}) / dt

:class:`PersistentSolver` solves one residual ``F(u; v) = 0`` per call: forms compiled once,
Jacobian matrix assembled only when it changes (every Newton iteration for a nonlinear residual;
only when ``a0 / dt`` or a coefficient changes for a linear one), one PETSc KSP kept for the
whole run (the preconditioner is rebuilt only with the matrix). PETSc options: the KSP reads them
under a numbered prefix unique to the solver (``hybrid_heat_0_``), so two solvers alive at once
keep their own; a user addresses the un-numbered one (``-hybrid_heat_ksp_rtol``, which PETSc
looks up when the numbered key is not set), and it wins over the options passed in
(:mod:`hybrid.forward.petsc_options`). :meth:`PersistentSolver.close` removes what the solver
added to the options database.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import numpy as np
import ufl

import dolfinx.fem
import dolfinx.fem.petsc

from hybrid.forward.petsc_options import add_options, remove_options

__all__ = ["BDFScheme", "PersistentSolver", "SolverTimings"]

_BDF = {1: (1.0, -1.0, 0.0), 2: (1.5, -2.0, 0.5)}
_instances = itertools.count()


class BDFScheme:
    """BDF coefficients of order 1 (backward Euler) or 2 (BDF2), as constants on ``mesh``."""

    def __init__(self, mesh, order: int):
        if order not in _BDF:
            raise ValueError(f"time scheme order must be 1 (backward Euler) or 2 (BDF2), got {order}")
        self.order = order
        self.coefficients = [dolfinx.fem.Constant(mesh, c) for c in _BDF[1]]
        self.dt = dolfinx.fem.Constant(mesh, 1.0)
        self.steps_taken = 0

    def derivative(self, current, previous, before_previous):
        """UFL time derivative [unit/s] of ``current`` at the new time level."""
        a0, a1, a2 = self.coefficients
        return (a0 * current + a1 * previous + a2 * before_previous) / self.dt

    def prepare(self, dt: float) -> bool:
        """Set the coefficients for the next step of size ``dt`` [s]; return whether ``a0 / dt``
        (the time term of the Jacobian) changed."""
        if not dt > 0:
            raise ValueError(f"time step must be > 0 s, got {dt}")
        order = min(self.order, self.steps_taken + 1)
        old = float(self.coefficients[0].value) / float(self.dt.value)
        for constant, value in zip(self.coefficients, _BDF[order]):
            constant.value = value
        self.dt.value = dt
        return not np.isclose(old, _BDF[order][0] / dt, rtol=1e-14, atol=0.0) or self.steps_taken == 0

    def content_change(self, new: float, old: float, older: float) -> float:
        """The scheme's discrete change ``a0 q^{n+1} + a1 q^n + a2 q^{n-1}`` of an integral ``q``
        (equals ``dt`` times the net gain of ``q`` when the discrete balance holds)."""
        a0, a1, a2 = (float(c.value) for c in self.coefficients)
        return a0 * new + a1 * old + a2 * older


@dataclass
class SolverTimings:
    """Accumulated wall times [s] and counts of a :class:`PersistentSolver`."""

    assemble_matrix_s: float = 0.0
    assemble_vector_s: float = 0.0
    solve_s: float = 0.0
    matrix_assemblies: int = 0
    solves: int = 0
    krylov_iterations: int = 0


class PersistentSolver:
    """Newton solver for ``residual(u; v) = 0`` with everything kept between calls.

    ``linear=True`` (the residual is affine in ``u``): one Newton step per call, the Jacobian is
    reassembled only when :meth:`solve` is told it changed. ``linear=False``: Newton iterations
    until the residual norm falls below ``rtol`` times its first value (or ``atol``), the
    Jacobian reassembled each iteration. ``options``: PETSc options (config over defaults), set
    under ``prefix`` plus a unique number, where the KSP reads them; a user's ``-prefix_*``
    option (command line, PETSC_OPTIONS) wins over the same key and reaches every solver of
    that ``prefix``, a ``-prefix<number>_*`` option only that one.
    """

    def __init__(self, residual, unknown: dolfinx.fem.Function, bcs: list, options: dict, prefix: str,
                 *, linear: bool, rtol: float = 1e-10, atol: float = 0.0, max_iterations: int = 25):
        from petsc4py import PETSc

        self.unknown, self.bcs, self.linear = unknown, bcs, linear
        self.rtol, self.atol, self.max_iterations = rtol, atol, max_iterations
        self.timings = SolverTimings()
        self._residual = dolfinx.fem.form(residual)
        self._jacobian = dolfinx.fem.form(ufl.derivative(residual, unknown, ufl.TrialFunction(unknown.function_space)))
        self._A = dolfinx.fem.petsc.create_matrix(self._jacobian)
        self._b = dolfinx.fem.petsc.create_vector(unknown.function_space)
        self._du = dolfinx.fem.petsc.create_vector(unknown.function_space)
        self.prefix = f"{prefix}{next(_instances)}_"
        self._added_options = add_options(options, self.prefix)
        self.ksp = PETSc.KSP().create(unknown.function_space.mesh.comm)
        self.ksp.setOptionsPrefix(self.prefix)
        self.ksp.setOperators(self._A)
        self.ksp.setFromOptions()
        self._matrix_ready = False

    def _assemble_matrix(self) -> None:
        start = time.perf_counter()
        self._A.zeroEntries()
        dolfinx.fem.petsc.assemble_matrix(self._A, self._jacobian, bcs=self.bcs)
        self._A.assemble()
        self.ksp.setOperators(self._A)   # the preconditioner is rebuilt for the new matrix
        self._matrix_ready = True
        self.timings.matrix_assemblies += 1
        self.timings.assemble_matrix_s += time.perf_counter() - start

    def _assemble_residual(self) -> float:
        from petsc4py import PETSc

        start = time.perf_counter()
        x = self.unknown.x.petsc_vec
        with self._b.localForm() as local:
            local.set(0.0)
        dolfinx.fem.petsc.assemble_vector(self._b, self._residual)
        dolfinx.fem.petsc.apply_lifting(self._b, [self._jacobian], bcs=[self.bcs], x0=[x], alpha=-1.0)
        self._b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
        dolfinx.fem.petsc.set_bc(self._b, self.bcs, x, -1.0)
        self.timings.assemble_vector_s += time.perf_counter() - start
        return self._b.norm()

    def solve(self, matrix_changed: bool = False) -> int:
        """Solve for ``unknown`` (its current value is the Newton start); return the Newton
        iterations. ``matrix_changed``: the Jacobian of a linear residual changed since the last
        call (a new time step size, an updated coefficient)."""
        first = None
        for iteration in range(1, self.max_iterations + 1):
            norm = self._assemble_residual()
            first = norm if first is None else first
            if not self.linear and (norm <= self.atol or (iteration > 1 and norm <= self.rtol * first)):
                return iteration - 1
            if not self.linear or matrix_changed or not self._matrix_ready:
                self._assemble_matrix()
                matrix_changed = False
            start = time.perf_counter()
            self.ksp.solve(self._b, self._du)
            self.timings.solve_s += time.perf_counter() - start
            self.timings.solves += 1
            self.timings.krylov_iterations += self.ksp.getIterationNumber()
            self.unknown.x.petsc_vec.axpy(-1.0, self._du)
            self.unknown.x.scatter_forward()
            if self.linear:
                return 1
        raise RuntimeError(f"Newton ({self.prefix}) did not converge in {self.max_iterations} iterations: "
                           f"residual {norm:.3e} from {first:.3e}; try a smaller time step")

    def solve_linear_rhs(self, rhs: dolfinx.fem.Form, out: dolfinx.fem.Function) -> None:
        """Solve ``J out = rhs`` with the current Jacobian and homogeneous Dirichlet conditions
        (the response to a unit source; the matrix must have been assembled)."""
        from petsc4py import PETSc

        with self._b.localForm() as local:
            local.set(0.0)
        dolfinx.fem.petsc.assemble_vector(self._b, rhs)
        self._b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
        dolfinx.fem.petsc.set_bc(self._b, self.bcs, alpha=0.0)
        self.ksp.solve(self._b, out.x.petsc_vec)
        out.x.scatter_forward()

    def close(self) -> None:
        """Free the PETSc objects and remove the options this solver added to the database."""
        remove_options(self._added_options)
        for petsc_object in (self.ksp, self._A, self._b, self._du):
            petsc_object.destroy()
