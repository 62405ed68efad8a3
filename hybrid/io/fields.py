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


def write_fields(path: Path, mesh, functions: list[dolfinx.fem.Function], time: float = 0.0) -> int:
    """Write ``mesh`` and ``functions`` (by their names) to ``path`` (.xdmf, with an .h5 beside) and
    return the size of the two files [bytes]. Every rank writes its own part of the HDF5 datasets
    (parallel HDF5 through MPI-IO); no rank gathers a whole field."""
    path = Path(path)
    if mesh.comm.rank == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
    mesh.comm.barrier()
    with dolfinx.io.XDMFFile(mesh.comm, str(path), "w") as xdmf:
        xdmf.write_mesh(mesh)
        for function in functions:
            xdmf.write_function(as_point_data(function), time)
    mesh.comm.barrier()
    return sum(p.stat().st_size for p in (path, path.with_suffix(".h5")))


def read_point_data(path: Path) -> tuple:
    """Read a DOLFINx XDMF file serially: (points [m], cells, {name: values}) of the last time step.

    meshio's XDMF reader takes one grid per file and DOLFINx writes one temporal collection per
    field, so this reads the XML and the HDF5 datasets it points at directly (h5py).
    """
    import xml.etree.ElementTree as ElementTree

    import h5py
    import numpy as np

    path = Path(path)
    root = ElementTree.parse(path).getroot()

    def dataset(item):
        file_name, _, key = item.text.strip().partition(":")
        with h5py.File(path.parent / file_name, "r") as h5:
            return np.asarray(h5[key])

    domain = root.find("Domain")
    mesh_grid = next(g for g in domain.findall("Grid") if g.get("GridType") == "Uniform")
    points = dataset(mesh_grid.find("Geometry/DataItem"))
    cells = dataset(mesh_grid.find("Topology/DataItem"))
    fields = {}
    for collection in domain.findall("Grid[@GridType='Collection']"):
        attribute = collection.findall("Grid")[-1].find("Attribute")
        values = dataset(attribute.find("DataItem"))
        fields[attribute.get("Name")] = values[:, 0] if values.shape[1] == 1 else values
    return points, cells, fields
