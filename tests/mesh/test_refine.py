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
from hybrid.mesh.refine import curved_surfaces, refine_near_surface
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


def test_unsnapped_refinement_would_keep_the_coarse_geometry(global_integral):
    """The reference the snapping test improves on: plain bisection (``snap=False``) keeps the
    chords of the coarse mesh, so the area does not move towards pi R^2."""
    coarse = tumour_mesh(COMM, "disc", R, H, mesh_size=4e-4)
    area = lambda domain: global_integral(dolfinx.fem.Constant(domain.mesh, 1.0) * ufl.dx)
    plain, snapped = refine_uniformly(coarse, 1, snap=False), refine_uniformly(coarse, 1)
    exact = np.pi * (R + H)**2
    assert area(plain) == pytest.approx(area(coarse), rel=1e-12)   # the same polygon
    assert plain.geometry["max_snap_distance_m"] == 0.0 < snapped.geometry["max_snap_distance_m"]
    assert abs(area(snapped) - exact) < 0.5 * abs(area(plain) - exact)


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
    ({"partitioner": "metis"}, 'partitioner must be one of "scotch", "kahip", "parmetis", got \'metis\''),
])
def test_bad_refinement_settings_are_refused(geometry, message):
    from hybrid.config import ConfigError

    document = {"geometry": {"shape": "disc", "mesh_size": 1e-4, **geometry}, "output": {"directory": "x"}}
    with pytest.raises(ConfigError, match=message):
        forward_config_from_dict(document)


# ------------------------------------------------------------------ refinement near the tumour surface
def _ifp_errors(domain, host_thickness: float, radius: float = R) -> tuple[int, float, float, float]:
    """(DOFs, max nodal |p_h - p| / p_e, ||p_h - p|| / ||p||, |x| - radius [m] where the max sits) of
    the default-tissue IFP on ``domain`` (tumour of ``radius`` [m]) against the Baxter-Jain closed
    form (p in P3 for the L2 norm)."""
    from hybrid.forward import solve_ifp
    from hybrid.forward.sampling import nodal_samples
    from hybrid.problems.ifp import OuterBoundary, TissueProperties, closed_form_pressure

    tumour = TissueProperties.defaults("tumour")
    host = TissueProperties.defaults("host") if host_thickness > 0 else None
    dim = domain.dim
    exact = closed_form_pressure(dim, radius, tumour, OuterBoundary(), host, host_thickness)
    solution = solve_ifp(domain, tumour, OuterBoundary(), host)
    coords, values = nodal_samples(solution.pressure)
    distance = np.linalg.norm(coords[:, :dim], axis=1)
    errors = np.abs(values - exact.pressure(distance))
    nodal, where = COMM.allreduce((float(errors.max(initial=-1.0)),
                                   float(distance[np.argmax(errors)] - radius) if errors.size else np.nan), op=MPI.MAX)
    cubic = dolfinx.fem.Function(dolfinx.fem.functionspace(domain.mesh, ("Lagrange", 3)))
    cubic.interpolate(lambda x: exact.pressure(np.linalg.norm(x[:dim], axis=0)))
    total = lambda form: COMM.allreduce(dolfinx.fem.assemble_scalar(dolfinx.fem.form(form)), op=MPI.SUM)
    l2 = np.sqrt(total((solution.pressure - cubic) ** 2 * ufl.dx) / total(cubic ** 2 * ufl.dx))
    return solution.dofs, nodal / tumour.effective_pressure, l2, where


def _cells_beyond(domain, distance: float) -> int:
    """Global number of cells whose midpoint is farther than ``distance`` [m] from the tumour surface."""
    mesh = domain.mesh
    nodes = np.asarray(mesh.geometry.dofmaps[0])[: mesh.topology.index_map(domain.dim).size_local]
    midpoints = mesh.geometry.x[nodes].mean(axis=1)
    far = np.abs(np.linalg.norm(midpoints, axis=1) - R) > distance
    return COMM.allreduce(int(far.sum()), op=MPI.SUM)


@pytest.mark.parametrize("shape, h, band, closure", [("disc", 2e-4, 3e-4, 3), ("sphere", 8e-4, 7.5e-4, None)])
def test_rim_refinement_keeps_tags_conforms_and_leaves_far_cells_alone(shape, h, band, closure, measures,
                                                                        global_tags):
    """``closure``: coarse cells beyond the band that Plaza bisection may split to stay conforming
    (measured: 2-3 in 2-D, 3-4 in 3-D, too many for this small sphere)."""
    coarse = tumour_mesh(COMM, shape, R, H, mesh_size=h)
    before = measures(coarse)
    fine = refine_near_surface(coarse, 2, band)
    after = measures(fine)
    assert global_tags(fine.cell_tags) == {tags.TUMOUR, tags.HOST}
    assert global_tags(fine.facet_tags) == {tags.TUMOUR_SURFACE, tags.OUTER_BOUNDARY}
    # conforming: every exterior facet is a tagged outer facet (a hanging node would leave an
    # untagged one-sided facet inside)
    one = dolfinx.fem.Constant(fine.mesh, 1.0)
    exterior = COMM.allreduce(dolfinx.fem.assemble_scalar(dolfinx.fem.form(one * ufl.ds)), op=MPI.SUM)
    assert exterior == pytest.approx(after[("facets", tags.OUTER_BOUNDARY)], rel=1e-12)
    # cells near the surface are split, cells beyond the band and the closure are not
    cells = [d.mesh.topology.index_map(d.dim).size_global for d in (coarse, fine)]
    assert 2 ** coarse.dim * cells[0] < cells[1] < 4 ** coarse.dim * cells[0]   # twice uniformly: 4^dim
    if closure:
        assert _cells_beyond(fine, band + closure * h) == _cells_beyond(coarse, band + closure * h) > 0
    # the surfaces converge to the true circle/sphere (snapped), the tumour's area/volume too
    for key in (("cells", tags.TUMOUR), ("facets", tags.TUMOUR_SURFACE)):
        exact = EXACT[shape][key]
        assert abs(after[key] / exact - 1) < abs(before[key] / exact - 1) / 8, key
    assert fine.geometry["rim_refinements"] == 2 and fine.geometry["rim_band_m"] == band
    assert fine.timings["rim_refinement_s"] > 0
    # the same mesh whatever the partition: refined alone on each rank, the cell count is the same
    alone = refine_near_surface(tumour_mesh(MPI.COMM_SELF, shape, R, H, mesh_size=h), 2, band)
    assert alone.mesh.topology.index_map(alone.dim).size_global == cells[1]


def test_rim_refinement_needs_a_tumour_surface_and_a_band():
    krogh = krogh_mesh(COMM, 10e-6, 120e-6, mesh_size=20e-6)
    with pytest.raises(ValueError, match="needs a sphere or disc tumour"):
        refine_near_surface(krogh, 1, 1e-5)
    disc = tumour_mesh(COMM, "disc", R, 0.0, mesh_size=4e-4)
    with pytest.raises(ValueError, match="band must be a positive length"):
        refine_near_surface(disc, 1, 0.0)
    assert refine_near_surface(disc, 0, None) is disc


RIM = 2.716790823923031e-4   # m: sqrt(K / (Lp S/V)) of the default tumour


def test_rim_refined_disc_is_as_accurate_as_a_gmsh_disc_with_more_dofs():
    """2-D tumour: gmsh at 0.4 mm, three rim refinements (default band 6 ln2 rim) against gmsh at
    62 um everywhere. Measured: 3,613 DOFs, 0.151 % of p_e max, 0.090 % L2 against 3,934 DOFs,
    0.152 %, 0.127 %. (A graded gmsh mesh does better still: 3,617 DOFs, 0.117 %, 0.086 %;
    benchmarks/refine_accuracy.py.)"""
    refined = _ifp_errors(refine_near_surface(tumour_mesh(COMM, "disc", R, 0.0, 4e-4), 3, 6 * np.log(2) * RIM), 0.0)
    gmsh = _ifp_errors(tumour_mesh(COMM, "disc", R, 0.0, 6.2e-5), 0.0)
    assert refined[0] <= gmsh[0]
    assert refined[1] <= gmsh[1] and refined[2] <= gmsh[2], (refined, gmsh)


def _adaptive(shape: str, radius: float, host_thickness: float, mesh_size: float, dof_budget: int):
    """A gmsh mesh at ``mesh_size`` refined adaptively for the default-tissue IFP up to ``dof_budget``."""
    from hybrid.forward import solve_ifp
    from hybrid.forward.adaptive import adapt_to_budget
    from hybrid.problems.ifp import OuterBoundary, TissueProperties

    host = TissueProperties.defaults("host") if host_thickness > 0 else None
    solve = lambda domain: solve_ifp(domain, TissueProperties.defaults("tumour"), OuterBoundary(), host)
    return adapt_to_budget(tumour_mesh(COMM, shape, radius, host_thickness, mesh_size), solve, dof_budget)


@pytest.fixture(scope="module")
def sphere_in_host_errors():
    """``_ifp_errors`` of a 2 mm sphere in a 1 mm host: gmsh at 0.8 mm with two rim refinements
    (band 4 ln2 rim), snapped and not (``snap=False``), gmsh at 0.2 mm everywhere, and gmsh at
    0.8 mm refined adaptively up to the DOFs of the 0.2 mm mesh."""
    band = 4 * np.log(2) * RIM
    gmsh = _ifp_errors(tumour_mesh(COMM, "sphere", R, H, 2e-4), H)
    return {"snapped": _ifp_errors(refine_near_surface(tumour_mesh(COMM, "sphere", R, H, 8e-4), 2, band), H),
            "unsnapped": _ifp_errors(refine_near_surface(tumour_mesh(COMM, "sphere", R, H, 8e-4), 2, band,
                                                         snap=False), H),
            "gmsh": gmsh,
            "adaptive": _ifp_errors(_adaptive("sphere", R, H, 8e-4, gmsh[0]), H)}


def test_rim_refined_sphere_in_host_beats_a_uniform_gmsh_sphere_in_l2(sphere_in_host_errors):
    """Measured: 12,281 DOFs, L2 2.08 % against gmsh's 12,653 DOFs, 2.50 %; but its max error is
    1.85x gmsh's (7.25 % against 3.92 % of p_e): rim refinement alone does not meet issue 10's
    criterion in 3-D, adaptive refinement does (below)."""
    refined, gmsh = sphere_in_host_errors["snapped"], sphere_in_host_errors["gmsh"]   # (DOFs, max, L2, where)
    assert refined[0] <= gmsh[0]
    assert refined[2] <= 0.85 * gmsh[2], (refined, gmsh)


def test_3d_max_error_sits_in_the_host_rim_and_snapping_removes_the_geometric_part(sphere_in_host_errors):
    """Where the 3-D max error sits: on both meshes in the host just outside the tumour surface
    (measured +0.25 mm refined, +0.17 mm gmsh; rim 0.27 mm), where the IFP gradient is K_T / K_N
    = 4.8 times the tumour's; not at the snapped surface vertices. Without snapping the new
    vertices stay on the coarse chords and the error is 1.6x larger (max 11.7 % against 7.25 %,
    L2 3.48 % against 2.08 %); what is left is the approximation of the bisected tetrahedra
    (the P1 interpolant of the closed form is 1.3x gmsh's there: benchmarks/refine_accuracy.py)."""
    snapped, unsnapped, gmsh = (sphere_in_host_errors[k] for k in ("snapped", "unsnapped", "gmsh"))
    for errors in (snapped, gmsh):
        assert 0 < errors[3] < 2 * RIM, errors
    assert snapped[1] < 0.75 * unsnapped[1] and snapped[2] < 0.75 * unsnapped[2], (snapped, unsnapped)


def test_adaptive_sphere_in_host_not_worse_than_gmsh_in_max_and_l2(sphere_in_host_errors):
    """Issue 10's criterion in 3-D, met by adaptive refinement (residual indicator, Doerfler
    marking, longest-edge bisection, guarded smoothing) from the same 0.8 mm mesh. Measured:
    12,496 DOFs, max 3.29 % of p_e, L2 1.38 % against gmsh's 12,653 DOFs, 3.92 %, 2.50 %
    (unsmoothed 12,459 DOFs, 3.38 %, 1.63 %). (The case the bisection was chosen on; the tests
    below are cases it was not tuned on; the smoothing was checked on all three:
    benchmarks/adaptive_max_error.py.)"""
    adaptive, gmsh = sphere_in_host_errors["adaptive"], sphere_in_host_errors["gmsh"]
    assert adaptive[0] <= gmsh[0]
    assert adaptive[1] <= gmsh[1] and adaptive[2] <= gmsh[2], (adaptive, gmsh)


def test_adaptive_sphere_in_a_thicker_host_not_worse_than_gmsh():
    """A case the strategy was not tuned on: 1.5 mm sphere in a 1.5 mm host, adaptive from 0.8 mm
    against gmsh at 0.2 mm. Measured: 12,365 DOFs, max 2.10 %, L2 1.67 % against 12,431 DOFs,
    4.53 %, 2.90 %."""
    radius, host = 1.5e-3, 1.5e-3
    gmsh = _ifp_errors(tumour_mesh(COMM, "sphere", radius, host, 2e-4), host, radius)
    adaptive = _ifp_errors(_adaptive("sphere", radius, host, 8e-4, gmsh[0]), host, radius)
    assert adaptive[0] <= gmsh[0]
    assert adaptive[1] <= gmsh[1] and adaptive[2] <= gmsh[2], (adaptive, gmsh)


@pytest.fixture(scope="module")
def sphere_alone_errors():
    """``_ifp_errors`` of a 2 mm sphere without host: gmsh at 0.12 mm, and gmsh at 0.8 mm refined
    adaptively up to its DOFs."""
    gmsh = _ifp_errors(tumour_mesh(COMM, "sphere", R, 0.0, 1.2e-4), 0.0)
    return {"gmsh": gmsh, "adaptive": _ifp_errors(_adaptive("sphere", R, 0.0, 8e-4, gmsh[0]), 0.0)}


def test_adaptive_sphere_alone_not_worse_than_gmsh_in_l2(sphere_alone_errors):
    """Not tuned on either. Measured: 15,704 DOFs, L2 0.93 % against gmsh's 15,743 DOFs, 1.24 %."""
    adaptive, gmsh = sphere_alone_errors["adaptive"], sphere_alone_errors["gmsh"]
    assert adaptive[0] <= gmsh[0] and adaptive[2] <= gmsh[2], (adaptive, gmsh)


def test_adaptive_sphere_alone_max_error_not_worse_than_gmsh(sphere_alone_errors):
    """The max error of the tumour alone, where the IFP falls to the Dirichlet value at the surface
    and a uniform gmsh mesh is already well matched to it. Measured: 15,704 DOFs, max 1.740 % of
    p_e against gmsh's 1.755 % (0.99x), met only since the bisected meshes are smoothed with the
    surface vertices sliding on the sphere (criterion pre-registered in
    benchmarks/adaptive_max_error.py, met at its second try): unsmoothed 2.48 % (1.41x), sitting
    0.06 mm deep among flat bisected cells (median quality 0.63 against gmsh's 0.76; smoothed
    0.67); interior smoothing alone gave 1.04x. The margin is small: 1, 2 or 5 sweeps instead of
    3 give 1.03-1.12x, and a 1.5 mm tumour alone still has 1.10x gmsh's max error
    (benchmarks/results/adaptive_max_error.json)."""
    adaptive, gmsh = sphere_alone_errors["adaptive"], sphere_alone_errors["gmsh"]
    assert adaptive[1] <= gmsh[1], (adaptive, gmsh)


def _forward_toml(tmp_path, text: str):
    """The forward configuration of the TOML ``text`` written (by rank 0) to ``tmp_path``/run.toml,
    loaded on every rank, its keys checked against the config fields."""
    import tomllib

    from config_keys import assert_keys_are_fields
    from hybrid.config import load_forward_config

    path = Path(COMM.bcast(str(tmp_path), root=0)) / "run.toml"
    if COMM.rank == 0:
        path.write_text(text)
    COMM.Barrier()
    config = load_forward_config(path)
    assert_keys_are_fields(config, tomllib.loads(text), path)
    return config


def test_rim_refinement_from_a_toml_file_through_hybrid_forward(tmp_path):
    """``[geometry] rim_refinements`` reaches the mesh through ``hybrid forward``; the default band
    is 2 ln2 N rim and the gmsh surface size 2^N rim / 4; every TOML key is the config field."""
    config = _forward_toml(tmp_path, f'[geometry]\nshape = "disc"\ntumour_radius = {R}\nmesh_size = 4e-4\n'
                                     f'rim_refinements = 2\n[output]\ndirectory = "out"\nvelocity = false\n')
    assert config.geometry.rim_band == pytest.approx(4 * np.log(2) * RIM)
    assert config.geometry.surface_mesh_size == pytest.approx(RIM)   # 2^2 rim / 4 < mesh_size
    summary = run_forward(config, COMM).summary
    assert summary["mesh"]["rim_refinements"] == 2
    assert summary["mesh"]["rim_band_m"] == pytest.approx(4 * np.log(2) * RIM)
    assert summary["wall_time_s"]["rim_refinement_s"] > 0
    assert summary["closed_form"]["max_error_over_tumour_pe"] < 0.01


@pytest.mark.parametrize("geometry, message", [
    ({"rim_refinements": 7}, "rim_refinements must be an integer from 0 to 6"),
    ({"rim_refinements": 1, "shape": "krogh"}, 'rim_refinements needs shape = "sphere" or "disc"'),
    ({"rim_refinements": 1, "rim_band": 0.0}, "rim_band must be > 0"),
])
def test_bad_rim_refinement_settings_are_refused(geometry, message):
    from hybrid.config import ConfigError

    document = {"geometry": {"shape": "disc", "mesh_size": 1e-4, **geometry}, "output": {"directory": "x"}}
    with pytest.raises(ConfigError, match=message):
        forward_config_from_dict(document)


def test_adaptive_refinement_from_a_toml_file_through_hybrid_forward(tmp_path):
    """``[geometry] adaptive_dofs`` reaches the mesh through ``hybrid forward``: the run stays
    within the budget, summary.json reports what each step did and its time, and the closed-form
    error beats the coarse mesh it started from; every TOML key is the config field."""
    geometry = {"shape": "disc", "tumour_radius": R, "host_thickness": H, "mesh_size": 4e-4}
    config = _forward_toml(tmp_path, "[geometry]\n" + "".join(f"{k} = {v!r}\n" for k, v in geometry.items())
                           + 'adaptive_dofs = 3000\n[output]\ndirectory = "out"\nvelocity = false\n')
    assert config.geometry.adaptive_dofs == 3000 and config.geometry.surface_mesh_size == 4e-4   # no graded gmsh mesh
    summary = run_forward(config, COMM).summary
    mesh, history = summary["mesh"], summary["mesh"]["adaptive_history"]
    assert 1500 < summary["dofs"] <= 3000 and mesh["adaptive_dofs"] == 3000
    assert mesh["adaptive_steps"] == len(history) >= 3
    assert [step["dofs"] for step in history] == sorted(step["dofs"] for step in history)
    assert history[-1]["estimate"] < 0.5 * history[0]["estimate"]
    assert summary["wall_time_s"]["adaptive_s"] > 0 and "max_after_adaptive" in summary["peak_memory_MiB"]
    tmp_path = Path(COMM.bcast(str(tmp_path), root=0))
    coarse = run_forward(forward_config_from_dict({"geometry": {**geometry, "surface_mesh_size": 4e-4},
                                                   "output": {"directory": str(tmp_path / "coarse"),
                                                              "velocity": False}}), COMM).summary
    assert summary["closed_form"]["max_abs_error_Pa"] < 0.25 * coarse["closed_form"]["max_abs_error_Pa"], (summary, coarse)


@pytest.mark.parametrize("geometry, message", [
    ({"adaptive_dofs": -1}, "adaptive_dofs must be a non-negative integer"),
    ({"adaptive_dofs": 1e4}, "adaptive_dofs must be a non-negative integer"),
    ({"adaptive_dofs": True}, "adaptive_dofs must be a non-negative integer"),
    ({"adaptive_dofs": 1000, "shape": "krogh"}, 'adaptive_dofs needs shape = .sphere. or .disc.'),
])
def test_bad_adaptive_settings_are_refused(geometry, message):
    from hybrid.config import ConfigError

    document = {"geometry": {"shape": "disc", "mesh_size": 1e-4, **geometry}, "output": {"directory": "x"}}
    with pytest.raises(ConfigError, match=message):
        forward_config_from_dict(document)


def test_rim_refinement_without_a_rim_needs_a_band():
    import math

    from hybrid.config import ConfigError
    from hybrid.config.geometry import GeometryConfig

    geometry = GeometryConfig(shape="disc", mesh_size=1e-4, rim_refinements=1)
    with pytest.raises(ConfigError, match="rim_refinements needs rim_band"):
        geometry.resolved(math.inf)
    assert GeometryConfig(shape="disc", mesh_size=1e-4, rim_refinements=1, rim_band=5e-4).resolved(math.inf).rim_band == 5e-4
