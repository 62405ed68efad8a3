"""Make DOLFINx importable the one way that works for both the PyPI wheel and conda.

The PyPI wheel ``dolfinx-solver-real`` ships PETSc inside ``dolfinx_solver``, which must be
imported before ``dolfinx`` or ``petsc4py``. Conda installs have no such module. Every
subpackage that uses DOLFINx (``hybrid.mesh``, ``hybrid.forward``) imports this module first.
"""

try:
    import dolfinx_solver  # noqa: F401  (side effect: puts the bundled PETSc on the path)
except ImportError:  # DOLFINx from conda or a source build
    pass
