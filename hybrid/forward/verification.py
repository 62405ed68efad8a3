"""Manufactured-solution study of the IFP solver: errors and observed convergence rates.

Used by the test suite (rates within 0.1 of theory) and by ``benchmarks/ifp_convergence.py``.
The problem is the Baxter-Jain operator with the default tumour coefficients on a 1 mm square
(so the 272 um rim length scale is present), exact ``p = 1000 Pa sin(pi x/L) sin(2 pi y/L)``.
"""

from __future__ import annotations

import numpy as np
import ufl
from mpi4py import MPI

import dolfinx.fem
import dolfinx.mesh

from hybrid.forward.ifp import solve_ifp
from hybrid.mesh import TumourMesh, tags
from hybrid.problems.ifp import OuterBoundary, TissueProperties

__all__ = ["unit_square_domain", "manufactured_errors", "convergence_study", "lymphatic_sensitivity"]

SIDE = 1e-3  # m


def unit_square_domain(comm: MPI.Comm, n: int, side: float = SIDE) -> TumourMesh:
    """Structured ``n x n`` triangle mesh of ``[0, side]^2``, all tumour, boundary = tumour surface."""
    mesh = dolfinx.mesh.create_unit_square(comm, n, n, dolfinx.mesh.CellType.triangle)
    mesh.geometry.x[:, :2] *= side
    tdim = mesh.topology.dim
    cells = np.arange(mesh.topology.index_map(tdim).size_local, dtype=np.int32)
    cell_tags = dolfinx.mesh.meshtags(mesh, tdim, cells, np.full(cells.size, tags.TUMOUR, dtype=np.int32))
    mesh.topology.create_connectivity(tdim - 1, tdim)
    facets = dolfinx.mesh.exterior_facet_indices(mesh.topology)
    facet_tags = dolfinx.mesh.meshtags(mesh, tdim - 1, facets,
                                       np.full(facets.size, tags.TUMOUR_SURFACE, dtype=np.int32))
    return TumourMesh(mesh, cell_tags, facet_tags, "square", (tags.TUMOUR_SURFACE,))


def manufactured_errors(comm: MPI.Comm, n: int, degree: int) -> tuple[float, float, float]:
    """(h [m], L2 error [Pa m], H1-seminorm error [Pa]) of the solve on an ``n x n`` mesh."""
    tissue = TissueProperties.defaults("tumour")
    domain = unit_square_domain(comm, n)
    x = ufl.SpatialCoordinate(domain.mesh)
    exact = 1000.0 * ufl.sin(ufl.pi * x[0] / SIDE) * ufl.sin(2 * ufl.pi * x[1] / SIDE)
    K, exchange = tissue.hydraulic_conductivity, tissue.vascular_exchange
    source = -ufl.div(K * ufl.grad(exact)) + exchange * (exact - tissue.effective_pressure)
    solution = solve_ifp(domain, tissue, OuterBoundary("dirichlet", 0.0), degree=degree, source=source)
    error = solution.pressure - exact
    dx = ufl.dx(metadata={"quadrature_degree": 2 * degree + 4})

    def norm(integrand) -> float:
        local = dolfinx.fem.assemble_scalar(dolfinx.fem.form(integrand * dx))
        return float(np.sqrt(comm.allreduce(local, op=MPI.SUM)))

    return SIDE / n, norm(error**2), norm(ufl.inner(ufl.grad(error), ufl.grad(error)))


def convergence_study(comm: MPI.Comm, degree: int, sizes=(8, 16, 32, 64)) -> dict:
    """Errors on each mesh and the observed rates between successive meshes."""
    h, l2, h1 = np.array([manufactured_errors(comm, n, degree) for n in sizes]).T
    rate = lambda e: (np.log(e[:-1] / e[1:]) / np.log(h[:-1] / h[1:])).tolist()
    return {"degree": degree, "n": list(sizes), "h_m": h.tolist(), "l2_error": l2.tolist(),
            "h1_error": h1.tolist(), "l2_rate": rate(l2), "h1_rate": rate(h1),
            "theory": {"l2": degree + 1, "h1": degree}}


def lymphatic_sensitivity(comm: MPI.Comm, lymphatic_values, *, radius: float = 4e-3, host_thickness: float = 2e-3,
                          mesh_size: float = 1.5e-4) -> list[dict]:
    """Margin pressure and margin outflow of a disc tumour in host tissue against the host's
    lymphatic coefficient LpL SL/V [1/(Pa s)], FEM and closed form, for a Dirichlet (p = 0) and a
    no-flux outer boundary; default table values otherwise (the ``hybrid demo`` geometry).

    Margin pressure [Pa]: mean of p over the tumour/host interface. Margin outflow velocity [m/s]:
    outflow through the interface (FEM: integral of div u of the conservative flux over the tumour)
    over its length. Closed form: :func:`hybrid.problems.exact.radial_pressure` (no flux = Robin with
    h = 0)."""
    from dataclasses import replace

    from hybrid.mesh import tumour_mesh
    from hybrid.problems.exact import radial_pressure

    tumour, default_host = TissueProperties.defaults("tumour"), TissueProperties.defaults("host")
    delta = tumour.rim_thickness
    domain = tumour_mesh(comm, "disc", radius, host_thickness, mesh_size, surface_mesh_size=delta / 4,
                         refinement_width=2 * delta)
    dx = ufl.Measure("dx", domain=domain.mesh, subdomain_data=domain.cell_tags)
    dS = ufl.Measure("dS", domain=domain.mesh, subdomain_data=domain.facet_tags)
    total = lambda form: comm.allreduce(dolfinx.fem.assemble_scalar(dolfinx.fem.form(form)), op=MPI.SUM)
    length = total(dolfinx.fem.Constant(domain.mesh, 1.0) * dS(tags.TUMOUR_SURFACE))
    rows = []
    for value in lymphatic_values:
        host = replace(default_host, lymphatic_filtration=float(value))
        regions = [tumour.radial_region(radius), host.radial_region(radius + host_thickness)]
        for kind in ("dirichlet", "no_flux"):
            solution = solve_ifp(domain, tumour, OuterBoundary(kind, 0.0), host)
            exact = radial_pressure(2, regions, 0.0, None if kind == "dirichlet" else 0.0)
            rows.append({
                "lymphatic_filtration_per_Pa_s": float(value), "outer_boundary": kind,
                "margin_pressure_Pa": total(solution.pressure("+") * dS(tags.TUMOUR_SURFACE)) / length,
                "margin_pressure_exact_Pa": float(exact.pressure(np.array([radius]))[0]),
                "margin_velocity_m_s": total(ufl.div(solution.flux) * dx(tags.TUMOUR)) / length,
                "margin_velocity_exact_m_s": float(exact.velocity(np.array([radius]))[0]),
                "outer_pressure_exact_Pa": float(exact.pressure(np.array([radius + host_thickness]))[0]),
            })
    return rows
