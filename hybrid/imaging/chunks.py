"""Voxelwise fits in chunks, with a progress line per chunk (numpy only)."""

from __future__ import annotations

import time

import numpy as np


def fit_in_chunks(label: str, n: int, size: int, fit_chunk, log) -> dict[str, np.ndarray]:
    """``fit_chunk(slice)`` -> dict of (m,) arrays over ``n`` voxels in chunks of ``size``, logging
    the progress through ``log(str)``; the chunks' arrays concatenated per key. ValueError if n == 0."""
    parts: list[dict] = []
    start = time.perf_counter()
    for first in range(0, n, size):
        parts.append(fit_chunk(slice(first, min(n, first + size))))
        done = min(n, first + size)
        log(f"{label}: {done}/{n} voxels ({100 * done // n} %), {time.perf_counter() - start:.1f} s")
    if not parts:
        raise ValueError(f"{label}: the mask selects no voxel")
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
