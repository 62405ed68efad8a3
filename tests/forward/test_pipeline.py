"""`run_forward` for every geometry the configuration accepts (serial; the CLI test covers MPI)."""

import json

import pytest

from hybrid.config import forward_config_from_dict
from hybrid.pipeline import run_forward


@pytest.mark.parametrize("geometry, boundary, has_closed_form", [
    ({"shape": "slab", "tumour_radius": 2e-3, "mesh_size": 1e-4}, {}, True),
    ({"shape": "disc", "tumour_radius": 2e-3, "host_thickness": 1e-3, "mesh_size": 2.5e-4}, {}, True),
    ({"shape": "krogh", "mesh_size": 8e-6}, {"type": "no_flux"}, False),
    ({"shape": "vessels", "mesh_size": 15e-6, "n_vessels": 3, "seed": 1}, {"type": "robin", "robin_coefficient": 1e-9},
     False),
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
