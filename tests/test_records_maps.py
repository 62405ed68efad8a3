"""ParameterMaps, the record ``hybrid maps`` hands to its output stage and to an inversion."""

import numpy as np
import pytest

from hybrid.records import ParameterMaps, VoxelGrid


def _maps(**images):
    grid = VoxelGrid(np.diag([0.25, 0.25, 1.0, 1.0]), (4, 3, 1))
    mask = np.zeros(grid.shape, bool)
    mask[1:3, 1:, 0] = True
    units = {"Ktrans": "1/min", "pH": "pH", "ve": "fraction"}
    return ParameterMaps(grid, mask, images, {key: units[key] for key in images})


def test_known_maps_carry_ktrans_and_ph_on_the_same_grid():
    ktrans, ph = np.full((4, 3, 1), 0.2), np.full((4, 3, 1), 6.8)
    known = _maps(Ktrans=ktrans, pH=ph, ve=np.zeros((4, 3, 1))).known_maps()
    assert known.grid.shape == (4, 3, 1)
    assert known.ktrans_per_min is ktrans and known.ph is ph
    assert _maps(ve=np.zeros((4, 3, 1))).known_maps().ktrans_per_min is None


def test_maps_off_the_grid_or_without_unit_are_refused():
    with pytest.raises(ValueError, match=r"Ktrans shape \(4, 4, 1\) does not match grid \(4, 3, 1\)"):
        _maps(Ktrans=np.zeros((4, 4, 1)))
    grid = VoxelGrid(np.eye(4), (2, 2, 1))
    with pytest.raises(ValueError, match="no unit for map"):
        ParameterMaps(grid, np.ones((2, 2, 1), bool), {"T1": np.ones((2, 2, 1))}, {})
