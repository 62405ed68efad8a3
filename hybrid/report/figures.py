"""Figures for papers: PNG, rendered off-screen (matplotlib's Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_radial_pressure(xy: np.ndarray, pressure: np.ndarray, exact, tumour_radius: float, path: Path) -> None:
    """Pressure map (mmHg, mm) and radial profile against the closed form ``exact`` (or None)."""
    from hybrid.problems.parameters import MMHG_TO_PA

    plt = _pyplot()
    fig, (ax_map, ax_profile) = plt.subplots(1, 2, figsize=(11, 4.5), constrained_layout=True)
    mm = 1e3 * xy
    image = ax_map.tricontourf(mm[:, 0], mm[:, 1], pressure / MMHG_TO_PA, levels=30, cmap="viridis")
    ax_map.add_patch(plt.Circle((0, 0), 1e3 * tumour_radius, fill=False, color="w", lw=1, ls="--"))
    ax_map.set_aspect("equal")
    ax_map.set_xlabel("x [mm]")
    ax_map.set_ylabel("y [mm]")
    ax_map.set_title("interstitial fluid pressure")
    fig.colorbar(image, ax=ax_map, label="p [mmHg]")
    r = np.linalg.norm(xy, axis=1)
    ax_profile.plot(1e3 * r, pressure / MMHG_TO_PA, ".", ms=1.5, alpha=0.4, label="FEM (nodes)")
    if exact is not None:
        rr = np.linspace(0, r.max(), 600)
        ax_profile.plot(1e3 * rr, exact.pressure(rr) / MMHG_TO_PA, "k-", lw=1.2, label="closed form")
    ax_profile.axvline(1e3 * tumour_radius, color="grey", ls="--", lw=0.8)
    ax_profile.set_xlabel("r [mm]")
    ax_profile.set_ylabel("p [mmHg]")
    ax_profile.set_title("radial profile (dashed: tumour surface)")
    ax_profile.legend()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)
