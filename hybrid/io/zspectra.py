"""Measured Z-spectra tables in the acidoCEST CSV layout (JCardenasRdz/acidoCEST_Machine_Learning).

One row per sample: ``pH, Conc(mM), ApproT1(sec), Temp, SatPower(uT), SatTime(ms)``, then the raw
signal at the saturation offsets named in the header row [ppm] (a far-off reference such as
100 ppm included). A table may hold the same vials at several saturation powers (``SatPower(uT)``);
readers then select one power."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

__all__ = ["POWER_TOL_UT", "read_zspectra_csv", "write_zspectra_csv"]

_COLUMNS = ("pH", "Conc(mM)", "ApproT1(sec)", "Temp", "SatPower(uT)", "SatTime(ms)")
POWER_TOL_UT = 1e-3
"""Saturation powers closer than this [uT] are the same power."""


def read_zspectra_csv(path: str | Path, *, keep_reference: bool = True, reference_beyond_ppm: float = 15.0,
                      power_uT: float | None = None):
    """(offsets [ppm], pH, approximate T1 [s], raw signal (samples, offsets)) from ``path``, rows in
    file order; without ``keep_reference`` the offsets beyond +-``reference_beyond_ppm`` are
    dropped. ``power_uT``: keep only the rows saturated at that B1 [uT]; required when the table
    holds more than one saturation power (a calibration holds for one power only)."""
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
    power = data[:, _COLUMNS.index("SatPower(uT)")]
    present = ", ".join(f"{p:g}" for p in np.unique(power))
    if power_uT is None:
        if np.ptp(power) > POWER_TOL_UT:
            raise ValueError(f"{path} holds spectra at saturation powers {present} uT; select one (power_uT; "
                             "for hybrid maps: SaturationB1_T [T] in the CEST series sidecar)")
        rows_kept = np.ones(power.size, bool)
    else:
        rows_kept = np.abs(power - power_uT) <= POWER_TOL_UT
        if not rows_kept.any():
            raise ValueError(f"{path} has no spectra at saturation power {power_uT:g} uT (SatPower(uT) holds "
                             f"{present} uT); add the calibration vials measured at {power_uT:g} uT")
    data = data[rows_kept]
    keep = np.ones(offsets.size, bool) if keep_reference else np.abs(offsets) < reference_beyond_ppm
    return offsets[keep], data[:, 0], data[:, 2], data[:, len(_COLUMNS):][:, keep]


def write_zspectra_csv(path: str | Path, offsets_ppm, ph, signal, *, concentration_mM, t1_s, temperature_C: float,
                       power_uT: float, saturation_time_ms: float) -> Path:
    """Write raw spectra as an acidoCEST table: ``signal`` (samples, offsets) at one saturation
    power [uT], or (powers, samples, offsets) with ``power_uT`` one value per power (rows: every
    sample at the first power, then at the next). ``concentration_mM`` and ``t1_s`` are scalars or one
    value per sample. Returns ``path``."""
    signal = np.asarray(signal, dtype=float)
    powers = np.atleast_1d(np.asarray(power_uT, dtype=float))
    stacked = signal.reshape((powers.size, -1, signal.shape[-1]))
    ph = np.asarray(ph, dtype=float).ravel()
    if stacked.shape[1] != ph.size or signal.shape[-1] != np.size(offsets_ppm):
        raise ValueError(f"signal has shape {signal.shape} for {powers.size} power(s), {ph.size} pH values and "
                         f"{np.size(offsets_ppm)} offsets; give (powers, samples, offsets)")
    per_sample = [np.broadcast_to(np.asarray(v, dtype=float), ph.shape) for v in (concentration_mM, t1_s)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(list(_COLUMNS) + [f"{v:g}" for v in np.asarray(offsets_ppm, dtype=float)])
        for power, spectra in zip(powers, stacked):
            for i, spectrum in enumerate(spectra):
                writer.writerow([f"{ph[i]:g}", f"{per_sample[0][i]:g}", f"{per_sample[1][i]:g}", f"{temperature_C:g}",
                                 f"{power:g}", f"{saturation_time_ms:g}"] + [repr(float(v)) for v in spectrum])
    return path
