"""Domains of the PINN in nondimensional coordinates x~ = x / length (centred at the origin).

Each domain samples interior points, tells which points are inside (voxels only average the part
inside the tissue, as the FEM's observe_on_grid does) and gives a boundary factor b(x~) that is 0
on the boundary and positive inside, used for exact Dirichlet conditions: u = g + b N.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Box", "Ball"]


@dataclass(frozen=True)
class Box:
    """The cube [-half_width, half_width]^dim [m] (dim 1: a slab)."""

    dim: int
    half_width: float

    @property
    def length(self) -> float:
        """Length scale [m] that maps the domain onto [-1, 1]^dim."""
        return self.half_width

    def sample(self, n: int, generator: torch.Generator, dtype=torch.float64, device="cpu") -> torch.Tensor:
        return (2.0 * torch.rand(n, self.dim, generator=generator, dtype=dtype) - 1.0).to(device)

    def sample_boundary(self, n: int, generator: torch.Generator, dtype=torch.float64):
        """``n`` points on the boundary (faces chosen uniformly) and their outward unit normals."""
        x = 2.0 * torch.rand(n, self.dim, generator=generator, dtype=dtype) - 1.0
        face = torch.randint(self.dim, (n,), generator=generator)
        side = torch.randint(2, (n,), generator=generator).to(dtype) * 2.0 - 1.0
        normals = torch.zeros(n, self.dim, dtype=dtype)
        normals[torch.arange(n), face] = side
        x[torch.arange(n), face] = side
        return x, normals

    def contains(self, x: torch.Tensor) -> torch.Tensor:
        return (x.abs() <= 1.0).all(dim=-1)

    def boundary_factor(self, x: torch.Tensor) -> torch.Tensor:
        return torch.prod(1.0 - x * x, dim=-1, keepdim=True)


@dataclass(frozen=True)
class Ball:
    """The ball |x| <= radius [m] in dim 1, 2 or 3 (2: a disc)."""

    dim: int
    radius: float

    @property
    def length(self) -> float:
        return self.radius

    def sample(self, n: int, generator: torch.Generator, dtype=torch.float64, device="cpu") -> torch.Tensor:
        direction = torch.randn(n, self.dim, generator=generator, dtype=dtype)
        direction = direction / direction.norm(dim=1, keepdim=True)
        radius = torch.rand(n, 1, generator=generator, dtype=dtype) ** (1.0 / self.dim)
        return (direction * radius).to(device)

    def sample_boundary(self, n: int, generator: torch.Generator, dtype=torch.float64):
        """``n`` points on the sphere |x~| = 1 and their outward unit normals (the points themselves)."""
        direction = torch.randn(n, self.dim, generator=generator, dtype=dtype)
        direction = direction / direction.norm(dim=1, keepdim=True)
        return direction, direction.clone()

    def contains(self, x: torch.Tensor) -> torch.Tensor:
        return (x * x).sum(dim=-1) <= 1.0

    def boundary_factor(self, x: torch.Tensor) -> torch.Tensor:
        return 1.0 - (x * x).sum(dim=-1, keepdim=True)
