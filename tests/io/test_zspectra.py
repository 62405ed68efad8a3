"""The acidoCEST Z-spectra table reader: columns, reference offsets, refusals."""

from pathlib import Path

import numpy as np
import pytest

from hybrid.io.zspectra import read_zspectra_csv

BOX4 = Path(__file__).parents[1] / "data" / "acidocest" / "Box4_37C_SatP3SatT6002.csv"


def test_reads_the_measured_table_with_and_without_the_reference():
    offsets, ph, t1, signal = read_zspectra_csv(BOX4)
    assert offsets[0] == 100.0 and signal.shape == (ph.size, offsets.size) == (28, offsets.size)
    assert 6.2 < ph.min() and ph.max() < 7.4 and set(np.round(t1, 2)) <= {3.4, 1.4, 0.86, 0.6}
    near, _, _, near_signal = read_zspectra_csv(BOX4, keep_reference=False)
    assert np.abs(near).max() < 15.0 and near.size == offsets.size - 1
    np.testing.assert_array_equal(near_signal, signal[:, 1:])


@pytest.mark.parametrize("text, message", [("a,b\n1,2\n", "not an acidoCEST"),
                                           ("pH,Conc(mM),ApproT1(sec),Temp,SatPower(uT),SatTime(ms),5\n"
                                            "7,20,3,37,3,6000,x\n", "not a number")])
def test_refuses_other_tables(tmp_path, text, message):
    path = tmp_path / "table.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_zspectra_csv(path)
