"""Quantitative MRI: DCE-MRI kinetic maps, CEST pH maps. Pure numpy/scipy."""
