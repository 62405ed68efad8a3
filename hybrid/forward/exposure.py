"""Drug exposure and cell kill on the transport mesh (issue 8 point 6), under MPI.

Accumulated each accepted step from the free ``C_F`` and intracellular ``C_I`` drug [mol/m^3 of
tissue] of :class:`hybrid.forward.transport.TransportSolver`, as P1 fields:

- ``auc_free_drug``, ``auc_cell_drug`` [mol s/m^3]: time integrals (trapezoidal rule over the
  steps, exact for a field constant or linear in time between steps);
- ``peak_cell_drug`` [mol/m^3]: the largest nodal C_I seen at the step ends;
- ``survival_fraction`` [1]: SF = exp(-omega n_max) of the peak per-cell amount
  n_max = peak / rho_c (:func:`hybrid.problems.uptake.survival_fraction`);
- ``lethal`` [1]: 1 where n_max reaches the lethal amount per cell (table ``C_I_lethal``,
  3.5 ng/1e5 cells, the line of a public El-Kareh & Secomb re-implementation [S]; configurable).

Region numbers (:meth:`Exposure.summary`, of the cells tagged ``region``: the tumour by default,
or the host): the lethal fraction is the region's volume where the P1 peak field reaches the
threshold, integrated with a degree-6 quadrature of the indicator (converges with h: the indicator
is discontinuous inside cut cells), the volume-mean survival fraction, and the largest peak over
the nodes of the region's cells (nodes on the interface count for both regions). On perivascular
meshes (resolved vessel walls, ``domain.geometry["centres"]``) :func:`distance_profile` averages a
field over bins of distance to the nearest vessel wall (vertex weights of the lumped mass);
:func:`hybrid.problems.krogh.half_distance` of that profile is the penetration half-distance.
"""

from __future__ import annotations

import numpy as np
import ufl
from mpi4py import MPI

import dolfinx.fem
import dolfinx.la

from hybrid.mesh import TumourMesh, tags
from hybrid.problems import uptake
from hybrid.problems.namespace import UFL
from hybrid.problems.parameters import value_or_default

__all__ = ["Exposure", "EXPOSURE_UNITS", "distance_profile", "distal_mean", "nearest_vessel_distance"]

EXPOSURE_UNITS = {"auc_free_drug": "mol s/m^3 of tissue", "auc_cell_drug": "mol s/m^3 of tissue",
                  "peak_cell_drug": "mol/m^3 of tissue", "survival_fraction": "1", "lethal": "1"}
"""Output names and units of the exposure fields."""

_INDICATOR_DEGREE = 6   # quadrature degree for volume fractions of a discontinuous indicator


class Exposure:
    """Exposure fields accumulated from the scalar P1 functions ``free`` (C_F) and ``cell`` (C_I)
    [mol/m^3 of tissue] (e.g. ``TransportSolver.species()[1:]``), which the caller keeps current.

    ``cell_density`` rho_c [1/m^3], ``lethal_amount`` [mol/cell] and ``kill_coefficient`` omega
    [1/mol]: table ``rho_c``, ``C_I_lethal``, ``omega`` where None. ``region``: the cell
    tag (:data:`hybrid.mesh.tags.TUMOUR` or ``HOST``) whose numbers :meth:`summary` reports. Call
    :meth:`accumulate` after every accepted step with its size; the fields start at zero at the
    current values.
    """

    def __init__(self, domain: TumourMesh, free: dolfinx.fem.Function, cell: dolfinx.fem.Function, *,
                 cell_density: float | None = None, lethal_amount: float | None = None,
                 kill_coefficient: float | None = None, region: int = tags.TUMOUR):
        if region not in tags.CELL_NAMES:
            raise ValueError(f"exposure region must be a cell tag of {tags.CELL_NAMES}, got {region!r}")
        self.domain, self.free, self.cell, self.region = domain, free, cell, region
        self.cell_density = float(value_or_default(cell_density, "rho_c"))
        self.lethal_amount = float(value_or_default(lethal_amount, "C_I_lethal"))
        self.kill_coefficient = float(value_or_default(kill_coefficient, "omega"))
        space = free.function_space
        self._region_dofs = np.unique(space.dofmap.list[domain.cell_tags.find(region)])   # owned and ghost
        self.fields = {name: dolfinx.fem.Function(space, name=name) for name in EXPOSURE_UNITS}
        self.fields["survival_fraction"].x.array[:] = 1.0
        self._previous = (free.x.array.copy(), cell.x.array.copy())
        self.duration = 0.0
        mesh = domain.mesh
        dx = ufl.Measure("dx", domain=mesh, subdomain_data=domain.cell_tags,
                         metadata={"quadrature_degree": _INDICATOR_DEGREE})
        peak = self.fields["peak_cell_drug"]
        lethal = ufl.conditional(ufl.ge(peak, self.lethal_amount * self.cell_density), 1.0, 0.0)
        survival = uptake.survival_fraction(peak, cell_density=self.cell_density, omega=self.kill_coefficient,
                                            xp=UFL)
        one = dolfinx.fem.Constant(mesh, 1.0)
        inside = dx(region)
        self._forms = {"volume": dolfinx.fem.form(one * inside),
                       "lethal": dolfinx.fem.form(lethal * inside),
                       "survival": dolfinx.fem.form(survival * inside),
                       "auc_free": dolfinx.fem.form(self.fields["auc_free_drug"] * inside),
                       "auc_cell": dolfinx.fem.form(self.fields["auc_cell_drug"] * inside)}

    def accumulate(self, dt: float) -> None:
        """Add the step of size ``dt`` [s] that ended at the current values (trapezoidal AUC)."""
        free, cell = self.free.x.array, self.cell.x.array
        old_free, old_cell = self._previous
        self.fields["auc_free_drug"].x.array[:] += 0.5 * dt * (old_free + free)
        self.fields["auc_cell_drug"].x.array[:] += 0.5 * dt * (old_cell + cell)
        peak = self.fields["peak_cell_drug"].x.array
        np.maximum(peak, cell, out=peak)
        self.fields["survival_fraction"].x.array[:] = uptake.survival_fraction(
            peak, cell_density=self.cell_density, omega=self.kill_coefficient)
        self.fields["lethal"].x.array[:] = uptake.lethal_indicator(
            peak, cell_density=self.cell_density, threshold=self.lethal_amount)
        self._previous = (free.copy(), cell.copy())
        self.duration += dt

    def _integral(self, name: str) -> float:
        return self.domain.mesh.comm.allreduce(dolfinx.fem.assemble_scalar(self._forms[name]), op=MPI.SUM)

    def summary(self) -> dict:
        """Numbers of the region (module docstring): volume [m^3, or m^2 in 2-D] (key
        ``tumour_volume`` or ``host_volume``), lethal fraction and mean survival fraction [1], mean
        AUCs [mol s/m^3], largest peak C_I over the region's nodes [mol/m^3 and ng/1e5 cells], the
        threshold used and the accumulated time [s]."""
        name = tags.CELL_NAMES[self.region]
        volume = self._integral("volume")
        if not volume > 0.0:
            raise ValueError(f"the mesh has no {name} cells (tag {self.region}): "
                             f"exposure numbers need a {name} region")
        peaks = self.fields["peak_cell_drug"].x.array[self._region_dofs]   # ghosts hold the owners' values
        peak = self.domain.mesh.comm.allreduce(float(peaks.max(initial=0.0)), op=MPI.MAX)
        return {f"{name}_volume": volume,
                "lethal_fraction": self._integral("lethal") / volume,
                "mean_survival_fraction": self._integral("survival") / volume,
                "mean_auc_free_drug_mol_s_m3": self._integral("auc_free") / volume,
                "mean_auc_cell_drug_mol_s_m3": self._integral("auc_cell") / volume,
                "peak_cell_drug_max_mol_m3": peak,
                "peak_cell_drug_max_ng_per_1e5_cells": float(uptake.ng_per_1e5_cells(peak, self.cell_density)),
                "lethal_amount_mol_per_cell": self.lethal_amount,
                "lethal_amount_ng_per_1e5_cells": float(uptake.ng_per_1e5_cells(self.lethal_amount, 1.0)),
                "cell_density_per_m3": self.cell_density, "kill_coefficient_per_mol": self.kill_coefficient,
                "exposure_time_s": self.duration}


def nearest_vessel_distance(domain: TumourMesh, points: np.ndarray) -> np.ndarray:
    """Distance [m] from ``points`` (N, 3) [m] to the nearest vessel wall of a perivascular mesh
    (circular vessels of ``geometry["vessel_radius"]`` at ``geometry["centres"]`` in the x-y plane)."""
    centres = domain.geometry.get("centres")
    if not centres or "vessel_radius" not in domain.geometry:
        raise ValueError(f"a distance-to-vessel profile needs a perivascular mesh (krogh, vessels); "
                         f"the {domain.shape!r} mesh has no resolved vessels")
    centres = np.asarray(centres, dtype=float)[:, :2]
    gaps = np.linalg.norm(points[:, None, :2] - centres[None, :, :], axis=2).min(axis=1, initial=np.inf)
    return np.maximum(gaps - float(domain.geometry["vessel_radius"]), 0.0)


def distance_profile(domain: TumourMesh, function: dolfinx.fem.Function, bin_width: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the scalar P1 ``function`` against distance to the nearest vessel wall (collective).

    Returns (distance [m], mean value): the first point is the mean over the wall vertices
    (distance 0), then one point per bin ((k-1) w, k w] of width ``bin_width`` [m] at the
    weighted mean distance of its vertices; the weights are the lumped-mass (vertex) volumes.
    Empty bins are left out.
    """
    if not bin_width > 0.0:
        raise ValueError(f"the profile bin width must be > 0 m, got {bin_width!r}")
    weight, distance = _vertex_weights_and_distances(domain, function)
    owned = weight.size
    comm = domain.mesh.comm
    on_wall = distance <= 1e-6 * bin_width
    largest = comm.allreduce(float(distance.max(initial=0.0)), op=MPI.MAX)
    bins = np.where(on_wall, 0, np.ceil(distance / bin_width)).astype(int)
    count = int(np.ceil(largest / bin_width)) + 1
    sums = np.zeros((3, count))
    np.add.at(sums[0], bins, weight)
    np.add.at(sums[1], bins, weight * distance)
    np.add.at(sums[2], bins, weight * function.x.array[:owned])
    comm.Allreduce(MPI.IN_PLACE, sums, op=MPI.SUM)
    kept = sums[0] > 0.0
    mean_distance = np.where(kept, sums[1] / np.where(kept, sums[0], 1.0), 0.0)
    mean_distance[0] = 0.0
    return mean_distance[kept], (sums[2] / np.where(kept, sums[0], 1.0))[kept]


def _vertex_weights_and_distances(domain: TumourMesh, function: dolfinx.fem.Function):
    """Lumped-mass (vertex) volume [m^dim] and distance to the nearest vessel wall [m] of every
    owned degree of freedom of the scalar P1 ``function``."""
    space = function.function_space
    owned = space.dofmap.index_map.size_local
    test = ufl.TestFunction(space)
    lumped = ufl.Measure("dx", domain=domain.mesh, metadata={"quadrature_rule": "vertex", "quadrature_degree": 1})
    weights = dolfinx.fem.assemble_vector(dolfinx.fem.form(test * lumped))
    weights.scatter_reverse(dolfinx.la.InsertMode.add)
    return weights.array[:owned].copy(), nearest_vessel_distance(domain, space.tabulate_dof_coordinates()[:owned])


def distal_mean(domain: TumourMesh, function: dolfinx.fem.Function, distance: float) -> float:
    """Volume mean (vertex weights) of the scalar P1 ``function`` over the tissue farther than
    ``distance`` [m] from every vessel wall (collective; NaN if there is none). Of the ``lethal``
    field: the lethal fraction of the distal (quiescent) tissue."""
    weight, gap = _vertex_weights_and_distances(domain, function)
    far = gap > distance
    owned = weight.size
    sums = np.array([weight[far].sum(), (weight * function.x.array[:owned])[far].sum()])
    domain.mesh.comm.Allreduce(MPI.IN_PLACE, sums, op=MPI.SUM)
    return float(sums[1] / sums[0]) if sums[0] > 0 else float("nan")
