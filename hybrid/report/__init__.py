"""Figures and tables (matplotlib imported lazily, off-screen)."""
