"""``hybrid validate CONFIG.toml``: cross-validation of a ``hybrid invert`` run against the FEM
(issue 9 point 4), for the IFP kind. DOLFINx and MPI; torch never.

1. Re-solve the steady IFP (:func:`hybrid.forward.ifp.solve_ifp`, P1) on the ``[geometry]`` disc
   with the recovered coefficients of ``inversion.json`` (estimates and known values), p =
   ``far_pressure`` on the edge.
2. PINN vs FEM: the recovered pressure map ``ifp.nii.gz`` (voxel means; NaN voxels, which see no
   tissue, take the value of the nearest finite voxel) is interpolated trilinearly onto the P1
   space (:func:`hybrid.forward.image_sampling.sample_image`) and compared in the FEM L2 norm:
   ``||p_PINN - p_FEM|| / ||p_FEM||`` from assembled integrals over the mesh (not the training loss).
   The voxel map itself limits this number (voxel averaging and interpolation err near the rim):
   ``voxel_map_floor`` is the same error of the FEM field itself voxel-averaged on the map's grid.
3. With a truth (the invert run's ``[data] truth``, a ``hybrid synthesize`` truth.json, and
   ``truth/ifp.nii.gz`` beside it): the FEM at the true tumour coefficients on the same mesh,
   ``||p_FEM(recovered) - p_FEM(truth)|| / ||p_FEM(truth)||``, and the prediction of the truth
   image: the FEM at the recovered coefficients voxel-averaged like the data
   (:func:`hybrid.forward.image_sampling.observe_on_grid`) against ``truth/ifp.nii.gz``, relative
   l2 over the voxels finite in both. The IFP kind has no time axis: a held-out time point needs
   the release kind (not available from the command line yet).

Writes ``validation.json`` (every number with its unit) into the output directory.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from mpi4py import MPI
from scipy import ndimage

import hybrid._fem_stack  # noqa: F401  (before dolfinx)
import dolfinx.fem
import ufl

from hybrid.config.crossval import CrossvalConfig
from hybrid.config.invert import IFP_COEFFICIENTS
from hybrid.forward.image_sampling import observe_on_grid, sample_image
from hybrid.forward.ifp import solve_ifp
from hybrid.io.nifti import read_volume
from hybrid.problems.ifp import OuterBoundary, TissueProperties

__all__ = ["run_crossval", "recovered_coefficients", "relative_l2", "fill_nan_nearest"]

HELD_OUT_NOTE = ("the IFP kind is steady (no time axis): the prediction reported is that of the noise-free "
                 "truth map truth/ifp.nii.gz, which is the training data itself when [data] observations is that "
                 "map; held-out imaging time points need the release kind")


def recovered_coefficients(inversion: dict) -> dict[str, float]:
    """The five IFP coefficients [SI] of an inversion.json: estimates of the unknowns, the rest known."""
    values = {name: entry["value"] for name, entry in inversion["known"].items()}
    values |= {name: entry["estimate"] for name, entry in inversion["estimates"].items() if name in IFP_COEFFICIENTS}
    missing = sorted(set(IFP_COEFFICIENTS) - set(values))
    if missing:
        raise ValueError(f"inversion.json lacks the coefficient(s) {', '.join(missing)}; is it a `hybrid invert` "
                         "output of the ifp kind?")
    return {name: float(values[name]) for name in IFP_COEFFICIENTS}


def relative_l2(value, reference) -> float:
    """||value - reference|| / ||reference|| in L2 over the mesh (assembled, collective)."""
    mesh = reference.function_space.mesh

    def integral(expression) -> float:
        local = dolfinx.fem.assemble_scalar(dolfinx.fem.form(expression * ufl.dx(domain=mesh)))
        return mesh.comm.allreduce(local, op=MPI.SUM)
    difference = value - reference
    return float(np.sqrt(integral(ufl.inner(difference, difference)) / integral(ufl.inner(reference, reference))))


def fill_nan_nearest(volume: np.ndarray) -> np.ndarray:
    """``volume`` with every NaN voxel set to the value of the nearest finite voxel (ValueError if none)."""
    missing = np.isnan(volume)
    if missing.all():
        raise ValueError("the recovered IFP map ifp.nii.gz has no finite voxel")
    index = ndimage.distance_transform_edt(missing, return_distances=False, return_indices=True)
    return volume[tuple(index)]


def _solve(domain, boundary: OuterBoundary, coefficients: dict[str, float]):
    """P1 IFP [Pa] with the five coefficients as constants over the tumour."""
    mesh = domain.mesh
    fields = {("hydraulic_conductivity" if name == "conductivity" else name):
              dolfinx.fem.Constant(mesh, value) for name, value in coefficients.items()}
    return solve_ifp(domain, TissueProperties.defaults("tumour"), boundary, fields=fields).pressure


def _truth_tissue(path: Path) -> TissueProperties:
    """Tumour coefficients of a ``hybrid synthesize`` truth.json."""
    try:
        tumour = json.loads(Path(path).read_text())["parameters"]["tumour"]
        return TissueProperties(**{name: float(entry["value"]) for name, entry in tumour.items()})
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not a `hybrid synthesize` truth.json (missing or bad {exc})") from None


def run_crossval(config: CrossvalConfig, directory: Path, comm: MPI.Comm, log) -> dict:
    """Re-solve, compare and write ``validation.json`` into ``directory`` (collective). Returns its content."""
    from hybrid.collective import everywhere, on_rank0
    from hybrid.mesh.geometry import build_mesh

    invert = config.invert
    inversion_path = config.inversion_directory / "inversion.json"
    inversion = everywhere(comm, lambda: json.loads(inversion_path.read_text()))
    recovered = everywhere(comm, lambda: recovered_coefficients(inversion))
    pinn_map, affine = everywhere(comm, lambda: read_volume(config.inversion_directory / "ifp.nii.gz"))
    pinn_map = everywhere(comm, lambda: fill_nan_nearest(pinn_map))
    sink = recovered["vascular_exchange"] + recovered["lymphatic_filtration"]
    rim = float(np.sqrt(recovered["conductivity"] / sink)) if sink > 0 else float("inf")
    start = time.perf_counter()
    domain = build_mesh(config.geometry.resolved(rim), comm)
    boundary = OuterBoundary("dirichlet", invert.far_pressure)
    fem = _solve(domain, boundary, recovered)
    nodes = fem.function_space.dofmap.index_map.size_global
    pinn = sample_image(domain, pinn_map, affine, name="pinn_pressure")
    pinn_error = relative_l2(pinn, fem)
    floor_map = observe_on_grid(fem, pinn_map.shape, affine, points_per_axis=invert.points_per_axis)
    floor = relative_l2(sample_image(domain, fill_nan_nearest(floor_map), affine), fem)
    log(f"FEM re-solve at the recovered coefficients: {nodes} nodes; PINN vs FEM relative L2 error "
        f"{100 * pinn_error:.2f} % (the FEM itself through the map's grid: {100 * floor:.2f} %)")
    result = {"command": "validate", "problem": "ifp", "inversion": str(config.inversion_directory),
              "recovered_coefficients": {name: {"value": value, "unit": IFP_COEFFICIENTS[name]}
                                         for name, value in recovered.items()},
              "fem": {"nodes": nodes, "degree": 1, "geometry": {"shape": "disc",
                                                                 "tumour_radius_m": config.geometry.tumour_radius,
                                                                 "mesh_size_m": config.geometry.mesh_size},
                      "far_pressure": {"value": invert.far_pressure, "unit": "Pa"}},
              "pinn_vs_fem": {"relative_l2": pinn_error, "unit": "1",
                              "norm": "L2 over the mesh (assembled), PINN voxel map interpolated trilinearly "
                                      "onto P1 (NaN voxels filled from the nearest finite voxel)",
                              "voxel_map_floor": floor},
              "truth": None, "held_out": {"available": False, "note": HELD_OUT_NOTE}}
    if invert.truth is not None:
        truth_tissue = everywhere(comm, lambda: _truth_tissue(invert.truth))
        truth_image_path = Path(invert.truth).parent / "truth" / "ifp.nii.gz"
        truth_image, truth_affine = everywhere(comm, lambda: read_volume(truth_image_path))
        truth_fem = solve_ifp(domain, truth_tissue, boundary).pressure
        fem_error = relative_l2(fem, truth_fem)
        predicted = observe_on_grid(fem, truth_image.shape, truth_affine, points_per_axis=invert.points_per_axis)
        use = np.isfinite(predicted) & np.isfinite(truth_image)
        difference = predicted[use] - truth_image[use]
        image_error = float(np.linalg.norm(difference) / np.linalg.norm(truth_image[use]))
        result["truth"] = {"truth_json": str(invert.truth),
                           "fem_recovered_vs_fem_truth": {"relative_l2": fem_error, "unit": "1",
                                                          "norm": "L2 over the mesh (assembled)"}}
        result["truth_image_prediction"] = {
            "image": str(truth_image_path), "relative_l2": image_error, "unit": "1",
            "max_abs_error": {"value": float(np.abs(difference).max()), "unit": "Pa"}, "voxels": int(use.sum()),
            "operator": f"voxel mean, midpoint rule, {invert.points_per_axis} points per axis"}
        log(f"FEM(recovered) vs FEM(truth) relative L2 error {100 * fem_error:.2f} %; prediction of the truth "
            f"image: relative l2 error {100 * image_error:.2f} % over {int(use.sum())} voxels")
    result["seconds"] = time.perf_counter() - start
    on_rank0(comm, lambda: (Path(directory) / "validation.json").write_text(json.dumps(result, indent=2) + "\n"))
    return result
