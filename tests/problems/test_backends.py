"""One definition of the physics: every rate law gives the same number in numpy, torch (float64)
and UFL (compiled by DOLFINx and evaluated with ``dolfinx.fem.Expression``).

Each case is a function of scalar inputs and a table of input rows that crosses the branches
(Peclet series/exponential, PS = 0, reabsorption, before/after an infusion, both CEM43 sides).
Agreement is to a few units in the last place (rtol 1e-13): the backends use different
exp/log/tanh implementations, and that is the only difference allowed.
"""

import numpy as np
import pytest

from hybrid.problems import binding, bioheat, exchange, radiation, release, uptake
from hybrid.problems.pharmacokinetics import PlasmaCurve

RTOL = 1e-13

_BOLUS = PlasmaCurve.free_doxorubicin(8.0e-5)
_INFUSION = PlasmaCurve.free_doxorubicin(8.0e-5, infusion_duration=1800.0)
_LIPOSOMES = PlasmaCurve.liposomal(1.6e-4)

CASES = {
    "peclet_factor": (exchange.peclet_factor,
                      [[-50.0], [-1.0], [-1e-3], [0.0], [5e-3], [1.5e-2], [0.7], [5.0], [300.0]]),
    "diffusive_exchange_rate": (exchange.diffusive_exchange_rate,
                                [[1e-4, 0.05], [0.0, 0.05], [-3e-3, 0.05], [2e-3, 0.0], [-2e-3, 0.0],
                                 [0.0, 0.0], [5.0, 1e-3]]),
    "kedem_katchalsky_flux": (exchange.kedem_katchalsky_flux,
                              [[1e-3, 2e-4, 6e-4, 0.0, 0.053], [1e-3, 2e-3, -6e-4, 0.2, 0.053],
                               [2e-2, 0.0, 6e-4, 0.2, 4e-6], [1e-3, 5e-4, 6e-4, 0.9, 0.0]]),
    "starling_fluid_flux": (exchange.starling_fluid_flux, [[0.0, 4.2e-7, 1533.0], [2000.0, 4.2e-7, 1533.0]]),
    "ktrans_renkin_crone": (exchange.ktrans_to_permeability_surface, [[0.1, 0.5], [0.45, 0.5], [1e-4, 2.0]]),
    "free_bolus": (_BOLUS, [[0.0], [60.0], [3600.0], [86400.0]]),
    "free_infusion": (_INFUSION, [[0.0], [600.0], [1800.0], [1900.0], [86400.0]]),
    "liposomes": (_LIPOSOMES, [[0.0], [3600.0], [1e6]]),
    "ph_release": (lambda ph: release.ph_release_rate(ph), [[5.0], [6.5], [6.8], [7.4], [14.0]]),
    "thermal_release": (lambda T: release.thermal_release_rate(T),
                        [[300.0], [310.15], [314.45], [315.0], [330.0], [1000.0]]),
    "el_kareh_secomb": (lambda cf, ci: uptake.el_kareh_secomb_uptake(cf, ci),
                        [[1e-4, 0.0], [1e-2, 0.02], [1e-6, 0.5], [0.0, 0.01]]),
    "albumin_binding": (lambda cf, cb: binding.albumin_binding_rate(cf, cb),
                        [[1e-3, 0.0], [1e-3, 2.94e-3], [0.0, 5e-4], [2e-5, 1e-6]]),
    "well_mixed_bound": (lambda cf, cb, t: binding.well_mixed_bound(cf, cb, t),
                         [[1e-3, 0.0, 0.0], [1e-3, 0.0, 0.5], [1e-3, 5e-4, 3.0], [0.0, 1e-3, 60.0]]),
    "survival_fraction": (lambda c: uptake.survival_fraction(c), [[0.0], [0.03], [0.2]]),
    "lethal_indicator": (lambda c: uptake.lethal_indicator(c), [[0.0], [0.0643], [0.0645], [1.0]]),
    "cem43_rate": (bioheat.cem43_rate, [[310.15], [315.15], [316.15], [317.15], [320.0]]),
    "pennes_source": (lambda T: bioheat.pennes_source(T, external_heat=1e5), [[305.0], [310.15], [316.0]]),
    "dose_response": (lambda d: radiation.dose_response(d, 0.77, 28.8), [[0.0], [2.0], [28.8], [60.0]]),
}


def numpy_values(function, rows):
    columns = [np.array(c, dtype=float) for c in zip(*rows)]
    return np.asarray(function(*columns), dtype=float) * np.ones(len(rows))


def torch_values(function, rows):
    torch = pytest.importorskip("torch")
    columns = [torch.tensor(c, dtype=torch.float64) for c in zip(*rows)]
    result = function(*columns)
    assert result.dtype == torch.float64
    return result.detach().numpy() * np.ones(len(rows))


@pytest.fixture(scope="module")
def tiny_mesh():
    pytest.importorskip("dolfinx_solver")
    import hybrid._fem_stack  # noqa: F401  (dolfinx_solver before dolfinx)
    import dolfinx.mesh
    from mpi4py import MPI
    return dolfinx.mesh.create_unit_interval(MPI.COMM_SELF, 1)


def ufl_values(function, rows, mesh):
    """Compile ``function`` of DOLFINx Constants once, then evaluate it for every row."""
    import dolfinx.fem
    constants = [dolfinx.fem.Constant(mesh, 0.0) for _ in rows[0]]
    expression = dolfinx.fem.Expression(function(*constants), np.zeros((1, mesh.topology.dim)))
    values = []
    for row in rows:
        for constant, value in zip(constants, row):
            constant.value = value
        values.append(expression.eval(mesh, np.array([0], dtype=np.int32)).item())
    return np.array(values)


@pytest.mark.parametrize("name", sorted(CASES))
def test_numpy_and_torch_agree(name):
    function, rows = CASES[name]
    reference = numpy_values(function, rows)
    assert np.all(np.isfinite(reference))
    np.testing.assert_allclose(torch_values(function, rows), reference, rtol=RTOL, atol=0.0)


@pytest.mark.parametrize("name", sorted(CASES))
def test_numpy_and_ufl_agree(name, tiny_mesh):
    function, rows = CASES[name]
    np.testing.assert_allclose(ufl_values(function, rows, tiny_mesh), numpy_values(function, rows),
                               rtol=RTOL, atol=0.0)


def test_torch_gradients_are_finite_on_the_branch_points():
    """The PINN differentiates the rate laws: no NaN from the unused branch of a ``where``."""
    torch = pytest.importorskip("torch")
    pe = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    exchange.peclet_factor(pe).sum().backward()
    assert pe.grad.item() == pytest.approx(-0.5, rel=1e-14)   # d/dPe [Pe/(e^Pe - 1)] at 0
    drag = torch.tensor([2e-3, -2e-3, 0.0], dtype=torch.float64, requires_grad=True)
    ps = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    exchange.diffusive_exchange_rate(drag, ps).sum().backward()
    assert torch.isfinite(drag.grad).all() and torch.isfinite(ps.grad).all()

