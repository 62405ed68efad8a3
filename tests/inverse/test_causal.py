"""Causal residual weights (Wang, Sankaran & Perdikaris 2024): TransportProblem.use_causal_weights,
causal_weights and the Trainer's eps schedule."""

import math

import pytest
import torch

from hybrid.inverse import (Ball, BoundedScalar, IFPProblem, SpaceTimeTestFunctions, Trainer, TrainingConfig,
                            TransportProblem)
from hybrid.inverse.problems import causal_weights

torch.set_num_threads(1)

L, T, C0 = 1e-3, 3600.0, 2e-3                     # m, s, mol/m^3
COEFFICIENTS = {"diffusivity_lipo": 1e-12, "diffusivity_free": 1.5e-10, "uptake_rate": 5e-4}


def _problem(seed: int = 0) -> TransportProblem:
    """A small release problem with cell drug (three PDE terms) and an unknown release rate [1/s]."""
    rate = BoundedScalar("release_rate", "1/s", 1e-5, 1e-2, initial=1e-3)
    return TransportProblem(Ball(2, L), COEFFICIENTS | {"release_rate": rate}, end_time=T, concentration_scale=C0,
                            boundary="free", cell_drug=True, width=16, depth=2, features=8,
                            generator=torch.Generator().manual_seed(seed)).double()


def _points(n: int = 24) -> torch.Tensor:
    return _problem().sample_collocation(n, torch.Generator().manual_seed(3)).double()


def test_weights_are_exp_of_minus_eps_times_the_earlier_slice_losses_without_gradient():
    losses = torch.tensor([0.5, 0.25, 2.0, 1.0], dtype=torch.float64, requires_grad=True)
    weights = causal_weights(losses, 3.0)
    expected = [1.0, math.exp(-3 * 0.5), math.exp(-3 * 0.75), math.exp(-3 * 2.75)]
    assert weights[0].item() == 1.0
    assert weights.tolist() == pytest.approx(expected, rel=1e-14)
    assert not weights.requires_grad
    assert causal_weights(losses, 0.0).tolist() == [1.0] * 4


def test_causal_terms_are_the_weighted_slice_means_in_time_order_and_no_gradient_flows_through_the_weights():
    slices = 4
    problem = _problem()
    points = _points()
    residuals = [r.detach() for r in problem.pde_residuals(points.clone())]
    order = torch.argsort(points[:, -1])
    slice_losses = torch.stack([(r[order] ** 2).reshape(slices, -1).mean(dim=1) for r in residuals])
    eps = 1.0 / slice_losses.sum().item()   # weights between exp(-1) and 1: their gradient would matter
    earlier = torch.cumsum(slice_losses.sum(dim=0), 0) - slice_losses.sum(dim=0)
    weights = torch.exp(-eps * earlier)
    problem.use_causal_weights(slices)
    problem.causal_epsilon.fill_(eps)
    shuffled = points[torch.randperm(len(points), generator=torch.Generator().manual_seed(1))]
    terms = problem.loss_terms(shuffled.clone())
    assert 0.3 < weights.min() < 0.9   # the weighting is not trivial here
    for name, losses in zip(("pde_lipo", "pde_free", "pde_cell"), slice_losses):
        assert terms[name].item() == pytest.approx((weights * losses).mean().item(), rel=1e-12)
    assert problem.causal_weights.tolist() == pytest.approx(weights.tolist(), rel=1e-12)

    # the gradient is that of sum_i w_i L_i with w held constant
    params = [p for p in problem.parameters() if p.requires_grad]
    grads = torch.autograd.grad(terms["pde_lipo"], params)
    r_lipo = problem.pde_residuals(shuffled.clone())[0]
    order = torch.argsort(shuffled[:, -1])
    constant = (weights * (r_lipo[order] ** 2).reshape(slices, -1).mean(dim=1)).mean()
    for got, want in zip(grads, torch.autograd.grad(constant, params)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-14)


def test_off_is_the_plain_mean_and_eps_zero_matches_it():
    problem = _problem()
    points = _points()
    plain = {f"pde_{n}": (r**2).mean() for n, r in zip(("lipo", "free", "cell"), problem.pde_residuals(points.clone()))}
    off = problem.loss_terms(points.clone())
    assert all(torch.equal(off[name], value) for name, value in plain.items())   # bitwise
    problem.use_causal_weights(6)
    assert problem.causal_epsilon.item() == 0.0
    causal = problem.loss_terms(points.clone())
    for name, value in plain.items():
        assert causal[name].item() == pytest.approx(value.item(), rel=1e-13)
    assert set(causal) == set(off)
    problem.use_causal_weights(0)
    assert "causal_weights" not in dict(problem.named_buffers())
    assert all(torch.equal(problem.loss_terms(points.clone())[n], v) for n, v in plain.items())


def test_trainer_with_causal_off_is_the_default_run():
    common = dict(adam_steps=6, lbfgs_steps=2, collocation_points=24, resample_every=3, balance="all",
                  balance_every=3, dtype="float64", progress_every=1)
    default = Trainer(_problem(), TrainingConfig(**common)).run()
    off = Trainer(_problem(), TrainingConfig(**common, causal_slices=0, causal_epsilon=[5.0])).run()
    assert [h["terms"] for h in off.history] == [h["terms"] for h in default.history]
    assert off.estimates == default.estimates
    assert "causal_weights" not in default.history[0]


def test_trainer_schedule_advances_when_every_weight_is_near_one_and_lbfgs_keeps_the_last_weights(tmp_path):
    """eps 0 gives w = 1, so the first step moves to the next eps; the last value is kept;
    L-BFGS reuses the last Adam weights; a resumed run reproduces the uninterrupted one."""
    common = dict(collocation_points=24, resample_every=2, dtype="float64", progress_every=1,
                  causal_slices=4, causal_epsilon=(0.0, 50.0, 80.0))
    trainer = Trainer(_problem(), TrainingConfig(adam_steps=5, lbfgs_steps=25, **common))
    result = trainer.run()
    adam = [h for h in result.history if h["phase"] == "adam"]
    epsilons = [h["causal_epsilon"] for h in adam]   # recorded before the step's advance
    assert epsilons[:2] == [0.0, 50.0] and adam[0]["causal_weights"] == [1.0] * 4
    assert epsilons == sorted(epsilons) and set(epsilons) <= {0.0, 50.0, 80.0}
    assert min(adam[-1]["causal_weights"]) < 0.99 and adam[-1]["causal_weights"][0] == 1.0
    lbfgs = [h for h in result.history if h["phase"] == "lbfgs"]
    assert lbfgs and all(h["causal_weights"] == adam[-1]["causal_weights"] for h in lbfgs)

    path = tmp_path / "causal.pt"
    Trainer(_problem(), TrainingConfig(adam_steps=3, lbfgs_steps=0, checkpoint=str(path), **common)).run()
    resumed = Trainer(_problem(), TrainingConfig(adam_steps=5, lbfgs_steps=25, **common)).resume(path)
    assert resumed.run().estimates == result.estimates


@pytest.mark.parametrize("settings, message", [
    (dict(causal_slices=5, collocation_points=16), "divide collocation_points"),
    (dict(causal_slices=-1), "causal_slices must be 0"),
    (dict(causal_slices=4, residual_form="weak", weak_time_cells=12), "weak_time_cells - 1"),
    (dict(causal_epsilon=()), "causal_epsilon"),
    (dict(causal_epsilon=(1.0, -1.0)), "causal_epsilon"),
    (dict(causal_epsilon=(math.inf,)), "causal_epsilon"),
])
def test_bad_causal_settings_are_refused_in_one_line(settings, message):
    with pytest.raises(ValueError, match=message) as error:
        TrainingConfig(**settings)
    assert "\n" not in str(error.value)


def test_problems_without_causal_weights_or_with_uneven_slices_are_refused():
    ifp = IFPProblem(Ball(2, L), {"conductivity": 1e-13, "vascular_exchange": 1e-6, "effective_pressure": 1e3})
    with pytest.raises(ValueError, match="no causal residual weights"):
        Trainer(ifp, TrainingConfig(adam_steps=1, collocation_points=8, causal_slices=2))
    problem = _problem()
    problem.use_causal_weights(5)
    with pytest.raises(ValueError, match="equal causal slices"):
        problem.loss_terms(_points(24))


def test_weak_form_slices_are_the_test_functions_rows_in_time():
    """Weak form: one slice per row of test functions in time (time_cells - 1 rows of equal size),
    ordered by the time of their boxes; the Trainer accepts a slice count dividing the rows."""
    problem = _problem()
    problem.use_weak_form(SpaceTimeTestFunctions(problem.geometry, cells=8, time_cells=5))
    test = problem.test_functions
    rows = torch.floor(test.points[test.index, -1].min(dim=1).values * 5)   # row r: boxes on cells r, r + 1 in time
    assert torch.bincount(rows.long()).tolist() == [len(test) // 4] * 4
    residuals = [r.detach() for r in problem.pde_residuals(None)]
    row_losses = torch.stack([torch.stack([(r[rows == k] ** 2).mean() for k in range(4)]) for r in residuals])
    eps = 1.0 / row_losses.sum().item()
    weights = causal_weights(row_losses.sum(dim=0), eps)
    problem.use_causal_weights(4)
    problem.causal_epsilon.fill_(eps)
    terms = problem.loss_terms(None)
    assert 0.3 < weights.min() < 0.9
    for name, losses in zip(("pde_lipo", "pde_free", "pde_cell"), row_losses):
        assert terms[name].item() == pytest.approx((weights * losses).mean().item(), rel=1e-12)
    config = TrainingConfig(adam_steps=2, collocation_points=8, residual_form="weak", weak_cells=8, weak_time_cells=5,
                            causal_slices=2, causal_epsilon=(eps,), progress_every=1, dtype="float64")
    history = Trainer(_problem(), config).run().history
    assert len(history[-1]["causal_weights"]) == 2 and history[-1]["causal_weights"][0] == 1.0
