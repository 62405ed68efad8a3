"""The IFP solver's forms compile once for all meshes and coefficient values, and its PETSc options
leave the global options database as they found it, a user's options winning over them.

Before the fix: the conditioning factors (``scale``, ``k_ref``, ``mass_scale``) and the Robin data
entered the UFL forms as Python floats, so a second solve with another conductivity compiled new
kernels (1.7 s pressure, 3.7 s flux on a small sphere, benchmarks/ifp_form_compile.py); and
solve_linear deleted a user's ``-hybrid_ifp_*`` option of the same name after the solve. Then it
overwrote such an option during the solve, so a user's ``-hybrid_flux_ksp_type`` or
``-hybrid_ifp_ksp_rtol`` never reached the solver when a default or ``[solver] petsc_options`` set
the same key."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import sys
from pathlib import Path
from dataclasses import replace
from mpi4py import MPI
from hybrid.forward import solve_ifp
from hybrid.forward.verification import unit_square_domain
from hybrid.problems.ifp import OuterBoundary, TissueProperties

cache = Path(sys.argv[1])
tumour = TissueProperties.defaults("tumour")
kernels = []
for n, factor in ((6, 1.0), (8, 3.0)):
    properties = replace(tumour, hydraulic_conductivity=factor * tumour.hydraulic_conductivity)
    boundary = OuterBoundary("robin", 10.0 * factor, 1e-9 * factor)
    solution = solve_ifp(unit_square_domain(MPI.COMM_WORLD, n), properties, boundary)
    solution.velocity
    kernels.append(len(list(cache.rglob("*.so"))))
print(kernels[0], kernels[1])
"""


def test_a_second_solve_with_other_values_compiles_no_new_kernel(tmp_path):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "fenics")], capture_output=True,
                            text=True, env=env, cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr
    first, second = map(int, result.stdout.split()[-2:])
    assert first > 0
    assert second == first


def test_solver_options_leave_a_users_option_in_place():
    from mpi4py import MPI

    from hybrid.forward import solve_ifp   # loads the FEM stack before petsc4py
    from petsc4py import PETSc
    from hybrid.forward.verification import unit_square_domain
    from hybrid.problems.ifp import OuterBoundary, TissueProperties

    database = PETSc.Options()
    database["hybrid_ifp_ksp_rtol"] = "1e-3"
    try:
        solve_ifp(unit_square_domain(MPI.COMM_WORLD, 4), TissueProperties.defaults("tumour"), OuterBoundary())
        assert database.getString("hybrid_ifp_ksp_rtol") == "1e-3"
        assert not database.hasName("hybrid_ifp_pc_type")   # the solver's own options are gone
    finally:
        database.delValue("hybrid_ifp_ksp_rtol")


@pytest.mark.mpi
@pytest.mark.parametrize("prefix", ["hybrid_ifp_", "hybrid_flux_"])
def test_a_users_option_wins_over_config_and_defaults_and_stays(prefix, tmp_path):
    """Precedence: the user's options database (command line, PETSC_OPTIONS) > ``petsc_options``
    passed in (config) > built-in defaults. Read back from the KSP's own ``-ksp_view`` report.
    Defaults: pressure CG, rtol 1e-10; flux (2-D) preonly + LU."""
    from mpi4py import MPI

    from hybrid.forward import solve_ifp   # loads the FEM stack before petsc4py
    from petsc4py import PETSc
    from hybrid.forward.verification import unit_square_domain
    from hybrid.problems.ifp import OuterBoundary, TissueProperties

    comm = MPI.COMM_WORLD
    report = Path(comm.bcast(str(tmp_path), root=0)) / "ksp.txt"
    user = {"ksp_type": "gmres", "ksp_rtol": "1e-4", "ksp_view": f"ascii:{report}"}
    config = {"ksp_type": "bcgs", "ksp_rtol": 1e-6, "ksp_max_it": 777}
    database = PETSc.Options()
    for key, value in user.items():
        database[prefix + key] = value
    try:
        solution = solve_ifp(unit_square_domain(comm, 4), TissueProperties.defaults("tumour"), OuterBoundary(),
                             petsc_options=config if prefix == "hybrid_ifp_" else None)
        if prefix == "hybrid_flux_":
            solution.flux
        for key, value in user.items():
            assert database.getString(prefix + key) == value
        assert not database.hasName(prefix + "pc_type")   # the solver's own options are gone
        assert not database.hasName(prefix + "ksp_max_it")
    finally:
        for key in user:
            database.delValue(prefix + key)
    comm.barrier()
    view = report.read_text()
    assert f"KSP Object: ({prefix})" in view
    assert "type: gmres" in view
    assert "relative=0.0001," in view
    if prefix == "hybrid_ifp_":
        assert "maximum iterations=777," in view   # config over the default 1000
        assert "PC Object: (hybrid_ifp_)" in view and "type: gamg" in view   # default where neither sets it
    else:
        assert "type: lu" in view
