"""Imaging-guided coefficients: Lp S/V scaled by a Ktrans map on a mesh traced from a mask."""

import numpy as np
import pytest
from mpi4py import MPI

from hybrid.forward import solve_ifp
from hybrid.forward.image_sampling import vascular_exchange_from_ktrans
from hybrid.forward.sampling import region_mean
from hybrid.mesh import mask_mesh, tags
from hybrid.problems.ifp import OuterBoundary, TissueProperties

pytestmark = pytest.mark.mpi
COMM = MPI.COMM_WORLD
TUMOUR = TissueProperties.defaults("tumour")


@pytest.fixture
def disc_images(centred_grid):
    """``disc_images()``: tumour mask and a Ktrans map [1/min] (0.6 in a rim of ``rim_mm``, 0.2
    inside, NaN outside) on a centred grid, and its affine [mm]."""
    def images(n=48, voxel_mm=0.25, radius_mm=4.0, rim_mm=1.0):
        affine, x, y = centred_grid(n, voxel_mm)
        r = np.hypot(x, y)
        mask = r <= radius_mm
        ktrans = np.where(r > radius_mm - rim_mm, 0.6, 0.2)
        ktrans[~mask] = np.nan
        return mask[:, :, None], ktrans[:, :, None], affine

    return images


def region_values(domain, function, tag) -> np.ndarray:
    cells = domain.cell_tags.find(tag)
    return function.x.array[function.function_space.dofmap.list[cells].ravel()]


def test_ktrans_scaling_keeps_the_tumour_mean_and_the_rim_core_contrast(disc_images):
    mask, ktrans, affine = disc_images()
    domain = mask_mesh(COMM, mask, affine, 4e-4, host=False)
    exchange, _, stats = vascular_exchange_from_ktrans(domain, ktrans, affine, TUMOUR)
    assert region_mean(exchange, domain, tags.TUMOUR) == pytest.approx(TUMOUR.vascular_exchange, rel=1e-10)
    # the traced outline is smoothed: a few edge cells have midpoints in voxels outside the mask
    assert 0.98 < stats["tumour_volume_fraction_with_ktrans"] < 1.0
    scales = np.unique(np.round(exchange.x.array / TUMOUR.vascular_exchange, 12))
    gathered = np.unique(np.concatenate(COMM.allgather(scales)))
    mean = stats["mean_tumour_ktrans_per_min"]
    np.testing.assert_allclose(gathered, sorted([0.2 / mean, 0.6 / mean, 1.0]), rtol=1e-10)


def test_uniform_ktrans_reproduces_the_region_solve(disc_images):
    mask, ktrans, affine = disc_images()
    ktrans[np.isfinite(ktrans)] = 0.35
    domain = mask_mesh(COMM, mask, affine, 4e-4, host=False)
    exchange, _, _ = vascular_exchange_from_ktrans(domain, ktrans, affine, TUMOUR)
    with_map = solve_ifp(domain, TUMOUR, OuterBoundary(), fields={"vascular_exchange": exchange})
    plain = solve_ifp(domain, TUMOUR, OuterBoundary())
    np.testing.assert_allclose(with_map.pressure.x.array, plain.pressure.x.array, rtol=1e-8, atol=1e-6)


def test_map_without_tumour_values_is_rejected(disc_images):
    mask, ktrans, affine = disc_images()
    domain = mask_mesh(COMM, mask, affine, 4e-4, host=False)
    with pytest.raises(ValueError, match="no finite value"):
        vascular_exchange_from_ktrans(domain, np.full_like(ktrans, np.nan), affine, TUMOUR)
    with pytest.raises(ValueError, match="zero over the tumour"):
        vascular_exchange_from_ktrans(domain, np.zeros_like(ktrans), affine, TUMOUR)


def test_map_that_misses_the_tumour_is_rejected_naming_the_slice(disc_images):
    """Finite Ktrans [1/min] on an affine 20 mm off the mesh: no tumour cell has a value, so one
    ValueError names the map and the slice (no None tumour mean, no unscaled table Lp S/V)."""
    mask, ktrans, affine = disc_images()
    domain = mask_mesh(COMM, mask, affine, 4e-4, host=False)
    shifted = affine.copy()
    shifted[0, 3] += 20.0   # [mm]
    with pytest.raises(ValueError, match=r"the Ktrans map K\.nii\.gz has no finite value at any tumour cell "
                                         r"\(slice_index 0\): its affine or slice_index"):
        vascular_exchange_from_ktrans(domain, ktrans, shifted, TUMOUR, label="Ktrans map K.nii.gz")


HOST = TissueProperties.defaults("host")


def test_each_region_is_normalised_by_its_own_mean_ktrans(disc_images):
    """Host Ktrans 0.1/min around a tumour of mean ~0.35/min: the host keeps its own table Lp S/V on
    average (not 0.1/0.35 of it), so the tumour/host contrast is the table's, counted once."""
    mask, ktrans, affine = disc_images()
    ktrans[~mask] = 0.1
    domain = mask_mesh(COMM, mask, affine, 4e-4, host=True)
    exchange, _, stats = vascular_exchange_from_ktrans(domain, ktrans, affine, TUMOUR, HOST)
    assert region_mean(exchange, domain, tags.TUMOUR) == pytest.approx(TUMOUR.vascular_exchange, rel=1e-10)
    assert region_mean(exchange, domain, tags.HOST) == pytest.approx(HOST.vascular_exchange, rel=1e-10)
    assert stats["mean_host_ktrans_per_min"] == pytest.approx(0.1, rel=0.05)


def test_cells_without_ktrans_keep_the_region_table_value(disc_images):
    """Ktrans fitted in the tumour mask only (NaN outside): host cells keep the host table Lp S/V
    exactly instead of inheriting the tumour-edge Ktrans by nearest-neighbour fill."""
    mask, ktrans, affine = disc_images()
    domain = mask_mesh(COMM, mask, affine, 4e-4, host=True)
    exchange, _, stats = vascular_exchange_from_ktrans(domain, ktrans, affine, TUMOUR, HOST)
    np.testing.assert_allclose(region_values(domain, exchange, tags.HOST), HOST.vascular_exchange, rtol=1e-14)
    assert stats["host_volume_fraction_with_ktrans"] < 0.05   # host cells on the tumour's edge voxels
    assert region_mean(exchange, domain, tags.TUMOUR) == pytest.approx(TUMOUR.vascular_exchange, rel=1e-10)
