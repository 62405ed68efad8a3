"""Classical FEM inversion (hybrid/validation/classical.py) on a `hybrid synthesize` twin.

Runs the twin of ``--config`` (default examples/synthesize_disc.toml) into a temporary folder,
then from its files:

- IFP: truth/ifp.nii.gz plus seeded Gaussian noise (sd = level x peak) at each ``--ifp-noise``
  level -> (log K/(Lp S/V), p_e) by least squares over IFP solves; once at 5 % the full
  (log K, log Lp S/V, p_e) fit for the singular values (identifiability);
- release: released_fraction.nii.gz (the twin's own noise) -> log k_rel over transport runs.

Writes JSON (estimates, truth, relative errors, standard errors, FEM solves, wall times, machine)
to ``--output`` (default benchmarks/results/classical_inversion.json). Serial.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from mpi4py import MPI

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "examples" / "synthesize_disc.toml")
    parser.add_argument("--ifp-noise", type=float, nargs="+", default=[0.0, 0.02, 0.05, 0.10])
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "classical_inversion.json")
    args = parser.parse_args()

    from hybrid.commands.synthesize import run_synthesize
    from hybrid.commands.transport import setup_transport
    from hybrid.config.synthesize import load_synthesize_config
    from hybrid.config.validate import with_output_directory
    from hybrid.io.nifti import read_volume
    from hybrid.problems.ifp import OuterBoundary
    from hybrid.validation.classical import fit_ifp, fit_release_rate
    import nibabel as nib

    comm, quiet = MPI.COMM_WORLD, (lambda message: None)
    config, observation = load_synthesize_config(args.config)
    report = {"config": str(args.config), "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                                                      "load_average_before": list(os.getloadavg())}}
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        truth = run_synthesize(with_output_directory(config, Path(folder)), observation, comm, quiet)
        report["synthesize_s"] = time.perf_counter() - start
        ifp, affine = read_volume(Path(folder) / "truth" / "ifp.nii.gz")
        fraction = np.asarray(nib.load(str(Path(folder) / "released_fraction.nii.gz")).get_fdata())
        clean_fraction = np.asarray(nib.load(str(Path(folder) / "truth" / "released_fraction.nii.gz")).get_fdata())

    setup = setup_transport(config, comm, quiet, {})
    tumour, boundary = setup.config.tumour, OuterBoundary(config.flow.boundary, config.flow.far_field_pressure)
    ratio = tumour.hydraulic_conductivity / tumour.vascular_exchange
    start = [np.log(3 * ratio), 0.6 * tumour.effective_pressure]
    report["ifp"] = {"truth": {"K_over_LpSV_m2": ratio, "p_e_Pa": tumour.effective_pressure},
                     "start": {"K_over_LpSV_m2": 3 * ratio, "p_e_Pa": start[1]}, "fits": []}
    for level in args.ifp_noise:
        sd = max(level, 1e-3) * np.nanmax(ifp)   # noise-free: weights as for 0.1 % noise
        image = ifp + level * np.nanmax(ifp) * np.random.default_rng(0).standard_normal(ifp.shape)
        fit = fit_ifp(setup.domain, tumour, boundary, image, affine, sd, x0=start)
        (log_ratio, p_e), (se_ratio, se_pe) = fit.estimate, fit.standard_error
        report["ifp"]["fits"].append({
            "noise": level, "K_over_LpSV_m2": float(np.exp(log_ratio)), "p_e_Pa": float(p_e),
            "relative_error": {"K_over_LpSV": float(np.exp(log_ratio) / ratio - 1),
                               "p_e": float(p_e / tumour.effective_pressure - 1)},
            "standard_error": {"log_K_over_LpSV": float(se_ratio), "p_e_Pa": float(se_pe)},
            "fem_solves": fit.fem_solves, "wall_s": fit.wall_s, "chi2_per_datum": fit.chi2_per_datum})
    sd = 0.05 * np.nanmax(ifp)
    image = ifp + sd * np.random.default_rng(0).standard_normal(ifp.shape)
    full = fit_ifp(setup.domain, tumour, boundary, image, affine, sd, unknowns="full",
                   x0=[np.log(tumour.hydraulic_conductivity) + 1, np.log(tumour.vascular_exchange), start[1]])
    report["ifp"]["full_5_percent"] = full.as_dict()

    k_true = float(truth["parameters"]["release_rate"]["value"])
    times = [t for t in observation.times if t > 0]
    post = [i for i, t in enumerate(observation.times) if t > 0]
    sd = observation.noise * float(np.nanmax(np.abs(clean_fraction)))
    fit = fit_release_rate(setup, times, fraction[..., post], affine, sd, x0=np.log(5 * k_true))
    report["release"] = {"truth_per_s": k_true, "start_per_s": 5 * k_true, "frames_s": times,
                         "noise": observation.noise, "estimate_per_s": float(np.exp(fit.estimate[0])),
                         "relative_error": float(np.exp(fit.estimate[0]) / k_true - 1),
                         "standard_error_log": float(fit.standard_error[0]),
                         "fem_solves": fit.fem_solves, "wall_s": fit.wall_s, "chi2_per_datum": fit.chi2_per_datum}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
