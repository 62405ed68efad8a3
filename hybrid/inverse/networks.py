"""Networks for the state fields: an MLP on random Fourier features of the (nondimensional) inputs.

Fourier features ``[sin(2 pi x B), cos(2 pi x B), x]`` with a fixed Gaussian matrix B of standard
deviation ``sigma`` counter the spectral bias of plain MLPs (Tancik et al. 2020; Wang, Wang &
Perdikaris 2021): choose ``sigma`` about the number of features of the field across the
nondimensional domain (1-2 for a smooth IFP plateau, more for sharp rims).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["FourierFeatureMLP", "STATE_NETWORK", "glorot_init"]

# default shape of the drug state networks (space-time fields): hidden width and depth, number of
# Fourier features and their scale sigma (nondimensional inputs)
STATE_NETWORK = {"width": 64, "depth": 4, "features": 32, "sigma": 1.0}


def glorot_init(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """Glorot-uniform weights drawn from ``generator`` and zero biases for every nn.Linear in
    ``module`` (torch's default initialisation draws from the global random state instead)."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            bound = math.sqrt(6.0 / (layer.in_features + layer.out_features))
            with torch.no_grad():
                layer.weight.copy_(torch.rand(layer.weight.shape, generator=generator) * 2 * bound - bound)
                layer.bias.zero_()


class FourierFeatureMLP(nn.Module):
    """``in_dim`` -> ``out_dim`` MLP (``depth`` hidden layers of ``width``, tanh) on
    ``features`` random Fourier features of scale ``sigma`` (0 features: a plain MLP).

    ``generator`` fixes B and the initial weights (seeded runs are reproducible).
    """

    def __init__(self, in_dim: int, out_dim: int = 1, *, width: int = 64, depth: int = 4,
                 features: int = 32, sigma: float = 1.0, generator: torch.Generator | None = None):
        super().__init__()
        if depth < 1 or width < 1:
            raise ValueError(f"need depth >= 1 and width >= 1, got depth={depth}, width={width}")
        self.register_buffer("frequencies", torch.randn(in_dim, features, generator=generator) * sigma)
        layers, size = [], in_dim + 2 * features
        for _ in range(depth):
            layers += [nn.Linear(size, width), nn.Tanh()]
            size = width
        layers.append(nn.Linear(size, out_dim))
        self.layers = nn.Sequential(*layers)
        glorot_init(self.layers, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.frequencies.shape[1]:
            angle = 2.0 * math.pi * x @ self.frequencies
            x = torch.cat([torch.sin(angle), torch.cos(angle), x], dim=-1)
        return self.layers(x)
