"""Issue 7, ``hybrid forward`` serially and under ``mpirun -n 2``: an error found on any rank
ends every rank promptly with one ``hybrid: error:`` line and status 2, and leaves no output.

Before the fix, the mask and output-directory cases hung rank 1 for ever under ``mpirun -n 2``,
``mesh_size = 1e-9`` meshed for minutes without a word, and PETSc failures gave tracebacks."""

import json

import nibabel as nib
import numpy as np
import pytest

from cli_helpers import assert_one_error, disc_config, run_hybrid

RANKS = [1, 2]


def mask_config(tmp_path, mask: np.ndarray, extra: str = ""):
    """A ``shape = "mask"`` configuration for a 2-D mask (0.25 mm voxels), output tmp_path/out."""
    nib.save(nib.Nifti1Image(mask.astype(np.uint8)[:, :, None], np.diag([0.25, 0.25, 1.0, 1.0])),
             str(tmp_path / "mask.nii.gz"))
    config = tmp_path / "mask.toml"
    config.write_text(f'[geometry]\nshape = "mask"\nmask = "mask.nii.gz"\nmesh_size = 2.0e-4\n{extra}\n'
                      f'[output]\ndirectory = "{tmp_path / "out"}"\n')
    return config


def disc_mask(n: int = 40, radius: float = 10.0, centre=(20, 20)) -> np.ndarray:
    i, j = np.mgrid[:n, :n]
    return (i - centre[0]) ** 2 + (j - centre[1]) ** 2 < radius ** 2


def two_voxel_square() -> np.ndarray:
    mask = np.zeros((40, 40), bool)
    mask[20:22, 20:22] = True
    return mask


MASK_CASES = {
    "empty mask": (lambda: np.zeros((40, 40), bool), "", "fewer than 4 tumour voxels (0)"),
    "four voxels": (two_voxel_square, "", "holds 1 component(s) of 4 voxels"),
    "slice out of range": (disc_mask, "slice_index = 3", "slice_index 3 outside the mask's 1 slices"),
    "speckle": (lambda: np.random.default_rng(0).random((40, 40)) < 0.3, "", "the traced outlines cover"),
}


@pytest.mark.parametrize("ranks", RANKS)
@pytest.mark.parametrize("case", sorted(MASK_CASES))
def test_unmeshable_masks_end_every_rank(tmp_path, case, ranks):
    make, extra, message = MASK_CASES[case]
    result = run_hybrid("forward", mask_config(tmp_path, make(), extra), ranks=ranks, timeout=90)
    assert_one_error(result, message)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("ranks", RANKS)
@pytest.mark.parametrize("command", ["forward", "demo"])
def test_output_directory_that_cannot_be_created(tmp_path, ranks, command):
    args = (disc_config(tmp_path, "/proc/hybrid-cannot-exist"),) if command == "forward" else (
        "--output", "/proc/hybrid-cannot-exist")
    result = run_hybrid(command, *args, ranks=ranks, timeout=90)
    assert_one_error(result, "cannot create output directory /proc/hybrid-cannot-exist")


@pytest.mark.parametrize("ranks", RANKS)
def test_mesh_size_far_beyond_memory_is_refused_before_meshing(tmp_path, ranks):
    config = disc_config(tmp_path, tmp_path / "out")
    config.write_text(config.read_text().replace("mesh_size = 4.0e-4", "mesh_size = 1e-9"))
    result = run_hybrid("forward", config, ranks=ranks, timeout=90)
    assert_one_error(result, "[geometry] mesh_size = 1e-09 m (surface 1e-09 m) would give about")
    assert "meshing" not in result.stdout
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("ranks", RANKS)
@pytest.mark.parametrize("solver, message", [
    ('petsc_options = {ksp_type = "nonsense"}', "Unable to find requested KSP type nonsense"),
    ('petsc_options = {ksp_max_it = 1, pc_type = "none"}', "has not converged, reason DIVERGED_ITS"),
])
def test_petsc_failures_in_one_line_with_the_reason(tmp_path, ranks, solver, message):
    result = run_hybrid("forward", disc_config(tmp_path, tmp_path / "out", solver=solver), ranks=ranks, timeout=90)
    line = assert_one_error(result, message)
    assert "the IFP linear solve failed" in line and "petsc_options" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("ranks", RANKS)
def test_two_components_and_a_hole_are_meshed_and_reported(tmp_path, ranks):
    """Before: the smaller of two blobs was dropped (mesh area 68 % of the mask's), a hole filled (122 %)."""
    mask = disc_mask(radius=8, centre=(12, 12)) | disc_mask(radius=5, centre=(30, 28))
    mask[12 - 2:12 + 3, 12 - 2:12 + 3] = False   # a 5x5-voxel hole in the larger blob
    result = run_hybrid("forward", mask_config(tmp_path, mask), ranks=ranks, timeout=180)
    assert result.returncode == 0, result.stderr
    mesh = json.loads((tmp_path / "out" / "summary.json").read_text())["mesh"]
    assert mesh["components"] == 2 and mesh["holes"] == 1
    assert mesh["mask_area_m2"] == pytest.approx(int(mask.sum()) * 0.25e-3 ** 2, rel=1e-12)
    assert mesh["area_ratio"] == pytest.approx(1.0, abs=0.05)


@pytest.mark.mpi
def test_mesh_area_matches_the_mask_with_components_and_holes():
    from mpi4py import MPI

    from hybrid.mesh import mask_mesh, tags
    import dolfinx.fem
    import ufl

    mask = disc_mask(radius=8, centre=(12, 12)) | disc_mask(radius=5, centre=(30, 28))
    mask[10:15, 10:15] = False
    domain = mask_mesh(MPI.COMM_WORLD, mask[:, :, None], np.diag([0.25, 0.25, 1.0, 1.0]), 2e-4, host=True)
    dx = ufl.Measure("dx", domain=domain.mesh, subdomain_data=domain.cell_tags)
    one = dolfinx.fem.Constant(domain.mesh, 1.0)
    area = {tag: domain.mesh.comm.allreduce(dolfinx.fem.assemble_scalar(dolfinx.fem.form(one * dx(tag))))
            for tag in (tags.TUMOUR, tags.HOST)}
    assert area[tags.TUMOUR] == pytest.approx(domain.geometry["tumour_area_m2"], rel=1e-9)
    assert area[tags.TUMOUR] == pytest.approx(int(mask.sum()) * 0.25e-3 ** 2, rel=0.05)
    assert area[tags.TUMOUR] + area[tags.HOST] == pytest.approx((40 * 0.25e-3) ** 2, rel=1e-9)  # hole is host
