"""Quantitative MRI: DCE-MRI kinetic maps, CEST pH maps, voxel grids, the digital phantom. Pure numpy/scipy."""
