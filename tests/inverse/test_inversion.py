"""Tiny inverse problems converge to the truth within the noise (1-D closed-form twins, CPU).

Measured on the 2-core box (one torch thread): IFP twin, 2 % noise, float64: rim thickness
-1.8 %, plateau -0.8 % (5 s; the closed-form fit to the same data: -1.7 %, -0.8 %); release twin,
5 % noise, three time points: k_rel -2.7 % (16 s; closed-form fit -0.2 %).
Each is compared with the least-squares fit of the closed form itself to the same noisy data
(the best any method can do with these data).
"""

import math

import numpy as np
import pytest
import torch
from scipy.optimize import least_squares, minimize_scalar

from hybrid.inverse import Trainer, TrainingConfig, ensemble
import twins

torch.set_num_threads(1)   # two cores shared: one thread is faster than two contending


def _closed_form_fit(observations):
    x = twins.voxel_points(observations.grid)
    data = observations.values.ravel()
    fit = least_squares(lambda q: twins.ifp_pressure(x, q[0] * 1e-3, q[1] * 1e3).mean(axis=1) - data, [0.3, 1.0])
    return fit.x[0] * 1e-3, fit.x[1] * 1e3


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_ifp_twin_recovers_rim_thickness_and_plateau(dtype):
    observations = twins.ifp_observations(noise=0.02)
    lines = []
    config = TrainingConfig(adam_steps=500, lbfgs_steps=200, collocation_points=256, resample_every=500,
                            dtype=dtype, progress_every=250)
    result = Trainer(twins.ifp_problem(observations), config, lines.append).run()
    rim_true, rim_fit, pe_fit = math.sqrt(twins.K / twins.LPSV), *_closed_form_fit(observations)
    rim, pe = result.estimates["rim_thickness"][0], result.estimates["effective_pressure"][0]
    print(f"{dtype}: rim {rim:.4e} m (closed-form fit {rim_fit:.4e}, truth {rim_true:.4e}); "
          f"p_e {pe:.1f} Pa (fit {pe_fit:.1f}, truth {twins.PE}); {result.seconds:.1f} s")
    assert abs(rim / rim_true - 1) < 0.03 and abs(pe / twins.PE - 1) < 0.02
    assert abs(rim / rim_fit - 1) < 0.01 and abs(pe / pe_fit - 1) < 0.005   # measured 0.2-0.3 %, 0.04-0.08 %
    assert result.dtype == dtype and result.steps == 700
    assert "pde" in lines[-1] and "rim_thickness=" in lines[-1] and "[lbfgs]" in lines[-1]


def test_release_twin_recovers_the_release_rate():
    observations = twins.release_observations(noise=0.05)
    config = TrainingConfig(adam_steps=500, lbfgs_steps=400, collocation_points=512, resample_every=500,
                            dtype="float64", progress_every=0)
    result = Trainer(twins.release_problem(observations), config).run()

    def misfit(log_k):   # the closed form fitted to the same data: the noise-limited answer
        x = twins.voxel_points(observations[0].grid)
        total = 0.0
        for record, index in zip(observations, (None, 1)):
            for frame, t in enumerate(record.frame_times_s):
                lipo, free = twins.release_solution(x, t, math.exp(log_k))
                model = (lipo + free if index is None else free).mean(axis=1)
                total += (((model - record.values[:, 0, 0, frame]) / record.noise_sd) ** 2).sum()
        return total

    k_fit = math.exp(minimize_scalar(misfit, bounds=(math.log(1e-5), math.log(1e-3)), method="bounded").x)
    k = result.estimates["release_rate"][0]
    print(f"k_rel {k:.4e} 1/s (closed-form fit {k_fit:.4e}, truth {twins.K_REL}); {result.seconds:.1f} s")
    assert abs(k_fit / twins.K_REL - 1) < 0.01
    assert abs(k / twins.K_REL - 1) < 0.05


@pytest.mark.parametrize("lbfgs_resample", [False, True])
def test_checkpoint_and_resume_reproduce_the_uninterrupted_run(tmp_path, lbfgs_resample):
    observations = twins.ifp_observations(noise=0.02, voxels=16)
    common = dict(collocation_points=64, dtype="float64", resample_every=20, balance_every=10, progress_every=0,
                  lbfgs_resample=lbfgs_resample)
    straight = Trainer(twins.ifp_problem(observations), TrainingConfig(adam_steps=60, lbfgs_steps=50, **common))
    straight.run()
    path = tmp_path / "state.pt"
    # interrupted in the Adam phase, then in the L-BFGS phase, each time resumed by a fresh process-like trainer
    Trainer(twins.ifp_problem(observations), TrainingConfig(adam_steps=40, lbfgs_steps=0, checkpoint=str(path),
                                                           **common)).run()
    Trainer(twins.ifp_problem(observations), TrainingConfig(adam_steps=60, lbfgs_steps=25, checkpoint=str(path),
                                                           **common)).resume(path).run()
    resumed = Trainer(twins.ifp_problem(observations), TrainingConfig(adam_steps=60, lbfgs_steps=50, **common))
    resumed.resume(path).run()
    assert resumed.step == straight.step == 110
    for (name, a), b in zip(straight.problem.state_dict().items(), resumed.problem.state_dict().values()):
        assert torch.equal(a, b), name
    assert resumed.problem.estimates() == straight.problem.estimates()
    after_adam = Trainer(twins.ifp_problem(observations), TrainingConfig(adam_steps=60, **common))
    after_adam.run()
    assert torch.equal(after_adam.points, straight.points) != lbfgs_resample   # redrawn between L-BFGS chunks
    with pytest.raises(ValueError, match="different training config"):
        Trainer(twins.ifp_problem(observations), TrainingConfig(adam_steps=60, **(common | {"dtype": "float32"}))
                ).resume(path)


def test_resume_refuses_changed_unknowns_and_checkpoints_make_their_folder(tmp_path):
    """A checkpoint's raw parameters mean other values under other bounds: resuming with another
    unknown or other bounds stops in one line; the checkpoint's folder is made when missing."""
    observations = twins.ifp_observations(noise=0.02, voxels=16)
    path = tmp_path / "new" / "folder" / "state.pt"
    config = TrainingConfig(adam_steps=5, lbfgs_steps=0, collocation_points=64, progress_every=0, checkpoint=str(path))
    Trainer(twins.ifp_problem(observations), config).run()
    assert path.exists()
    with pytest.raises(ValueError, match=r"different unknowns or bounds \(\['vascular_exchange"):
        Trainer(twins.ifp_problem(observations, unknown_exchange=True), config).resume(path)
    other_bounds = twins.ifp_problem(observations)
    other_bounds.unknowns["conductivity"].upper = 1e-10
    with pytest.raises(ValueError, match=r"different unknowns or bounds \(\['conductivity"):
        Trainer(other_bounds, config).resume(path)
    Trainer(twins.ifp_problem(observations), config).resume(path)   # the same problem resumes


def test_ensemble_gives_a_spread_for_every_estimate():
    observations = twins.ifp_observations(noise=0.02, voxels=16)
    config = TrainingConfig(adam_steps=150, lbfgs_steps=0, collocation_points=64, progress_every=0)
    out = ensemble(lambda seed: twins.ifp_problem(observations, seed), [0, 1, 2], config)
    for name in ("conductivity", "effective_pressure", "rim_thickness"):
        entry = out["estimates"][name]
        assert len(entry["members"]) == 3 and entry["spread"] > 0
        assert entry["estimate"] == pytest.approx(np.mean(entry["members"]))
    with pytest.raises(ValueError, match="two seeds"):
        ensemble(lambda seed: twins.ifp_problem(observations, seed), [0], config)


def test_training_threads_setting():
    """``threads`` sets torch's CPU threads for the run (process-wide); < 1 is refused."""
    with pytest.raises(ValueError, match="threads"):
        TrainingConfig(threads=0)
    problem = twins.ifp_problem(twins.ifp_observations(noise=0.0, voxels=8))
    try:
        Trainer(problem, TrainingConfig(adam_steps=0, threads=2, progress_every=0))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


def test_unknowns_held_at_their_start_for_the_first_steps():
    """``unknowns_from_step``: the scalar unknowns keep their start values while the networks train,
    then move (the networks' learning rate is untouched)."""
    observations = twins.ifp_observations(noise=0.02, voxels=16)
    start = twins.ifp_problem(observations).estimates()
    common = dict(collocation_points=64, progress_every=1, dtype="float64")
    trainer = Trainer(twins.ifp_problem(observations), TrainingConfig(adam_steps=30, unknowns_from_step=20, **common))
    history = trainer.run().history
    held = [h["estimates"] for h in history if h["step"] <= 20]
    assert len(held) == 20 and all(e["conductivity"] == start["conductivity"][0] for e in held)
    assert history[-1]["estimates"]["conductivity"] != start["conductivity"][0]
    assert history[19]["terms"] != history[0]["terms"]   # the networks trained meanwhile


def test_released_unknowns_start_adam_afresh():
    """The hold leaves no trace in Adam: the first step after ``unknowns_from_step`` moves each raw
    unknown by the learning rate, as a fresh Adam's first step does (moments accumulated during
    the hold would scale it by their stale history); the hold must lie within the Adam steps."""
    for bad in (-1, 31):
        with pytest.raises(ValueError, match="unknowns_from_step"):
            TrainingConfig(adam_steps=30, unknowns_from_step=bad)
    config = TrainingConfig(adam_steps=21, unknowns_from_step=20, collocation_points=64, progress_every=0,
                            dtype="float64", unknown_learning_rate=1e-2)
    trainer = Trainer(twins.ifp_problem(twins.ifp_observations(noise=0.02, voxels=16)), config)
    raw = lambda: torch.cat([p.detach().flatten() for u in trainer.problem.scalar_unknowns() for p in u.parameters()])
    start = raw().clone()
    trainer.run()
    np.testing.assert_allclose((raw() - start).abs().numpy(), 1e-2, rtol=1e-5)


@pytest.mark.parametrize("unknown_weights", ["balanced", "unit"])
def test_unit_unknown_weights_give_the_unknowns_the_unweighted_gradient(unknown_weights):
    """``unknown_weights="unit"``: an Adam step's gradient of the scalar unknowns is that of the
    unweighted sum of the loss terms, the networks' that of the weighted loss; "balanced" (default)
    gives every parameter the weighted loss's. The weights are set far from 1, as balancing sets
    them, so the two gradients differ."""
    config = TrainingConfig(adam_steps=1, collocation_points=64, progress_every=0, dtype="float64",
                            unknown_weights=unknown_weights)
    trainer = Trainer(twins.release_problem(twins.release_observations(voxels=8)), config)
    for index, name in enumerate(trainer.weights):
        trainer.weights[name].fill_(0.5 + 3.0 * index)
    networks, unknowns = (group["params"] for group in trainer.adam.param_groups)
    terms = trainer.problem.loss_terms(trainer.points.clone())
    weighted = torch.autograd.grad(trainer._weighted(terms), networks + unknowns, retain_graph=True, allow_unused=True)
    unit = torch.autograd.grad(sum(terms.values()), unknowns, allow_unused=True)
    trainer._adam_step()
    expected = list(weighted[:len(networks)]) + list(unit if unknown_weights == "unit" else weighted[len(networks):])
    for parameter, gradient in zip(networks + unknowns, expected):
        torch.testing.assert_close(parameter.grad, torch.zeros_like(parameter) if gradient is None else gradient)
    differ = [not torch.allclose(w, u, rtol=1e-3) for w, u in zip(weighted[len(networks):], unit)]
    assert unknowns and all(differ)


def test_unknown_weights_are_checked():
    with pytest.raises(ValueError, match="unknown_weights"):
        TrainingConfig(unknown_weights="equal")


@pytest.mark.parametrize("unknown_weights", ["balanced", "unit"])
def test_with_unit_unknown_weights_lbfgs_trains_the_networks_only(unknown_weights):
    """L-BFGS has one objective, the weighted loss: with ``unknown_weights="unit"`` it leaves the
    scalar unknowns at their Adam values and trains the networks; balanced, it moves both."""
    config = TrainingConfig(adam_steps=3, lbfgs_steps=25, collocation_points=64, progress_every=1, dtype="float64",
                            unknown_weights=unknown_weights)
    history = Trainer(twins.release_problem(twins.release_observations(voxels=8)), config).run().history
    after_adam = next(h for h in history if h["step"] == 3)
    last = history[-1]
    assert last["phase"] == "lbfgs" and last["terms"] != after_adam["terms"]
    assert (last["estimates"] == after_adam["estimates"]) == (unknown_weights == "unit")


def test_unit_unknown_weights_need_scalar_unknowns():
    """Field unknowns train with the networks' balanced loss: "unit" on a problem without scalar
    unknowns would change nothing, so it is refused in one line."""
    from hybrid.inverse import BoundedField, IFPProblem
    from hybrid.inverse.geometry import Box
    field = BoundedField("conductivity", "m^2/(Pa s)", 1e-14, 1e-11, dim=1, generator=torch.Generator().manual_seed(0))
    problem = IFPProblem(Box(1, twins.R), {"conductivity": field, "vascular_exchange": twins.LPSV,
                                           "effective_pressure": twins.PE},
                         observations=twins.ifp_observations(voxels=16), generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="scalar unknowns"):
        Trainer(problem, TrainingConfig(adam_steps=1, unknown_weights="unit"))


def test_a_checkpoint_without_newer_settings_resumes_under_their_defaults(tmp_path):
    """A checkpoint written before a training setting existed was trained with its default: it
    resumes under the default and is refused under another value."""
    observations = twins.ifp_observations(noise=0.02, voxels=16)
    path = tmp_path / "old.pt"
    common = dict(collocation_points=64, progress_every=0, dtype="float64", checkpoint=str(path))
    Trainer(twins.ifp_problem(observations), TrainingConfig(adam_steps=2, **common)).run()
    state = torch.load(path, weights_only=False)
    del state["config"]["unknown_weights"]
    torch.save(state, path)
    Trainer(twins.ifp_problem(observations), TrainingConfig(adam_steps=4, **common)).resume(path)
    with pytest.raises(ValueError, match="unknown_weights"):
        Trainer(twins.ifp_problem(observations), TrainingConfig(adam_steps=4, unknown_weights="unit",
                                                                **common)).resume(path)
