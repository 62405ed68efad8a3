"""Inverse PINN (torch only; never imports DOLFINx, UFL or PETSc).

Data flow: :mod:`hybrid.records` (numpy records from the FEM and the images) ->
:class:`~hybrid.inverse.problems.IFPProblem` / :class:`~hybrid.inverse.problems.TransportProblem`
(state networks, unknowns, residuals built from the :mod:`hybrid.problems` rate laws, strong or
weak (:mod:`hybrid.inverse.weak`), voxel-averaging observation operator) ->
:class:`~hybrid.inverse.training.Trainer` (Adam then L-BFGS, loss balancing, adaptive collocation,
checkpoints) -> estimates with units; :func:`ensemble` for spreads;
:mod:`hybrid.identifiability` (numpy only, shared with the classical inversion) says what the data can determine.
"""

from hybrid.inverse.coupled import CoupledProblem, HostIFPProblem, RegionCoefficient, TumourInHost
from hybrid.inverse.geometry import Ball, Box
from hybrid.inverse.problems import IFPProblem, InverseProblem, TransportProblem
from hybrid.inverse.residuals import DrugExchange, ElKarehSecombUptake
from hybrid.inverse.scales import Scales
from hybrid.inverse.training import Trainer, TrainingConfig, TrainingResult, ensemble
from hybrid.inverse.unknowns import BoundedField, BoundedScalar
from hybrid.inverse.weak import SpaceTimeTestFunctions

__all__ = ["Ball", "Box", "IFPProblem", "InverseProblem", "TransportProblem", "DrugExchange", "Scales",
           "Trainer", "TrainingConfig", "TrainingResult", "ensemble", "BoundedField", "BoundedScalar",
           "CoupledProblem", "HostIFPProblem", "RegionCoefficient", "TumourInHost", "ElKarehSecombUptake",
           "SpaceTimeTestFunctions"]
