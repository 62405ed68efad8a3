"""PDE residuals of the PINN vanish on exact solutions (float64): the Baxter-Jain closed form for
the Darcy-Starling pressure and closed-form / manufactured solutions of the two drug equations."""

import math

import numpy as np
import pytest
import torch

from hybrid.inverse.residuals import DrugExchange, darcy_starling_residual, transport_residuals
from hybrid.problems.exact import baxter_jain_pressure
from hybrid.problems.pharmacokinetics import PlasmaCurve
from hybrid.problems.uptake import linear_uptake

R = 2e-3            # m
K = 4.0e-13         # m^2/(Pa s): alpha = R sqrt(Lp S/V / K) = 4.4, a visible rim
LPSV = 1.9e-6       # 1/(Pa s)  (Lp S/V)
PE = 1500.0         # Pa


def _bj_torch(dim, x):
    """Baxter-Jain pressure [Pa] at nondimensional x (n, dim), written in torch."""
    alpha = R * math.sqrt(LPSV / K)
    r = x.norm(dim=1)
    shape = torch.cosh(alpha * r) / math.cosh(alpha) if dim == 1 else \
        torch.special.i0(alpha * r) / torch.special.i0(torch.tensor(alpha, dtype=x.dtype))
    return PE * (1.0 - shape)


@pytest.mark.parametrize("dim", [1, 2])
def test_darcy_starling_residual_of_baxter_jain_is_zero(dim):
    generator = torch.Generator().manual_seed(1)
    x = (torch.rand(200, dim, generator=generator, dtype=torch.float64) - 0.5) * 1.2
    x = x[x.norm(dim=1) < 1.0].requires_grad_(True)
    p = _bj_torch(dim, x)
    # the torch formula is the project's closed form
    reference = baxter_jain_pressure(dim, x.detach().norm(dim=1).numpy() * R, R, R * math.sqrt(LPSV / K), PE)
    np.testing.assert_allclose(p.detach().numpy(), reference, rtol=1e-12, atol=1e-9)
    residual = darcy_starling_residual(p, x, R, conductivity=K, vascular_exchange=LPSV, effective_pressure=PE)
    scale = LPSV * PE                                   # size of each term [1/s]
    assert residual.abs().max().item() < 1e-9 * scale
    # and a wrong conductivity leaves an O(1) residual: the check can fail
    wrong = darcy_starling_residual(_bj_torch(dim, x), x, R, conductivity=1.5 * K, vascular_exchange=LPSV,
                                    effective_pressure=PE)
    assert wrong.abs().max().item() > 0.05 * scale


def test_darcy_starling_residual_with_a_conductivity_field():
    """div(K grad p) with K(x) = K0 (1 + x): p = x^2 in 1-D gives K0 (2 (1 + x) + 2 x) / L^2."""
    x = torch.linspace(-0.9, 0.9, 31, dtype=torch.float64).reshape(-1, 1).requires_grad_(True)
    p = (x**2).reshape(-1)
    conductivity = K * (1.0 + x.reshape(-1))
    residual = darcy_starling_residual(p, x, R, conductivity=conductivity, vascular_exchange=0.0,
                                       effective_pressure=0.0)
    expected = K * (2.0 * (1.0 + x) + 2.0 * x).reshape(-1) / R**2
    torch.testing.assert_close(residual, expected.detach(), rtol=1e-12, atol=0.0)


def test_transport_residuals_of_the_release_closed_form_are_zero():
    """Slab |x| < L, zero drug at the boundary: C_L = c0 cos(pi x / 2L) e^{-bL t} and
    C_F = a(t) cos(pi x / 2L), a = k c0 (e^{-bL t} - e^{-bF t}) / (bF - bL), with
    bL = D_L mu + k_rel, bF = D_F mu + k_up, mu = (pi / 2L)^2."""
    L, T, c0 = 1e-3, 3600.0, 2e-3
    D_L, D_F, k_rel, k_up = 1e-12, 1.5e-10, 2e-4, 5e-4
    mu = (math.pi / (2 * L)) ** 2
    b_L, b_F = D_L * mu + k_rel, D_F * mu + k_up
    generator = torch.Generator().manual_seed(2)
    xt = torch.rand(300, 2, generator=generator, dtype=torch.float64)
    xt[:, 0] = 2 * xt[:, 0] - 1
    xt.requires_grad_(True)
    mode = torch.cos(math.pi * xt[:, 0] / 2)
    t = xt[:, 1] * T
    c_lipo = c0 * mode * torch.exp(-b_L * t)
    c_free = k_rel * c0 * (torch.exp(-b_L * t) - torch.exp(-b_F * t)) / (b_F - b_L) * mode
    kwargs = dict(diffusivity_lipo=D_L, diffusivity_free=D_F, uptake=lambda c: linear_uptake(c, k_up))
    r_lipo, r_free = transport_residuals(c_lipo, c_free, xt, L, T, release_rate=k_rel, **kwargs)
    scale = k_rel * c0                                  # mol/(m^3 s)
    assert r_lipo.abs().max().item() < 1e-10 * scale
    assert r_free.abs().max().item() < 1e-10 * scale
    _, r_free_wrong = transport_residuals(c_lipo, c_free, xt, L, T, release_rate=1.2 * k_rel, **kwargs)
    assert r_free_wrong.abs().max().item() > 0.05 * scale


def test_transport_residuals_with_vascular_exchange_and_advection():
    """Uniform tissue filling from a constant plasma level through the Kedem-Katchalsky flux
    (Pe = 0): C = phi c_p (1 - exp(-PS t / phi)); a uniform field also has no advective residual
    under a divergence-free flux."""
    T, phi, c_p, ps = 3600.0, 0.4, 0.01, 3e-4
    xt = torch.rand(100, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64).requires_grad_(True)
    filling = phi * c_p * (1.0 - torch.exp(-ps * xt[:, 2] * T / phi))
    exchange = DrugExchange(PlasmaCurve.constant(c_p), ps)
    r_lipo, r_free = transport_residuals(
        filling, filling, xt, 1e-3, T, diffusivity_lipo=1e-12, diffusivity_free=1e-10, release_rate=0.0,
        uptake=lambda c: 0.0 * c, interstitial_fraction=phi, exchange_lipo=exchange, exchange_free=exchange,
        darcy_flux=torch.full((100, 2), 1e-8, dtype=torch.float64), flux_divergence=0.0)
    scale = ps * c_p
    assert r_lipo.abs().max().item() < 1e-12 * scale and r_free.abs().max().item() < 1e-12 * scale


def test_transport_residuals_of_advected_and_lymph_cleared_profiles_are_zero():
    """Constant Darcy flux u (div u = 0), no diffusion: each species is carried at its own speed
    (liposomes hindered by f_L) and cleared by the lymphatic sink at rate phi_L / phi:
    C = g(x - f u t / phi) exp(-phi_L t / phi)."""
    L, T, phi, u, f_L, sink, c0, w = 1e-3, 3600.0, 0.3, 5e-8, 0.4, 2e-5, 1e-3, 3e-4
    xt = torch.rand(200, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    xt[:, 0] = 2 * xt[:, 0] - 1
    xt.requires_grad_(True)
    x, t = xt[:, 0] * L, xt[:, 1] * T
    decay = torch.exp(-sink * t / phi)
    c_lipo = c0 * torch.exp(-((x - f_L * u * t / phi) / w) ** 2) * decay
    c_free = c0 * torch.exp(-((x - u * t / phi) / w) ** 2) * decay
    flux = torch.full((200, 1), u, dtype=torch.float64)
    kwargs = dict(diffusivity_lipo=0.0, diffusivity_free=0.0, release_rate=0.0, uptake=lambda c: 0.0 * c,
                  interstitial_fraction=phi, darcy_flux=flux, flux_divergence=0.0, lymphatic_sink=sink)
    r_lipo, r_free = transport_residuals(c_lipo, c_free, xt, L, T, hindrance=f_L, **kwargs)
    scale = c0 * u / phi / w                            # size of the advection term
    assert r_lipo.abs().max().item() < 1e-10 * scale and r_free.abs().max().item() < 1e-10 * scale
    r_lipo, _ = transport_residuals(c_lipo, c_free, xt, L, T, hindrance=1.0, **kwargs)
    assert r_lipo.abs().max().item() > 0.1 * scale     # unhindered liposomes would not match


def test_bound_free_drug_slows_the_free_drug_by_one_plus_b():
    """With B bound per unbound, uniform free drug taken up at k_up decays as exp(-k_up t / (1 + B))."""
    T, B, k_up, c0 = 3600.0, 2.0, 5e-4, 1e-3
    xt = torch.rand(50, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64).requires_grad_(True)
    free = c0 * torch.exp(-k_up * xt[:, 1] * T / (1 + B))
    kwargs = dict(diffusivity_lipo=1e-12, diffusivity_free=1e-10, release_rate=0.0,
                  uptake=lambda c: linear_uptake(c, k_up))
    _, r_free = transport_residuals(0.0 * free, free, xt, 1e-3, T, free_binding_ratio=B, **kwargs)
    assert r_free.abs().max().item() < 1e-12 * k_up * c0
    _, r_free = transport_residuals(0.0 * free, free, xt, 1e-3, T, **kwargs)
    assert r_free.abs().max().item() > 0.1 * k_up * c0
