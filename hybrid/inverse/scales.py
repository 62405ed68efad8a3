"""Nondimensionalisation: reference scales that make every network input and output O(1).

A PINN works on x~ = x / length, t~ = t / time, c~ = c / concentration, p~ = p / pressure.
Residuals are computed in SI (through the rate laws of :mod:`hybrid.problems`) and divided by
their own natural scale, so each loss term is O(1) whatever the units.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Scales"]


@dataclass(frozen=True)
class Scales:
    """Reference values: ``length`` [m], ``time`` [s], ``concentration`` [mol/m^3], ``pressure`` [Pa]."""

    length: float = 1.0
    time: float = 1.0
    concentration: float = 1.0
    pressure: float = 1.0

    def __post_init__(self):
        for name in ("length", "time", "concentration", "pressure"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"scale {name} must be a number > 0, got {value!r}")
