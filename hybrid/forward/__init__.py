"""Forward physics with DOLFINx (runs under ``mpirun``; never imports torch)."""

import hybrid._fem_stack  # noqa: F401  (before dolfinx)
from hybrid.forward.ifp import DEFAULT_PETSC_OPTIONS, IFPSolution, OuterBoundary, conservative_flux, solve_ifp

__all__ = ["solve_ifp", "OuterBoundary", "IFPSolution", "conservative_flux", "DEFAULT_PETSC_OPTIONS"]
