"""Figures for papers: PNG, rendered off-screen (matplotlib's Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_radial_pressure(xy: np.ndarray, pressure: np.ndarray, exact, tumour_radius: float | None,
                         path: Path) -> None:
    """Pressure map (mmHg, mm) and radial profile against the closed form ``exact`` (or None);
    ``tumour_radius`` [m] draws the tumour surface (None: not drawn)."""
    from hybrid.problems.parameters import MMHG_TO_PA

    plt = _pyplot()
    fig, (ax_map, ax_profile) = plt.subplots(1, 2, figsize=(11, 4.5), constrained_layout=True)
    mm = 1e3 * xy
    image = ax_map.tricontourf(mm[:, 0], mm[:, 1], pressure / MMHG_TO_PA, levels=30, cmap="viridis")
    if tumour_radius is not None:
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
    if tumour_radius is not None:
        ax_profile.axvline(1e3 * tumour_radius, color="grey", ls="--", lw=0.8)
    ax_profile.set_xlabel("r [mm]")
    ax_profile.set_ylabel("p [mmHg]")
    ax_profile.set_title("radial profile" + (" (dashed: tumour surface)" if tumour_radius else ""))
    ax_profile.legend()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)


def plot_maps_overview(maps: dict[str, tuple[np.ndarray, str]], path: Path, slice_index: int | None = None) -> None:
    """One panel per 3-D map ``{name: (volume, unit)}``: slice ``slice_index`` (default: the middle),
    i along the horizontal axis, colour range the 1st-99th percentile of the finite values."""
    plt = _pyplot()
    names = list(maps)
    columns = min(4, len(names))
    rows = -(-len(names) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.0 * rows), constrained_layout=True,
                             squeeze=False)
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    for ax, name in zip(axes.ravel(), names):
        volume, unit = maps[name]
        k = volume.shape[2] // 2 if slice_index is None else slice_index
        image = np.asarray(volume[:, :, k], dtype=float).T
        finite = image[np.isfinite(image)]
        low, high = np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0)
        shown = ax.imshow(image, origin="lower", cmap="viridis", vmin=low, vmax=high if high > low else low + 1)
        ax.set_title(f"{name} [{unit}]" if unit else name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(shown, ax=ax, shrink=0.8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
