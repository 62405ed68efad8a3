"""NIfTI in and out (nibabel): DCE/CEST/VFA series with their JSON sidecars, parameter maps.

Affines are returned in **millimetres** (NIfTI's usual spatial unit): a header whose
``xyzt_units`` say metres or micrometres is converted to mm; an unknown unit is taken as mm.
World coordinates in metres (as the FEM uses) are ``1e-3 * affine_mm @ [i, j, k, 1]`` (see
:mod:`hybrid.imaging.grid`).

Sidecar: ``<series>.json`` beside the image (``dce.nii.gz`` -> ``dce.json``), BIDS style, times in
seconds. Keys read:

- DCE frame times, first found of: ``FrameTimes_s`` (list, s, one per frame), ``VolumeTiming``
  (BIDS list of volume onsets, s), ``FrameInterval_s`` (scalar, s; frames at
  ``FrameStart_s + n * FrameInterval_s``, start default 0); else the NIfTI 4th zoom when the
  header's time unit is s/ms/us. ``RepetitionTime`` is *not* read: DCE tools use it for the
  excitation TR (ROCKETSHIP) as well as for the volume time (BIDS). A ``frame_times_s``
  argument overrides all of these.
- SPGR settings (optional, returned in ``metadata``): ``RepetitionTimeExcitation`` (s, qMRI-BIDS),
  ``FlipAngle`` (deg; a list ``FlipAngles_deg`` for VFA series).
- CEST saturation offsets: ``offsets_ppm`` (list, ppm from water, one per volume), or an
  ``offsets_ppm`` argument.
"""

from __future__ import annotations

import gzip
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from hybrid.io.outputs import naming

__all__ = ["Series", "read_dce_series", "read_cest_series", "read_vfa_series", "read_volume",
           "write_volume", "write_series", "sidecar_path", "check_same_grid"]

_TO_MM = {"meter": 1e3, "mm": 1.0, "micron": 1e-3, "unknown": 1.0}
_TO_S = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6}
_AFFINE_ATOL_MM = 1e-3


@dataclass(frozen=True)
class Series:
    """A 4-D acquisition: ``data`` (x, y, z, n) float64, ``affine_mm`` (4, 4), ``axis`` the values
    of the last axis (frame times [s], offsets [ppm] or flip angles [deg]), ``metadata`` the
    sidecar as read (empty when there is none)."""

    data: np.ndarray
    affine_mm: np.ndarray
    axis: np.ndarray
    metadata: dict = field(default_factory=dict)


def sidecar_path(path: str | Path) -> Path:
    """``dce.nii.gz`` / ``dce.nii`` -> ``dce.json`` in the same directory."""
    path = Path(path)
    stem = path.name.removesuffix(".gz").removesuffix(".nii")
    return path.with_name(stem + ".json")


def _check_gzip(path: Path) -> None:
    """Decompress a .gz file to its end, so that its CRC and length are checked (nibabel reads
    gzip lazily and stops where the image data end, so damaged data would be read silently)."""
    with path.open("rb") as raw:
        if raw.read(2) != b"\x1f\x8b":
            return
    try:
        with gzip.open(path, "rb") as stream:
            while stream.read(1 << 24):
                pass
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{path}: damaged or truncated gzip data ({exc}); copy or export the image again") from None


def _load(path: str | Path, ndim: int):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such NIfTI file")
    _check_gzip(path)
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=float)
    except Exception as exc:  # nibabel raises several types for unreadable files
        raise ValueError(f"{path}: not a readable NIfTI image ({' '.join(str(exc).split())})") from None
    if data.ndim == 2 and ndim == 3:
        data = data[:, :, None]
    if data.ndim != ndim:
        raise ValueError(f"{path}: expected a {ndim}-D image, got shape {data.shape}")
    space_unit, time_unit = img.header.get_xyzt_units()
    scale = np.diag([_TO_MM[space_unit]] * 3 + [1.0])
    return img, data, scale @ img.affine, time_unit


def _sidecar(path: str | Path) -> dict:
    side = sidecar_path(path)
    if not side.is_file():
        return {}
    try:
        document = json.loads(side.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{side}: not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise ValueError(f"{side}: expected a JSON object of key: value")
    return document


def _axis(values, n: int, what: str, where: str, increasing: bool, positive_below: float | None = None) -> np.ndarray:
    """The last-axis values checked: one finite number per volume, strictly increasing or without
    repeats, and, with ``positive_below``, inside (0, positive_below)."""
    if isinstance(values, (str, bool)) or any(isinstance(v, (str, bool)) for v in np.atleast_1d(values)):
        raise ValueError(f"{where}: {what} must be numbers, got {values!r}")
    try:
        axis = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {what} must be a list of numbers, got {values!r}") from None
    if axis.ndim != 1 or axis.size != n:
        raise ValueError(f"{where}: {axis.size} {what} for {n} volumes; give exactly one per volume")
    if not np.all(np.isfinite(axis)):
        raise ValueError(f"{where}: {what} contain NaN/inf")
    if increasing and np.any(np.diff(axis) <= 0):
        bad = int(np.flatnonzero(np.diff(axis) <= 0)[0])
        raise ValueError(f"{where}: {what} must be strictly increasing (duplicate or backwards at "
                         f"frame {bad + 1}: {axis[bad]:g} then {axis[bad + 1]:g})")
    if not increasing and np.unique(axis).size != axis.size:
        raise ValueError(f"{where}: repeated {what}; average repeated volumes first")
    if positive_below is not None and np.any((axis <= 0) | (axis >= positive_below)):
        raise ValueError(f"{where}: {what} must lie in (0, {positive_below:g}), got {axis.tolist()}")
    return axis


def read_dce_series(path: str | Path, frame_times_s=None) -> Series:
    """4-D DCE series (time last) with frame times [s] (see the module docstring for the rules)."""
    img, data, affine, time_unit = _load(path, 4)
    meta = _sidecar(path)
    n = data.shape[-1]
    where = str(path)
    if frame_times_s is not None:
        times = frame_times_s
    elif "FrameTimes_s" in meta or "VolumeTiming" in meta:
        key = "FrameTimes_s" if "FrameTimes_s" in meta else "VolumeTiming"
        times, where = meta[key], f"{sidecar_path(path)} {key}"
    elif "FrameInterval_s" in meta:
        where = f"{sidecar_path(path)} FrameInterval_s"
        interval, start = meta["FrameInterval_s"], meta.get("FrameStart_s", 0.0)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (interval, start)):
            raise ValueError(f"{where} / FrameStart_s must be numbers [s], got {interval!r} / {start!r}")
        times = start + interval * np.arange(n)
    elif time_unit in _TO_S and img.header.get_zooms()[3] > 0:
        times = _TO_S[time_unit] * float(img.header.get_zooms()[3]) * np.arange(n)
    else:
        raise ValueError(f"{path}: no frame timing; add FrameTimes_s (s) to {sidecar_path(path)} "
                         "or pass frame_times_s")
    return Series(data, affine, _axis(times, n, "frame times", where, increasing=True), meta)


def _series_with_sidecar_axis(path: str | Path, values, key: str, what: str,
                              positive_below: float | None = None) -> Series:
    """4-D series whose last axis is given by ``values`` or, if None, by the sidecar's ``key``."""
    _, data, affine, _ = _load(path, 4)
    meta = _sidecar(path)
    where = str(path)
    if values is None:
        if key not in meta:
            raise ValueError(f"{path}: no {what}; add {key} to {sidecar_path(path)} or pass {key}")
        values, where = meta[key], f"{sidecar_path(path)} {key}"
    return Series(data, affine, _axis(values, data.shape[-1], what, where, False, positive_below), meta)


def read_cest_series(path: str | Path, offsets_ppm=None) -> Series:
    """4-D CEST series (one volume per saturation offset) with offsets [ppm from water]."""
    return _series_with_sidecar_axis(path, offsets_ppm, "offsets_ppm", "offsets")


def read_vfa_series(path: str | Path, flip_angles_deg=None) -> Series:
    """4-D variable-flip-angle series with flip angles [deg] (sidecar ``FlipAngles_deg``)."""
    return _series_with_sidecar_axis(path, flip_angles_deg, "FlipAngles_deg", "flip angles [deg]", 180.0)


def read_volume(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """3-D image (a 2-D image gets a third axis of length 1) and its affine [mm]."""
    _, data, affine, _ = _load(path, 3)
    return data, affine


def check_same_grid(name_a: str, shape_a, affine_a, name_b: str, shape_b, affine_b) -> None:
    """ValueError unless two images share the spatial shape and affine (to 1e-3 mm)."""
    if tuple(shape_a[:3]) != tuple(shape_b[:3]):
        raise ValueError(f"{name_b} has spatial shape {tuple(shape_b[:3])} but {name_a} has "
                         f"{tuple(shape_a[:3])}; resample them onto one grid first")
    if not np.allclose(affine_a, affine_b, rtol=0.0, atol=_AFFINE_ATOL_MM):
        raise ValueError(f"{name_b} and {name_a} have different affines (max difference "
                         f"{np.max(np.abs(np.asarray(affine_a) - affine_b)):.3g} mm); "
                         "they must be on the same voxel grid")


def _image(data: np.ndarray, affine_mm: np.ndarray, description: str, intent_name: str):
    img = nib.Nifti1Image(data, np.asarray(affine_mm, dtype=float))
    img.header.set_xyzt_units("mm")   # time unit left unknown: timing lives in the sidecar
    img.header["descrip"] = description.encode()[:79]
    if intent_name:
        img.header.set_intent("none", name=intent_name[:15])
    return img


def _save(image, path: Path) -> None:
    """nib.save, with the file named in an error (gzip's write errors, e.g. a full disk, name none)."""
    with naming(path):
        nib.save(image, str(path))


def write_volume(path: str | Path, volume: np.ndarray, affine_mm: np.ndarray, *,
                 description: str = "", intent_name: str = "", dtype=np.float32) -> Path:
    """Write a 3-D map (float32 by default; NaN kept) with ``affine_mm``. ``description`` (<= 79
    characters) and ``intent_name`` (<= 15, e.g. ``"Ktrans [1/min]"``) carry name and unit."""
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"write_volume expects a 3-D array, got shape {volume.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _save(_image(volume.astype(dtype), affine_mm, description, intent_name), path)
    return path


def write_series(path: str | Path, data: np.ndarray, affine_mm: np.ndarray, sidecar: dict, *,
                 description: str = "") -> Path:
    """Write a 4-D series (float32) and its JSON sidecar ``sidecar_path(path)``."""
    data = np.asarray(data)
    if data.ndim != 4:
        raise ValueError(f"write_series expects a 4-D array (x, y, z, n), got shape {data.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _save(_image(data.astype(np.float32), affine_mm, description, ""), path)
    sidecar_path(path).write_text(json.dumps(sidecar, indent=2) + "\n")
    return path
