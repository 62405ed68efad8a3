"""Training of an inverse problem: Adam then L-BFGS, gradient-norm loss balancing,
residual-adaptive collocation, checkpoints and resume, a progress line, seeds and ensembles.

- **Loss balancing** (Wang, Sankaran, Wang & Perdikaris 2023, "expert's guide"): every
  ``balance_every`` Adam steps, weight_i <- m weight_i + (1 - m) mean_j |grad L_j| / |grad L_i|
  (gradients over all trainable parameters), so every balanced term pulls equally hard. By default
  (``balance="residuals"``) only the PDE terms are balanced and the data terms keep weight 1:
  balancing data against physics lets the networks fit the noise and leaves the PDE residual large
  (1-D release twin, 5 % noise: release-rate error 14 % with ``"all"`` against 3 % with unit weights).
- **Residual-adaptive distribution** (RAD; Wu, Zhu, Tan, Kartha & Lu, CMAME 2023): every
  ``resample_every`` Adam steps the collocation points are redrawn from ``rad_candidates`` x as
  many uniform candidates with probability ~ |r|^k / mean(|r|^k) + c. Redrawing often matters: a
  network trained on fixed points can satisfy the PDE only there (2-D disc twin: mean-square
  residual on fresh points 0.10 with 512 points redrawn every 500 steps, 5e-4 with 2048 every 100).
- **Optimisers**: Adam (``adam_steps``; scalar unknowns get ``unknown_learning_rate``, and stay at
  their start values for the first ``unknowns_from_step`` steps, so that the state networks first
  fit the data and residuals: from untrained networks the residuals' gradients drive the unknowns
  far off, e.g. k_rel to -95 % on the 2-D tumour-in-host twin as the free-drug residual,
  -k_rel C_L while C_F ~ 0, is balanced to a large weight; at the release their Adam moments
  restart from zero, so the hold's gradients do not steer them; with ``unknown_weights="unit"``
  the unknowns follow the unweighted sum of the loss terms while the networks follow the balanced
  one: balancing weights a term by the inverse of its gradient norm, so a residual the networks
  already satisfy, e.g. the free-drug residual after a FEM warm start, gets a weight of hundreds
  and then holds the unknowns in it at their start), then
  L-BFGS with strong-Wolfe line search (``lbfgs_steps`` iterations) on the last points and weights
  (one objective, the weighted loss; with ``unknown_weights="unit"`` over the networks only, the
  unknowns keeping their Adam values);
  with ``lbfgs_resample`` the points are RAD-redrawn between L-BFGS chunks (of ``_LBFGS_CHUNK``
  iterations; the curvature history is kept): on fixed points L-BFGS can fit a field whose residual
  is small there only (2-D tumour-in-host twin at the truth, 1024 points: liposomal residual 5e-3 on
  the points, 4.9 on fresh points of the margin band).
- **Precision and device**: ``dtype`` "float32" or "float64", ``device`` "cpu" or "cuda"; on CUDA
  with ``cuda_graph`` the whole Adam step (losses, double backward, update) is captured once in a
  CUDA graph and replayed (static collocation tensor refilled in place on resampling); should the
  capture fail (an operation a graph cannot hold), training goes on with eager steps and says so.
- **Residual form**: ``residual_form="strong"`` (pointwise, autograd derivatives of the
  networks) or ``"weak"`` (:mod:`hybrid.inverse.weak`: residuals against space-time test functions,
  ``weak_cells`` per space axis and ``weak_time_cells`` in time, ``weak_gauss`` Gauss points per
  cell axis, repeated on ``weak_subdivisions`` parts of each cell per space axis and
  ``weak_time_subdivisions`` in time; network values only, on fixed quadrature points; with a flow its pressure terms stay
  pointwise on collocation points, which are then resampled as usual); the weak form is for
  problems with a ``use_weak_form`` method (:class:`~hybrid.inverse.problems.TransportProblem`
  and :class:`~hybrid.inverse.coupled.CoupledProblem`). The config decides: the Trainer gives the
  problem test functions built from the ``weak_*`` fields (replacing any it had), and refuses
  ``"strong"`` for a problem that already carries test functions (call
  ``problem.use_weak_form(None)`` first) rather than silently drop them. On the pH-release twin, started at the truth, 300 steps leave n closer to the truth than the
  strong form does (2.05-2.08 against 1.54-1.73) but not pH_50: the pre-registered criterion (a)
  is missed with balance "all" (pH_50 moves 0.0225 weak against 0.0197 strong) and met with
  balance "residuals"; nor does the weak form by itself recover the law from a distant start
  (weak.py).
- **Causal weights** (Wang, Sankaran & Perdikaris, CMAME 2024; ``causal_slices`` > 0, problems
  with a ``use_causal_weights`` method): the PDE terms weight time slices of the collocation
  points (strong form; ``causal_slices`` divides ``collocation_points``) or of the test
  functions (weak form; it divides their ``weak_time_cells - 1`` rows in time) by
  w_i = exp(-eps sum_{k<i} L_k) (:meth:`TransportProblem.use_causal_weights
  <hybrid.inverse.problems.TransportProblem.use_causal_weights>`), so later times are fitted (and
  pull the unknowns) only once earlier ones are. eps runs through ``causal_epsilon``: it moves to
  the next value after an Adam step whose min_i w_i exceeds ``_CAUSAL_ADVANCE`` (the paper's rule);
  L-BFGS keeps the last Adam weights (a fixed objective). Off (0) changes nothing. On the
  pH-release twin (benchmarks/pinn_release_causal.py, 16 slices) it does not recover the law from
  (7.2, 1.0): (6.28, 0.53) with the paper's schedule, (6.66, 0.50) with eps 10, against (6.26, 0.53)
  without (weak form, eps 10: (6.65, 0.52) against (6.62, 0.55)); n falls as fast or faster: Adam's
  normalised steps move the unknowns as fast under small causal weights, and the first time slice's
  residual alone already pushes n down.
- **Checkpoints**: every ``checkpoint_every`` steps (and at the end) the full state (parameters,
  optimiser, weights, collocation points, random generator, history) goes to ``checkpoint``;
  :meth:`Trainer.resume` continues from it and reproduces the uninterrupted run.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from hybrid.inverse.problems import InverseProblem
from hybrid.inverse.unknowns import BoundedField, BoundedScalar
from hybrid.inverse.weak import SpaceTimeTestFunctions

__all__ = ["TrainingConfig", "TrainingResult", "Trainer", "ensemble"]

_GRAPH_WARMUP = 3        # eager Adam steps before the CUDA graph is captured
_LBFGS_CHUNK = 25        # L-BFGS iterations between records and checkpoints
_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_CAUSAL_ADVANCE = 0.99   # causal weights: the next eps once every w_i exceeds this


@dataclass(frozen=True)
class TrainingConfig:
    adam_steps: int = 2000
    lbfgs_steps: int = 0
    learning_rate: float = 1e-3            # networks
    unknown_learning_rate: float = 1e-2    # raw (log-space) parameters of scalar unknowns
    unknowns_from_step: int = 0            # scalar unknowns held at their start for the first Adam steps
    collocation_points: int = 1024
    resample_every: int = 100              # 0: never
    lbfgs_resample: bool = False           # RAD-redraw the points before every L-BFGS chunk after the first
    rad_k: float = 1.0
    rad_c: float = 1.0
    rad_candidates: int = 4
    balance: str = "residuals"             # grad-norm balancing of: "residuals" (PDE terms), "all", "none"
    residual_weight: float = 1.0           # balance "none": fixed weight of every residual (non-data) term
    balance_every: int = 100
    balance_momentum: float = 0.9
    unknown_weights: str = "balanced"      # the scalar unknowns' Adam gradient: "balanced" loss or "unit" weights
    dtype: str = "float32"
    device: str = "cpu"
    cuda_graph: bool = True                # CUDA only
    seed: int = 0
    checkpoint: str | None = None
    checkpoint_every: int = 500
    progress_every: int = 100              # 0: silent
    threads: int | None = None             # torch CPU threads (process-wide); None: torch's default
    residual_form: str = "strong"          # PDE residuals: "strong" (pointwise) or "weak" (test functions)
    weak_cells: int = 12                   # weak form: cells per space axis over [-1, 1] (x / length scale)
    weak_time_cells: int = 12              # weak form: cells over [0, end_time]
    weak_gauss: int = 3                    # weak form: Gauss-Legendre points per cell and axis
    weak_subdivisions: int = 1             # weak form: each cell's rule repeated on this many parts per space axis
    weak_time_subdivisions: int = 1        # weak form: ... and in time
    causal_slices: int = 0                 # causal weights: time slices of the PDE residuals (0: off)
    causal_epsilon: tuple[float, ...] = (1e-2, 1e-1, 1.0, 10.0, 100.0)   # eps schedule [1] (the paper's)

    def __post_init__(self):
        object.__setattr__(self, "causal_epsilon", tuple(float(v) for v in self.causal_epsilon))
        if self.balance not in ("residuals", "all", "none"):
            raise ValueError(f"balance must be 'residuals', 'all' or 'none', got {self.balance!r}")
        if self.unknown_weights not in ("balanced", "unit"):
            raise ValueError(f"unknown_weights must be 'balanced' or 'unit', got {self.unknown_weights!r}")
        if not (math.isfinite(self.residual_weight) and self.residual_weight > 0):
            raise ValueError(f"residual_weight must be a finite number > 0, got {self.residual_weight!r}")
        if self.residual_weight != 1.0 and self.balance != "none":
            raise ValueError(f"residual_weight applies to balance='none' (balancing sets the weights), "
                             f"got balance={self.balance!r}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}")
        if self.adam_steps < 0 or self.lbfgs_steps < 0 or self.collocation_points < 1:
            raise ValueError("adam_steps and lbfgs_steps must be >= 0 and collocation_points >= 1")
        if not 0 <= self.unknowns_from_step <= self.adam_steps:
            raise ValueError(f"unknowns_from_step must be between 0 and adam_steps ({self.adam_steps}), got "
                             f"{self.unknowns_from_step}")
        if self.residual_form not in ("strong", "weak"):
            raise ValueError(f"residual_form must be 'strong' or 'weak', got {self.residual_form!r}")
        what, count = (("collocation_points", self.collocation_points) if self.residual_form == "strong" else
                       ("weak_time_cells - 1 (the test functions' rows in time)", self.weak_time_cells - 1))
        if self.causal_slices < 0 or (self.causal_slices and count % self.causal_slices):
            raise ValueError(f"causal_slices must be 0 (off) or divide {what} ({count}), got {self.causal_slices}")
        if not self.causal_epsilon or not all(0 <= v < math.inf for v in self.causal_epsilon):
            raise ValueError(f"causal_epsilon must be a non-empty list of finite values >= 0, "
                             f"got {self.causal_epsilon}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 (or None for torch's default), got {self.threads!r}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {self.device!r} requested but torch sees no CUDA device; use device='cpu'")


@dataclass
class TrainingResult:
    """Estimates name -> (value, unit), loss history (one dict per recorded step), wall time [s]."""

    estimates: dict[str, tuple[float, str]]
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    device: str = "cpu"
    dtype: str = "float32"
    steps: int = 0
    cuda_graph: bool = False   # the Adam steps replayed a captured CUDA graph


class Trainer:
    """Trains ``problem`` (built by the caller, seeded) with ``config``; ``progress(line)`` receives
    the progress lines (None: silent). ``config.residual_form`` sets the problem's residual form
    (module doc)."""

    def __init__(self, problem: InverseProblem, config: TrainingConfig, progress: Callable[[str], None] | None = None):
        self.config = config
        if config.threads is not None:   # small networks on a few shared cores: one thread beats contending ones
            torch.set_num_threads(config.threads)
        self.device = torch.device(config.device)
        self.dtype = _DTYPES[config.dtype]
        _set_residual_form(problem, config)
        _set_causal(problem, config)
        self.problem = problem.to(device=self.device, dtype=self.dtype)
        self.causal_stage = 0   # index into config.causal_epsilon
        if config.causal_slices:
            self.problem.causal_epsilon.fill_(config.causal_epsilon[0])
        self.progress = progress
        self.generator = torch.Generator().manual_seed(config.seed)
        scalars = [p for u in problem.scalar_unknowns() for p in u.parameters()]
        if config.unknown_weights == "unit" and not scalars:
            raise ValueError("unknown_weights='unit' applies to scalar unknowns and this problem has none (field "
                             "unknowns train with the networks' balanced loss)")
        scalar_ids = {id(p) for p in scalars}
        others = [p for p in problem.parameters() if id(p) not in scalar_ids]
        groups = [{"params": others, "lr": config.learning_rate}]
        if scalars:
            groups.append({"params": scalars, "lr": config.unknown_learning_rate})
        cuda = self.device.type == "cuda"
        self.adam = torch.optim.Adam(groups, capturable=cuda and config.cuda_graph)
        self.lbfgs = None
        self.step = 0
        self.history: list[dict] = []
        self.seconds = 0.0
        self.points = self._sample(config.collocation_points)
        names = list(problem.loss_terms(self.points.clone()).keys())
        self.weights = {name: torch.full((), 1.0 if name.startswith("data") else config.residual_weight,
                                         dtype=self.dtype, device=self.device) for name in names}
        self._graph, self._stream, self._eager_steps = None, None, 0
        self.use_graph = self.device.type == "cuda" and config.cuda_graph   # False once a capture has failed

    # -- pieces ---------------------------------------------------------------------------------
    def _sample(self, n: int) -> torch.Tensor:
        return self.problem.sample_collocation(n, self.generator).to(device=self.device, dtype=self.dtype)

    def _weighted(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(self.weights[name] * value for name, value in terms.items())

    def _resample(self) -> None:
        """RAD: redraw the collocation points with density ~ |r|^k / mean |r|^k + c."""
        c = self.config
        candidates = self._sample(c.rad_candidates * c.collocation_points)
        residual = self.problem.pointwise_residual(candidates).detach().abs() ** c.rad_k
        density = residual / residual.mean() + c.rad_c
        index = torch.multinomial(density.double().cpu(), c.collocation_points, replacement=False,
                                  generator=self.generator)
        self.points.copy_(candidates[index.to(self.device)].detach())

    def _balance(self) -> None:
        """Gradient-norm balancing of the loss weights (module doc); data terms (names starting with
        "data") keep weight 1 unless ``balance="all"``."""
        params = [p for p in self.problem.parameters() if p.requires_grad]
        terms = self.problem.loss_terms(self.points.clone())
        norms = {}
        for name, value in terms.items():
            if self.config.balance == "residuals" and name.startswith("data"):
                continue
            grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
            norms[name] = torch.sqrt(sum((g * g).sum() for g in grads if g is not None))
        mean = sum(norms.values()) / len(norms)
        m = self.config.balance_momentum
        for name, norm in norms.items():
            target = mean / torch.clamp(norm, min=torch.finfo(self.dtype).tiny)
            self.weights[name].copy_(m * self.weights[name] + (1.0 - m) * target.detach())

    def _adam_step(self) -> dict[str, torch.Tensor]:
        """One Adam step; the loss terms come back detached, so that no autograd graph of this step
        (and none of the streams it ran on) outlives it. With ``unknown_weights="unit"`` the scalar
        unknowns take the gradient of the unweighted sum of the terms, the networks that of the
        weighted loss (two backward passes)."""
        self.adam.zero_grad(set_to_none=False)
        terms = self.problem.loss_terms(self.points.clone())
        groups = [[p for p in group["params"] if p.requires_grad] for group in self.adam.param_groups] \
            if self.config.unknown_weights == "unit" else []
        if len(groups) == 2 and all(groups):
            networks, unknowns = groups
            gradients = torch.autograd.grad(self._weighted(terms), networks, retain_graph=True, allow_unused=True)
            gradients += torch.autograd.grad(sum(terms.values()), unknowns, allow_unused=True)
            for parameter, gradient in zip(networks + unknowns, gradients):
                if parameter.grad is None:
                    parameter.grad = torch.zeros_like(parameter)
                parameter.grad.copy_(torch.zeros_like(parameter) if gradient is None else gradient)
        else:
            self._weighted(terms).backward()
        self.adam.step()
        return {name: value.detach() for name, value in terms.items()}

    def _advance_causal(self) -> None:
        """The next eps of the schedule once every causal weight exceeds ``_CAUSAL_ADVANCE``."""
        if self.causal_stage + 1 < len(self.config.causal_epsilon) and \
                float(self.problem.causal_weights.min()) > _CAUSAL_ADVANCE:
            self.causal_stage += 1
            self.problem.causal_epsilon.fill_(self.config.causal_epsilon[self.causal_stage])

    def _lbfgs_parameters(self) -> list:
        """What L-BFGS trains on the weighted loss: every parameter, or with ``unknown_weights="unit"``
        the networks' Adam group only (the scalar unknowns keep their Adam values: one objective
        cannot give them the unweighted gradient)."""
        if self.config.unknown_weights == "unit":
            return self.adam.param_groups[0]["params"]
        return list(self.problem.parameters())

    def _lbfgs_iterations(self) -> int:
        state = self.lbfgs.state[self.lbfgs.param_groups[0]["params"][0]]
        return int(state.get("n_iter", 0))

    def _closure(self) -> torch.Tensor:
        self.problem.zero_grad()
        loss = self._weighted(self.problem.loss_terms(self.points.clone()))
        loss.backward()
        return loss

    def _captured_adam_step(self) -> dict[str, torch.Tensor]:
        """The Adam step from a CUDA graph: the first ``_GRAPH_WARMUP`` steps run eagerly on a side
        stream (as graph capture requires; they are real steps), the next one captures the step
        and every step replays it."""
        if self._graph is None and self._eager_steps < _GRAPH_WARMUP:
            self._stream = self._stream or torch.cuda.Stream()
            self._stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self._stream):
                terms = self._adam_step()
            torch.cuda.current_stream().wait_stream(self._stream)
            self._eager_steps += 1
            return terms
        if self._graph is None:   # capture (on the warm-up stream) records the kernels without running them
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            try:
                with _stale_streams_follow_the_capture(), torch.cuda.graph(graph, stream=self._stream):
                    self._static_terms = self._adam_step()
            except RuntimeError as error:   # nothing ran during the capture: take the step eagerly
                self.use_graph = False
                if self.progress is not None:
                    self.progress(f"CUDA graph capture failed ({str(error).splitlines()[0]}); "
                                  "continuing with eager steps (slower)")
                return self._adam_step()
            self._graph = graph
        self._graph.replay()
        return self._static_terms

    # -- public ---------------------------------------------------------------------------------
    @property
    def total_steps(self) -> int:
        return self.config.adam_steps + self.config.lbfgs_steps

    def run(self) -> TrainingResult:
        """Train until ``adam_steps + lbfgs_steps`` (continuing from ``self.step`` after a resume)."""
        c = self.config
        start = time.perf_counter()
        while self.step < c.adam_steps:
            if c.resample_every and self.step and self.step % c.resample_every == 0 and self.problem.uses_collocation:
                self._resample()
            if c.balance != "none" and c.balance_every and self.step % c.balance_every == 0:
                self._balance()
            if c.unknowns_from_step and len(self.adam.param_groups) > 1:   # the unknowns' group: held, then released
                if self.step == c.unknowns_from_step:
                    _restart_moments(self.adam, self.adam.param_groups[1])
                rate = c.unknown_learning_rate if self.step >= c.unknowns_from_step else 0.0
                _set_learning_rate(self.adam.param_groups[1], rate, self.use_graph)
            terms = self._captured_adam_step() if self.use_graph else self._adam_step()
            self.step += 1
            self._after_step(terms, "adam", start)
            if c.causal_slices:
                self._advance_causal()
        if c.causal_slices:
            self.problem.causal_frozen = self.step < self.total_steps   # L-BFGS: the last Adam weights
        while self.step < self.total_steps:
            chunk = min(_LBFGS_CHUNK, self.total_steps - self.step)
            if self.lbfgs is not None and c.lbfgs_resample and self.problem.uses_collocation:
                self._resample()
            self.lbfgs = self.lbfgs or _lbfgs(self._lbfgs_parameters())
            before = self._lbfgs_iterations()
            for group in self.lbfgs.param_groups:
                group["max_iter"], group["max_eval"] = chunk, 2 * chunk + 25
            self.lbfgs.step(self._closure)
            done = self._lbfgs_iterations() - before
            self.step = self.total_steps if done < chunk else self.step + chunk   # < chunk: converged
            self._after_step(None, "lbfgs", start)
        self.seconds += time.perf_counter() - start
        if c.checkpoint:
            self.save(c.checkpoint)
        return TrainingResult(self.problem.estimates(), self.history, self.seconds, str(self.device), c.dtype,
                              self.step, self.use_graph and self._graph is not None)

    def _after_step(self, terms: dict[str, torch.Tensor] | None, phase: str, start: float) -> None:
        """Record, report and checkpoint; ``terms`` None: evaluate them at the current parameters."""
        c = self.config
        last = self.step == self.total_steps
        if (c.progress_every and (self.step % c.progress_every == 0 or phase == "lbfgs")) or last:
            if terms is None:
                terms = self.problem.loss_terms(self.points.clone())
            record = {"step": self.step, "phase": phase,
                      "loss": float(self._weighted(terms).detach()),
                      "terms": {k: float(v.detach()) for k, v in terms.items()},
                      "weights": {k: float(v) for k, v in self.weights.items()},
                      "estimates": {k: v for k, (v, _) in self.problem.estimates().items()},
                      "seconds": self.seconds + time.perf_counter() - start}
            if c.causal_slices:
                record |= {"causal_epsilon": float(self.problem.causal_epsilon),
                           "causal_weights": self.problem.causal_weights.tolist()}
            if not all(math.isfinite(v) for v in record["terms"].values()):
                raise FloatingPointError(f"loss became non-finite at step {self.step} ({record['terms']}); "
                                         "lower the learning rates or use dtype='float64'")
            self.history.append(record)
            if self.progress is not None:
                self.progress(_progress_line(record, self.total_steps, self.problem.estimates()))
        if c.checkpoint and c.checkpoint_every and not last and (self.step % c.checkpoint_every == 0 or phase == "lbfgs"):
            self.save(c.checkpoint)

    def save(self, path) -> None:
        """Write the full training state to ``path`` (torch.save; written atomically)."""
        state = {"config": asdict(self.config), "step": self.step, "seconds": self.seconds,
                 "unknowns": _unknown_bounds(self.problem), "problem": self.problem.state_dict(), "adam": self.adam.state_dict(),
                 "lbfgs": self.lbfgs.state_dict() if self.lbfgs is not None else None,
                 "weights": {k: v.cpu() for k, v in self.weights.items()}, "points": self.points.cpu(),
                 "generator": self.generator.get_state(), "history": self.history, "causal_stage": self.causal_stage}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        torch.save(state, partial)
        partial.replace(path)

    def resume(self, path) -> "Trainer":
        """Load a checkpoint written by :meth:`save` for the same problem and config; returns self."""
        state = torch.load(Path(path), map_location=self.device, weights_only=False)
        written = asdict(TrainingConfig()) | state["config"]   # keys added since the checkpoint: their defaults
        saved = {k: v for k, v in written.items() if k not in ("adam_steps", "lbfgs_steps", "checkpoint",
                                                                "checkpoint_every", "progress_every")}
        now = {k: v for k, v in asdict(self.config).items() if k in saved}
        if saved != now:
            changed = sorted(k for k in saved if saved[k] != now[k])
            raise ValueError(f"checkpoint {path} was written with a different training config ({changed}); "
                             "resume with the same settings or start afresh")
        saved_unknowns, unknowns = state.get("unknowns"), _unknown_bounds(self.problem)
        if saved_unknowns is not None and saved_unknowns != unknowns:
            changed = sorted(set(saved_unknowns) ^ set(unknowns)
                             | {n for n in set(saved_unknowns) & set(unknowns) if saved_unknowns[n] != unknowns[n]})
            raise ValueError(f"checkpoint {path} was written with different unknowns or bounds ({changed}); "
                             "resume with the same [unknowns] or start afresh")
        self.problem.load_state_dict(state["problem"])
        self.adam.load_state_dict(state["adam"])
        if state["lbfgs"] is not None:
            self.lbfgs = _lbfgs(self._lbfgs_parameters())
            self.lbfgs.load_state_dict(state["lbfgs"])
        for name, value in state["weights"].items():
            self.weights[name].copy_(value)
        self.points.copy_(state["points"])
        self.generator.set_state(state["generator"])
        self.step, self.seconds, self.history = state["step"], state["seconds"], state["history"]
        self.causal_stage = state.get("causal_stage", 0)   # (absent before causal weights); eps is a problem buffer
        return self


def _unknown_bounds(problem: InverseProblem) -> dict[str, list]:
    """Unknown name -> [lower, upper, log] of every bounded unknown (scalar or field) of ``problem``,
    keyed by where it sits in the problem: a checkpoint's raw parameters mean the same values only
    under the same bounds."""
    return {f"{module.name} ({place})": [module.lower, module.upper, module.log]
            for place, module in problem.named_modules() if isinstance(module, (BoundedScalar, BoundedField))}


def _set_residual_form(problem: InverseProblem, config: TrainingConfig) -> None:
    """Give ``problem`` the residual form of ``config``: "weak" builds its test functions from the
    ``weak_*`` fields; ValueError if it has no weak form, or if it carries test functions while
    ``config`` says "strong"."""
    if not hasattr(problem, "use_weak_form"):
        if config.residual_form == "weak":
            raise ValueError(f"{type(problem).__name__} has no weak residual form: use residual_form='strong'")
        return
    if config.residual_form == "strong":
        if problem.test_functions is not None:
            raise ValueError(f"{type(problem).__name__} uses the weak form (use_weak_form) but residual_form is "
                             "'strong': set residual_form='weak' or call problem.use_weak_form(None) first")
        return
    problem.use_weak_form(SpaceTimeTestFunctions(problem.geometry, cells=config.weak_cells,
                                                 time_cells=config.weak_time_cells, gauss=config.weak_gauss,
                                                 subdivisions=config.weak_subdivisions,
                                                 time_subdivisions=config.weak_time_subdivisions))


def _set_causal(problem: InverseProblem, config: TrainingConfig) -> None:
    """Give ``problem`` the causal weighting of ``config`` (0 slices: off); ValueError if it has none."""
    if hasattr(problem, "use_causal_weights"):
        problem.use_causal_weights(config.causal_slices)
    elif config.causal_slices:
        raise ValueError(f"{type(problem).__name__} has no causal residual weights: use causal_slices=0")


@contextlib.contextmanager
def _stale_streams_follow_the_capture():
    """During a CUDA graph capture, let autograd nodes that kept the stream of an earlier eager step
    (a parameter's gradient accumulator, say) follow the capturing stream instead of breaking the
    capture: ``torch.autograd.graph.set_override_stale_capture_stream``, where this torch has it
    (2.14 does; the 2.11 of the H200 test machine did not, and there the strong-form step of the 1-D
    test twins failed to capture with such a stream), restored afterwards. Elsewhere: nothing."""
    setter = getattr(torch.autograd.graph, "set_override_stale_capture_stream", None)
    getter = getattr(torch._C, "_override_stale_capture_stream", None)
    if setter is None or getter is None:
        yield
        return
    before = getter()
    setter(True)
    try:
        yield
    finally:
        setter(before)


def _restart_moments(adam: torch.optim.Adam, group: dict) -> None:
    """Zero Adam's step count and moments of ``group``'s parameters in place (a CUDA graph keeps
    its tensors), so that gradients seen while the group was held (lr 0) do not steer its first
    steps."""
    for parameter in group["params"]:
        for value in adam.state.get(parameter, {}).values():
            if isinstance(value, torch.Tensor):
                value.zero_()


def _set_learning_rate(group: dict, rate: float, captured: bool) -> None:
    """Set an Adam parameter group's learning rate (in place when a CUDA graph replays the step)."""
    if isinstance(group["lr"], torch.Tensor):
        group["lr"].fill_(rate)
    elif captured:
        group["lr"] = torch.tensor(rate, device=group["params"][0].device)
    else:
        group["lr"] = rate


def _lbfgs(parameters: list) -> torch.optim.LBFGS:
    return torch.optim.LBFGS(parameters, lr=1.0, history_size=50, line_search_fn="strong_wolfe",
                             tolerance_grad=0.0, tolerance_change=0.0)


def _progress_line(record: dict, total: int, estimates: dict[str, tuple[float, str]]) -> str:
    terms = " ".join(f"{k} {v:.2e}" for k, v in record["terms"].items())
    values = " ".join(f"{k}={v:.4g} {u}" for k, (v, u) in estimates.items())
    causal = (f" | causal eps {record['causal_epsilon']:.3g} min w {min(record['causal_weights']):.3f}"
              if "causal_weights" in record else "")
    return (f"step {record['step']}/{total} [{record['phase']}] loss {record['loss']:.3e} | {terms} | "
            f"{values}{causal} | {record['seconds']:.1f} s")


def ensemble(build: Callable[[int], InverseProblem], seeds, config: TrainingConfig,
             progress: Callable[[str], None] | None = None) -> dict:
    """Train one member per seed (``build(seed)`` makes the seeded problem; the config's seed is
    replaced) and return, for every estimate, ``estimate`` (mean), ``spread`` (sample standard
    deviation over members), ``unit`` and ``members``; plus ``results`` (one TrainingResult each)."""
    seeds = list(seeds)
    if len(seeds) < 2:
        raise ValueError("an ensemble needs at least two seeds to give a spread")
    results = []
    for seed in seeds:
        member = Trainer(build(seed), _with_seed(config, seed), progress)
        results.append(member.run())
    summary = {}
    for name, (_, unit) in results[0].estimates.items():
        values = np.array([r.estimates[name][0] for r in results])
        summary[name] = {"estimate": float(values.mean()), "spread": float(values.std(ddof=1)), "unit": unit,
                         "members": values.tolist()}
    return {"estimates": summary, "results": results}


def _with_seed(config: TrainingConfig, seed: int) -> TrainingConfig:
    return TrainingConfig(**(asdict(config) | {"seed": int(seed)}))
