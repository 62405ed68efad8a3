"""FEM fields to XDMF (+ HDF5) as P1 point data, readable by ParaView and meshio."""

from __future__ import annotations

from pathlib import Path

import hybrid._fem_stack  # noqa: F401  (before dolfinx)
import dolfinx.fem
import dolfinx.io


def as_point_data(function: dolfinx.fem.Function) -> dolfinx.fem.Function:
    """``function`` interpolated onto continuous P1 of the same shape (XDMF point data)."""
    space = function.function_space
    if space.element.basix_element.degree == 1 and not space.element.basix_element.discontinuous:
        return function
    mesh = space.mesh
    shape = function.ufl_shape
    p1 = dolfinx.fem.functionspace(mesh, ("Lagrange", 1, shape) if shape else ("Lagrange", 1))
    out = dolfinx.fem.Function(p1, name=function.name)
    out.interpolate(function)
    return out


def write_fields(path: Path, mesh, functions: list[dolfinx.fem.Function], time: float = 0.0) -> None:
    """Write ``mesh`` and ``functions`` (by their names) to ``path`` (.xdmf, with an .h5 beside)."""
    path = Path(path)
    if mesh.comm.rank == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
    mesh.comm.barrier()
    with dolfinx.io.XDMFFile(mesh.comm, str(path), "w") as xdmf:
        xdmf.write_mesh(mesh)
        for function in functions:
            xdmf.write_function(as_point_data(function), time)
