"""Classical FEM-constrained least squares (hybrid/validation/classical.py) on synthetic twins:
honest recovery within the reported uncertainty, and the (log K, log Lp S/V) null direction of a
steady IFP image. Also run under mpirun -n 2 (make test-mpi)."""

import numpy as np
import pytest
from mpi4py import MPI

from hybrid.commands.synthesize import observation_grid
from hybrid.config.geometry import GeometryConfig
from hybrid.forward.ifp import solve_ifp
from hybrid.forward.image_sampling import observe_on_grid
from hybrid.mesh.geometry import build_mesh
from hybrid.problems.ifp import OuterBoundary, TissueProperties
from hybrid.validation.classical import fit_ifp, fit_release_rate

pytestmark = pytest.mark.mpi   # collective: every rank fits the same full images


@pytest.fixture(scope="module")
def ifp_twin():
    """2 mm tumour disc (h = 0.1 mm), table tumour coefficients, p = 0 outside; IFP image on
    0.25 mm voxels with 5 % noise (sd = 5 % of the peak voxel), seed 0."""
    domain = build_mesh(GeometryConfig(shape="disc", tumour_radius=2e-3, mesh_size=1e-4), MPI.COMM_WORLD)
    tumour = TissueProperties.defaults("tumour")
    shape, affine = observation_grid(domain.mesh, 0.25)
    clean = observe_on_grid(solve_ifp(domain, tumour, OuterBoundary()).pressure, shape, affine)
    sd = 0.05 * np.nanmax(clean)
    noisy = clean + sd * np.random.default_rng(0).standard_normal(shape)
    return domain, tumour, affine, noisy, sd


def test_reduced_ifp_fit_recovers_ratio_and_plateau_within_its_uncertainty(ifp_twin):
    """From a start 3x off in K/(Lp S/V) and 40 % low in p_e: both within 3 standard errors of
    the truth, p_e within 3 %, the ratio within 20 % (the rim is about one voxel wide), and the
    misfit at the noise level."""
    domain, tumour, affine, image, sd = ifp_twin
    ratio = tumour.hydraulic_conductivity / tumour.vascular_exchange
    result = fit_ifp(domain, tumour, OuterBoundary(), image, affine, sd,
                     x0=[np.log(3 * ratio), 0.6 * tumour.effective_pressure])
    (log_ratio, p_e), (se_ratio, se_pe) = result.estimate, result.standard_error
    assert abs(log_ratio - np.log(ratio)) < 3 * se_ratio and abs(np.exp(log_ratio) / ratio - 1) < 0.2
    assert abs(p_e - tumour.effective_pressure) < 3 * se_pe
    assert abs(p_e / tumour.effective_pressure - 1) < 0.03
    assert 0.8 < result.chi2_per_datum < 1.2
    assert result.null_directions == [] and result.fem_solves > 4


def test_k_and_lpsv_separately_are_not_identifiable_from_a_steady_ifp_image(ifp_twin):
    """(log K, log Lp S/V, p_e): the Jacobian has a null direction (1, 1, 0)/sqrt 2, so K and
    Lp S/V get infinite standard errors while p_e keeps a finite one."""
    domain, tumour, affine, image, sd = ifp_twin
    result = fit_ifp(domain, tumour, OuterBoundary(), image, affine, sd, unknowns="full",
                     x0=[np.log(tumour.hydraulic_conductivity) + 1.0, np.log(tumour.vascular_exchange),
                         0.6 * tumour.effective_pressure])
    s = result.singular_values
    assert s[-1] < 1e-8 * s[0] and s[-2] > 1e-4 * s[0]
    (direction,) = result.null_directions
    assert direction["log_K"] == pytest.approx(2 ** -0.5, abs=1e-4)
    assert direction["log_LpSV"] == pytest.approx(2 ** -0.5, abs=1e-4)
    assert abs(direction["p_e"]) < 1e-4
    assert np.isinf(result.standard_error[:2]).all() and np.isfinite(result.standard_error[2])
    assert abs(result.estimate[2] / tumour.effective_pressure - 1) < 0.03


def test_release_rate_from_released_fraction_images():
    """Liposomal twin (1 mm disc, Darcy flow, constant plasma): k_rel from released-fraction
    images at 600 s and 1200 s with 5 % noise, from a start 5x too high: within 3 standard
    errors and 10 % of the truth."""
    from hybrid.commands.synthesize import frame_stops
    from hybrid.commands.transport import setup_transport
    from hybrid.config.transport import transport_config_from_dict

    config = transport_config_from_dict({
        "geometry": {"shape": "disc", "tumour_radius": 1e-3, "mesh_size": 2.5e-4}, "flow": {"model": "darcy"},
        "drug": {"formulation": "liposomal"}, "plasma": {"model": "constant", "liposomal_concentration": 1e-2},
        "time": {"end": 1200.0, "step": 300.0}, "output": {"directory": "unused"}})
    times = (600.0, 1200.0)
    setup = setup_transport(config, MPI.COMM_WORLD, lambda message: None, {})
    truth = float(setup.solver.model.release_rate)
    shape, affine = observation_grid(setup.domain.mesh, 0.5)
    frames = []
    for stop, is_frame in frame_stops(config.time.step, times):
        setup.solver.step(stop - setup.solver.time)
        if is_frame:
            lipo, free, cell = (observe_on_grid(f, shape, affine) for f in setup.solver.species())
            frames.append((free + cell) / (lipo + free + cell))
    clean = np.stack(frames, axis=-1)
    sd = 0.05 * np.nanmax(clean)
    image = clean + sd * np.random.default_rng(1).standard_normal(clean.shape)
    result = fit_release_rate(setup, times, image, affine, sd, x0=np.log(5 * truth))
    (estimate,), (error,) = result.estimate, result.standard_error
    assert abs(estimate - np.log(truth)) < 3 * error
    assert abs(np.exp(estimate) / truth - 1) < 0.1
    assert 0.5 < result.chi2_per_datum < 1.5


def test_ph_law_from_drug_images_on_a_ph_map(tmp_path_factory):
    """pH-sensitive twin (1 mm disc, no flow, dose plasma curve) on a radial pH_e map 6.4 -> 7.2:
    pH_50 and ln n of the pH law from total drug and released fraction at 20, 40 and 60 min with
    5 % noise, from a start at (7.2, n = 1): both within 3 standard errors of the truth (6.8, 2),
    the standard errors those of release_identifiability at the estimate."""
    from hybrid.commands.synthesize import radial_ph_map
    from hybrid.commands.transport import build_domain, setup_transport
    from hybrid.config.synthesize import PhMapConfig
    from hybrid.config.transport import transport_config_from_dict
    from hybrid.io.nifti import write_volume
    from hybrid.problems.release import ph_release_rate
    from hybrid.validation.classical import fit_release_law, release_identifiability, release_images
    import dolfinx.fem

    folder = MPI.COMM_WORLD.bcast(str(tmp_path_factory.mktemp("ph")) if MPI.COMM_WORLD.rank == 0 else None)
    config = transport_config_from_dict({
        "geometry": {"shape": "disc", "tumour_radius": 1e-3, "mesh_size": 2e-4}, "flow": {"model": "none"},
        "drug": {"formulation": "ph_sensitive"}, "plasma": {"model": "dose", "dose": 50.0, "dose_unit": "mg/m^2"},
        "release": {"ph_map": f"{folder}/ph.nii.gz"}, "time": {"end": 3600.0, "step": 600.0},
        "output": {"directory": "unused"}})
    domain = build_domain(config, MPI.COMM_WORLD, lambda message: None, {})
    map_shape, map_affine = observation_grid(domain.mesh, 0.1)
    if MPI.COMM_WORLD.rank == 0:
        write_volume(config.release.ph_map, radial_ph_map(map_shape, map_affine, 1e-3, PhMapConfig(6.4, 7.2)),
                     map_affine)
    MPI.COMM_WORLD.barrier()
    constants = {"ph_50": dolfinx.fem.Constant(domain.mesh, 6.8), "steepness": dolfinx.fem.Constant(domain.mesh, 2.0)}
    setup = setup_transport(config, MPI.COMM_WORLD, lambda message: None, {}, domain,
                            release_rate=lambda ph: ph_release_rate(ph, **constants))
    laws = {"ph_50": (constants["ph_50"], False), "steepness": (constants["steepness"], True)}
    try:
        shape, affine = observation_grid(domain.mesh, 0.25)
        times = (1200.0, 2400.0, 3600.0)
        clean = release_images(setup, setup.solver.model, times, shape, affine)
        rng = np.random.default_rng(2)
        sd = {q: 0.05 * np.nanmax(np.abs(image)) for q, image in clean.items()}
        noisy = {q: image + sd[q] * rng.standard_normal(image.shape) for q, image in clean.items()}
        constants["ph_50"].value, constants["steepness"].value = 7.2, 1.0
        result = fit_release_law(setup, laws, times, noisy, sd, affine,
                                 bounds=(np.array([6.0, np.log(0.5)]), np.array([7.6, np.log(8.0)])))
        truth = np.array([6.8, np.log(2.0)])
        assert result.names == ("ph_50", "ln_steepness")
        assert np.all(np.abs(result.estimate - truth) < 3 * result.standard_error), (result.estimate, result.standard_error)
        assert 0.5 < result.chi2_per_datum < 1.5
        assert float(constants["ph_50"].value) == pytest.approx(result.estimate[0])   # left at the estimate
        analysis = release_identifiability(setup, laws, times, noisy, sd, affine)
        np.testing.assert_allclose(analysis.standard_errors, result.standard_error, rtol=0.05)
    finally:
        setup.solver.close()


def test_residual_voxels_are_fixed_by_the_images():
    """The least-squares residual covers the voxels finite in the images, whatever the prediction:
    a prediction NaN where the image is NaN is ignored, one NaN on an observed voxel is refused
    (before, that voxel silently left the residual and its length changed between evaluations)."""
    from hybrid.validation.classical import scaled_residual

    image = np.array([1.0, 2.0, np.nan, 4.0])
    prediction = {"a": np.array([1.5, 2.0, np.nan, 3.0])}
    residual = scaled_residual({"a": image}, {"a": 0.5}, lambda theta: prediction)
    np.testing.assert_array_equal(residual(None), [1.0, 0.0, -2.0])
    prediction["a"] = np.array([1.5, np.nan, 7.0, 3.0])
    with pytest.raises(ValueError, match="no finite value in a voxel the image observes"):
        residual(None)


def test_identifiability_of_a_closed_form_model_matches_its_fisher_information():
    """identifiability() on images offset + scale x (two quantities, one NaN voxel, offset varied
    as itself, scale as ln): names ("offset", "ln_scale"), Cramer-Rao sd the square roots of the
    diagonal of (J^T J)^-1 with J = [1, scale x] / noise sd over the finite voxels, the predictor
    given values [SI] (not ln); restore() called after, and also when a prediction fails."""
    from hybrid.validation.classical import identifiability

    x = np.linspace(0.0, 1.0, 7)
    truth = {"offset": 0.3, "scale": 2.0}
    images = {"a": truth["offset"] + truth["scale"] * x, "b": 2 * (truth["offset"] + truth["scale"] * x)}
    images["a"][3] = np.nan
    noise_sd = {"a": 0.1, "b": 0.4}
    seen, restored = [], []

    def predict(values):
        seen.append(values)
        line = values["offset"] + values["scale"] * x
        return {"a": line, "b": 2 * line}

    logs = {"offset": False, "scale": True}
    analysis = identifiability(predict, truth, logs, images, noise_sd, restore=lambda: restored.append(True),
                               step=1e-4)
    assert list(analysis.names) == ["offset", "ln_scale"] and restored == [True]
    assert all(set(values) == {"offset", "scale"} and values["scale"] > 0 for values in seen) and len(seen) == 4
    finite = np.isfinite(images["a"])
    jacobian = np.vstack([np.column_stack([np.ones(finite.sum()), truth["scale"] * x[finite]]) / 0.1,
                          np.column_stack([2 * np.ones(x.size), 2 * truth["scale"] * x]) / 0.4])
    expected = np.sqrt(np.diag(np.linalg.inv(jacobian.T @ jacobian)))
    np.testing.assert_allclose(analysis.standard_errors, expected, rtol=1e-6)

    def failing(values):
        raise RuntimeError("solver diverged")

    with pytest.raises(RuntimeError, match="solver diverged"):
        identifiability(failing, truth, logs, images, noise_sd, restore=lambda: restored.append(True))
    assert restored == [True, True]


def test_fit_images_recovers_a_closed_form_model_from_noisy_images():
    """fit_images() on images offset + scale x with noise (offset fitted as itself, scale as ln, from
    a distant start, within bounds given in SI): the estimates are the linear least-squares solution
    of the same data (the best any method can do), the standard errors its Fisher ones."""
    from hybrid.validation.classical import fit_images

    x = np.linspace(0.0, 1.0, 40)
    rng = np.random.default_rng(3)
    images = {"a": 0.3 + 2.0 * x + rng.normal(0.0, 0.05, x.size)}
    predict = lambda values: {"a": values["offset"] + values["scale"] * x}
    result = fit_images(predict, {"offset": 1.0, "scale": 0.2}, {"offset": False, "scale": True}, images,
                        {"a": 0.05}, bounds={"offset": (-5.0, 5.0), "scale": (1e-3, 1e3)})
    design = np.column_stack([np.ones_like(x), x])
    best = np.linalg.lstsq(design, images["a"], rcond=None)[0]
    assert result.names == ("offset", "ln_scale")
    np.testing.assert_allclose([result.estimate[0], np.exp(result.estimate[1])], best, rtol=1e-6)
    covariance = np.linalg.inv(design.T @ design) * 0.05**2
    np.testing.assert_allclose(result.standard_error, [np.sqrt(covariance[0, 0]), np.sqrt(covariance[1, 1]) / best[1]],
                               rtol=1e-3)
