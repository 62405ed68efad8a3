"""PersistentSolver's PETSc options: a user's ``-prefix_*`` option (command line, PETSC_OPTIONS)
wins over the options passed in (config over defaults), two solvers of one prefix alive at once
keep their own options, and close() leaves the options database as it found it.

Before the fix the options went only under the numbered prefix (``hybrid_heat_0_``) that the
KSP reads, overwriting anything there, so a user's ``-hybrid_heat_ksp_*`` or
``-hybrid_transport_ksp_*`` never reached the heat or transport solver.
Collective: also run under ``mpirun -n 2``."""

import pytest
import ufl

import hybrid.forward  # noqa: F401  (imports DOLFINx the supported way)
import dolfinx.fem
from petsc4py import PETSc

from hybrid.forward.stepping import PersistentSolver
from hybrid.forward.verification import unit_square_domain

pytestmark = pytest.mark.mpi


def poisson_solver(mesh, options: dict, prefix: str) -> PersistentSolver:
    """A linear PersistentSolver for ``-div grad u + u = 1`` on ``mesh`` (P1)."""
    space = dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
    u, v = dolfinx.fem.Function(space), ufl.TestFunction(space)
    residual = (ufl.inner(ufl.grad(u), ufl.grad(v)) + u * v - v) * ufl.dx
    return PersistentSolver(residual, u, [], options, prefix, linear=True)


@pytest.mark.parametrize("prefix", ["hybrid_heat_", "hybrid_transport_"])
def test_a_users_option_wins_for_every_solver_of_the_prefix_and_close_cleans_up(comm, prefix):
    mesh = unit_square_domain(comm, 4).mesh
    database = PETSc.Options()
    user = {"ksp_type": "gmres", "ksp_rtol": "1e-4", "ksp_initial_guess_nonzero": "true"}
    configs = [{"ksp_type": "cg", "ksp_rtol": 1e-9, "ksp_max_it": 777, "pc_type": "jacobi"},
               {"ksp_type": "cg", "ksp_rtol": 1e-9, "ksp_max_it": 555, "pc_type": "none"}]
    for key, value in user.items():
        database[prefix + key] = value
    before = database.getAll()
    try:
        solvers = [poisson_solver(mesh, config, prefix) for config in configs]
        try:
            for solver in solvers:
                solver.solve()
            for solver, config in zip(solvers, configs):
                assert solver.prefix.startswith(prefix) and solver.prefix != prefix
                assert solver.ksp.getType() == "gmres"                       # user over config
                assert solver.ksp.getTolerances()[0] == pytest.approx(1e-4)  # user over config
                assert solver.ksp.getInitialGuessNonzero()                   # user, not in config
                assert solver.ksp.getTolerances()[3] == config["ksp_max_it"]  # config, no user's
                assert solver.ksp.getPC().getType() == config["pc_type"]     # each its own config
        finally:
            for solver in solvers:
                solver.close()
        assert database.getAll() == before   # the user's options stay, nothing of the solvers'
    finally:
        for key in user:
            database.delValue(prefix + key)


def test_a_users_option_for_one_numbered_solver_stays_and_wins():
    """``-prefix<number>_key`` set by the user is neither overwritten nor removed, and the
    un-numbered user option does not hide it."""
    from hybrid.forward.petsc_options import add_options, remove_options

    database = PETSc.Options()
    database["hybrid_test_ksp_max_it"] = "555"     # the user's, for every solver
    database["hybrid_test_7_ksp_max_it"] = "333"   # the user's, for solver 7 only
    try:
        added = add_options({"ksp_max_it": 777, "ksp_type": "cg"}, "hybrid_test_7_")
        assert added == ["hybrid_test_7_ksp_type"]
        assert database.getString("hybrid_test_7_ksp_max_it") == "333"
        assert database.getString("hybrid_test_8_ksp_max_it") == "555"
        remove_options(added)
        assert database.getString("hybrid_test_7_ksp_max_it") == "333"
        assert not database.hasName("hybrid_test_7_ksp_type")
    finally:
        database.delValue("hybrid_test_ksp_max_it")
        database.delValue("hybrid_test_7_ksp_max_it")
