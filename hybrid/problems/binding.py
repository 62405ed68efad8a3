"""Kinetic binding of free doxorubicin to albumin in the tissue (table k_a, k_d).

The bound pool C_B [mol/m^3 of tissue] exchanges with the unbound free drug C_F [mol/m^3 of
tissue] at the net rate

    R = k_a C_F - k_d C_B                  [mol/(m^3 s)]

(``+R`` in the bound, ``-R`` in the free-drug equation), with association rate k_a and
dissociation rate k_d [1/s] (FlexPDE tumour-cord script: 50 and 17 1/min). At equilibrium
C_B / C_F = k_a / k_d, the table's B_alb; in plasma the bound fraction k_a / (k_a + k_d) is the
table's delta_alb. Well mixed (no transport, no other source) the total C_F + C_B stays fixed and
C_B relaxes to k_a / (k_a + k_d) of it with rate k_a + k_d (:func:`well_mixed_bound`).
"""

from __future__ import annotations

from hybrid.problems.namespace import Namespace, namespace_of
from hybrid.problems.parameters import value_or_default

__all__ = ["albumin_binding_rate", "well_mixed_bound"]


def albumin_binding_rate(c_free, c_bound, *, association_rate=None, dissociation_rate=None):
    """Net binding rate k_a C_F - k_d C_B [mol/(m^3 s)] of free drug ``c_free`` to albumin,
    ``c_bound`` the bound drug, both [mol/m^3 of tissue]; ``association_rate`` k_a and
    ``dissociation_rate`` k_d [1/s] (table ``k_a``, ``k_d`` where None). Affine: it needs no math
    namespace and works on numbers, arrays, tensors and UFL alike."""
    k_a = value_or_default(association_rate, "k_a")
    k_d = value_or_default(dissociation_rate, "k_d")
    return k_a * c_free - k_d * c_bound


def well_mixed_bound(c_free0, c_bound0, time, *, association_rate=None, dissociation_rate=None,
                     xp: Namespace | None = None):
    """Bound drug C_B(t) [mol/m^3] of a closed well-mixed volume starting from ``c_free0``,
    ``c_bound0`` [mol/m^3] at t = 0, at ``time`` [s] (exact solution of the binding rate law alone):
    C_B = q (C_F0 + C_B0) + (C_B0 - q (C_F0 + C_B0)) exp(-(k_a + k_d) t), q = k_a / (k_a + k_d).
    The free drug is C_F0 + C_B0 - C_B."""
    xp = xp or namespace_of(c_free0, c_bound0, time, association_rate, dissociation_rate)
    k_a = value_or_default(association_rate, "k_a")
    k_d = value_or_default(dissociation_rate, "k_d")
    equilibrium = k_a / (k_a + k_d) * (c_free0 + c_bound0)
    return equilibrium + (c_bound0 - equilibrium) * xp.exp(-(k_a + k_d) * time)
