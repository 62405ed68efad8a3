"""Numbers from FEM functions for summaries and figures: owned nodal samples and region means."""

from __future__ import annotations

import numpy as np
import ufl
from mpi4py import MPI

import dolfinx.fem


def nodal_samples(function) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates (n, 3) [m] and values of the degrees of freedom this rank owns."""
    space = function.function_space
    owned = space.dofmap.index_map.size_local
    return space.tabulate_dof_coordinates()[:owned], function.x.array[:owned].copy()


def region_mean(function, domain, tag: int) -> float:
    """Volume average [unit of function] over the cells of ``domain`` tagged ``tag`` (collective)."""
    dx = ufl.Measure("dx", domain=domain.mesh, subdomain_data=domain.cell_tags)
    comm = domain.mesh.comm
    integral = comm.allreduce(dolfinx.fem.assemble_scalar(dolfinx.fem.form(function * dx(tag))), op=MPI.SUM)
    volume = comm.allreduce(dolfinx.fem.assemble_scalar(
        dolfinx.fem.form(dolfinx.fem.Constant(domain.mesh, 1.0) * dx(tag))), op=MPI.SUM)
    return integral / volume
