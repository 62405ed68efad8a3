"""Figures of ``hybrid compare`` (PNG, off-screen): lethal fractions, penetration profiles and
exposure maps of the delivery scenarios."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hybrid.report.figures import _pyplot

__all__ = ["plot_lethal_fractions", "plot_penetration_profiles", "plot_exposure_maps"]


def plot_lethal_fractions(rows: dict[str, dict], path: Path) -> None:
    """Bars of the tumour lethal fraction (and, where present, the distal one) per scenario."""
    plt = _pyplot()
    names = list(rows)
    x = np.arange(len(names))
    whole = [rows[n]["lethal_fraction"] for n in names]
    distal = [rows[n].get("lethal_fraction_distal") for n in names]
    fig, ax = plt.subplots(figsize=(10, 4.5), constrained_layout=True)
    has_distal = any(d is not None for d in distal)
    width = 0.4 if has_distal else 0.8
    ax.bar(x - (width / 2 if has_distal else 0), whole, width, label="whole tumour")
    if has_distal:
        ax.bar(x + width / 2, [np.nan if d is None else d for d in distal], width, label="distal tissue")
    ax.set_xticks(x, [n.replace("_", "\n") for n in names], fontsize=8)
    ax.set_ylabel("lethal fraction [1]")
    ax.set_ylim(0, 1)
    ax.legend()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_penetration_profiles(profiles: dict[str, tuple[np.ndarray, np.ndarray]], lethal: float,
                              distal_distance: float, path: Path) -> None:
    """Peak intracellular drug [ng/1e5 cells] against distance to the nearest vessel [um] per
    scenario, with the lethal line and the distal distance."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5), constrained_layout=True)
    for name, (distance, value) in profiles.items():
        ax.plot(1e6 * distance, value, ls="--" if name.endswith("_radiation") else "-", label=name)
    ax.axhline(lethal, color="k", lw=1, label=f"lethal {lethal:g} ng/1e5 cells")
    ax.axvline(1e6 * distal_distance, color="grey", lw=1, ls=":")
    ax.set_xlabel("distance to the nearest vessel wall [um]")
    ax.set_ylabel("peak intracellular drug [ng/1e5 cells]")
    top = max([lethal] + [float(np.max(value)) for _, value in profiles.values()])
    ax.set_yscale("symlog", linthresh=1e-4)   # log above 1e-4 ng/1e5 cells, linear down to 0
    ax.set_ylim(0.0, 2.0 * top)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_exposure_maps(maps: dict[str, tuple[np.ndarray, np.ndarray]], mesh_size: float, path: Path) -> None:
    """Peak intracellular drug [mol/m^3] per scenario over x-y [mm] (3-D meshes: the vertices
    within half a mesh size of z = 0), one colour scale for all."""
    plt = _pyplot()
    columns = 4
    rows = int(np.ceil(len(maps) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.0 * rows), constrained_layout=True,
                             squeeze=False)
    top = max(float(values.max()) for _, values in maps.values()) or 1.0
    for ax, (name, (points, values)) in zip(axes.ravel(), maps.items()):
        near = np.abs(points[:, 2]) <= 0.5 * mesh_size if points.shape[1] == 3 else slice(None)
        image = ax.tricontourf(1e3 * points[near, 0], 1e3 * points[near, 1], values[near],
                               levels=np.linspace(0, top, 21), cmap="magma")
        ax.set_title(name, fontsize=8)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=6)
    for ax in axes.ravel()[len(maps):]:
        ax.axis("off")
    fig.colorbar(image, ax=axes, label="peak intracellular drug [mol/m^3]")
    fig.savefig(path, dpi=120)
    plt.close(fig)
