"""One small math interface for numpy, torch and UFL, so that each rate law is written once.

Every physics function in :mod:`hybrid.problems` takes ``xp``: a :class:`Namespace` with
``exp, log, sqrt, tanh, abs, where, maximum, minimum``. With ``xp=None`` the namespace is
inferred from the arguments (:func:`namespace_of`): a UFL expression (including a
``dolfinx.fem.Function`` or ``fem.Constant``) selects :data:`UFL`, a ``torch.Tensor`` selects
:data:`TORCH`, anything else :data:`NUMPY`.

torch and ufl are imported lazily, inside the adapter functions, so importing
:mod:`hybrid.problems` loads neither (the layering rule: FEM code never loads torch, the PINN
never loads the FEM stack). Conditions passed to ``where`` are built with ``<``, ``>``, ``<=``,
``>=``, which numpy, torch and UFL all overload.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

__all__ = ["Namespace", "NUMPY", "TORCH", "UFL", "namespace_of", "logistic"]


@dataclass(frozen=True)
class Namespace:
    """The math functions a rate law may use, for one backend (``name``)."""

    name: str
    exp: Callable[[Any], Any]
    log: Callable[[Any], Any]
    sqrt: Callable[[Any], Any]
    tanh: Callable[[Any], Any]
    abs: Callable[[Any], Any]
    where: Callable[[Any, Any, Any], Any]       # where(condition, value_if_true, value_if_false)
    maximum: Callable[[Any, Any], Any]
    minimum: Callable[[Any, Any], Any]


NUMPY = Namespace("numpy", np.exp, np.log, np.sqrt, np.tanh, np.abs, np.where, np.maximum, np.minimum)


def _torch():
    import torch  # lazy: only PINN code and tests evaluate rate laws on tensors
    return torch


def _tensor(x):
    """``x`` as a tensor; Python numbers become float64 0-d tensors (they never down-cast arrays)."""
    torch = _torch()
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(x, dtype=torch.float64)


TORCH = Namespace(
    "torch",
    exp=lambda x: _torch().exp(_tensor(x)),
    log=lambda x: _torch().log(_tensor(x)),
    sqrt=lambda x: _torch().sqrt(_tensor(x)),
    tanh=lambda x: _torch().tanh(_tensor(x)),
    abs=lambda x: _torch().abs(_tensor(x)),
    where=lambda c, a, b: _torch().where(_torch().as_tensor(c), _tensor(a), _tensor(b)),
    maximum=lambda a, b: _torch().maximum(_tensor(a), _tensor(b)),
    minimum=lambda a, b: _torch().minimum(_tensor(a), _tensor(b)),
)


def _ufl():
    import ufl  # lazy: only FEM code builds UFL forms
    return ufl


UFL = Namespace(
    "ufl",
    exp=lambda x: _ufl().exp(x),
    log=lambda x: _ufl().ln(x),
    sqrt=lambda x: _ufl().sqrt(x),
    tanh=lambda x: _ufl().tanh(x),
    abs=lambda x: abs(_ufl().as_ufl(x)),
    where=lambda c, a, b: (a if c else b) if isinstance(c, (bool, np.bool_)) else _ufl().conditional(c, a, b),
    maximum=lambda a, b: _ufl().max_value(a, b),
    minimum=lambda a, b: _ufl().min_value(a, b),
)


def namespace_of(*values) -> Namespace:
    """The namespace that can evaluate an expression of ``values`` (UFL > torch > numpy).

    Only looks at modules already imported, so it never imports torch or ufl itself.
    Raises TypeError for a mix of UFL expressions and torch tensors.
    """
    ufl = sys.modules.get("ufl")
    torch = sys.modules.get("torch")
    is_ufl = ufl is not None and any(isinstance(v, ufl.core.expr.Expr) for v in values)
    is_torch = torch is not None and any(isinstance(v, torch.Tensor) for v in values)
    if is_ufl and is_torch:
        raise TypeError("cannot mix UFL expressions and torch tensors in one rate law; "
                        "convert the tensors to numpy arrays or dolfinx Functions first")
    return UFL if is_ufl else TORCH if is_torch else NUMPY


LN2 = math.log(2.0)
LN10 = math.log(10.0)


def logistic(z, xp: Namespace):
    """1 / (1 + exp(-z)), written as (1 + tanh(z/2)) / 2 so that no backend overflows."""
    return 0.5 * (1.0 + xp.tanh(0.5 * z))
