"""Measured Z-spectra tables in the acidoCEST CSV layout (JCardenasRdz/acidoCEST_Machine_Learning).

One row per sample: ``pH, Conc(mM), ApproT1(sec), Temp, SatPower(uT), SatTime(ms)``, then the raw
signal at the saturation offsets named in the header row [ppm] (a far-off reference such as
100 ppm included)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

__all__ = ["read_zspectra_csv"]

_COLUMNS = ("pH", "Conc(mM)", "ApproT1(sec)", "Temp", "SatPower(uT)", "SatTime(ms)")


def read_zspectra_csv(path: str | Path, *, keep_reference: bool = True, reference_beyond_ppm: float = 15.0):
    """(offsets [ppm], pH, approximate T1 [s], raw signal (samples, offsets)) from ``path``; without
    ``keep_reference`` the offsets beyond +-``reference_beyond_ppm`` are dropped."""
    path = Path(path)
    with path.open(newline="") as stream:
        rows = list(csv.reader(stream))
    if not rows or tuple(rows[0][:len(_COLUMNS)]) != _COLUMNS:
        raise ValueError(f"{path}: not an acidoCEST Z-spectra table (first columns {', '.join(_COLUMNS)})")
    try:
        offsets = np.array(rows[0][len(_COLUMNS):], dtype=float)
        data = np.array(rows[1:], dtype=float)
    except ValueError as exc:
        raise ValueError(f"{path}: a value is not a number ({exc})") from None
    keep = np.ones(offsets.size, bool) if keep_reference else np.abs(offsets) < reference_beyond_ppm
    return offsets[keep], data[:, 0], data[:, 2], data[:, len(_COLUMNS):][:, keep]
