"""Validation of the inverse problem: the classical FEM-constrained least-squares baseline."""
