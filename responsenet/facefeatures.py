"""Per-frame face features after detection: find the gaps where no face was found, fill short ones.

Pure functions on arrays (no I/O, no models), used by the ``face`` stage.
"""

from __future__ import annotations

import numpy as np


def gap_runs(detected: np.ndarray) -> list[tuple[int, int]]:
    """Runs of frames without a face, as ``(start_frame, end_frame)`` half-open spans.

    Args:
        detected: bool [T], True where a face was found.

    Returns:
        Every maximal run of False in order, e.g. ``[F, T, F, F, T] -> [(0, 1), (2, 4)]``.
    """
    missing = np.concatenate([[False], ~np.asarray(detected, dtype=bool), [False]])
    edges = np.flatnonzero(np.diff(missing.astype(np.int8)))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


def interior_gaps(detected: np.ndarray, max_gap_frames: int) -> np.ndarray:
    """bool [T]: frames in a gap of at most ``max_gap_frames`` with a face on both sides.

    Leading and trailing gaps (no face before, or none after) are never included.
    """
    detected = np.asarray(detected, dtype=bool)
    mask = np.zeros(len(detected), dtype=bool)
    for start, end in gap_runs(detected):
        if start > 0 and end < len(detected) and end - start <= max_gap_frames:
            mask[start:end] = True
    return mask


def fill_gaps(values: np.ndarray, detected: np.ndarray,
              max_gap_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Linearly interpolate short interior gaps; zero every other frame without a face.

    Frame ``t`` in a fillable gap between detected frames ``a < t < b`` gets
    ``values[a] + (t - a) / (b - a) * (values[b] - values[a])``, per column.

    Args:
        values: float [T, D] per-frame features (rows where ``detected`` is False are ignored).
        detected: bool [T], True where a face was found.
        max_gap_frames: longest gap (frames) that is filled; 0 fills nothing.

    Returns:
        ``(filled, interpolated)``: float32 [T, D] and bool [T] (True on the filled frames).
    """
    values = np.asarray(values, dtype=np.float32)
    detected = np.asarray(detected, dtype=bool)
    if values.ndim != 2 or len(values) != len(detected):
        raise ValueError(f"values must be [T, D] with T = len(detected) = {len(detected)}, "
                         f"got shape {values.shape}")
    filled = np.where(detected[:, None], values, np.float32(0.0))
    interpolated = interior_gaps(detected, max_gap_frames)
    frames = np.flatnonzero(interpolated)
    if len(frames):
        known = np.flatnonzero(detected)
        after = known[np.searchsorted(known, frames)]
        before = known[np.searchsorted(known, frames) - 1]
        weight = ((frames - before) / (after - before)).astype(np.float32)[:, None]
        filled[frames] = values[before] + weight * (values[after] - values[before])
    return filled, interpolated
