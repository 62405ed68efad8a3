"""Identifiability: a steady IFP image fixes only K / (Lp S/V) and the plateau; the drug images of
the release twin fix the release rate."""

import math

import numpy as np

import twins
from hybrid.identifiability import analyse, noise_scaled_jacobian


def _ifp_image(theta):
    """Voxel-averaged slab IFP [Pa] for theta = (ln K, ln Lp S/V, p_e)."""
    K, exchange, pe = math.exp(theta[0]), math.exp(theta[1]), theta[2]
    grid = twins.slab_grid(twins.R, 40)
    return twins.ifp_pressure(twins.voxel_points(grid), math.sqrt(K / exchange), pe).mean(axis=1)


def test_ifp_image_identifies_only_the_ratio_and_the_plateau():
    theta = [math.log(twins.K), math.log(twins.LPSV), twins.PE]
    report = analyse(noise_scaled_jacobian(_ifp_image, theta, 0.02 * twins.PE), ["ln K", "ln LpSV", "p_e"])
    print(report.summary())
    assert report.identifiable.tolist() == [True, True, False]
    (blind,) = report.unidentifiable_directions()
    # the blind direction scales K and Lp S/V together: (1, 1, 0) / sqrt 2
    np.testing.assert_allclose([blind["ln K"], blind["ln LpSV"], blind["p_e"]], [2**-0.5, 2**-0.5, 0.0], atol=1e-4)
    assert np.isinf(report.standard_errors[:2]).all()          # K and Lp S/V separately: no estimate
    assert np.isfinite(report.standard_errors[2]) and report.standard_errors[2] < 0.01 * twins.PE
    # with Lp S/V known, ln K (hence the rim thickness) is determined to about a per cent
    known = analyse(noise_scaled_jacobian(lambda q: _ifp_image([q[0], theta[1], q[1]]), [theta[0], theta[2]],
                                       0.02 * twins.PE), ["ln K", "p_e"])
    assert known.identifiable.all() and known.standard_errors[0] < 0.05


def test_release_images_identify_the_release_rate():
    observations = twins.release_observations(noise=0.05)
    x = twins.voxel_points(observations[0].grid)

    def images(theta):
        out = []
        for record, index in zip(observations, (None, 1)):
            for t in record.frame_times_s:
                lipo, free = twins.release_solution(x, t, math.exp(theta[0]))
                out.append((lipo + free if index is None else free).mean(axis=1) / record.noise_sd)
        return np.concatenate(out)

    report = analyse(noise_scaled_jacobian(images, [math.log(twins.K_REL)], 1.0), ["ln k_rel"])
    assert report.identifiable.all() and report.standard_errors[0] < 0.02   # Cramer-Rao: < 2 % relative


def test_ensemble_spread_exposes_the_unidentifiable_pair():
    """PINN ensemble with K and Lp S/V both unknown, each member started at random values: the
    members agree on K/(Lp S/V) (rim thickness) and p_e and scatter in K and Lp S/V themselves.
    Measured (4 members): relative spread 1.21 for K and Lp S/V, 7e-4 for the rim, 3e-4 for p_e."""
    import torch

    from hybrid.inverse import BoundedScalar, Box, IFPProblem, TrainingConfig, ensemble

    torch.set_num_threads(1)
    observations = twins.ifp_observations(noise=0.02)

    def build(seed):
        rng = np.random.default_rng(seed)
        start = lambda lo, hi: float(np.exp(rng.uniform(np.log(lo) + 0.5, np.log(hi) - 0.5)))
        return IFPProblem(Box(1, twins.R), {
            "conductivity": BoundedScalar("conductivity", "m^2/(Pa s)", 1e-14, 1e-11, initial=start(1e-14, 1e-11)),
            "vascular_exchange": BoundedScalar("vascular_exchange", "1/(Pa s)", 1e-7, 1e-5, initial=start(1e-7, 1e-5)),
            "effective_pressure": BoundedScalar("effective_pressure", "Pa", 0.0, 5000.0, log=False)},
            observations=observations, pressure_scale=1000.0, generator=torch.Generator().manual_seed(seed))

    config = TrainingConfig(adam_steps=500, lbfgs_steps=200, collocation_points=256, resample_every=500,
                            dtype="float64", progress_every=0)
    summary = ensemble(build, [0, 1, 2, 3], config)["estimates"]
    relative = {name: entry["spread"] / abs(entry["estimate"]) for name, entry in summary.items()}
    print(relative)
    assert relative["conductivity"] > 0.3 and relative["vascular_exchange"] > 0.3
    assert relative["rim_thickness"] < 0.01 and relative["effective_pressure"] < 0.01
    assert abs(summary["rim_thickness"]["estimate"] / math.sqrt(twins.K / twins.LPSV) - 1) < 0.03
