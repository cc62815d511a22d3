"""Camera cuts, clip spans and per-frame measures as pure functions: arrays in, arrays out.

Frame indices count frames of the constant-frame-rate stream from 0. A *cut at frame t* means
that frame ``t`` is the first frame of a new shot. A *span* is a half-open frame range
``(start_frame, end_frame)``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

Span = tuple[int, int]

#: Frames processed at once by the per-frame measures (bounds memory for long memory-mapped inputs).
CHUNK_FRAMES = 1024

#: ITU-R BT.601 luma weights for R, G, B.
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _region_mads(diff: np.ndarray) -> np.ndarray:
    """Mean absolute difference of the whole frame and of its four halves.

    Args:
        diff: absolute frame differences, [T, H, W, C].

    Returns:
        float32 [T, 5]: whole, left, right, top, bottom half.
    """
    height, width = diff.shape[1:3]
    regions = (diff, diff[:, :, : width // 2], diff[:, :, width // 2 :],
               diff[:, : height // 2], diff[:, height // 2 :])
    return np.stack([r.mean(axis=(1, 2, 3), dtype=np.float32) for r in regions], axis=1)


def frame_distances(frames: np.ndarray) -> np.ndarray:
    """Visual distance between each frame and the one before it.

    The distance is the largest mean absolute pixel difference over the whole frame and its left,
    right, top and bottom halves, divided by 255, so that a cut inside one panel of a split
    screen scores about as high as a full-frame cut while motion inside a shot stays low.

    Args:
        frames: uint8 [T, H, W, C] (or [T, H, W]); small frames such as 64x36 RGB.

    Returns:
        float32 [T] in [0, 1]; element 0 is 0 (the first frame has no predecessor).
    """
    frames = frames if frames.ndim == 4 else frames[..., None]
    out = np.zeros(len(frames), dtype=np.float32)
    for first in range(1, len(frames), CHUNK_FRAMES):
        block = np.asarray(frames[first - 1 : first + CHUNK_FRAMES], dtype=np.int16)
        diff = np.abs(np.diff(block, axis=0))
        out[first : first + len(diff)] = _region_mads(diff).max(axis=1) / 255.0
    return out


def frame_luma(frames: np.ndarray) -> np.ndarray:
    """Mean BT.601 luma of each frame.

    Args:
        frames: uint8 RGB [T, H, W, 3].

    Returns:
        float32 [T] in [0, 255].
    """
    out = np.zeros(len(frames), dtype=np.float32)
    for first in range(0, len(frames), CHUNK_FRAMES):
        block = np.asarray(frames[first : first + CHUNK_FRAMES], dtype=np.float32)
        out[first : first + len(block)] = (block @ LUMA_WEIGHTS).mean(axis=(1, 2))
    return out


def sample_bounds(start_frame: int, n_frames: int, fps: float, sample_rate: int) -> np.ndarray:
    """Audio sample index where each frame of a span starts, plus the end of its last frame.

    Frame ``f`` starts at sample ``round(f * sample_rate / fps)``; at 25 fps and 16 kHz that is
    exactly ``640 * f``.

    Returns:
        int64 [n_frames + 1], relative to the span's first sample (element 0 is 0).
    """
    frames = np.arange(start_frame, start_frame + n_frames + 1, dtype=np.float64)
    absolute = np.round(frames * sample_rate / fps).astype(np.int64)
    return absolute - absolute[0]


def frame_rms_dbfs(samples: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """RMS level of each frame's audio in dBFS (full scale = 32768), floored at -120 dB.

    Args:
        samples: int16 [N] mono audio of the span.
        bounds: int [T + 1] sample bounds of the frames (see :func:`sample_bounds`); the last
            bound must not exceed N.

    Returns:
        float32 [T].
    """
    power = np.square(samples.astype(np.float64) / 32768.0)
    cumulative = np.concatenate([[0.0], np.cumsum(power)])
    lengths = np.maximum(np.diff(bounds), 1)
    mean_power = (cumulative[bounds[1:]] - cumulative[bounds[:-1]]) / lengths
    return (10.0 * np.log10(np.maximum(mean_power, 1e-12))).astype(np.float32)


def rms_dbfs(samples: np.ndarray) -> float:
    """RMS level of int16 ``samples`` [N] in dBFS, floored at -120 dB (digital silence)."""
    if len(samples) == 0:
        return -120.0
    mean_power = float(np.mean(np.square(samples.astype(np.float64) / 32768.0)))
    return float(10.0 * np.log10(max(mean_power, 1e-12)))


def detect_cuts(distances: np.ndarray, threshold: float, min_gap_frames: int) -> list[int]:
    """Cut frames: peaks of ``distances`` above ``threshold``, at least ``min_gap_frames`` apart.

    Candidates are taken strongest first; a candidate closer than ``min_gap_frames`` to an
    already accepted cut is discarded (non-maximum suppression), so a two-frame transition yields
    one cut at its sharpest step.

    Args:
        distances: float [T], distance of frame t to frame t-1 (see :func:`frame_distances`).
        threshold: a frame is a candidate when its distance is strictly above this.
        min_gap_frames: smallest allowed distance in frames between two cuts (>= 1).

    Returns:
        Sorted frame indices in [1, T), each the first frame of a new shot.
    """
    distances = np.asarray(distances, dtype=np.float64)
    gap = max(1, int(min_gap_frames))
    candidates = np.flatnonzero(distances > threshold)
    candidates = candidates[candidates >= 1]
    order = candidates[np.argsort(-distances[candidates], kind="stable")]
    accepted: list[int] = []
    for frame in order.tolist():
        if all(abs(frame - other) >= gap for other in accepted):
            accepted.append(frame)
    return sorted(accepted)


def split_span(span: Span, max_frames: int) -> list[Span]:
    """Split ``span`` into the fewest near-equal pieces of at most ``max_frames`` frames.

    Piece lengths differ by at most one frame; longer pieces come first.
    """
    start, end = span
    pieces = max(1, math.ceil((end - start) / max_frames))
    base, extra = divmod(end - start, pieces)
    out, cursor = [], start
    for i in range(pieces):
        length = base + (1 if i < extra else 0)
        out.append((cursor, cursor + length))
        cursor += length
    return out


def clip_spans(n_frames: int, cuts: Sequence[int], min_frames: int,
               max_frames: int | None = None) -> tuple[list[Span], list[Span]]:
    """Turn cut frames into kept and dropped clip spans.

    The shots between consecutive cuts (and the stream ends) are kept when they last at least
    ``min_frames`` frames and dropped (reason ``too_short``) otherwise. Kept shots longer than
    ``max_frames`` are split into near-equal pieces (:func:`split_span`).

    Args:
        n_frames: frames in the stream.
        cuts: cut frames (first frames of new shots); values outside (0, n_frames) are ignored.
        min_frames: shortest kept span, in frames (>= 1).
        max_frames: longest kept span, in frames, or None for no limit; must be at least
            ``2 * min_frames`` so that every split piece is long enough.

    Returns:
        ``(kept, dropped)``: half-open spans, each list in time order; together they tile
        ``[0, n_frames)`` without overlap.
    """
    if max_frames is not None and max_frames < 2 * min_frames:
        raise ValueError(f"max_frames ({max_frames}) must be at least 2 * min_frames ({min_frames})")
    bounds = [0, *sorted({c for c in cuts if 0 < c < n_frames}), n_frames]
    kept: list[Span] = []
    dropped: list[Span] = []
    for span in itertools.pairwise(bounds):
        if span[1] - span[0] < max(1, min_frames):
            dropped.append(span)
        elif max_frames is not None and span[1] - span[0] > max_frames:
            kept.extend(split_span(span, max_frames))
        else:
            kept.append(span)
    return kept, [s for s in dropped if s[1] > s[0]]


def merge_adjacent(spans: Sequence[Span]) -> list[Span]:
    """Join spans in time order that touch (one ends where the next starts) into runs.

    Example: ``[(0, 75), (75, 137), (150, 200)]`` -> ``[(0, 137), (150, 200)]``.
    """
    runs: list[Span] = []
    for start, end in spans:
        if runs and runs[-1][1] == start:
            runs[-1] = (runs[-1][0], end)
        else:
            runs.append((start, end))
    return runs


def packed_ends(spans: Sequence[Span]) -> list[int]:
    """End frame of each span once the spans' frames are laid end to end from frame 0.

    Span ``i`` then covers frames ``[ends[i - 1], ends[i])`` of the packed stream (the first from
    frame 0), so each end but the last is the packed index of the next span's first frame.

    Example: ``[(0, 75), (100, 162)]`` -> ``[75, 137]``.
    """
    return np.cumsum([end - start for start, end in spans], dtype=np.int64).tolist()
