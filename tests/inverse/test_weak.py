"""Weak residuals (hybrid/inverse/weak.py) on exact solutions: they vanish to quadrature accuracy
for the exact fields and not for perturbed ones, equal the test-function average of the strong
residual (the integration by parts has the right signs), and the quadrature converges at its
order; the TransportProblem and Trainer use them."""

import math

import numpy as np
import pytest
import torch

from hybrid.inverse import Ball, Box, DrugExchange, IFPProblem, Trainer, TrainingConfig, TransportProblem
from hybrid.inverse.residuals import transport_residuals
from hybrid.inverse.weak import SpaceTimeTestFunctions, weak_cell_drug_residual, weak_transport_residuals
from hybrid.problems.pharmacokinetics import PlasmaCurve
from hybrid.problems.uptake import linear_uptake

torch.set_num_threads(1)

L, T, C0 = 1e-3, 3600.0, 2e-3                     # m, s, mol/m^3
D_L, D_F, K_REL, K_UP = 1e-12, 1.5e-10, 2e-4, 5e-4
MU = 2 * (math.pi / (2 * L)) ** 2                   # -lap of the mode cos(pi x / 2L) cos(pi y / 2L) [1/m^2]
B_L, B_F = D_L * MU + K_REL, D_F * MU + K_UP
SCALE = K_REL * C0                                   # release term [mol/(m^3 s)]


def exact(xt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """C_L, C_F, C_I [mol/m^3] (n,) of the release closed form on the mode cos cos (2-D): decaying
    liposomes, free drug fed by release and taken up at k_up, cell drug the uptake's integral."""
    mode = torch.cos(math.pi * xt[:, 0] / 2) * torch.cos(math.pi * xt[:, 1] / 2)
    t = xt[:, -1] * T
    e_l, e_f = torch.exp(-B_L * t), torch.exp(-B_F * t)
    factor = K_REL * C0 / (B_F - B_L)
    c_cell = K_UP * factor * ((1 - e_l) / B_L - (1 - e_f) / B_F) * mode
    return C0 * mode * e_l, factor * (e_l - e_f) * mode, c_cell


KEYWORDS = dict(diffusivity_lipo=D_L, diffusivity_free=D_F, uptake=lambda c: linear_uptake(c, K_UP))


def test_weak_residuals_vanish_for_the_exact_solution_and_not_for_perturbed_ones():
    test = SpaceTimeTestFunctions(Ball(2, L), cells=8, time_cells=8)
    assert len(test) == 147 and test.points.shape == (len(test.index.unique()), 3)
    assert bool((test.points[:, :2].norm(dim=1) < 1).all() and (test.points[:, 2] > 0).all())
    c_lipo, c_free, c_cell = exact(test.points)
    r_lipo, r_free = weak_transport_residuals(test, c_lipo, c_free, L, T, release_rate=K_REL, **KEYWORDS)
    r_cell = weak_cell_drug_residual(test, c_cell, c_free, T, lambda c, _: linear_uptake(c, K_UP))
    for r in (r_lipo, r_free, r_cell):
        assert r.abs().max().item() < 1e-3 * SCALE
    # a wrong release rate, and fields perturbed by a bump growing to 10 % of C0 at T, leave residuals
    _, r_free = weak_transport_residuals(test, c_lipo, c_free, L, T, release_rate=1.2 * K_REL, **KEYWORDS)
    assert r_free.abs().max().item() > 0.05 * SCALE
    bump = 0.1 * C0 * torch.exp(-((test.points[:, 0] - 0.2) ** 2 + test.points[:, 1] ** 2) / 0.1) * test.points[:, 2]
    r_lipo, r_free = weak_transport_residuals(test, c_lipo + bump, c_free + bump, L, T, release_rate=K_REL, **KEYWORDS)
    assert r_lipo.abs().max().item() > 0.05 * SCALE and r_free.abs().max().item() > 0.05 * SCALE


def test_weak_residuals_with_vascular_exchange_vanish_for_the_filling_solution():
    """Uniform tissue filling from a constant plasma level (Kedem-Katchalsky, Pe = 0):
    C = phi c_p (1 - exp(-PS t / phi)) solves both drug equations without release."""
    phi, c_p, ps = 0.4, 0.01, 3e-4
    test = SpaceTimeTestFunctions(Box(2, L), cells=6, time_cells=8)
    filling = phi * c_p * (1.0 - torch.exp(-ps * test.points[:, 2] * T / phi))
    exchange = DrugExchange(PlasmaCurve.constant(c_p), ps)
    kwargs = dict(diffusivity_lipo=D_L, diffusivity_free=D_F, release_rate=0.0, uptake=lambda c: 0.0 * c,
                  interstitial_fraction=phi, exchange_lipo=exchange)
    r_lipo, r_free = weak_transport_residuals(test, filling, filling, L, T, exchange_free=exchange, **kwargs)
    assert r_lipo.abs().max().item() < 1e-3 * ps * c_p and r_free.abs().max().item() < 1e-3 * ps * c_p
    _, r_free = weak_transport_residuals(test, filling, filling, L, T, **kwargs)   # free drug without vessels
    assert r_free.abs().max().item() > 0.1 * ps * c_p


def _smooth_non_solution(xt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth fields that solve nothing: C_L, C_F [mol/m^3] (n,)."""
    x, y, t = xt[:, 0], xt[:, 1], xt[:, 2]
    c_lipo = C0 * torch.exp(-t) * (1 + 0.5 * torch.sin(2 * x + y))
    c_free = 0.1 * C0 * t * torch.exp(-(x - 0.3) ** 2 - 2 * y**2)
    return c_lipo, c_free


def test_weak_residual_is_the_test_function_average_of_the_strong_residual():
    """int [-C dpsi/dt - D C lap psi + s psi] = int (strong residual) psi: both sides on a fine rule."""
    test = SpaceTimeTestFunctions(Ball(2, L), cells=6, time_cells=4, subdivisions=4)
    c_lipo, c_free = _smooth_non_solution(test.points)
    weak = weak_transport_residuals(test, c_lipo, c_free, L, T, release_rate=K_REL, **KEYWORDS)
    xt = test.points.clone().requires_grad_(True)
    strong = transport_residuals(*_smooth_non_solution(xt), xt, L, T, release_rate=K_REL, **KEYWORDS)
    for r_weak, r_strong in zip(weak, strong):
        average = test.integrate(test.value, r_strong.detach()) / test.volume
        assert r_weak.abs().max().item() > 0.1 * SCALE   # not trivially zero
        np.testing.assert_allclose(r_weak.numpy(), average.numpy(), rtol=0, atol=1e-6 * r_weak.abs().max().item())


PHI, HINDRANCE = 0.4, 0.7
U0 = K_REL * L    # m/s: advection u C / L as large as the release term


def _flux(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth, non-uniform Darcy flux u [m/s] (n, 2) at nondimensional x and its divergence [1/s] (n,)."""
    u = U0 * torch.stack([1 + 0.5 * torch.sin(x[:, 0] + 2 * x[:, 1]), 0.3 * torch.cos(x[:, 0]) - x[:, 1]], dim=1)
    return u, U0 * (0.5 * torch.cos(x[:, 0] + 2 * x[:, 1]) - 1.0) / L


def test_weak_advection_is_the_test_function_average_of_the_strong_advection():
    """By parts, -int f C u . grad psi / phi equals int f div(u C) / phi psi: the weak residuals with a
    non-uniform flux are the test-function averages of the strong ones (which take u . grad C and
    C div u), and the flux changes them by more than a tenth of the release term."""
    test = SpaceTimeTestFunctions(Ball(2, L), cells=6, time_cells=4, subdivisions=4)
    c_lipo, c_free = _smooth_non_solution(test.points)
    u, divergence = _flux(test.points[:, :2])
    flow = dict(release_rate=K_REL, hindrance=HINDRANCE, interstitial_fraction=PHI, **KEYWORDS)
    weak = weak_transport_residuals(test, c_lipo, c_free, L, T, darcy_flux=u, **flow)
    still = weak_transport_residuals(test, c_lipo, c_free, L, T, **flow)
    xt = test.points.clone().requires_grad_(True)
    strong = transport_residuals(*_smooth_non_solution(xt), xt, L, T, darcy_flux=u, flux_divergence=divergence,
                                 **flow)
    for r_weak, r_still, r_strong in zip(weak, still, strong):
        assert (r_weak - r_still).abs().max().item() > 0.1 * SCALE
        average = test.integrate(test.value, r_strong.detach()) / test.volume
        np.testing.assert_allclose(r_weak.numpy(), average.numpy(), rtol=0, atol=1e-6 * r_weak.abs().max().item())


def test_weak_residual_vanishes_for_a_drifting_spreading_pulse_and_not_with_a_wrong_hindrance():
    """C_L = C0 w^2 / (w^2 + 4 D t) exp(-|x - v t|^2 / (w^2 + 4 D t) - k_rel t), v = f u / phi for a
    uniform flux u, solves the liposomal equation; with f = 1 instead of 0.7 it does not."""
    test = SpaceTimeTestFunctions(Ball(2, L), cells=8, time_cells=8)
    u = torch.tensor([[U0, 0.5 * U0]], dtype=torch.float64).expand(test.points.shape[0], 2)
    v, width2 = HINDRANCE * u[0] / PHI, (0.5 * L) ** 2
    t = test.points[:, 2] * T
    spread = width2 + 4 * D_L * t
    distance2 = ((test.points[:, :2] * L - v * t[:, None] + torch.tensor([0.2 * L, 0.0])) ** 2).sum(dim=1)
    c_lipo = C0 * width2 / spread * torch.exp(-distance2 / spread - K_REL * t)
    def r_lipo(hindrance):
        return weak_transport_residuals(test, c_lipo, 0.0 * c_lipo, L, T, release_rate=K_REL, darcy_flux=u,
                                        hindrance=hindrance, interstitial_fraction=PHI, **KEYWORDS)[0]
    assert r_lipo(HINDRANCE).abs().max().item() < 1e-3 * SCALE
    assert r_lipo(1.0).abs().max().item() > 0.05 * SCALE


@pytest.mark.parametrize("gauss", [1, 2])
def test_quadrature_converges_at_order_two_gauss(gauss):
    """Same test functions, each cell split into 1, 2, 4 pieces: the error of the weak residual of a
    smooth field (against 32 Gauss points per cell axis) falls as (1 / pieces)^(2 gauss)."""
    def residual(pieces):
        test = SpaceTimeTestFunctions(Ball(2, L), cells=6, time_cells=4, gauss=gauss, subdivisions=pieces)
        c_lipo, c_free = _smooth_non_solution(test.points)
        return torch.cat(weak_transport_residuals(test, c_lipo, c_free, L, T, release_rate=K_REL, **KEYWORDS))
    reference = residual(32 // gauss)
    errors = [(residual(pieces) - reference).abs().max().item() for pieces in (1, 2, 4)]
    orders = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert all(abs(order - 2 * gauss) < 0.3 for order in orders), orders


def test_space_and_time_subdivisions_split_their_own_axes():
    """A field linear in time and Gaussian in space: 3 Gauss points integrate its time factor
    exactly, so splitting only the time rule changes no residual (to rounding), while splitting only
    the space rule changes them as much as splitting both does, and to the same values."""
    def residual(space, in_time):
        test = SpaceTimeTestFunctions(Ball(2, L), cells=6, time_cells=4, gauss=3, subdivisions=space,
                                      time_subdivisions=in_time)
        bump = torch.exp(-(test.points[:, :2] ** 2).sum(dim=1) / 0.05) * (1.0 + 0.5 * test.points[:, 2])
        return torch.cat(weak_transport_residuals(test, C0 * bump, 0.3 * C0 * bump, L, T, release_rate=K_REL,
                                                  **KEYWORDS))
    plain = residual(1, 1)
    scale = plain.abs().max().item()
    assert (residual(1, 3) - plain).abs().max().item() < 1e-10 * scale
    assert (residual(3, 1) - plain).abs().max().item() > 1e-4 * scale
    assert (residual(3, 1) - residual(3, 3)).abs().max().item() < 1e-10 * scale
    assert torch.equal(residual(2, None), residual(2, 2))
    points = {split: len(SpaceTimeTestFunctions(Ball(2, L), cells=6, time_cells=4, subdivisions=split[0],
                                                time_subdivisions=split[1]).points) for split in ((1, 1), (1, 3), (3, 1))}
    assert (points[(1, 3)], points[(3, 1)]) == (3 * points[(1, 1)], 9 * points[(1, 1)])


def test_transport_problem_weak_terms_vanish_on_the_exact_solution():
    """The problem's own weak PDE terms (its coefficient plumbing: a callable release rate, cell
    drug) with the networks replaced by the exact fields: ~0, and O(1) with a wrong rate."""
    def build(rate):
        problem = TransportProblem(Ball(2, L), {"diffusivity_lipo": D_L, "diffusivity_free": D_F,
                                                "release_rate": lambda x, _: rate + 0.0 * x[:, 0],
                                                "uptake_rate": K_UP},
                                   end_time=T, concentration_scale=C0, boundary="free", cell_drug=True,
                                   generator=torch.Generator().manual_seed(0)).double()
        problem.use_weak_form(SpaceTimeTestFunctions(problem.geometry, cells=8, time_cells=8))
        problem.states = lambda xt: [c.reshape(-1, 1) for c in exact(xt)]
        return problem
    points = torch.zeros(1, 3, dtype=torch.float64)   # unused by the weak form
    relative = (SCALE * T / C0) ** 2                  # the terms are squared residuals / (C / T)
    terms = build(K_REL).loss_terms(points)
    assert set(terms) == {"pde_lipo", "pde_free", "pde_cell"}
    assert all(value.item() < 1e-6 * relative for value in terms.values())
    assert build(1.2 * K_REL).loss_terms(points)["pde_free"].item() > 1e-3 * relative


def test_trainer_weak_form_trains_without_resampling_and_refuses_what_it_cannot():
    problem = TransportProblem(Ball(2, L), {"diffusivity_lipo": D_L, "diffusivity_free": D_F, "release_rate": K_REL},
                               end_time=T, concentration_scale=C0, boundary="free", width=16, depth=2, features=8,
                               generator=torch.Generator().manual_seed(0))
    problem.pointwise_residual = lambda points: pytest.fail("the weak form needs no residual-adaptive resampling")
    config = TrainingConfig(adam_steps=4, collocation_points=16, resample_every=2, dtype="float64",
                            residual_form="weak", weak_cells=4, weak_time_cells=4, progress_every=0)
    trainer = Trainer(problem, config)
    assert not problem.uses_collocation and len(problem.test_functions) == 1 * 3   # one box fits the disc
    before = trainer.problem.loss_terms(trainer.points)["pde_lipo"].item()
    trainer.run()
    assert trainer.problem.loss_terms(trainer.points)["pde_lipo"].item() < before
    with pytest.raises(ValueError, match="residual_form"):
        TrainingConfig(residual_form="mixed")
    ifp = IFPProblem(Ball(2, L), {"conductivity": 1e-13, "vascular_exchange": 1e-6, "effective_pressure": 1e3})
    with pytest.raises(ValueError, match="no weak residual form"):
        Trainer(ifp, config)
    with pytest.raises(ValueError, match="3-D"):
        problem.use_weak_form(SpaceTimeTestFunctions(Ball(3, L), cells=4, time_cells=4))
    with pytest.raises(ValueError, match="fits inside"):
        SpaceTimeTestFunctions(Ball(2, L), cells=2, time_cells=4)


def test_trainer_residual_form_is_the_configs():
    """A strong config refuses a problem that carries test functions (instead of silently dropping
    them); a weak config gives it test functions built from its weak_* fields."""
    problem = TransportProblem(Ball(2, L), {"diffusivity_lipo": D_L, "diffusivity_free": D_F, "release_rate": K_REL},
                               end_time=T, concentration_scale=C0, boundary="free", width=16, depth=2, features=8,
                               generator=torch.Generator().manual_seed(0))
    own = SpaceTimeTestFunctions(problem.geometry, cells=4, time_cells=4)
    problem.use_weak_form(own)
    with pytest.raises(ValueError, match="use_weak_form\\(None\\)"):
        Trainer(problem, TrainingConfig(adam_steps=1, collocation_points=8, progress_every=0))
    assert problem.test_functions is own
    Trainer(problem, TrainingConfig(adam_steps=1, collocation_points=8, progress_every=0, residual_form="weak",
                                    weak_cells=8, weak_time_cells=3))
    assert problem.test_functions is not own and len(problem.test_functions) == 21 * 2   # 21 boxes x 2 in time
    problem.use_weak_form(None)
    Trainer(problem, TrainingConfig(adam_steps=1, collocation_points=8, progress_every=0))
    assert problem.test_functions is None
