"""Problem plumbing: field unknowns, bounds, configuration errors, and the CUDA path (where a GPU is)."""

import math

import pytest
import torch

import twins
from hybrid.inverse import Ball, BoundedField, BoundedScalar, Box, IFPProblem, Trainer, TrainingConfig

torch.set_num_threads(1)   # two shared cores: one thread is faster than two contending


def test_bounded_scalar_stays_in_bounds_and_starts_where_asked():
    k = BoundedScalar("k", "1/s", 1e-6, 1e-2, initial=3e-4)
    assert k().item() == pytest.approx(3e-4, rel=1e-12)
    with torch.no_grad():
        k.raw.fill_(1e3)
    assert k().item() == pytest.approx(1e-2, rel=1e-12)
    with pytest.raises(ValueError, match="lower bound must be > 0"):
        BoundedScalar("k", "1/s", 0.0, 1.0)
    with pytest.raises(ValueError, match="strictly inside"):
        BoundedScalar("k", "1/s", 1e-6, 1e-2, initial=1.0)


def test_conductivity_field_unknown_gets_gradients_and_no_rim_thickness():
    field = BoundedField("conductivity", "m^2/(Pa s)", 1e-14, 1e-11, dim=1,
                         generator=torch.Generator().manual_seed(0))
    problem = IFPProblem(Box(1, twins.R), {"conductivity": field, "vascular_exchange": twins.LPSV,
                                           "effective_pressure": twins.PE},
                         observations=twins.ifp_observations(voxels=16), generator=torch.Generator().manual_seed(0))
    x = torch.linspace(-0.9, 0.9, 20, dtype=torch.float64).reshape(-1, 1)
    values = field.double()(x)
    assert ((values > 1e-14) & (values < 1e-11)).all()
    assert values.detach().mean().item() == pytest.approx(math.sqrt(1e-14 * 1e-11), rel=0.5)   # starts mid-range
    problem.double()
    terms = problem.loss_terms(problem.sample_collocation(32, torch.Generator().manual_seed(1)).double())
    terms["pde"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in field.parameters())
    assert "rim_thickness" not in problem.estimates()


def test_config_errors_are_actionable():
    with pytest.raises(ValueError, match="dtype"):
        TrainingConfig(dtype="float16")
    with pytest.raises(ValueError, match="balance"):
        TrainingConfig(balance="some")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            TrainingConfig(device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_step_matches_the_eager_step():
    observations = twins.ifp_observations(voxels=16)
    common = dict(adam_steps=30, collocation_points=64, dtype="float64", device="cuda", progress_every=0,
                  resample_every=10, balance_every=10)
    eager = Trainer(twins.ifp_problem(observations), TrainingConfig(cuda_graph=False, **common)).run()
    graph = Trainer(twins.ifp_problem(observations), TrainingConfig(cuda_graph=True, **common)).run()
    for name, (value, _) in eager.estimates.items():
        assert graph.estimates[name][0] == pytest.approx(value, rel=1e-9), name


def test_transport_with_a_flow_problem_couples_pressure_and_drug():
    """The transport residual sees the Darcy flux of the pressure network: its gradient reaches the
    pressure network and the flow's unknown conductivity; both problems' terms and estimates appear."""
    from hybrid.inverse import TransportProblem

    flow = IFPProblem(Box(1, twins.R), {"conductivity": BoundedScalar("conductivity", "m^2/(Pa s)", 1e-14, 1e-11),
                                        "vascular_exchange": twins.LPSV, "effective_pressure": twins.PE},
                      observations=twins.ifp_observations(voxels=16), generator=torch.Generator().manual_seed(0))
    problem = TransportProblem(Box(1, twins.R), {"diffusivity_lipo": 1e-12, "diffusivity_free": 1e-10,
                                                 "release_rate": BoundedScalar("release_rate", "1/s", 1e-6, 1e-2)},
                               end_time=3600.0, concentration_scale=1e-3, flow=flow, hindrance=0.5,
                               initial_lipo=lambda x: 1e-3 * (1 - x[:, 0] ** 2),
                               generator=torch.Generator().manual_seed(1)).double()
    points = problem.sample_collocation(64, torch.Generator().manual_seed(2)).double()
    terms = problem.loss_terms(points)
    assert set(terms) == {"pde_lipo", "pde_free", "pde_ifp", "data_ifp"}
    terms["pde_lipo"].backward()
    assert flow.unknowns["conductivity"].raw.grad.abs() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in flow.network.parameters())
    assert {"release_rate", "conductivity", "rim_thickness"} <= set(problem.estimates())
    assert len(problem.scalar_unknowns()) == 2
    with pytest.raises(ValueError, match="geometry"):
        TransportProblem(Box(1, 2 * twins.R), {"diffusivity_lipo": 1e-12, "diffusivity_free": 1e-10,
                                               "release_rate": 1e-4}, end_time=1.0, concentration_scale=1.0, flow=flow)


def test_residual_adaptive_resampling_moves_points_to_large_residuals():
    """RAD (k = 1, c = 0: density ~ |r|): after a redraw the mean residual over the collocation points
    is E[r^2]/E[r] instead of E[r] (measured 1.51 x the uniform points' mean for an untrained network)."""
    observations = twins.ifp_observations(voxels=16)
    trainer = Trainer(twins.ifp_problem(observations), TrainingConfig(collocation_points=2000, dtype="float64",
                                                                      rad_candidates=8, rad_c=0.0))
    uniform = trainer.points.clone()
    trainer._resample()
    residual = lambda points: trainer.problem.pointwise_residual(points.clone()).detach().abs().mean().item()
    assert residual(trainer.points) > 1.35 * residual(uniform)
    assert trainer.points.shape == uniform.shape and not torch.equal(trainer.points, uniform)


@pytest.mark.parametrize("geometry, initial", [
    (Box(2, 1e-3), lambda x: 1e-3 * torch.cos(math.pi * x[:, 0]) * torch.cos(math.pi * x[:, 1])),
    (Ball(2, 1e-3), lambda x: 1e-3 * torch.cos(math.pi * (x * x).sum(dim=1)))])
def test_no_flux_boundary_term_is_trained_down(geometry, initial):
    """boundary="no_flux" adds grad C . n = 0 on boundary points with outward unit normals; with an
    initial profile that meets it, a short training lowers the term by an order of magnitude."""
    from hybrid.inverse import TransportProblem

    x, normals = geometry.sample_boundary(100, torch.Generator().manual_seed(0))
    assert torch.allclose(normals.norm(dim=1), torch.ones(100, dtype=normals.dtype))
    assert torch.allclose(geometry.boundary_factor(x), torch.zeros(100, 1, dtype=x.dtype), atol=1e-12)
    problem = TransportProblem(geometry, {"diffusivity_lipo": 1e-12, "diffusivity_free": 1e-10, "release_rate": 1e-4},
                               end_time=3600.0, concentration_scale=1e-3, boundary="no_flux", boundary_points=64,
                               initial_lipo=initial, width=16, depth=2, features=8,
                               generator=torch.Generator().manual_seed(1))
    trainer = Trainer(problem, TrainingConfig(adam_steps=300, collocation_points=64, dtype="float64",
                                              progress_every=300))
    before = problem.loss_terms(trainer.points.clone())["bc_no_flux"].item()
    after = trainer.run().history[-1]["terms"]["bc_no_flux"]
    print(f"bc_no_flux {before:.3e} -> {after:.3e}")
    assert after < 0.05 * before
