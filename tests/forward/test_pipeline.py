"""`run_forward` for every geometry the configuration accepts (serial; the CLI test covers MPI)."""

import json

import pytest

from hybrid.config import forward_config_from_dict
from hybrid.commands.forward import run_forward


@pytest.mark.parametrize("geometry, boundary, has_closed_form", [
    ({"shape": "slab", "tumour_radius": 2e-3, "mesh_size": 1e-4}, {}, True),
    ({"shape": "disc", "tumour_radius": 2e-3, "host_thickness": 1e-3, "mesh_size": 2.5e-4}, {}, True),
    ({"shape": "krogh", "mesh_size": 8e-6}, {"type": "no_flux"}, False),
    ({"shape": "vessels", "mesh_size": 15e-6, "n_vessels": 3, "seed": 1}, {"type": "robin", "robin_coefficient": 1e-9},
     False),
    ({"shape": "disc", "tumour_radius": 2e-3, "mesh_size": 2.5e-4}, {"type": "robin", "robin_coefficient": 1e-10},
     True),
    ({"shape": "disc", "tumour_radius": 2e-3, "host_thickness": 1e-3, "mesh_size": 2.5e-4}, {"type": "no_flux"},
     True),
])
def test_run_forward_each_shape(tmp_path, geometry, boundary, has_closed_form):
    document = {"geometry": geometry, "tumour": {"lymphatic_filtration": 1e-6}, "boundary": boundary,
                "output": {"directory": str(tmp_path)}}
    run = run_forward(forward_config_from_dict(document))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["dofs"] == run.solution.dofs > 0
    assert 0 < summary["p_mean_tumour_Pa"] <= summary["p_max_Pa"]
    assert ("closed_form" in summary) == has_closed_form
    if has_closed_form:
        assert summary["closed_form"]["max_error_over_tumour_pe"] < 0.01
    assert (tmp_path / "ifp.xdmf").exists()


def test_run_forward_mask_geometry_with_ktrans_map(tmp_path, centred_grid):
    """`shape = "mask"` + `[images] ktrans`: paths relative to the TOML file, as a user writes them."""
    import numpy as np

    from hybrid.config import load_forward_config
    from hybrid.io.nifti import write_volume

    n, voxel_mm = 40, 0.25
    affine, x, y = centred_grid(n, voxel_mm)
    r = np.hypot(x, y)
    write_volume(tmp_path / "mask.nii.gz", (r <= 3.5)[:, :, None], affine, dtype=np.uint8)
    write_volume(tmp_path / "ktrans.nii.gz", np.where(r > 2.5, 0.6, 0.2)[:, :, None], affine)
    (tmp_path / "run.toml").write_text(
        '[geometry]\nshape = "mask"\nmask = "mask.nii.gz"\nmesh_size = 2.5e-4\nfield_of_view_host = true\n'
        '[images]\nktrans = "ktrans.nii.gz"\n[output]\ndirectory = "%s"\n' % (tmp_path / "out"))
    run = run_forward(load_forward_config(tmp_path / "run.toml"))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["images"]["host_volume_fraction_with_ktrans"] > 0.99
    assert summary["images"]["mean_tumour_ktrans_per_min"] > 0.2
    assert run.domain.geometry["host"] is True
    assert 0 < summary["p_mean_tumour_Pa"] < summary["tumour_effective_pressure_Pa"]


def test_run_forward_rejects_a_ktrans_map_that_misses_the_tumour(tmp_path, centred_grid):
    """`[images] ktrans` whose affine lies 20 mm off the disc: one ValueError naming the map and the
    slice, not a TypeError from logging a None tumour mean [1/min]."""
    import numpy as np

    from hybrid.io.nifti import write_volume

    affine, _, _ = centred_grid(16, 0.25)
    affine[0, 3] += 20.0   # [mm]
    write_volume(tmp_path / "ktrans.nii.gz", np.full((16, 16, 1), 0.3), affine)
    document = {"geometry": {"shape": "disc", "tumour_radius": 2e-3, "mesh_size": 5e-4},
                "images": {"ktrans": str(tmp_path / "ktrans.nii.gz")}, "output": {"directory": str(tmp_path / "out")}}
    with pytest.raises(ValueError, match=r"Ktrans map .*ktrans\.nii\.gz has no finite value at any tumour cell "
                                         r"\(slice_index 0\)"):
        run_forward(forward_config_from_dict(document))
