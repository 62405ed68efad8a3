"""gmsh meshes at tumour scale (mm) and perivascular scale (um), distributed as DOLFINx meshes.

Tags of cells and facets: :mod:`hybrid.mesh.tags`.
"""

import hybrid._fem_stack  # noqa: F401  (before dolfinx)
from hybrid.mesh import tags
from hybrid.mesh.builders import TumourMesh, krogh_mesh, place_vessels, tumour_mesh, vessel_patch_mesh
from hybrid.mesh.from_mask import mask_mesh, mask_outline
from hybrid.mesh.geometry import DIMENSION, build_mesh, check_mesh_size
from hybrid.mesh.refine import refine_uniformly

__all__ = ["tags", "TumourMesh", "tumour_mesh", "krogh_mesh", "vessel_patch_mesh", "place_vessels",
           "mask_mesh", "mask_outline", "refine_uniformly", "DIMENSION", "build_mesh", "check_mesh_size"]
