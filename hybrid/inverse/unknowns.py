"""Unknowns of an inverse problem: bounded scalars and fields.

A positive unknown is learned in log space within bounds: ``value = exp(log lo + (log hi - log lo)
sigmoid(theta))``, so it never leaves [lo, hi], never changes sign, and equal steps in theta are
equal relative changes. A signed unknown (e.g. a pressure) uses the linear map
``lo + (hi - lo) sigmoid(theta)``. A field unknown is a small network with the same bounded map
applied pointwise.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hybrid.inverse.networks import FourierFeatureMLP

__all__ = ["BoundedScalar", "BoundedField"]


def _check_bounds(name: str, lower: float, upper: float, log: bool) -> None:
    if not (math.isfinite(lower) and math.isfinite(upper) and lower < upper):
        raise ValueError(f"unknown {name!r}: bounds must be finite with lower < upper, got [{lower}, {upper}]")
    if log and lower <= 0:
        raise ValueError(f"unknown {name!r} is positive (log space): its lower bound must be > 0, got {lower}")


class _BoundedMap(nn.Module):
    def __init__(self, name: str, unit: str, lower: float, upper: float, log: bool):
        super().__init__()
        _check_bounds(name, lower, upper, log)
        self.name, self.unit, self.log = name, unit, log
        self.lower, self.upper = float(lower), float(upper)
        self._lo = math.log(lower) if log else float(lower)
        self._hi = math.log(upper) if log else float(upper)

    def _to_raw(self, value: float) -> float:
        if not self.lower < value < self.upper:
            raise ValueError(f"unknown {self.name!r}: initial value {value} must lie strictly inside "
                             f"[{self.lower:g}, {self.upper:g}] {self.unit}")
        s = ((math.log(value) if self.log else value) - self._lo) / (self._hi - self._lo)
        return math.log(s / (1.0 - s))

    def _from_raw(self, raw: torch.Tensor) -> torch.Tensor:
        return self._from_fraction(torch.sigmoid(raw))

    def _from_fraction(self, fraction: torch.Tensor) -> torch.Tensor:
        """The value at ``fraction`` in [0, 1] of the (log) range between the bounds."""
        inner = self._lo + (self._hi - self._lo) * fraction
        return torch.exp(inner) if self.log else inner


class BoundedScalar(_BoundedMap):
    """One scalar unknown ``name`` [``unit``] in [lower, upper]; ``initial`` defaults to the
    geometric (log) or arithmetic mean of the bounds. Call it to get the value (0-d tensor)."""

    def __init__(self, name: str, unit: str, lower: float, upper: float, *, initial: float | None = None,
                 log: bool = True):
        super().__init__(name, unit, lower, upper, log)
        if initial is None:
            initial = math.sqrt(lower * upper) if log else 0.5 * (lower + upper)
        self.raw = nn.Parameter(torch.tensor(self._to_raw(float(initial)), dtype=torch.float64))

    def forward(self) -> torch.Tensor:
        return self._from_raw(self.raw)

    def position(self) -> torch.Tensor:
        """Where the value lies in its (log) range, from -1 (lower bound) to 1 (upper bound), 0-d."""
        return 2.0 * torch.sigmoid(self.raw) - 1.0

    def value_at(self, position: torch.Tensor) -> torch.Tensor:
        """The values [unit] at ``position`` (a tensor of positions in [-1, 1], as :meth:`position`)."""
        return self._from_fraction(0.5 * (position + 1.0))


class BoundedField(_BoundedMap):
    """A field unknown ``name`` [``unit``] of the nondimensional coordinates, bounded pointwise;
    a small Fourier-feature network (``width`` x ``depth``) starting near the bounds' mean."""

    def __init__(self, name: str, unit: str, lower: float, upper: float, dim: int, *, log: bool = True,
                 width: int = 32, depth: int = 2, features: int = 8, sigma: float = 1.0,
                 generator: torch.Generator | None = None):
        super().__init__(name, unit, lower, upper, log)
        self.network = FourierFeatureMLP(dim, 1, width=width, depth=depth, features=features, sigma=sigma,
                                         generator=generator)
        with torch.no_grad():   # start at the middle of the range: raw output 0
            self.network.layers[-1].weight.mul_(0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._from_raw(self.network(x))
