"""gmsh builders for tumour-scale and perivascular meshes, distributed as DOLFINx meshes.

Every builder makes the gmsh model on rank 0 only, hands it to
``dolfinx.io.gmsh.model_to_mesh`` (which partitions it over the communicator with the chosen
graph partitioner) and returns a :class:`TumourMesh`. Lengths are in metres. Physical groups
follow :mod:`hybrid.mesh.tags`. Large meshes: build a coarse one here and refine it in parallel
(:mod:`hybrid.mesh.refine`), so rank 0 never holds the fine mesh.

Boundary layers: the interstitial fluid pressure drops to the boundary value over a rim of
thickness ``sqrt(K / (Lp S/V))`` (~270 um with the Baxter-Jain tumour values). The
tumour-scale builders therefore take ``surface_mesh_size`` and ``refinement_width``: cells within
``refinement_width`` of the tumour surface have size ``surface_mesh_size``, growing linearly to
``mesh_size`` over a further ``refinement_width``.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
import threading
from dataclasses import dataclass, field

import gmsh
import numpy as np
from mpi4py import MPI

import dolfinx.io.gmsh
import dolfinx.mesh

from hybrid.mesh import tags

__all__ = ["TumourMesh", "tumour_mesh", "krogh_mesh", "vessel_patch_mesh", "place_vessels"]


@dataclass
class TumourMesh:
    """A distributed mesh with its cell and facet tags and the geometry it was built from."""

    mesh: dolfinx.mesh.Mesh
    cell_tags: dolfinx.mesh.MeshTags
    facet_tags: dolfinx.mesh.MeshTags
    shape: str
    outer_tags: tuple[int, ...]                    # facets where the outer boundary condition applies
    vessel_wall_tags: tuple[int, ...] = ()         # resolved vessel walls (perivascular meshes)
    geometry: dict = field(default_factory=dict)   # radii, centres... in metres
    timings: dict = field(default_factory=dict)    # wall time [s] per stage: meshing_s, distribution_s, ...

    @property
    def dim(self) -> int:
        return self.mesh.topology.dim


@contextlib.contextmanager
def _gmsh_session(name: str):
    """Initialise gmsh quietly for one model and always finalise it. Python's SIGINT/SIGTERM
    handlers stay in force (gmsh's initialisation resets SIGTERM to terminate at once, which would
    skip the command line's clean-up; see hybrid.cli)."""
    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    gmsh.initialize(interruptible=False)
    if threading.current_thread() is threading.main_thread():
        for number, handler in handlers.items():
            if handler is not None:
                signal.signal(number, handler)
    try:
        gmsh.option.setNumber("General.Terminal", 0)
        gmsh.option.setNumber("Mesh.Algorithm3D", 10)  # HXT: the fastest 3-D Delaunay in gmsh
        gmsh.option.setNumber("General.NumThreads", 1)  # one thread: the same mesh every run
        gmsh.model.add(name)
        yield gmsh.model
    finally:
        gmsh.finalize()


def cell_partitioner(name: str):
    """DOLFINx cell partitioner (no ghost cells) using the graph partitioner ``name``:
    ``scotch`` (default) or ``kahip``, or ``parmetis`` where this DOLFINx build has it."""
    import dolfinx.graph

    graph = getattr(dolfinx.graph, f"partitioner_{name}", None)
    if graph is None:
        available = [n.removeprefix("partitioner_") for n in dir(dolfinx.graph) if n.startswith("partitioner_")]
        raise ValueError(f"partitioner {name!r} is not in this DOLFINx build; use one of {', '.join(available)}")
    return dolfinx.mesh.create_cell_partitioner(graph(), dolfinx.mesh.GhostMode.none, 2)


def _distribute(comm: MPI.Comm, build, gdim: int, shape: str, geometry: dict, outer_tags: tuple[int, ...],
                vessel_wall_tags: tuple[int, ...] = (), partitioner: str = "scotch") -> TumourMesh:
    """Build the gmsh model on rank 0 with ``build(model)`` and distribute it over ``comm``,
    partitioned by ``partitioner`` (see :func:`cell_partitioner`); times the two stages."""
    error = None
    partition = cell_partitioner(partitioner)
    start = time.perf_counter()
    if comm.rank == 0:
        with _gmsh_session(shape) as model:
            try:
                build(model)
                model.mesh.generate(gdim)
            except Exception as exc:  # re-raised on every rank below, so no rank hangs
                error = exc
            error = comm.bcast(error, root=0)
            meshed = time.perf_counter()
            if error is None:
                data = dolfinx.io.gmsh.model_to_mesh(model, comm, 0, gdim=gdim, partitioner=partition)
    else:
        error = comm.bcast(None, root=0)
        meshed = time.perf_counter()
        if error is None:
            data = dolfinx.io.gmsh.model_to_mesh(None, comm, 0, gdim=gdim, partitioner=partition)
    if error is not None:
        raise RuntimeError(f"gmsh could not build the {shape} mesh: {error}") from error
    data.mesh.name = shape
    timings = {"meshing_s": meshed - start, "distribution_s": time.perf_counter() - meshed}
    return TumourMesh(data.mesh, data.cell_tags, data.facet_tags, shape, outer_tags, vessel_wall_tags, geometry,
                      timings)


def _refine_near_radius(model, radius: float, mesh_size: float, surface_mesh_size: float,
                        refinement_width: float) -> None:
    """Size field: ``surface_mesh_size`` within ``refinement_width`` of the sphere ``|x| = radius``,
    growing linearly to ``mesh_size`` over a further ``refinement_width``."""
    if surface_mesh_size >= mesh_size or refinement_width <= 0:
        model.mesh.setSize(model.getEntities(0), mesh_size)
        return
    width = refinement_width
    distance = f"Fabs(Sqrt(x*x + y*y + z*z) - {radius!r})"
    ramp = f"{surface_mesh_size!r} + {mesh_size - surface_mesh_size!r} * ({distance} - {width!r}) / {width!r}"
    field = model.mesh.field.add("MathEval")
    model.mesh.field.setString(field, "F", f"Min({mesh_size!r}, Max({surface_mesh_size!r}, {ramp}))")
    model.mesh.field.setAsBackgroundMesh(field)
    _background_size_only()


def _background_size_only() -> None:
    """Let the background field alone set the element size."""
    for option in ("MeshSizeExtendFromBoundary", "MeshSizeFromPoints", "MeshSizeFromCurvature"):
        gmsh.option.setNumber(f"Mesh.{option}", 0)


def _refine_near_curves(model, curves: list[int], mesh_size: float, wall_mesh_size: float,
                        refinement_width: float) -> None:
    """Size field: ``wall_mesh_size`` within ``refinement_width`` of ``curves`` (vessel walls),
    growing to ``mesh_size`` over a further ``refinement_width``."""
    if wall_mesh_size >= mesh_size:
        model.mesh.setSize(model.getEntities(0), mesh_size)
        return
    distance = model.mesh.field.add("Distance")
    model.mesh.field.setNumbers(distance, "CurvesList", curves)
    model.mesh.field.setNumber(distance, "Sampling", 100)
    threshold = model.mesh.field.add("Threshold")
    model.mesh.field.setNumber(threshold, "InField", distance)
    model.mesh.field.setNumber(threshold, "SizeMin", wall_mesh_size)
    model.mesh.field.setNumber(threshold, "SizeMax", mesh_size)
    model.mesh.field.setNumber(threshold, "DistMin", refinement_width)
    model.mesh.field.setNumber(threshold, "DistMax", 2 * refinement_width)
    model.mesh.field.setAsBackgroundMesh(threshold)
    _background_size_only()


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive length in metres, got {value!r}")


def tumour_mesh(comm: MPI.Comm, shape: str, tumour_radius: float, host_thickness: float,
                mesh_size: float, surface_mesh_size: float | None = None,
                refinement_width: float = 0.0, partitioner: str = "scotch") -> TumourMesh:
    """Sphere (3-D), disc (2-D) or slab (1-D, ``-R < x < R``) tumour, optionally in a host shell.

    ``host_thickness = 0`` makes the tumour surface the outer boundary. The centre is the origin.
    """
    _check_positive(tumour_radius=tumour_radius, mesh_size=mesh_size)
    if host_thickness < 0:
        raise ValueError(f"host_thickness must be >= 0 m, got {host_thickness!r}")
    surface_mesh_size = mesh_size if surface_mesh_size is None else surface_mesh_size
    _check_positive(surface_mesh_size=surface_mesh_size)
    if shape not in ("sphere", "disc", "slab"):
        raise ValueError(f"tumour shape must be sphere, disc or slab, got {shape!r}")
    dim = {"sphere": 3, "disc": 2, "slab": 1}[shape]
    R, H = tumour_radius, host_thickness
    geometry = {"tumour_radius": R, "host_thickness": H, "outer_radius": R + H}

    def build(model):
        if dim == 1:
            xs = [-(R + H), -R, R, R + H] if H > 0 else [-R, R]
            points = [model.geo.addPoint(x, 0, 0) for x in xs]
            lines = [model.geo.addLine(a, b) for a, b in zip(points[:-1], points[1:])]
            model.geo.synchronize()
            if H > 0:
                model.addPhysicalGroup(1, [lines[1]], tags.TUMOUR, "tumour")
                model.addPhysicalGroup(1, [lines[0], lines[2]], tags.HOST, "host")
                model.addPhysicalGroup(0, [points[1], points[2]], tags.TUMOUR_SURFACE, "tumour_surface")
                model.addPhysicalGroup(0, [points[0], points[3]], tags.OUTER_BOUNDARY, "outer_boundary")
            else:
                model.addPhysicalGroup(1, lines, tags.TUMOUR, "tumour")
                model.addPhysicalGroup(0, points, tags.TUMOUR_SURFACE, "tumour_surface")
            _refine_near_radius(model, R, mesh_size, surface_mesh_size, refinement_width)
            return
        occ = model.occ
        make = (lambda r: occ.addSphere(0, 0, 0, r)) if dim == 3 else (lambda r: occ.addDisk(0, 0, 0, r, r))
        tumour = make(R)
        tumour_vols, host_vols = [tumour], []
        if H > 0:
            _, pieces = occ.fragment([(dim, make(R + H))], [(dim, tumour)])
            tumour_vols = [t for _, t in pieces[1]]
            host_vols = [t for _, t in pieces[0] if t not in tumour_vols]
        occ.synchronize()
        model.addPhysicalGroup(dim, tumour_vols, tags.TUMOUR, "tumour")
        boundary_of = lambda vols: {abs(t) for _, t in model.getBoundary([(dim, v) for v in vols], oriented=False)}
        tumour_boundary = boundary_of(tumour_vols)
        if host_vols:
            model.addPhysicalGroup(dim, host_vols, tags.HOST, "host")
            outer = boundary_of(host_vols) - tumour_boundary
            model.addPhysicalGroup(dim - 1, sorted(outer), tags.OUTER_BOUNDARY, "outer_boundary")
        model.addPhysicalGroup(dim - 1, sorted(tumour_boundary), tags.TUMOUR_SURFACE, "tumour_surface")
        _refine_near_radius(model, R, mesh_size, surface_mesh_size, refinement_width)

    outer = (tags.OUTER_BOUNDARY,) if H > 0 else (tags.TUMOUR_SURFACE,)
    return _distribute(comm, build, dim, shape, geometry, outer, partitioner=partitioner)


def krogh_mesh(comm: MPI.Comm, vessel_radius: float, tissue_radius: float,
               mesh_size: float, wall_mesh_size: float | None = None, partitioner: str = "scotch") -> TumourMesh:
    """2-D Krogh annulus ``vessel_radius < r < tissue_radius`` (the lumen is not meshed).

    Cells are tagged tumour; the vessel wall and the outer tissue circle are tagged. The wall is
    resolved with ``wall_mesh_size`` (default ``min(mesh_size, vessel_radius / 4)``).
    """
    _check_positive(vessel_radius=vessel_radius, tissue_radius=tissue_radius, mesh_size=mesh_size)
    if tissue_radius <= vessel_radius:
        raise ValueError(f"tissue_radius ({tissue_radius}) must exceed vessel_radius ({vessel_radius})")
    wall_mesh_size = wall_mesh_size or min(mesh_size, vessel_radius / 4)
    geometry = {"vessel_radius": vessel_radius, "tissue_radius": tissue_radius, "centres": [(0.0, 0.0)]}

    def build(model):
        occ = model.occ
        annulus, _ = occ.cut([(2, occ.addDisk(0, 0, 0, tissue_radius, tissue_radius))],
                             [(2, occ.addDisk(0, 0, 0, vessel_radius, vessel_radius))])
        occ.synchronize()
        model.addPhysicalGroup(2, [t for _, t in annulus], tags.TUMOUR, "tumour")
        wall, outer = [], []
        for _, curve in model.getBoundary(annulus, oriented=False):
            extent = np.abs(model.getBoundingBox(1, abs(curve))).max()
            (wall if extent < 0.5 * (vessel_radius + tissue_radius) else outer).append(abs(curve))
        model.addPhysicalGroup(1, wall, tags.VESSEL_WALL, "vessel_wall")
        model.addPhysicalGroup(1, outer, tags.OUTER_BOUNDARY, "outer_boundary")
        _refine_near_curves(model, wall, mesh_size, wall_mesh_size, 2 * vessel_radius)

    return _distribute(comm, build, 2, "krogh", geometry, (tags.OUTER_BOUNDARY,), (tags.VESSEL_WALL,),
                       partitioner)


def place_vessels(n_vessels: int, patch_size: float, vessel_radius: float,
                  min_spacing: float, seed: int, max_attempts: int = 100_000) -> np.ndarray:
    """Vessel centres (n, 2) [m] drawn uniformly in a square patch, reproducible from ``seed``.

    Centres are at least ``min_spacing`` apart (wall to wall distance ``min_spacing - 2 r``) and
    ``vessel_radius + min_spacing / 2`` from the patch edge. Raises if they do not fit.
    """
    if min_spacing <= 2 * vessel_radius:
        raise ValueError(f"min_spacing ({min_spacing}) must exceed a vessel diameter ({2 * vessel_radius})")
    margin = vessel_radius + 0.5 * min_spacing
    if patch_size <= 2 * margin:
        raise ValueError("patch too small for one vessel with this spacing")
    rng = np.random.default_rng(seed)
    centres: list[np.ndarray] = []
    for _ in range(max_attempts):
        if len(centres) == n_vessels:
            break
        candidate = rng.uniform(margin, patch_size - margin, size=2)
        if all(np.hypot(*(candidate - c)) >= min_spacing for c in centres):
            centres.append(candidate)
    if len(centres) < n_vessels:
        raise ValueError(f"could place only {len(centres)} of {n_vessels} vessels with min_spacing "
                         f"{min_spacing} m in a {patch_size} m patch; lower one of them")
    return np.array(centres)


def vessel_patch_mesh(comm: MPI.Comm, patch_size: float, vessel_radius: float, n_vessels: int,
                      min_spacing: float, mesh_size: float, seed: int = 0,
                      wall_mesh_size: float | None = None, partitioner: str = "scotch") -> TumourMesh:
    """2-D square tissue patch ``[0, patch_size]^2`` with circular vessels cut out.

    Vessel ``i``'s wall is tagged ``tags.patch_vessel_wall(i)``; the square's edges are the outer
    boundary; tissue cells are tagged tumour. Walls are resolved with ``wall_mesh_size``
    (default ``min(mesh_size, vessel_radius / 4)``).
    """
    _check_positive(patch_size=patch_size, vessel_radius=vessel_radius, mesh_size=mesh_size)
    centres = place_vessels(n_vessels, patch_size, vessel_radius, min_spacing, seed)
    wall_mesh_size = wall_mesh_size or min(mesh_size, vessel_radius / 4)
    geometry = {"patch_size": patch_size, "vessel_radius": vessel_radius,
                "centres": [tuple(map(float, c)) for c in centres], "seed": seed}

    def build(model):
        occ = model.occ
        square = occ.addRectangle(0, 0, 0, patch_size, patch_size)
        holes = [(2, occ.addDisk(x, y, 0, vessel_radius, vessel_radius)) for x, y in centres]
        tissue, _ = occ.cut([(2, square)], holes)
        occ.synchronize()
        model.addPhysicalGroup(2, [t for _, t in tissue], tags.TUMOUR, "tumour")
        walls: dict[int, list[int]] = {i: [] for i in range(len(centres))}
        outer = []
        for _, curve in model.getBoundary(tissue, oriented=False):
            box = np.array(model.getBoundingBox(1, abs(curve)))
            mid = 0.5 * (box[:2] + box[3:5])
            distances = np.hypot(*(centres - mid).T)
            nearest = int(np.argmin(distances))
            if distances[nearest] < 1.5 * vessel_radius:
                walls[nearest].append(abs(curve))
            else:
                outer.append(abs(curve))
        for i, curves in walls.items():
            model.addPhysicalGroup(1, curves, tags.patch_vessel_wall(i), f"vessel_wall_{i}")
        model.addPhysicalGroup(1, outer, tags.OUTER_BOUNDARY, "outer_boundary")
        wall_curves = [c for curves in walls.values() for c in curves]
        _refine_near_curves(model, wall_curves, mesh_size, wall_mesh_size, 2 * vessel_radius)

    walls = tuple(tags.patch_vessel_wall(i) for i in range(len(centres)))
    return _distribute(comm, build, 2, "vessels", geometry, (tags.OUTER_BOUNDARY,), walls, partitioner)
