"""summary.json: one JSON document per run, written by rank 0."""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import numpy as np


def _plain(value):
    """JSON-serialisable copy of ``value`` (numpy scalars/arrays, Paths, tuples)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def software_versions() -> dict[str, str]:
    """Versions of Python and the numerical stack that are importable (no import side effects)."""
    from importlib import metadata

    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for package in ("hybrid", "dolfinx-solver-real", "fenics-dolfinx", "fenics-basix", "fenics-ufl",
                    "mpi4py", "gmsh", "numpy", "scipy", "torch", "nibabel"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def write_summary(path: Path, summary: dict, comm) -> None:
    """Write ``summary`` as indented JSON on rank 0 of ``comm`` (others do nothing)."""
    if comm.rank == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_plain(summary), indent=2) + "\n")
