"""PETSc options of one solver in the global options database, a user's own winning.

Precedence, the same for every solver in :mod:`hybrid.forward`: a user's option (``-prefix_key``
on the command line or in PETSC_OPTIONS) > the ``options`` the caller passes (``[solver]
petsc_options`` over the built-in defaults). The caller's options are added only where the key
is not set already, and :func:`remove_options` deletes exactly what was added, so the database
ends as it began.

Numbered prefixes (``hybrid_heat_0_``, one per solver object, so that two solvers alive at once
keep their own options): PETSc looks up ``-hybrid_heat_0_key`` and, when that is not set, the
un-numbered ``-hybrid_heat_key``. A user's un-numbered option therefore reaches every solver of
that prefix (and counts as set here, so the caller's key is not added over it); a numbered one
reaches only that solver.
"""

from __future__ import annotations

__all__ = ["add_options", "remove_options"]


def add_options(options: dict, prefix: str) -> list[str]:
    """Put ``options`` into PETSc's options database under ``prefix`` wherever the key is not set
    there already (by the user); return the names added, for :func:`remove_options`."""
    from petsc4py import PETSc

    database = PETSc.Options()
    added = {prefix + key: value for key, value in options.items() if not database.hasName(prefix + key)}
    for name, value in added.items():
        database[name] = value
    return list(added)


def remove_options(names: list[str]) -> None:
    """Delete ``names`` (as returned by :func:`add_options`) from PETSc's options database."""
    from petsc4py import PETSc

    database = PETSc.Options()
    for name in names:
        database.delValue(name)
