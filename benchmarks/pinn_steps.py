"""Inverse PINN: Adam steps per second against collocation points, float32 and float64.

Problem (the issue's planning anchor: two coupled fields, Fourier features, 4 x 64 MLP): the 2-D
liposomal + free drug equations of :class:`hybrid.inverse.TransportProblem` on a 2 mm square over
one hour, with vascular exchange of both forms (Kedem-Katchalsky, liposomal plasma curve of a
0.7 mg/kg dose, table permeabilities and S/V), an unknown release rate, linear uptake, and one
voxel-averaged data term (16 x 16 voxels x 3 frames, 3 x 3 points per voxel). Diffusion and
reaction only (no advection term), so the step is slightly cheaper than a full ADR step.

Each case times ``--steps`` Adam steps (after ``--warmup`` steps in a separate trainer) with
fixed loss weights and collocation points (balancing and resampling add about one extra step
per ``balance_every`` / ``resample_every``). ``--threads`` sets torch's CPU threads. On CUDA
(``--device cuda``) the step is captured in a CUDA graph (capture included in the time).
Writes benchmarks/results/pinn_steps.json (``--output``); ``--smoke`` runs a tiny case.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from hybrid.inverse import BoundedScalar, Box, DrugExchange, Trainer, TrainingConfig, TransportProblem
from hybrid.problems.parameters import default
from hybrid.problems.pharmacokinetics import PlasmaCurve, dose_amount
from hybrid.records import ObservationOperator, Observations, VoxelGrid

HALF = 1e-3      # m
END = 3600.0     # s


def build_problem(seed: int) -> TransportProblem:
    plasma = PlasmaCurve.liposomal(dose_amount(0.7, "mg/kg"))
    sv = default("SV_T")
    grid = VoxelGrid.regular([-HALF + HALF / 16, -HALF + HALF / 16, 0.0], [HALF / 8, HALF / 8, 1e-3], (16, 16, 1))
    rng = np.random.default_rng(seed)
    frames = 1e-3 * (1.0 + 0.05 * rng.standard_normal((16, 16, 1, 3)))
    data = Observations("total_drug", "mol/m^3", grid, [600.0, 1800.0, 3600.0], frames, 5e-5,
                        ObservationOperator(points_per_axis=3, dim=2))
    return TransportProblem(
        Box(2, HALF), {"diffusivity_lipo": 1e-12, "diffusivity_free": 1.5e-10, "uptake_rate": default("k_up"),
                       "release_rate": BoundedScalar("release_rate", "1/s", 1e-7, 1e-3)},
        end_time=END, concentration_scale=1e-3, observations=(data,), boundary="free",
        exchange_lipo=DrugExchange(plasma, default("P_L") * sv, default("sigma_L")),
        exchange_free=DrugExchange(PlasmaCurve.constant(0.0), default("P_F") * sv, default("sigma_F")),
        interstitial_fraction=default("phi_T"), width=64, depth=4, features=32, sigma=1.0,
        generator=torch.Generator().manual_seed(seed))


def time_case(points: int, dtype: str, device: str, steps: int, warmup: int) -> dict:
    common = dict(collocation_points=points, dtype=dtype, device=device, balance="none", resample_every=0,
                  progress_every=0)
    Trainer(build_problem(0), TrainingConfig(adam_steps=warmup, **common)).run()
    result = Trainer(build_problem(0), TrainingConfig(adam_steps=steps, **common)).run()
    return {"collocation_points": points, "dtype": dtype, "device": device, "steps": steps,
            "seconds": result.seconds, "steps_per_s": steps / result.seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--smoke", action="store_true", help="128 points, 3 steps: checks the script runs")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "pinn_steps.json")
    args = parser.parse_args()
    if args.smoke:
        args.points, args.steps, args.warmup = [128], 3, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = list(os.getloadavg())
    table = []
    for points in args.points:
        for dtype in args.dtypes:
            row = time_case(points, dtype, args.device, args.steps, args.warmup)
            print(f"{points:6d} points {dtype:8s} {row['steps_per_s']:8.2f} Adam steps/s ({row['seconds']:.1f} s)")
            table.append(row)
    report = {
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "torch_threads": torch.get_num_threads(), "load_average_before": load_before,
                    "load_average_after": list(os.getloadavg()),
                    "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None},
        "versions": {"torch": torch.__version__, "numpy": np.__version__},
        "problem": "2-D liposomal + free drug, vascular exchange, unknown k_rel, 4 x 64 MLP, 32 Fourier features",
        "table": table,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
