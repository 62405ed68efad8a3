"""A tiny release twin shared by the invert and validate CLI tests: ``hybrid synthesize`` on a
1 mm disc (steady Darcy IFP, pH-sensitive liposomes at pH 6.8, k_rel = 5.06e-5 1/s, dose plasma
curve) with total drug and released fraction at 20, 40 and 60 min (2 % noise, 0.5 mm voxels), and
a ``hybrid invert`` configuration of kind "release" holding out the 40-min frame.
``SLOW``: the same disc without flow over 4 h (frames at 1, 2, 3, 4 h, 5 % noise, 3 h held out),
the twin the slow test trains to convergence."""

from pathlib import Path

from cli_helpers import run_hybrid

SYNTHESIZE = """
[geometry]
shape = "disc"
tumour_radius = 1.0e-3
mesh_size = 2.0e-4
[flow]
model = "{flow}"
[drug]
formulation = "ph_sensitive"
[release]
ph = 6.8
[plasma]
model = "dose"
dose = 50.0
dose_unit = "mg/m^2"
[time]
end = {end}
step = {step}
[observation]
times = [{times}]
voxel_size_mm = 0.5
noise = {noise}
seed = {seed}
quantities = ["total_drug", "released_fraction"]
[output]
directory = "synth"
"""

INVERT = """
[data]
observations = "synth/observations.nii.gz"
released_fraction = "synth/released_fraction.nii.gz"
truth = "synth/truth.json"
held_out_times = [{held_out}]
[problem]
kind = "release"
radius = 1.0e-3
transport = "synthesize.toml"
[unknowns.release_rate]
lower = 1.0e-7
upper = 1.0e-3
[training]
adam_steps = {adam}
lbfgs_steps = {lbfgs}
collocation_points = {points}
dtype = "float64"
seed = 0
threads = 1
balance = "{balance}"
[output]
directory = "inverted"
"""

TRUE_RELEASE_RATE = 5.055666712406066e-05   # 1/s: hybrid.problems.release.ph_release_rate(6.8)
FAST = {"flow": "darcy", "end": 3600.0, "step": 600.0, "times": "-60.0, 1200.0, 2400.0, 3600.0", "noise": 0.02,
        "seed": 3}
SLOW = {"flow": "none", "end": 14400.0, "step": 300.0, "times": "-60.0, 3600.0, 7200.0, 10800.0, 14400.0",
        "noise": 0.05, "seed": 1}


def write_release_twin(directory: Path, twin: dict = FAST, extra: str = "") -> None:
    """Run the ``twin``'s ``hybrid synthesize`` (with the TOML text ``extra`` appended) into
    ``directory / "synth"``."""
    (directory / "synthesize.toml").write_text(SYNTHESIZE.format(**twin) + extra)
    result = run_hybrid("synthesize", directory / "synthesize.toml", timeout=300)
    assert result.returncode == 0, result.stderr


def invert_config(directory: Path, name: str = "invert.toml", *, adam: int = 3, lbfgs: int = 0, points: int = 64,
                  held_out: str = "2400.0", balance: str = "residuals") -> Path:
    """An invert configuration of the twin in ``directory`` (few steps by default)."""
    path = directory / name
    path.write_text(INVERT.format(adam=adam, lbfgs=lbfgs, points=points, held_out=held_out, balance=balance))
    return path
