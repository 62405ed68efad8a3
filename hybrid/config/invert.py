"""Schema of ``hybrid invert CONFIG.toml``: the inverse PINN (hybrid/inverse/) on image data.
TOML ``[section] key`` = field ``config.section.key``; every path is relative to this TOML file.

Kind "ifp" (steady Darcy-Starling IFP on a disc, from an IFP map)::

    [data]
    observations = "../results/synthesize_disc/truth/ifp.nii.gz"   # IFP map [Pa] (3-D NIfTI, one slice)
    noise_sd = 0.0                        # noise sd of the data, in their unit (hybrid validate: the Fisher information's noise scale; 0: none)
    points_per_axis = 3                   # voxel averaging: sub-voxel midpoints per axis (as synthesize)
    truth = "../results/synthesize_disc/truth.json"   # optional: a `hybrid synthesize` truth.json

    [problem]
    kind = "ifp"
    radius = 5.0e-3                       # m, tumour disc centred at the world origin; p = far_pressure on its edge
    far_pressure = 0.0                    # Pa
    pressure_scale = 1000.0               # Pa, nondimensionalisation of the pressure
    vascular_exchange = 1.9e-6            # known coefficients [SI] (a number), or an [unknowns.NAME] table

    [unknowns.conductivity]               # K [m^2/(Pa s)]
    lower = 1e-14
    upper = 1e-11
    initial = 1e-12                       # optional: geometric (log) / arithmetic mean of the bounds
    log = true                            # positive unknown learned in log space
    field = false                         # optional: true makes it a field K(x) (conductivity,
                                          # vascular_exchange or effective_pressure; no initial)

    [training]
    adam_steps = 600
    lbfgs_steps = 200
    learning_rate = 1e-3                  # Adam learning rate of the networks (default 1e-3)
    collocation_points = 2048
    dtype = "float64"                     # or "float32"
    device = "cpu"                        # or "cuda"
    seed = 0
    balance = "residuals"                 # gradient-norm balancing of the PDE terms ("all": data too; "none")
    residual_weight = 1.0                 # optional, balance "none" only: fixed weight of every residual term
    unknown_weights = "balanced"          # optional: the scalar unknowns' gradient from the balanced loss, or
                                          # "unit": from the unweighted sum of its terms (the networks and
                                          # field unknowns keep the balanced one; L-BFGS then trains those only)
    ensemble = 1                          # members (seeds seed, seed + 1, ...); >= 2 gives a spread
    checkpoint = "checkpoints/invert_disc.pt"   # optional; `hybrid invert --resume` continues from it
    threads = 1                           # optional: torch CPU threads (default: torch's, all cores); on a
                                          # few shared cores one thread trains small networks fastest

    [output]
    directory = "../results/invert_disc"

Coefficients of kind "ifp" (hybrid.inverse.IFPProblem): ``conductivity``, ``vascular_exchange``,
``effective_pressure`` (each known or unknown, required), ``lymphatic_filtration`` and
``lymphatic_pressure`` (default 0). A steady IFP map fixes only K / (Lp S/V) (the rim thickness)
and the plateau: at most one of K, Lp S/V and LpL SL/V, and one of p_e and p_L, may be unknown
(more are refused).

Kind "release" (liposomal and free drug in space-time on the disc, unknown release rate k_rel),
from a `hybrid synthesize` run::

    [data]
    observations = "../results/synthesize_release/observations.nii.gz"   # total drug, 4-D + FrameTimes_s sidecar
    released_fraction = "../results/synthesize_release/released_fraction.nii.gz"   # optional, 4-D
    truth = "../results/synthesize_release/truth.json"   # optional
    held_out_times = [7200.0]             # s: frames left out of training (for `hybrid validate`)

    [problem]
    kind = "release"
    radius = 2.0e-3                       # m, the disc of the transport configuration
    transport = "synthesize_release.toml" # the known physics: a transport (or synthesize) configuration
    concentration_scale = 1.0e-3          # mol/m^3 (optional: the largest observed total drug)

    [unknowns.release_rate]               # k_rel [1/s]
    lower = 1.0e-7
    upper = 1.0e-3

The release kind takes every coefficient but the unknowns from ``[problem] transport`` (flow
"none" or "darcy" on a "disc", formulation "liposomal" or "ph_sensitive", linear uptake); frames
at t <= 0 (pre-injection) and ``held_out_times`` are not trained on. ``[unknowns.vessel_permeability]``
(kinds "release" and "coupled") makes the liposomes' vessel wall permeability P_L [m/s] unknown
beside the release law: their transvascular exchange is then P_L S/V with the transport's S/V.

pH-triggered release (formulation "ph_sensitive"): instead of ``release_rate`` declare ``ph_50``
and/or ``steepness`` (pH_50 and Hill exponent n of k(pH_e) = k_b + (k_max - k_b) / (1 + 10^{n (pH_e -
pH_50)}), hybrid/problems/release.py; the others table values); the PINN's release rate is k(pH_e(x))
of the known pH map (the PINN interpolates the map (``hybrid.inverse.maps.KnownMap``) at each of its points; the
FEM samples it at the P1 vertices and interpolates between them)::

    [data]
    ph_map = "../results/synthesize_ph_release/truth/ph.nii.gz"   # pH_e [1]; default the transport's
                                          # [release] ph_map, else its uniform [release] ph

When ``[problem] transport`` is a synthesize configuration with ``[observation.ph_map]`` (its data
came from the pH map it wrote to ``truth/ph.nii.gz``), ``[data] ph_map`` is required: without it
the inversion would silently use the uniform ``[release] ph`` instead of the map the data came
from, so loading stops with a ConfigError naming the key rather than guessing the file.

    [unknowns.ph_50]                      # [1]
    lower = 6.0
    upper = 7.6
    initial = 7.2
    log = false

    [unknowns.steepness]                  # n [1], positive: log space
    lower = 0.5
    upper = 8.0

Weak residual form (kinds "release" and "coupled"; :mod:`hybrid.inverse.weak`): the drug
equations are checked against space-time test functions, so only the networks' values and the
Darcy flux enter (advection by parts; no autograd derivatives of the drug), on fixed quadrature
points (no drug collocation points; with Darcy flow the pressure equation stays pointwise on its
collocation points, resampled as usual)::

    [training]
    residual_form = "weak"                # default "strong" (pointwise residuals at collocation points)
    weak_cells = 12                       # cells per space axis over [-1, 1] (x / radius); >= 2
    weak_time_cells = 12                  # cells over [0, end_time]; >= 2
    weak_gauss = 3                        # Gauss-Legendre points per cell and axis; >= 1 (3: see weak.py)
    weak_subdivisions = 1                 # that rule on this many parts of each cell per space axis; >= 1
    weak_time_subdivisions = 1            # ... and in time; >= 1

The ``weak_*`` keys apply to ``residual_form = "weak"`` only. Kind "ifp" is refused (the weak
form is that of the drug equations). Test functions live on boxes of 2 x 2 cells inside the disc:
with 12 cells they cover 78 % of it, every direction only out to r = 0.83 R (weak.py), so the
outer rim is not checked. On the pH-release twin the weak form alone does not recover the pH law
from a distant start (benchmarks/pinn_release_weak.py).

Warm start (kind "release" only; refused for "ifp" and "coupled", not built there)::

    [training]
    warm_start = "fem"                    # default "none": untrained networks
    warm_start_adam_steps = 4000          # the fit's Adam steps (default 4000)
    warm_start_lbfgs_steps = 1000         # then L-BFGS iterations (default 1000)
    warm_start_points = 2048              # its collocation points (default 2048)

With ``"fem"``, ``hybrid invert`` first solves the forward problem of ``[problem] transport`` (FEM,
serial, its own time step; DOLFINx is imported only then) with the release law at the unknowns'
start values (``initial``, else the geometric (log) / arithmetic mean of the bounds) and the pH_e
map of the inversion, and regresses each member's state networks onto the nodal C_L, C_F, C_I (every
60 s, or every step if coarser; :mod:`hybrid.inverse.warm_start`). No truth enters. The
``warm_start_*`` keys apply to ``warm_start = "fem"`` only. On the pH-release twin it kept n from
collapsing over 2000 + 300 steps, but not over longer training
(benchmarks/pinn_release_warmstart.py). A member resumed from its checkpoint skips it.

Kind "coupled" (issue 9: interstitial pressure and release kinetics from drug images): a tumour
disc in host tissue, the steady Darcy-Starling pressure and the liposomal / free / cell drug fed by
it, trained jointly (:func:`hybrid.inverse.coupled.tumour_host_problem`: a cusp-capturing pressure
network with the interface flux condition, drug networks that also see the interface level set).
The data keys are those of kind "release" (total drug, optional released fraction, truth,
held-out times, pH map); ``[problem] transport`` is a transport or synthesize configuration with
``[geometry] shape = "disc"``, ``host_thickness > 0`` and ``[flow] model = "darcy"`` (Dirichlet
outer edge): every coefficient but the unknowns comes from it (tumour and host)::

    [problem]
    kind = "coupled"
    radius = 1.0e-3                       # m, the tumour radius of the transport configuration
    transport = "synthesize_coupled.toml"
    flow_points = 4096                    # the pressure's own collocation points, redrawn with the drug's
    interface_width = 0.05                # [1] width w of the drug networks' tanh(phi / w) input (0: none)
    interface_points = 256                # fixed points of the interface flux condition [K dp/dn] = 0
    parametric_pressure = false           # true: one pressure network over the unknowns' box of K and p_e

    [unknowns.release_rate]               # k_rel [1/s] (or ph_50 / steepness with a pH map, as "release")
    lower = 1.0e-7
    upper = 1.0e-3
    initial = 1.0e-5

    [unknowns.conductivity]               # the tumour's K [m^2/(Pa s)] (the host's is known)
    lower = 3.0e-15
    upper = 3.0e-13
    initial = 1.0e-14

    [unknowns.effective_pressure]         # the tumour's p_e [Pa] (p_v - sigma (pi_v - pi_i))
    lower = 100.0
    upper = 4000.0
    initial = 2500.0

    [training]
    pretrain_adam_steps = 200             # pressure-only Adam steps first (unknowns held, no data)
    pretrain_lbfgs_steps = 100            # then pressure-only L-BFGS iterations
    unknowns_from_step = 400              # joint Adam steps with the unknowns held at their start values
    unknown_learning_rate = 3.0e-3        # Adam learning rate of the unknowns' raw parameters
    balance = "all"

The defaults of ``flow_points``, ``interface_width``, ``interface_points`` and the pre-training
steps are the best settings of benchmarks/pinn_twin_host.py (its "staged" run); that run also held
the unknowns for the first 400 joint steps, with an unknown learning rate of 3e-3 and ``balance =
"all"`` (``unknowns_from_step``, ``unknown_learning_rate`` and ``balance`` keep the defaults of
every kind, 0, 1e-2 and "residuals": set them as above). It still missed every target of issue 9
(k_rel -96 %, K_T -65 %, p_e -37 %; pressure 36 % relative L2). ``flow_points``,
``interface_width``, ``interface_points`` and the pre-training keys belong to kind "coupled" only.
The pre-training is skipped on ``--resume`` from an existing checkpoint (the checkpoint holds the
pressure network).

``parametric_pressure = true`` (:class:`hybrid.inverse.coupled.HostIFPProblem` ``parametric``): the
pressure network takes the unknown K and p_e as inputs and is pre-trained over their whole box, with
no data, and then kept fixed, so that the pressure follows the unknowns during the joint training
instead of holding them at the values it was pre-trained at. Give it more pre-training
(benchmarks/pinn_twin_host.py used ``pretrain_adam_steps = 2000``, ``pretrain_lbfgs_steps = 500``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path

from hybrid.config.validate import (ConfigError, OutputConfig, choice, integer, number, numbers,
                                    optional_number, output_from_table, read_toml, relative_path, spec_of, take_keys)

__all__ = ["UnknownConfig", "Unknowns", "DataConfig", "ProblemConfig", "TrainingSection", "InvertConfig",
           "IFP_COEFFICIENTS", "FIELD_UNKNOWNS", "RELEASE_UNKNOWNS", "PH_LAW_UNKNOWNS", "DRUG_UNKNOWNS",
           "COUPLED_UNKNOWNS", "starting_value", "WARM_STARTS",
           "invert_config_from_dict",
           "load_invert_config", "load_transport"]

IFP_COEFFICIENTS = {"conductivity": "m^2/(Pa s)", "vascular_exchange": "1/(Pa s)", "effective_pressure": "Pa",
                    "lymphatic_filtration": "1/(Pa s)", "lymphatic_pressure": "Pa"}
"""Coefficients of the "ifp" problem and their SI units."""
_IFP_DEFAULTS = {"lymphatic_filtration": 0.0, "lymphatic_pressure": 0.0}
LINEAR_UNKNOWNS = ("ph_50", "effective_pressure", "lymphatic_pressure")
"""Unknowns that may be learned linearly (``log = false``): a pH and pressures (signed, near 0)."""
FIELD_UNKNOWNS = ("conductivity", "vascular_exchange", "effective_pressure")
"""IFP coefficients that may be field unknowns (``[unknowns.NAME] field = true``, kind "ifp")."""
RELEASE_UNKNOWNS = {"release_rate": "1/s", "ph_50": "1", "steepness": "1"}
"""Unknowns of the "release" problem and their SI units: a uniform release rate k_rel, or the
midpoint pH_50 and Hill steepness n of the pH law k(pH_e) of pH-sensitive liposomes
(:func:`hybrid.problems.release.ph_release_rate`) given a pH_e map."""
PH_LAW_UNKNOWNS = ("ph_50", "steepness")
DRUG_UNKNOWNS = RELEASE_UNKNOWNS | {"vessel_permeability": "m/s"}
"""Unknowns of the "release" problem: the release unknowns and the liposomes' vessel wall
permeability P_L [m/s] (their transvascular exchange P_L S/V with the known S/V)."""
COUPLED_UNKNOWNS = DRUG_UNKNOWNS | {name: IFP_COEFFICIENTS[name] for name in ("conductivity", "effective_pressure")}
"""Unknowns of the "coupled" problem and their SI units: those of "release" and the tumour's
hydraulic conductivity K and effective pressure p_e (the host's coefficients are known)."""
KINDS = ("ifp", "release", "coupled")
_COUPLED_PROBLEM_KEYS = ("flow_points", "interface_width", "interface_points", "parametric_pressure")
_COUPLED_TRAINING_KEYS = ("pretrain_adam_steps", "pretrain_lbfgs_steps")
_WEAK_TRAINING_KEYS = ("weak_cells", "weak_time_cells", "weak_gauss", "weak_subdivisions",
                       "weak_time_subdivisions")
_WARM_START_KEYS = ("warm_start_adam_steps", "warm_start_lbfgs_steps", "warm_start_points")
FIT_ADAM_STEPS, FIT_LBFGS_STEPS, FIT_POINTS = 4000, 1000, 2048
"""Defaults of the warm start's fit (:func:`hybrid.inverse.warm_start.fit_states`): Adam steps,
L-BFGS iterations, collocation points [count]; those of benchmarks/pinn_release_warmstart.py, whose
fit reached 1.2 / 1.9 / 2.3 % relative L2 (C_L / C_F / C_I) on the pH-release twin in 78 s."""
WARM_STARTS = {"none": "untrained networks", "fem": "networks fitted to a FEM solve at the unknowns' start values"}
"""Values of ``[training] warm_start`` and what the networks start from."""


@dataclass(frozen=True)
class UnknownConfig:
    """One unknown: bounds and initial value in SI units; ``log``: learned in log space; ``field``:
    a field of x (kind "ifp": a small network bounded pointwise, starting at the middle of the
    bounds) instead of one number."""

    lower: float
    upper: float
    initial: float | None = None
    log: bool = True
    field: bool = False


def starting_value(spec: dict) -> float:
    """Starting value of an unknown from its keywords ``spec`` (``initial``, ``lower``, ``upper``,
    ``log``, as :class:`UnknownConfig`; in the unknown's SI unit): ``initial``, else the geometric
    (log) or arithmetic mean of the bounds."""
    if spec["initial"] is not None:
        return spec["initial"]
    return math.sqrt(spec["lower"] * spec["upper"]) if spec["log"] else 0.5 * (spec["lower"] + spec["upper"])


class Unknowns:
    """``[unknowns.NAME]`` tables: ``config.unknowns.NAME`` is an :class:`UnknownConfig`; iterates
    over the names like a mapping."""

    def __init__(self, entries: dict[str, UnknownConfig]):
        self._entries = dict(entries)

    def __getattr__(self, name: str) -> UnknownConfig:
        try:
            return self.__dict__["_entries"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __iter__(self):
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name) -> bool:
        return name in self._entries

    def items(self):
        return self._entries.items()


@dataclass(frozen=True)
class DataConfig:
    """``[data]``: the images (paths), their noise sd (data unit), the voxel averaging, the truth."""

    observations: Path
    noise_sd: float = 0.0
    points_per_axis: int = 3
    truth: Path | None = None
    released_fraction: Path | None = None      # release: 4-D released-fraction series [1]
    held_out_times: tuple[float, ...] = ()     # release: frame times [s] not trained on
    ph_map: Path | None = None                 # release: known pH_e map [1] (NIfTI); None: the transport's


@dataclass(frozen=True)
class ProblemConfig:
    """``[problem]``: kind, disc radius [m], scales and known coefficients (module docstring)."""

    kind: str
    radius: float
    far_pressure: float = 0.0                  # Pa (ifp)
    pressure_scale: float = 1000.0             # Pa
    conductivity: float | None = None          # ifp coefficients [SI]; None: unknown or default
    vascular_exchange: float | None = None
    effective_pressure: float | None = None
    lymphatic_filtration: float | None = None
    lymphatic_pressure: float | None = None
    transport: Path | None = None              # release: transport/synthesize configuration
    concentration_scale: float | None = None   # mol/m^3 (release); None: largest observed total drug
    flow_points: int = 4096                    # coupled: the pressure's own collocation points
    interface_width: float = 0.05              # coupled: [1] tanh(phi / w) input of the drug networks (0: none)
    interface_points: int = 256                # coupled: points of the interface flux condition
    parametric_pressure: bool = False          # coupled: pressure network over the box of K and p_e, fixed after pre-training


@dataclass(frozen=True)
class TrainingSection:
    """``[training]``: optimiser steps, points, precision, device, seeds, ensemble, checkpoint."""

    adam_steps: int = 600
    lbfgs_steps: int = 200
    collocation_points: int = 2048
    dtype: str = "float64"
    device: str = "cpu"
    seed: int = 0
    balance: str = "residuals"                 # loss balancing: "residuals" (PDE terms), "all", "none"
    residual_weight: float = 1.0               # balance "none": fixed weight of every residual term (data: 1)
    unknown_weights: str = "balanced"          # the scalar unknowns' gradient: "balanced" loss or "unit" weights
    ensemble: int = 1
    checkpoint: Path | None = None
    threads: int | None = None                 # torch CPU threads; None: torch's default (all cores)
    unknowns_from_step: int = 0                # Adam steps with the scalar unknowns held at their start
    learning_rate: float = 1e-3                # Adam learning rate of the networks
    unknown_learning_rate: float = 1e-2        # Adam learning rate of the unknowns' raw (log-space) parameters
    pretrain_adam_steps: int = 200             # coupled: pressure-only Adam steps before the joint training
    pretrain_lbfgs_steps: int = 100            # coupled: pressure-only L-BFGS iterations after those
    residual_form: str = "strong"              # PDE residuals: "strong" (pointwise) or "weak" (test functions)
    weak_cells: int = 12                       # weak form: cells per space axis over [-1, 1] (x / radius)
    weak_time_cells: int = 12                  # weak form: cells over [0, end_time]
    weak_gauss: int = 3                        # weak form: Gauss-Legendre points per cell and axis
    weak_subdivisions: int = 1                 # weak form: the rule on this many parts per cell and space axis
    weak_time_subdivisions: int = 1            # weak form: ... and in time
    warm_start: str = "none"                   # "fem": networks fitted to a FEM solve at the start values first
    warm_start_adam_steps: int = FIT_ADAM_STEPS     # warm start: Adam steps of the fit
    warm_start_lbfgs_steps: int = FIT_LBFGS_STEPS   # warm start: L-BFGS iterations after them
    warm_start_points: int = FIT_POINTS             # warm start: collocation points of the fit


@dataclass(frozen=True)
class InvertConfig:
    data: DataConfig
    problem: ProblemConfig
    unknowns: Unknowns
    training: TrainingSection
    output: OutputConfig

    def known(self) -> dict[str, float]:
        """The known IFP coefficients [SI] (kind "ifp"): given values, then defaults."""
        values = {name: getattr(self.problem, name) for name in IFP_COEFFICIENTS if name not in self.unknowns}
        return {name: value if value is not None else _IFP_DEFAULTS[name] for name, value in values.items()}


def _unknown(name: str, table) -> UnknownConfig:
    section = f"unknowns.{name}"
    values = take_keys(table, section, spec_of(UnknownConfig))
    lower, upper = number(section, "lower", values["lower"]), number(section, "upper", values["upper"])
    log = choice(section, "log", values["log"], (True, False))
    if not log and name not in LINEAR_UNKNOWNS:
        raise ConfigError(f"[{section}] is a positive coefficient: it is learned in log space (log = true; only "
                          f"{', '.join(LINEAR_UNKNOWNS)} may be linear), so that steps are relative changes for the "
                          "PINN and for the FEM's finite differences")
    if not lower < upper:
        raise ConfigError(f"[{section}] needs lower < upper, got lower = {lower:g}, upper = {upper:g}")
    if log and lower <= 0:
        raise ConfigError(f"[{section}] is learned in log space (log = true): lower must be > 0, got {lower:g}")
    initial = optional_number(section, "initial", values["initial"])
    if initial is not None and not lower < initial < upper:
        raise ConfigError(f"[{section}] initial {initial:g} must lie strictly between lower and upper")
    field = choice(section, "field", values["field"], (True, False))
    if field and initial is not None:
        raise ConfigError(f"[{section}] initial applies to a scalar unknown; a field starts at the middle of its "
                          "bounds")
    return UnknownConfig(lower, upper, initial, log, field)


def _training(table, base: Path) -> TrainingSection:
    values = take_keys(table, "training", spec_of(TrainingSection))
    for name, allowed in {"dtype": ("float32", "float64"), "device": ("cpu", "cuda"),
                          "balance": ("residuals", "all", "none"), "residual_form": ("strong", "weak"),
                          "unknown_weights": ("balanced", "unit"),
                          "warm_start": WARM_STARTS}.items():
        choice("training", name, values[name], allowed)
    misplaced = [key for key in _WEAK_TRAINING_KEYS if key in table and values["residual_form"] != "weak"]
    if misplaced:
        raise ConfigError(f"[training] {', '.join(misplaced)} apply to residual_form = \"weak\" only")
    misplaced = [key for key in _WARM_START_KEYS if key in table and values["warm_start"] != "fem"]
    if misplaced:
        raise ConfigError(f"[training] {', '.join(misplaced)} apply to warm_start = \"fem\" only")
    minimum = {"adam_steps": 0, "lbfgs_steps": 0, "collocation_points": 1, "seed": 0, "ensemble": 1,
               "unknowns_from_step": 0, "pretrain_adam_steps": 0, "pretrain_lbfgs_steps": 0,
               "weak_cells": 2, "weak_time_cells": 2, "weak_gauss": 1, "weak_subdivisions": 1,
               "weak_time_subdivisions": 1,
               "warm_start_adam_steps": 0, "warm_start_lbfgs_steps": 0, "warm_start_points": 1}
    counts = {name: integer("training", name, values[name], low) for name, low in minimum.items()}
    if counts["unknowns_from_step"] > counts["adam_steps"]:
        raise ConfigError(f"[training] unknowns_from_step ({counts['unknowns_from_step']}) must not exceed "
                          f"adam_steps ({counts['adam_steps']})")
    residual_weight = number("training", "residual_weight", values["residual_weight"], positive=True)
    if residual_weight != 1.0 and values["balance"] != "none":
        raise ConfigError(f"[training] residual_weight applies to balance = \"none\" (balancing sets the weights), "
                          f"got balance = \"{values['balance']}\"")
    checkpoint, threads = values["checkpoint"], values["threads"]
    return TrainingSection(**counts, dtype=values["dtype"], device=values["device"], balance=values["balance"],
                           residual_weight=residual_weight, unknown_weights=values["unknown_weights"],
                           residual_form=values["residual_form"], warm_start=values["warm_start"],
                           learning_rate=number("training", "learning_rate", values["learning_rate"], positive=True),
                           unknown_learning_rate=number("training", "unknown_learning_rate",
                                                        values["unknown_learning_rate"], positive=True),
                           threads=None if threads is None else integer("training", "threads", threads, 1),
                           checkpoint=None if checkpoint is None else relative_path(base, "training", "checkpoint",
                                                                                     checkpoint))


def _data(table, base: Path, kind: str) -> DataConfig:
    values = take_keys(table, "data", spec_of(DataConfig))
    path = lambda name: None if values[name] is None else relative_path(base, "data", name, values[name])
    if kind == "ifp" and (values["released_fraction"] is not None or values["held_out_times"]
                          or values["ph_map"] is not None):
        raise ConfigError("[data] released_fraction, held_out_times and ph_map belong to kind \"release\" (the "
                          "IFP map is steady)")
    held_out = numbers("data", "held_out_times", values["held_out_times"]) if values["held_out_times"] else ()
    return DataConfig(observations=path("observations"),
                      noise_sd=number("data", "noise_sd", values["noise_sd"], non_negative=True),
                      points_per_axis=integer("data", "points_per_axis", values["points_per_axis"], 1),
                      truth=path("truth"), released_fraction=path("released_fraction"), held_out_times=held_out,
                      ph_map=path("ph_map"))


_IFP_SEEN = {("conductivity", "vascular_exchange", "lymphatic_filtration"):
             "the rim thickness sqrt(K / (Lp S/V + LpL SL/V))",
             ("effective_pressure", "lymphatic_pressure"): "the plateau (Lp S/V p_e + LpL SL/V p_L) / (Lp S/V + LpL SL/V)"}
"""Kind "ifp": groups of coefficients of which the map determines one combination (README, Identifiability)."""


def _problem(table, base: Path, unknowns: dict) -> ProblemConfig:
    table = table if isinstance(table, dict) else {}
    values = take_keys(table, "problem", spec_of(ProblemConfig))
    kind = choice("problem", "kind", values["kind"], KINDS)
    allowed = {"ifp": IFP_COEFFICIENTS, "release": DRUG_UNKNOWNS, "coupled": COUPLED_UNKNOWNS}[kind]
    misplaced = [key for key in _COUPLED_PROBLEM_KEYS if key in table and kind != "coupled"]
    if misplaced:
        raise ConfigError(f"[problem] {', '.join(misplaced)} belong(s) to kind \"coupled\"")
    fields = sorted(name for name, unknown in unknowns.items() if unknown.field)
    allowed_fields = FIELD_UNKNOWNS if kind == "ifp" else ()
    if any(name not in allowed_fields for name in fields):
        raise ConfigError(f"[unknowns] field = true is for {', '.join(FIELD_UNKNOWNS)} of kind \"ifp\", not "
                          f"{', '.join(name for name in fields if name not in allowed_fields)} of kind \"{kind}\"")
    extra = sorted(set(unknowns) - set(allowed))
    if extra:
        raise ConfigError(f"unknown(s) {', '.join(extra)} are not unknowns of the {kind} problem; "
                          f"choose from {', '.join(allowed)}")
    given = {name for name in IFP_COEFFICIENTS if values[name] is not None}
    if kind == "ifp":
        for name in IFP_COEFFICIENTS:
            if name in unknowns and name in given:
                raise ConfigError(f"{name} is both given in [problem] and declared in [unknowns.{name}]")
            if name not in unknowns and name not in given and name not in _IFP_DEFAULTS:
                raise ConfigError(f"[problem] {name} [{IFP_COEFFICIENTS[name]}] is required (a number) unless "
                                  f"declared as [unknowns.{name}]")
        for group, determined in _IFP_SEEN.items():
            unseen = [name for name in group if name in unknowns]
            if len(unseen) > 1:
                raise ConfigError(f"a steady IFP map determines only {determined}, not {' and '.join(unseen)} "
                                  "apart: leave all but one of them known")
        if "lymphatic_pressure" in unknowns and not (values["lymphatic_filtration"] or "lymphatic_filtration" in unknowns):
            raise ConfigError("[unknowns.lymphatic_pressure] has no effect without lymphatics: give [problem] "
                              "lymphatic_filtration > 0")
        if values["transport"] is not None or values["concentration_scale"] is not None:
            raise ConfigError("[problem] transport and concentration_scale belong to kind \"release\"")
    else:
        if given:
            raise ConfigError(f"[problem] {', '.join(sorted(given))}: the {kind} kind takes its known coefficients "
                              "from [problem] transport")
        if "release_rate" in unknowns and any(name in unknowns for name in PH_LAW_UNKNOWNS):
            raise ConfigError("declare either [unknowns.release_rate] (a uniform rate) or [unknowns.ph_50] / "
                              "[unknowns.steepness] (the pH law of a pH map), not both")
        if values["transport"] is None:
            raise ConfigError("[problem] transport (the transport or synthesize configuration with the known "
                              f"physics) is required for kind \"{kind}\"")
    return ProblemConfig(
        kind=kind, radius=number("problem", "radius", values["radius"], positive=True),
        far_pressure=number("problem", "far_pressure", values["far_pressure"]),
        pressure_scale=number("problem", "pressure_scale", values["pressure_scale"], positive=True),
        **{name: optional_number("problem", name, values[name]) for name in IFP_COEFFICIENTS},
        transport=None if values["transport"] is None else relative_path(base, "problem", "transport",
                                                                         values["transport"]),
        concentration_scale=optional_number("problem", "concentration_scale", values["concentration_scale"],
                                            positive=True),
        flow_points=integer("problem", "flow_points", values["flow_points"], 0),
        interface_width=number("problem", "interface_width", values["interface_width"], non_negative=True),
        interface_points=integer("problem", "interface_points", values["interface_points"], 1),
        parametric_pressure=_parametric_pressure(values["parametric_pressure"], unknowns))


def _parametric_pressure(value, unknowns) -> bool:
    """``[problem] parametric_pressure``: a boolean, true only with an unknown tumour K or p_e."""
    parametric = choice("problem", "parametric_pressure", value, (True, False))
    if parametric and not any(name in unknowns for name in ("conductivity", "effective_pressure")):
        raise ConfigError("[problem] parametric_pressure = true needs [unknowns.conductivity] or "
                          "[unknowns.effective_pressure]: the pressure is parametric in those")
    return parametric


def load_transport(path: Path):
    """The TransportConfig of a ``hybrid transport`` or ``hybrid synthesize`` TOML file."""
    from hybrid.config.synthesize import load_synthesize_config
    from hybrid.config.transport import load_transport_config

    return load_synthesize_config(path)[0] if "observation" in read_toml(Path(path)) else load_transport_config(path)


def _check_coupled_transport(problem: ProblemConfig) -> None:
    """ConfigError unless ``[problem] transport`` is a tumour disc of ``[problem] radius`` in host
    tissue with Darcy flow (what kind "coupled" models)."""
    if not Path(problem.transport).is_file():
        raise ConfigError(f"[problem] transport {problem.transport}: no such file")
    transport = load_transport(problem.transport)
    geometry = transport.geometry
    if geometry.shape != "disc" or geometry.host_thickness <= 0:
        raise ConfigError(f"kind \"coupled\" needs a tumour disc in host tissue: [problem] transport "
                          f"{problem.transport} has shape {geometry.shape!r}, host_thickness "
                          f"{geometry.host_thickness:g} m (set [geometry] host_thickness > 0 there, or use kind "
                          "\"release\")")
    if transport.flow.model != "darcy":
        raise ConfigError(f"kind \"coupled\" recovers the Darcy pressure: [problem] transport {problem.transport} "
                          f"has [flow] model = {transport.flow.model!r}; set it to \"darcy\"")
    if not math.isclose(geometry.tumour_radius, problem.radius, rel_tol=1e-9):
        raise ConfigError(f"[problem] radius {problem.radius:g} m must equal the tumour_radius "
                          f"{geometry.tumour_radius:g} m of [problem] transport {problem.transport}")
    if problem.parametric_pressure and transport.tissue.ktrans_map is not None:
        raise ConfigError("[problem] parametric_pressure = true does not take a [tissue] ktrans_map (its rim "
                          f"input uses the tumour's uniform Lp S/V): [problem] transport {problem.transport} has one")


def _check_weak_form(problem: ProblemConfig) -> None:
    """ConfigError unless the weak residual form applies: a kind with drug equations (not "ifp")."""
    if problem.kind == "ifp":
        raise ConfigError("[training] residual_form = \"weak\" applies to the drug equations (kinds \"release\" "
                          "and \"coupled\"), not to kind \"ifp\"; use \"strong\"")


def _synthesizes_ph_map(transport: Path) -> bool:
    """Whether ``transport`` is a synthesize TOML file with ``[observation.ph_map]`` (False if absent)."""
    if not Path(transport).is_file():
        return False
    observation = read_toml(Path(transport)).get("observation")
    return isinstance(observation, dict) and "ph_map" in observation


def invert_config_from_dict(data: dict, origin: str = "<config>", base: Path = Path(".")) -> InvertConfig:
    """Validate a parsed ``hybrid invert`` TOML (module docstring)."""
    try:
        sections = [f.name for f in fields(InvertConfig)]
        unknown_sections = sorted(set(data) - set(sections))
        if unknown_sections:
            raise ConfigError(f"unknown section(s) {', '.join(unknown_sections)}; allowed: {', '.join(sections)}")
        unknowns_table = data.get("unknowns", {})
        if not isinstance(unknowns_table, dict) or not unknowns_table:
            raise ConfigError("declare at least one unknown as an [unknowns.NAME] table")
        unknowns = {name: _unknown(name, table) for name, table in unknowns_table.items()}
        problem = _problem(data.get("problem", {}), base, unknowns)
        data_config = _data(data.get("data", {}), base, problem.kind)
        training = data.get("training", {})
        misplaced = [key for key in _COUPLED_TRAINING_KEYS if isinstance(training, dict) and key in training
                     and problem.kind != "coupled"]
        if misplaced:
            raise ConfigError(f"[training] {', '.join(misplaced)} belong(s) to kind \"coupled\"")
        if isinstance(training, dict) and training.get("residual_form") == "weak":
            _check_weak_form(problem)
        if isinstance(training, dict) and training.get("warm_start") == "fem" and problem.kind != "release":
            raise ConfigError(f"[training] warm_start = \"fem\" is built for kind \"release\" only, not "
                              f"\"{problem.kind}\"; remove it or set it to \"none\"")
        if problem.kind == "coupled":
            _check_coupled_transport(problem)
        if problem.kind != "ifp" and data_config.ph_map is None and _synthesizes_ph_map(problem.transport):
            raise ConfigError(f"[data] ph_map is required: [problem] transport {problem.transport} synthesized its "
                              "data on a pH_e map ([observation.ph_map]); set it to that run's truth/ph.nii.gz")
        training_section = _training(training, base)
        if problem.parametric_pressure and not training_section.pretrain_adam_steps + training_section.pretrain_lbfgs_steps:
            raise ConfigError("[problem] parametric_pressure = true needs the pressure pre-training ([training] "
                              "pretrain_adam_steps or pretrain_lbfgs_steps > 0): the network is fixed after it")
        return InvertConfig(data=data_config, problem=problem,
                            unknowns=Unknowns(unknowns), training=training_section,
                            output=output_from_table(data.get("output"), base))
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None


def load_invert_config(path: str | Path) -> InvertConfig:
    """Read and validate a ``hybrid invert`` TOML file (paths relative to it)."""
    path = Path(path)
    return invert_config_from_dict(read_toml(path), str(path), path.parent)
