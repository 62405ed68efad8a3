"""Fixtures that many tests share: the communicator, sums over ranks of FEM integrals and mesh
tags, and centred voxel grids for masks and maps. (The degrees of freedom a rank owns:
``hybrid.forward.sampling.nodal_samples``.)

FEM modules are imported inside the fixtures, so imaging and PINN tests load no DOLFINx."""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI


@pytest.fixture
def comm() -> MPI.Comm:
    """The communicator the tests run on (``mpirun -n 2`` for mpi-marked tests)."""
    return MPI.COMM_WORLD


@pytest.fixture
def global_integral(comm):
    """``integral(form) -> float``: a UFL scalar form assembled and summed over the ranks."""
    import hybrid._fem_stack  # noqa: F401  (before dolfinx)
    import dolfinx.fem

    def integral(form) -> float:
        return comm.allreduce(dolfinx.fem.assemble_scalar(dolfinx.fem.form(form)), op=MPI.SUM)

    return integral


@pytest.fixture
def global_tags(comm):
    """``tags(meshtags) -> set[int]``: the tag values present on any rank."""
    def tags(meshtags) -> set[int]:
        return set().union(*comm.allgather(set(np.unique(meshtags.values).tolist())))

    return tags


@pytest.fixture
def centred_grid():
    """``grid(n, voxel_mm) -> (affine_mm, x_mm, y_mm)``: an n x n x 1 voxel grid centred on the
    origin (voxel centres at +-(n - 1) voxel_mm / 2; ``centre_offset = n / 2`` puts a voxel corner
    there instead), its NIfTI affine [mm] and the (n, n) voxel-centre coordinates [mm]."""
    def grid(n: int, voxel_mm: float, centre_offset: float | None = None):
        offset = (n - 1) / 2 if centre_offset is None else centre_offset
        affine = np.diag([voxel_mm, voxel_mm, 1.0, 1.0])
        affine[:3, 3] = [-offset * voxel_mm, -offset * voxel_mm, 0.0]
        i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        return affine, i * voxel_mm + affine[0, 3], j * voxel_mm + affine[1, 3]

    return grid
