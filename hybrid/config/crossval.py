"""Schema of ``hybrid validate CONFIG.toml``: cross-validation of a ``hybrid invert`` run (issue 9
point 4) against the FEM. TOML ``[section] key`` = field ``config.section.key``::

    [inversion]
    config = "invert_disc.toml"           # the `hybrid invert` configuration of the run
    directory = "../results/invert_disc"  # optional: its output (inversion.json, fields, networks/);
                                          # default: that configuration's [output] directory

    [geometry]                            # kind "ifp" only, as for `hybrid forward`: the FEM mesh
    shape = "disc"                        # of the re-solve, the inverse problem's domain: a disc
    tumour_radius = 5.0e-3                # without host, m, equal to the invert [problem] radius
    mesh_size = 2.0e-4                    # m (no adaptive_dofs: that is hybrid forward's only)

    [output]
    directory = "../results/validate_disc"

    [classical]                           # optional (scalar unknowns): the classical FEM least
    fit = true                            # squares of the same unknowns from the same start and
    max_fem_runs = 60                     # bounds on the same data (trained frames), beside the PINN

Kinds "release" and "coupled" have no ``[geometry]``: they re-solve the invert run's ``[problem]
transport`` configuration (its mesh and time steps) with the recovered release rate (coupled: and
the recovered tumour conductivity and effective pressure).
Paths (``[inversion] config`` and ``directory``, ``[output] directory``) are relative to this file.
The truth (optional) is the invert run's ``[data] truth`` (a ``hybrid synthesize`` truth.json)
with ``truth/`` beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from hybrid.config.geometry import GeometryConfig, geometry_from_table
from hybrid.config.invert import InvertConfig, load_invert_config
from hybrid.config.validate import (REQUIRED, ConfigError, OutputConfig, choice, integer, output_from_table, read_toml,
                                    relative_path, take_keys)

__all__ = ["CrossvalConfig", "InversionSection", "ClassicalSection", "crossval_config_from_dict", "load_crossval_config"]


@dataclass(frozen=True)
class InversionSection:
    """``[inversion]``: the invert configuration file and the folder of its outputs."""

    config: Path
    directory: Path


@dataclass(frozen=True)
class ClassicalSection:
    """``[classical]``: run the classical FEM least squares (``fit``) with at most ``max_fem_runs``
    forward runs in the fit (whole least-squares steps of 1 + one run per unknown; 2 per unknown more
    for the standard errors)."""

    fit: bool = False
    max_fem_runs: int = 60


@dataclass(frozen=True)
class CrossvalConfig:
    inversion: InversionSection
    geometry: GeometryConfig | None   # kind "ifp": the FEM mesh; "release", "coupled": None (the transport's)
    output: OutputConfig
    invert: InvertConfig              # [inversion] config, loaded and validated
    classical: ClassicalSection = ClassicalSection()


def crossval_config_from_dict(data: dict, origin: str = "<config>", base: Path = Path(".")) -> CrossvalConfig:
    """Validate a parsed ``hybrid validate`` TOML (module docstring)."""
    try:
        extra = sorted(set(data) - {"inversion", "geometry", "output", "classical"})
        if extra:
            raise ConfigError(f"unknown section(s) {', '.join(extra)}; allowed: inversion, geometry, output, "
                              "classical")
        inversion = take_keys(data.get("inversion", {}), "inversion", {"config": REQUIRED, "directory": None})
        invert_path = relative_path(base, "inversion", "config", inversion["config"])
        invert = load_invert_config(invert_path)
        directory = (invert.output.directory if inversion["directory"] is None
                     else relative_path(base, "inversion", "directory", inversion["directory"]))
        geometry = None
        if invert.problem.kind != "ifp":
            if "geometry" in data:
                raise ConfigError(f"[geometry] is for kind \"ifp\": the {invert.problem.kind} kind re-solves on the "
                                  "mesh of the invert run's [problem] transport configuration; remove [geometry]")
        else:
            geometry = geometry_from_table(data.get("geometry", {}), base, adaptive=False)
            if geometry.shape != "disc" or geometry.host_thickness != 0:
                raise ConfigError("[geometry] must be the inverse problem's domain: shape = \"disc\" and "
                                  f"host_thickness = 0, got shape = {geometry.shape!r}, "
                                  f"host_thickness = {geometry.host_thickness:g}")
            if not math.isclose(geometry.tumour_radius, invert.problem.radius, rel_tol=1e-9):
                raise ConfigError(f"[geometry] tumour_radius {geometry.tumour_radius:g} m must equal the invert "
                                  f"[problem] radius {invert.problem.radius:g} m")
        table = take_keys(data.get("classical", {}), "classical", {"fit": False, "max_fem_runs": 60})
        classical = ClassicalSection(choice("classical", "fit", table["fit"], (True, False)),
                                     integer("classical", "max_fem_runs", table["max_fem_runs"], 4))
        fields = [name for name in invert.unknowns if getattr(invert.unknowns, name).field]
        if classical.fit and fields:
            raise ConfigError(f"[classical] fit fits scalar unknowns; {', '.join(fields)} is a field unknown")
        return CrossvalConfig(InversionSection(invert_path, directory), geometry,
                              output_from_table(data.get("output"), base), invert, classical)
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None


def load_crossval_config(path: str | Path) -> CrossvalConfig:
    """Read and validate a ``hybrid validate`` TOML file (paths relative to it)."""
    path = Path(path)
    return crossval_config_from_dict(read_toml(path), str(path), path.parent)
