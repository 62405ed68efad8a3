"""hybrid: imaging-guided modelling of nanomedicine delivery in solid tumours.

Pipeline order: ``hybrid.mesh`` (gmsh) -> ``hybrid.imaging`` (DCE/CEST maps) ->
``hybrid.forward`` (DOLFINx physics, MPI) -> ``hybrid.inverse`` (PyTorch PINN) ->
``hybrid.validation`` -> ``hybrid.report``. Subpackages are imported on demand so that the
FEM stack and torch are never loaded together by accident.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
