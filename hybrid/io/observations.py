"""Readers of ``hybrid synthesize`` outputs into the records of :mod:`hybrid.records` (numpy only).

- :func:`read_drug_series`: a 4-D drug image (``observations.nii.gz``, total drug [mol/m^3 of
  tissue], or ``released_fraction.nii.gz`` [1]) with its sidecar ``FrameTimes_s`` [s] ->
  :class:`~hybrid.records.Observations`; the noise sd is the sidecar's ``NoiseRelativeSD`` times
  the largest |observed value| (synthesize scales it by the noise-free maximum; reported only).
- :func:`read_truth`: ``truth.json`` -> :class:`~hybrid.records.Truth` (every scalar parameter,
  by its path in the JSON, e.g. ``release_rate`` or ``carriers.liposome.diffusivity``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hybrid.io.nifti import read_dce_series
from hybrid.records import ObservationOperator, Observations, Truth, VoxelGrid

__all__ = ["read_drug_series", "read_truth"]

UNITS = {"total_drug": "mol/m^3", "released_fraction": "1"}


def read_drug_series(path: str | Path, quantity: str, operator: ObservationOperator) -> Observations:
    """The 4-D ``quantity`` series at ``path`` (frame times from its sidecar) as Observations."""
    if quantity not in UNITS:
        raise ValueError(f"{path}: quantity must be one of {', '.join(UNITS)}, got {quantity!r}")
    series = read_dce_series(path)
    side_quantity = series.metadata.get("Quantity", quantity)
    if side_quantity != quantity:
        raise ValueError(f"{path}: its sidecar says Quantity {side_quantity!r}, expected {quantity!r}; "
                         "point the configuration at the matching `hybrid synthesize` file")
    relative = float(series.metadata.get("NoiseRelativeSD", 0.0))
    noise_sd = relative * float(np.nanmax(np.abs(series.data), initial=0.0))
    return Observations(quantity, UNITS[quantity], VoxelGrid(series.affine_mm, series.data.shape[:3]),
                        series.axis, series.data, noise_sd, operator)


def read_truth(path: str | Path) -> Truth:
    """The scalar parameters (value, unit) of a ``hybrid synthesize`` truth.json, keyed by their
    dotted path below ``parameters`` (``release_rate``, ``tumour.hydraulic_conductivity``, ...)."""
    try:
        document = json.loads(Path(path).read_text())
        parameters = document["parameters"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a `hybrid synthesize` truth.json ({exc}); point [data] truth at one "
                         "or leave it out") from None
    found: dict[str, tuple[float, str]] = {}

    def walk(node, prefix):
        if isinstance(node, dict) and "value" in node and "unit" in node:
            if isinstance(node["value"], (int, float)) and not isinstance(node["value"], bool):
                found[prefix] = (float(node["value"]), node["unit"])
        elif isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else key)
    walk(parameters, "")
    return Truth(found)
