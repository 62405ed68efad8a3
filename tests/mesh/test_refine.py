"""Parallel uniform refinement: tags carried to the children, curved boundaries snapped onto the
true circle/sphere, geometry consistent across ranks, IFP accuracy of a refined mesh."""

from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI

import hybrid.mesh  # noqa: F401
import dolfinx.fem
import dolfinx.mesh
import ufl

from hybrid.config import forward_config_from_dict
from hybrid.io.fields import read_point_data
from hybrid.mesh import krogh_mesh, refine_uniformly, tags, tumour_mesh, vessel_patch_mesh
from hybrid.mesh.refine import curved_surfaces
from hybrid.commands.forward import run_forward

pytestmark = pytest.mark.mpi
COMM = MPI.COMM_WORLD


@pytest.fixture
def measures(global_integral, global_tags):
    """``measures(domain)``: volume of each cell tag and area of each facet tag [m^dim], summed over ranks."""
    return lambda domain: _measures(domain, global_integral, global_tags)


def _measures(domain, global_integral, global_tags) -> dict[tuple[str, int], float]:
    mesh = domain.mesh
    one = dolfinx.fem.Constant(mesh, 1.0)
    dx = ufl.Measure("dx", mesh, subdomain_data=domain.cell_tags)
    ds = ufl.Measure("ds", mesh, subdomain_data=domain.facet_tags)
    dS = ufl.Measure("dS", mesh, subdomain_data=domain.facet_tags)
    integrals = {("cells", t): one * dx(t) for t in global_tags(domain.cell_tags)}
    for t in global_tags(domain.facet_tags):
        # the tumour surface is interior when there is host tissue; count each facet once
        integrals[("facets", t)] = one * ds(t) + 0.5 * (one("+") + one("-")) * dS(t)
    return {key: global_integral(form) for key, form in integrals.items()}


R, H = 2e-3, 1e-3
EXACT = {
    "disc": {("cells", tags.TUMOUR): np.pi * R**2, ("cells", tags.HOST): np.pi * ((R + H)**2 - R**2),
             ("facets", tags.TUMOUR_SURFACE): 2 * np.pi * R, ("facets", tags.OUTER_BOUNDARY): 2 * np.pi * (R + H)},
    "sphere": {("cells", tags.TUMOUR): 4 / 3 * np.pi * R**3,
               ("cells", tags.HOST): 4 / 3 * np.pi * ((R + H)**3 - R**3),
               ("facets", tags.TUMOUR_SURFACE): 4 * np.pi * R**2,
               ("facets", tags.OUTER_BOUNDARY): 4 * np.pi * (R + H)**2},
}


@pytest.mark.parametrize("shape, h", [("disc", 4e-4), ("sphere", 8e-4)])
def test_refinement_keeps_tags_and_converges_to_the_true_geometry(shape, h, measures, global_tags):
    coarse = tumour_mesh(COMM, shape, R, H, mesh_size=h)
    before = measures(coarse)
    fine = refine_uniformly(coarse, 2)
    after = measures(fine)
    dim = coarse.dim
    assert global_tags(fine.cell_tags) == global_tags(coarse.cell_tags) == {tags.TUMOUR, tags.HOST}
    assert global_tags(fine.facet_tags) == global_tags(coarse.facet_tags) == {tags.TUMOUR_SURFACE,
                                                                              tags.OUTER_BOUNDARY}
    cells = [fine.mesh.topology.index_map(dim).size_global, coarse.mesh.topology.index_map(dim).size_global]
    assert cells[0] == 4 ** dim * cells[1]   # 2^dim children per cell, twice
    for key, exact in EXACT[shape].items():
        error_before, error_after = abs(before[key] / exact - 1), abs(after[key] / exact - 1)
        # second-order geometry: two halvings of h cut the error about 16 times (not at all unsnapped)
        assert error_after < error_before / 8, (key, error_before, error_after)
    assert fine.timings["refinement_s"] > 0 and fine.geometry["refinements"] == 2


def test_unsnapped_refinement_would_keep_the_coarse_geometry():
    """The reference the snapping test improves on: plain bisection keeps the chords of the coarse
    mesh, so the tumour area does not move towards pi R^2."""
    coarse = tumour_mesh(COMM, "disc", R, H, mesh_size=4e-4)
    coarse.mesh.topology.create_entities(1)
    plain, parent, _ = dolfinx.mesh.refine(coarse.mesh, partitioner=None)
    one = dolfinx.fem.Constant(plain, 1.0)
    area = COMM.allreduce(dolfinx.fem.assemble_scalar(dolfinx.fem.form(one * ufl.dx)), op=MPI.SUM)
    snapped = refine_uniformly(coarse, 1)
    one = dolfinx.fem.Constant(snapped.mesh, 1.0)
    snapped_area = COMM.allreduce(dolfinx.fem.assemble_scalar(dolfinx.fem.form(one * ufl.dx)), op=MPI.SUM)
    exact = np.pi * (R + H)**2
    assert abs(snapped_area - exact) < 0.5 * abs(area - exact)


@pytest.mark.parametrize("build", [
    lambda: tumour_mesh(COMM, "sphere", R, H, mesh_size=8e-4),
    lambda: krogh_mesh(COMM, 10e-6, 120e-6, mesh_size=20e-6, wall_mesh_size=5e-6),
    lambda: vessel_patch_mesh(COMM, 300e-6, 8e-6, 3, 60e-6, mesh_size=30e-6, seed=2),
], ids=["sphere", "krogh", "vessels"])
def test_snapped_vertices_lie_on_the_surfaces_and_agree_across_ranks(build, global_tags):
    domain = refine_uniformly(build(), 1)
    mesh = domain.mesh
    gdim = mesh.geometry.dim
    vertices = dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
    x = vertices.tabulate_dof_coordinates()
    surfaces = curved_surfaces(domain)
    assert surfaces and set(surfaces) <= global_tags(domain.facet_tags)
    for tag, (centre, radius) in surfaces.items():
        dofs = dolfinx.fem.locate_dofs_topological(vertices, mesh.topology.dim - 1, domain.facet_tags.find(tag))
        distance = np.linalg.norm(x[dofs, :gdim] - centre[:gdim], axis=1)
        assert np.allclose(distance, radius, rtol=1e-12, atol=0)
    # every rank's copy of a shared vertex sits at the same place: interpolate x, overwrite ghosts
    # with the owners' values, compare
    space = dolfinx.fem.functionspace(mesh, ("Lagrange", 1, (gdim,)))
    position = dolfinx.fem.Function(space)
    position.interpolate(lambda p: p[:gdim])
    local = position.x.array.copy()
    position.x.scatter_forward()
    extent = COMM.allreduce(float(np.abs(local).max(initial=0.0)), op=MPI.MAX)
    # round-off only; an unsnapped copy would be off by the chord sag h^2 / (8 r), ~1e-3 of h here
    assert np.abs(local - position.x.array).max(initial=0.0) <= 1e-12 * extent


def test_refined_mesh_ifp_error_not_worse_than_a_gmsh_mesh_of_the_same_size(tmp_path):
    """Closed-form IFP error (Baxter-Jain, 2-D tumour in host) on a gmsh mesh of size h against a
    gmsh mesh of size 2h refined once in parallel (about the same DOFs)."""
    summaries = {}
    tmp_path = Path(COMM.bcast(str(tmp_path), root=0))   # one output directory for all ranks
    for label, geometry, velocity in (("gmsh", {"mesh_size": 1e-4}, True),
                                      ("refined", {"mesh_size": 2e-4, "refinements": 1}, False)):
        document = {"geometry": {"shape": "disc", "tumour_radius": R, "host_thickness": H,
                                 "surface_mesh_size": geometry["mesh_size"], **geometry},
                    "output": {"directory": str(tmp_path / label), "velocity": velocity}}
        summaries[label] = run_forward(forward_config_from_dict(document), COMM).summary
    gmsh, refined = summaries["gmsh"], summaries["refined"]
    assert refined["dofs"] == pytest.approx(gmsh["dofs"], rel=0.15)
    assert refined["closed_form"]["max_abs_error_Pa"] <= gmsh["closed_form"]["max_abs_error_Pa"]
    assert refined["mesh"]["refinements"] == 1
    assert {"meshing_s", "distribution_s", "refinement_s"} <= set(refined["wall_time_s"])
    assert len(refined["peak_memory_MiB"]["per_rank"]) == COMM.size
    assert refined["outputs"]["fields_bytes"] > 0
    # [output] velocity = false: pressure only, no flux stage; the default writes both
    assert "flux_s" in gmsh["wall_time_s"] and "flux_s" not in refined["wall_time_s"]
    if COMM.rank == 0:
        assert set(read_point_data(tmp_path / "refined" / "ifp.xdmf")[2]) == {"pressure"}
        assert set(read_point_data(tmp_path / "gmsh" / "ifp.xdmf")[2]) == {"pressure", "velocity"}


@pytest.mark.parametrize("partitioner", ["scotch", "kahip"])
def test_partitioners_give_the_same_mesh(partitioner, measures):
    domain = tumour_mesh(COMM, "disc", R, H, mesh_size=4e-4, partitioner=partitioner)
    reference = tumour_mesh(COMM, "disc", R, H, mesh_size=4e-4)
    assert measures(domain) == pytest.approx(measures(reference), rel=1e-12)


def test_unknown_partitioner_is_refused_with_the_available_ones():
    with pytest.raises(ValueError, match="not in this DOLFINx build; use one of .*scotch"):
        tumour_mesh(COMM, "disc", R, H, mesh_size=4e-4, partitioner="chaco")


@pytest.mark.parametrize("geometry, message", [
    ({"refinements": -1}, "refinements must be an integer from 0 to 6"),
    ({"refinements": 1.0}, "refinements must be an integer"),
    ({"refinements": True}, "refinements must be an integer"),
    ({"partitioner": "metis"}, "partitioner must be one of scotch, kahip, parmetis"),
])
def test_bad_refinement_settings_are_refused(geometry, message):
    from hybrid.config import ConfigError

    document = {"geometry": {"shape": "disc", "mesh_size": 1e-4, **geometry}, "output": {"directory": "x"}}
    with pytest.raises(ConfigError, match=message):
        forward_config_from_dict(document)
