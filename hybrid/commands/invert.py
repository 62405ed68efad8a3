"""``hybrid invert CONFIG.toml``: the inverse PINN on an image (never DOLFINx; torch only inside hybrid.inverse).

Composition only: the IFP map (NIfTI, Pa) -> :class:`hybrid.records.Observations` ->
:func:`hybrid.inverse.images.disc_ifp_problem` (an IFPProblem on the tumour disc) with the
config's known coefficients and bounded unknowns -> :class:`hybrid.inverse.Trainer` (one per
ensemble member, seeds seed, seed + 1, ...). Writes into ``directory``:

- ``inversion.json``: for every estimate (the scalar unknowns and the rim thickness
  sqrt(K / (Lp S/V + LpL SL/V)) [m]) ``estimate``, ``unit``, ``spread`` (sample sd over ensemble
  members; null for one member) and, with a ``truth.json``, ``truth`` and ``relative_error``; the
  loss history of every member, training seconds, device and dtype;
- ``ifp.nii.gz``: the recovered pressure [Pa] (ensemble mean) voxel-averaged on the observation
  grid like the data (NaN where a voxel sees no tissue).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np

from hybrid.config.invert import IFP_COEFFICIENTS, InvertConfig
from hybrid.inverse import Trainer, TrainingConfig
from hybrid.inverse.images import disc_ifp_problem, voxel_average
from hybrid.io.nifti import read_volume, write_volume
from hybrid.records import ObservationOperator, Observations, VoxelGrid

__all__ = ["run_invert", "read_ifp_observations", "truth_values"]

_TRUTH_KEYS = {"conductivity": ("tumour", "hydraulic_conductivity"),
               "vascular_exchange": ("tumour_derived", "vascular_exchange_LpSV"),
               "effective_pressure": ("tumour_derived", "effective_pressure"),
               "lymphatic_filtration": ("tumour", "lymphatic_filtration"),
               "lymphatic_pressure": ("tumour", "lymphatic_pressure")}
"""Where each IFP coefficient lives in ``hybrid synthesize``'s truth.json ``parameters``."""


def read_ifp_observations(config: InvertConfig) -> Observations:
    """The IFP map [Pa] of ``config`` as an Observations record (one steady frame at t = 0)."""
    values, affine = read_volume(config.observations)
    grid = VoxelGrid(affine, values.shape)
    operator = ObservationOperator(points_per_axis=config.points_per_axis, dim=2)
    return Observations("ifp", "Pa", grid, [0.0], values, config.noise_sd, operator)


def truth_values(path: Path) -> dict[str, float]:
    """True IFP coefficients [SI] and rim thickness [m] from a ``hybrid synthesize`` truth.json."""
    try:
        parameters = json.loads(Path(path).read_text())["parameters"]
        truth = {name: float(parameters[group][key]["value"]) for name, (group, key) in _TRUTH_KEYS.items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not a `hybrid synthesize` truth.json (missing or bad {exc}); "
                         "point [data] truth at one or leave it out") from None
    truth["rim_thickness"] = math.sqrt(truth["conductivity"] / (truth["vascular_exchange"]
                                                                + truth["lymphatic_filtration"]))
    return truth


def run_invert(config: InvertConfig, directory: Path, log, resume: bool = False) -> dict:
    """Train, then write ``inversion.json`` and ``ifp.nii.gz`` into ``directory``; returns the
    inversion.json content."""
    observations = read_ifp_observations(config)
    truth = truth_values(config.truth) if config.truth is not None else None
    log(f"ifp inversion: {int(np.isfinite(observations.values).sum())} observed voxels, unknowns "
        f"{', '.join(config.unknowns)}, {config.ensemble} member(s) on {config.training['device']} "
        f"({config.training['dtype']})")
    unknowns = {name: asdict(unknown) for name, unknown in config.unknowns.items()}
    seeds = [config.training["seed"] + i for i in range(config.ensemble)]
    problems, results = [], []

    def checkpoint(seed):
        if config.checkpoint is None:
            return None
        return str(config.checkpoint) if config.ensemble == 1 else f"{config.checkpoint}.seed{seed}"

    for seed in seeds:
        training = TrainingConfig(**config.training | {"seed": seed}, checkpoint=checkpoint(seed))
        problem = disc_ifp_problem(config.radius, config.known, unknowns, IFP_COEFFICIENTS, observations,
                                   far_pressure=config.far_pressure, pressure_scale=config.pressure_scale, seed=seed)
        trainer = Trainer(problem, training, progress=log)
        if resume:
            if training.checkpoint is None:
                raise ValueError("--resume needs [training] checkpoint in the configuration")
            if Path(training.checkpoint).exists():
                trainer.resume(training.checkpoint)
                log(f"resumed member seed {seed} at step {trainer.step} from {training.checkpoint}")
        problems.append(trainer.problem)
        results.append(trainer.run())
    estimates = {}
    for name, (_, unit) in results[0].estimates.items():
        values = np.array([r.estimates[name][0] for r in results])
        entry = {"estimate": float(values.mean()), "unit": unit,
                 "spread": float(values.std(ddof=1)) if values.size > 1 else None, "members": values.tolist()}
        if truth is not None and name in truth:
            entry |= {"truth": truth[name], "relative_error": abs(entry["estimate"] - truth[name]) / abs(truth[name])}
        estimates[name] = entry
    pressure = np.mean([voxel_average(p, observations.grid, observations.operator) for p in problems], axis=0)
    write_volume(Path(directory) / "ifp.nii.gz", pressure, observations.grid.affine_mm,
                 description="recovered IFP [Pa] (inverse PINN)", intent_name="IFP [Pa]")
    summary = {"command": "invert", "problem": "ifp", "observations": str(config.observations),
               "known": {name: {"value": value, "unit": IFP_COEFFICIENTS[name]} for name, value in config.known.items()},
               "estimates": estimates,
               "training": {"members": [{"seed": seed, "seconds": r.seconds, "steps": r.steps, "history": r.history}
                                        for seed, r in zip(seeds, results)],
                            "seconds": sum(r.seconds for r in results), "device": results[0].device,
                            "dtype": results[0].dtype, "settings": config.training}}
    (Path(directory) / "inversion.json").write_text(json.dumps(summary, indent=2) + "\n")
    for name, entry in estimates.items():
        error = f", error {100 * entry['relative_error']:.1f} %" if "relative_error" in entry else ""
        log(f"{name} = {entry['estimate']:.4g} {entry['unit']}{error}")
    return summary
