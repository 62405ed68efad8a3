"""``hybrid synthesize``: twin experiment files, voxel averaging, seeded noise, MPI, config errors."""

import json

import numpy as np
import pytest

from cli_helpers import assert_one_error, run_hybrid

nib = pytest.importorskip("nibabel")

TINY = """
[geometry]
shape = "disc"
tumour_radius = 1.0e-3
mesh_size = 2.5e-4
[flow]
model = "darcy"
[drug]
formulation = "liposomal"
[plasma]
model = "constant"
liposomal_concentration = 1.0e-2
[time]
end = 1200.0
step = 300.0
[observation]
times = [-60.0, 450.0, 1200.0]
voxel_size_mm = 0.5
noise = {noise}
seed = {seed}
quantities = ["total_drug", "released_fraction"]
[output]
directory = "out"
"""


def _run(tmp_path, name, noise=0.05, seed=3, ranks=1, text=None):
    config = tmp_path / f"{name}.toml"
    config.write_text(text if text is not None else TINY.format(noise=noise, seed=seed))
    out = tmp_path / name
    result = run_hybrid("synthesize", config, "--output", out, ranks=ranks, timeout=300)
    return result, out


def _load(path):
    image = nib.load(str(path))
    return np.asarray(image.get_fdata()), image.affine


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("synth")
    runs = {}
    for name, noise, seed in (("clean", 0.0, 3), ("noisy", 0.05, 3), ("again", 0.05, 3), ("other", 0.05, 4)):
        result, out = _run(tmp, name, noise, seed)
        assert result.returncode == 0, result.stderr
        runs[name] = out
    runs["tmp"] = tmp
    return runs


def test_files_shapes_affine_and_sidecar(serial):
    out = serial["noisy"]
    data, affine = _load(out / "observations.nii.gz")
    assert data.shape == (4, 4, 1, 3)   # 2 mm disc on 0.5 mm voxels, one slice, three frames
    assert np.allclose(np.diag(affine)[:3], 0.5)
    sidecar = json.loads((out / "observations.json").read_text())
    assert sidecar["FrameTimes_s"] == [-60.0, 450.0, 1200.0]
    assert sidecar["Unit"] == "mol/m^3 of tissue" and sidecar["Seed"] == 3
    ifp, ifp_affine = _load(out / "truth" / "ifp.nii.gz")
    assert ifp.shape == (4, 4, 1) and np.allclose(ifp_affine, affine)
    assert 0 < np.nanmax(ifp) < 2080.0   # below the effective pressure p_e [Pa]
    truth = json.loads((out / "truth.json").read_text())
    assert truth["parameters"]["tumour"]["hydraulic_conductivity"]["unit"] == "m^2/(Pa s)"
    assert truth["parameters"]["release_rate"]["value"] > 0
    assert "host" not in truth["parameters"] and truth["parameters"]["geometry"]["tumour_radius"]["unit"] == "m"
    assert truth["parameters"]["plasma"]["liposome_half_life"]["unit"] == "s"   # every number with its unit
    assert truth["parameters"]["time"]["step"]["unit"] == "s"
    assert truth["grid"]["shape"] == [4, 4, 1]
    fraction, _ = _load(out / "released_fraction.nii.gz")
    assert fraction.shape == data.shape


def test_noise_free_images_are_the_voxel_averages_of_the_fem_fields(serial):
    """The noise-free series equals observe_on_grid of the FEM total drug at the frame times,
    recomputed here from the same configuration; the pre-injection frame is zero."""
    from mpi4py import MPI

    from hybrid.commands.synthesize import frame_stops
    from hybrid.commands.transport import setup_transport
    from hybrid.config.synthesize import load_synthesize_config
    from hybrid.forward.image_sampling import observe_on_grid

    data, affine = _load(serial["clean"] / "observations.nii.gz")
    truth, _ = _load(serial["clean"] / "truth" / "total_drug.nii.gz")
    assert np.array_equal(data, truth, equal_nan=True)
    assert np.all(data[..., 0] == 0.0)
    config, observation = load_synthesize_config(serial["tmp"] / "clean.toml")
    setup = setup_transport(config, MPI.COMM_WORLD, lambda message: None, {})
    frames = []
    try:
        for stop, is_frame in frame_stops(config.time.step, observation.times):
            setup.solver.step(stop - setup.solver.time)
            if is_frame:
                frames.append(sum(observe_on_grid(f, data.shape[:3], affine) for f in setup.solver.species()))
    finally:
        setup.solver.close()
    for index, expected in enumerate(frames, start=1):
        assert np.nanmax(expected) > 0
        assert np.allclose(data[..., index], expected, rtol=1e-6, atol=0, equal_nan=True)


def test_seeded_noise_is_reproducible_and_gaussian_as_documented(serial):
    clean, _ = _load(serial["clean"] / "observations.nii.gz")
    noisy, _ = _load(serial["noisy"] / "observations.nii.gz")
    again, _ = _load(serial["again"] / "observations.nii.gz")
    other, _ = _load(serial["other"] / "observations.nii.gz")
    assert np.array_equal(noisy, again, equal_nan=True)
    assert not np.allclose(noisy, other, equal_nan=True)
    sd = 0.05 * np.nanmax(np.abs(clean.astype(np.float64)))
    expected = clean + sd * np.random.default_rng(3).standard_normal(clean.shape)
    assert np.allclose(noisy, expected, rtol=1e-6, atol=1e-6 * sd, equal_nan=True)


def test_two_ranks_write_the_serial_images(serial):
    """`mpirun -n 2 hybrid synthesize`: the same images (observe_on_grid is collective), the same noise."""
    result, out = _run(serial["tmp"], "mpi", 0.05, 3, ranks=2)
    assert result.returncode == 0, result.stderr
    for name in ("observations.nii.gz", "released_fraction.nii.gz", "truth/ifp.nii.gz", "truth/total_drug.nii.gz"):
        parallel, _ = _load(out / name)
        reference, _ = _load(serial["noisy"] / name)
        scale = np.nanmax(np.abs(reference))
        assert np.allclose(parallel, reference, rtol=1e-5, atol=1e-6 * scale, equal_nan=True), name


@pytest.mark.parametrize("old, new, message", [
    ("seed = 3", "seed = 3\ncolour = 1", "[observation] unknown key(s) colour"),
    ("seed = 3\n", "", "[observation] missing required key 'seed'"),
    ('quantities = ["total_drug", "released_fraction"]', 'quantities = ["ifp"]', "[observation] quantities"),
    ("times = [-60.0, 450.0, 1200.0]", "times = [600.0, 300.0]", "strictly increasing"),
    ("times = [-60.0, 450.0, 1200.0]", "times = [600.0, 1800.0]", "past [time] end"),
    ("voxel_size_mm = 0.5", "voxel_size_mm = -0.5", "[observation] voxel_size_mm must be > 0"),
])
def test_bad_observation_keys_give_one_error_line(tmp_path, old, new, message):
    text = TINY.format(noise=0.05, seed=3)
    assert old in text
    result, _ = _run(tmp_path, "bad", text=text.replace(old, new))
    assert_one_error(result, message)


def test_missing_observation_section_is_one_error_line(tmp_path):
    text = TINY.format(noise=0.05, seed=3)
    text = text[:text.index("[observation]")] + text[text.index("[output]"):]
    result, _ = _run(tmp_path, "none", text=text)
    assert_one_error(result, "missing [observation] section")


def test_total_drug_counts_the_albumin_bound_drug(tmp_path):
    """With kinetic albumin binding the fourth species (bound_drug) is written and counted in the
    total drug and the released fraction (everything but the encapsulated drug)."""
    text = TINY.format(noise=0.0, seed=3).replace('[drug]', '[free_drug]\nalbumin_binding = "kinetic"\n[drug]')
    result, out = _run(tmp_path, "bound", text=text)
    assert result.returncode == 0, result.stderr
    parts = {name: _load(out / "truth" / f"{name}.nii.gz")[0]
             for name in ("liposomal_drug", "free_drug", "cell_drug", "bound_drug", "total_drug")}
    assert np.nanmax(parts["bound_drug"]) > 0
    total = parts["liposomal_drug"] + parts["free_drug"] + parts["cell_drug"] + parts["bound_drug"]
    assert np.allclose(parts["total_drug"], total, rtol=1e-6, atol=0)   # NIfTI stores float32
    fraction, _ = _load(out / "released_fraction.nii.gz")
    late = parts["total_drug"][..., -1] > 0
    assert np.allclose(fraction[..., -1][late], 1 - parts["liposomal_drug"][..., -1][late] / total[..., -1][late])


PH_MAP = """[observation.ph_map]
core = 6.4
rim = 7.2
voxel_size_mm = 0.25
"""


def test_synthetic_ph_map_is_written_and_drives_the_release(tmp_path):
    """[observation.ph_map]: truth/ph.nii.gz holds the radial profile at its voxel centres (6.4 at
    the centre to 7.2 at the rim), truth.json the pH law and the map, and the FEM releases faster in
    the acidic core than a uniform pH 7.2 would (the map drives k(pH))."""
    from hybrid.commands.synthesize import radial_ph_map
    from hybrid.config.synthesize import PhMapConfig

    text = TINY.format(noise=0.0, seed=3).replace('formulation = "liposomal"', 'formulation = "ph_sensitive"')
    text = text.replace("[output]", PH_MAP + "[output]")
    result, out = _run(tmp_path, "ph", text=text)
    assert result.returncode == 0, result.stderr
    ph, affine = _load(out / "truth" / "ph.nii.gz")
    assert ph.shape == (8, 8, 1) and np.allclose(np.diag(affine)[:3], 0.25)
    assert np.allclose(ph, radial_ph_map(ph.shape, affine, 1.0e-3, PhMapConfig(6.4, 7.2, 0.25)), atol=1e-6)
    assert 6.4 < ph.min() < 6.6 and ph.max() == pytest.approx(7.2, abs=1e-6)   # corners beyond the rim: 7.2
    release = json.loads((out / "truth.json").read_text())["parameters"]["release"]
    assert release["ph"] == {"map": "truth/ph.nii.gz"}
    assert release["ph_50"] == {"value": 6.8, "unit": "1"} and release["steepness"] == {"value": 2.0, "unit": "1"}
    uniform, _ = _run(tmp_path, "uniform", text=text.replace(PH_MAP, "").replace("[plasma]", "[release]\nph = 7.2\n[plasma]"))
    assert uniform.returncode == 0, uniform.stderr
    mapped = _load(out / "released_fraction.nii.gz")[0][..., -1]
    flat = _load(tmp_path / "uniform" / "released_fraction.nii.gz")[0][..., -1]
    assert np.nanmean(mapped) > 1.2 * np.nanmean(flat)


def test_ph_map_needs_ph_sensitive_liposomes(tmp_path):
    result, _ = _run(tmp_path, "bad_ph", text=TINY.format(noise=0.0, seed=3).replace("[output]", PH_MAP + "[output]"))
    assert_one_error(result, "[observation.ph_map] is the pH_e map of pH-sensitive liposomes")
