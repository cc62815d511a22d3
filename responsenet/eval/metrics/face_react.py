"""REACT 2023 facial-reaction metrics (Song et al., "REACT2023: the first Multiple Appropriate
Facial Reaction Generation Challenge", ACM MM 2023), computed as the challenge's baseline
evaluation (reactmultimodalchallenge/baseline_react2023, ``metric/``) computes them, adapted to
one real listener per clip and 64-column face features.

Windows: REACT scores 30 s clips (750 frames at 25 fps). Each clip is cut into consecutive
windows of ``window_s`` seconds; the last window is aligned to the clip's end (it overlaps the one
before), so no frame is dropped and every window has the full length; a clip shorter than a
window is one window. Every window weighs the same in the averages below.

Samples: ``gen_face`` plus the further samples of ``gen_samples`` (K = 1 + len(gen_samples);
the challenge draws 10 per input). Frames without a real face (``ref_face_mask`` False) are
dropped from frcorr and frdist, speaker frames without a face from frsyn; frdiv, frvar and frdvs
read the generated faces alone and use every frame. A column with zero variance has Pearson
correlation 0 (the challenge's code yields NaN there).

Keys (:func:`react_suite`):

- ``frcorr``: Lin's concordance correlation (population moments) of each column with the real
  listener, mean over columns, samples and windows; higher is better. The challenge takes per
  sample the best CCC over all appropriate real reactions of the input and *sums* over its 10
  samples; ResponseNet has one real listener per clip, so ours is that CCC, averaged over the
  samples (x 10 to compare with challenge numbers computed from 10 samples).
- ``frdist``: DTW distance to the real listener (as ``tslearn.metrics.dtw``: square root of the
  least summed squared Euclidean cost along a warping path), per column group, weighted; mean
  over samples and windows (the challenge takes the least over appropriate reactions; we have
  one); lower is better.
- ``frdiv``: per window, squared distance between two distinct samples, mean over ordered pairs,
  per element (frames x 64); windows with K >= 2; higher is more diverse.
- ``frvar``: variance over time (ddof=1, as ``torch.var`` in the challenge) per column, mean over
  columns, samples and windows; higher is more expressive.
- ``frdvs``: for each sample index k < min K, squared distance between the k-th samples of two
  distinct windows, mean over ordered pairs, per element; mean over k. Windows are compared over
  their first L frames, L the shortest window. Higher means reactions differ across inputs.
- ``frsyn``: |lag| in frames of the peak of the time-lagged cross-correlation between a sample
  and the speaker (lags -M..M, M = round(max_lag_s x fps) - 1 as the challenge's
  ``range(-(2*25-1), 2*25)``; at each lag the mean over columns of the Pearson correlation of
  column d with the speaker's column d; the first maximum wins); mean over samples and windows;
  lower is better.

Hyper-parameters (``ctx.param("react", key, default)``): ``window_s`` (30.0); ``dtw_groups``
(``[[0, 52, 1/52], [52, 64, 1/12]]``: [start, end, weight] column groups; the challenge weights
its 15 AUs 1/15, valence-arousal 1 and 8 expressions 1/8, i.e. a group by one over its size, and
we do the same for blendshapes and pose); ``dtw_radius`` (None: no band, as the challenge; an
int is a Sakoe-Chiba radius in frames); ``tlcc_max_lag_s`` (2.0).

:func:`react_suite` returns only the keys it can compute; :func:`react_skipped` names the others
with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from responsenet.errors import UsageError
from responsenet.eval.metrics.base import MetricContext, MetricSkipped, ScoredClip
from responsenet.eval.metrics.face import FaceTracks, face_tracks, pearson_per_dim

REACT_KEYS = ("frcorr", "frdist", "frdiv", "frvar", "frdvs", "frsyn")
DEFAULT_DTW_GROUPS = ((0, 52, 1 / 52), (52, 64, 1 / 12))

Window = tuple[FaceTracks, slice]


# ---------------------------------------------------------------- pure math


def window_slices(n_frames: int, size: int) -> list[slice]:
    """Consecutive windows of ``size`` frames covering ``n_frames``; the last one ends at the
    clip's end (overlapping its neighbour); one window when the clip is shorter than ``size``."""
    if n_frames <= size:
        return [slice(0, n_frames)] if n_frames else []
    starts = list(range(0, n_frames - size + 1, size))
    if starts[-1] + size < n_frames:
        starts.append(n_frames - size)
    return [slice(s, s + size) for s in starts]


def ccc_per_dim(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Lin's concordance correlation of each column of ``x`` [N, D] with ``y`` [N, D]:
    ``2 cov / (var_x + var_y + (mean_x - mean_y)^2)`` with population moments; 1 where both
    columns are the same constant."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    mx, my = x.mean(axis=0), y.mean(axis=0)
    cov = ((x - mx) * (y - my)).mean(axis=0)
    denom = x.var(axis=0) + y.var(axis=0) + (mx - my) ** 2
    safe = np.where(denom > 0, denom, 1.0)
    return np.where(denom > 0, np.clip(2 * cov / safe, -1.0, 1.0), 1.0)


def ccc(x: np.ndarray, y: np.ndarray) -> float:
    """Mean over columns of :func:`ccc_per_dim` (1-D inputs are one column)."""
    x, y = np.asarray(x), np.asarray(y)
    return float(ccc_per_dim(x.reshape(len(x), -1), y.reshape(len(y), -1)).mean())


def dtw_distance(x: np.ndarray, y: np.ndarray, radius: int | None = None) -> float:
    """DTW distance of ``x`` [n, D] and ``y`` [m, D] (1-D is one column): square root of the
    least sum of squared Euclidean frame distances along a monotone warping path, as
    ``tslearn.metrics.dtw``; ``radius`` is a Sakoe-Chiba band |i - j| <= radius."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return float(dtw_batch(x.reshape(1, len(x), -1), y.reshape(1, len(y), -1), radius)[0])


def dtw_batch(xs: np.ndarray, ys: np.ndarray, radius: int | None = None) -> np.ndarray:
    """:func:`dtw_distance` of ``xs[b]`` [n, D] and ``ys[b]`` [m, D] for each b, [B].

    Row by row in O(B m) memory: with ``a_j = min(D[i-1, j], D[i-1, j-1])`` and ``C`` the running
    sum of row i's costs, ``D[i, j] = C_j + min_{k <= j}(a_k - C_{k-1})``, a cumulative minimum.
    Frame costs come from ``|x|^2 + |y|^2 - 2 x.y`` (clipped at 0), in blocks of rows.
    """
    xs, ys = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
    b, n, m = xs.shape[0], xs.shape[1], ys.shape[1]
    if n == 0 or m == 0:
        raise ValueError(f"dtw needs two non-empty sequences, got lengths {n} and {m}")
    if radius is not None and abs(n - m) > radius:
        raise ValueError(f"a Sakoe-Chiba radius of {radius} cannot align lengths {n} and {m}")
    x2, y2 = (xs * xs).sum(axis=2), (ys * ys).sum(axis=2)
    block = max(1, 2**22 // (b * m))
    prev = np.full((b, m), np.inf)
    for first in range(0, n, block):
        rows = slice(first, min(n, first + block))
        costs = x2[:, rows, None] + y2[:, None, :] - 2 * np.matmul(xs[:, rows], ys.transpose(0, 2, 1))
        for i, cost in zip(range(rows.start, rows.stop), costs.transpose(1, 0, 2)):
            prev = _dtw_row(prev, np.clip(cost, 0, None), i, radius)
    return np.sqrt(np.clip(prev[:, -1], 0, None))


def _dtw_row(prev: np.ndarray, cost: np.ndarray, i: int, radius: int | None) -> np.ndarray:
    """Accumulated costs [B, m] of row ``i`` from those of row i - 1 and row i's costs."""
    b, m = cost.shape
    lo, hi = (0, m) if radius is None else (max(0, i - radius), min(m, i + radius + 1))
    if i == 0:
        a = np.full((b, hi - lo), np.inf)
        a[:, 0] = 0.0
    else:
        left = prev[:, lo - 1:lo] if lo > 0 else np.full((b, 1), np.inf)
        a = np.minimum(prev[:, lo:hi], np.concatenate([left, prev[:, lo:hi - 1]], axis=1))
    running = np.cumsum(cost[:, lo:hi], axis=1)
    before = np.concatenate([np.zeros((b, 1)), running[:, :-1]], axis=1)
    row = np.full((b, m), np.inf)
    row[:, lo:hi] = running + np.minimum.accumulate(a - before, axis=1)
    return row


def grouped_dtw(x: np.ndarray, y: np.ndarray, groups: Sequence[Sequence[float]],
                radius: int | None = None) -> float:
    """``sum(weight * dtw_distance(x[:, start:end], y[:, start:end]))`` over ``groups``."""
    return float(grouped_dtw_samples(np.asarray(x)[None], y, groups, radius)[0])


def grouped_dtw_samples(samples: np.ndarray, y: np.ndarray, groups: Sequence[Sequence[float]],
                        radius: int | None = None) -> np.ndarray:
    """:func:`grouped_dtw` of each of ``samples`` [K, n, D] with ``y`` [m, D], [K], in one batch
    (each group's columns kept, the others zeroed)."""
    samples, y = np.asarray(samples, np.float64), np.asarray(y, np.float64)
    keep = np.zeros((len(groups), y.shape[1]))
    for g, (start, end, _) in enumerate(groups):
        keep[g, int(start):int(end)] = 1.0
    xs = (samples[:, None] * keep[None, :, None, :]).reshape(-1, *samples.shape[1:])
    ys = np.broadcast_to(y[None] * keep[:, None, :], (len(samples), *keep.shape[:1], *y.shape))
    dist = dtw_batch(xs, ys.reshape(-1, *y.shape), radius).reshape(len(samples), len(groups))
    return dist @ np.array([w for _, _, w in groups], np.float64)


def tlcc_curve(x: np.ndarray, y: np.ndarray, max_lag: int, y_mask: np.ndarray | None = None
               ) -> np.ndarray:
    """Cross-correlation [2 max_lag + 1] of ``x`` [T, D] with ``y`` [T, D] at lags -max_lag..
    max_lag: at lag L > 0, ``x[t + L]`` pairs with ``y[t]``; the mean over columns of the
    Pearson correlation on the pairs whose ``y`` frame is in ``y_mask``."""
    mask = np.ones(len(y), bool) if y_mask is None else np.asarray(y_mask, bool)
    out = []
    for lag in range(-max_lag, max_lag + 1):
        if lag > 0:
            xs, ys, ms = x[lag:], y[:-lag], mask[:-lag]
        elif lag < 0:
            xs, ys, ms = x[:lag], y[-lag:], mask[-lag:]
        else:
            xs, ys, ms = x, y, mask
        out.append(pearson_per_dim(xs[ms], ys[ms]).mean())
    return np.array(out)


def tlcc_offset(x: np.ndarray, y: np.ndarray, max_lag: int, y_mask: np.ndarray | None = None
                ) -> int:
    """|lag| in frames of the first maximum of :func:`tlcc_curve`."""
    return abs(int(np.argmax(tlcc_curve(x, y, max_lag, y_mask))) - max_lag)


def mean_pair_sq_distance(items: np.ndarray) -> float:
    """Squared Euclidean distance between two distinct items of ``items`` [N, ...] (N >= 2),
    mean over the N (N - 1) ordered pairs, divided by the elements per item; computed as
    ``2 sum_i |a_i - mean|^2 / ((N - 1) E)``."""
    n = len(items)
    if n < 2:
        raise ValueError(f"mean_pair_sq_distance needs at least 2 items, got {n}")
    mean = np.mean(items, axis=0, dtype=np.float64)
    spread = sum(float(((np.asarray(a, np.float64) - mean) ** 2).sum()) for a in items)
    return 2.0 * spread / ((n - 1) * mean.size)


def frame_variance(x: np.ndarray) -> float:
    """Variance over time (ddof=1) of each column of ``x`` [T, D], T >= 2, mean over columns."""
    return float(np.asarray(x, np.float64).var(axis=0, ddof=1).mean())


# ---------------------------------------------------------------- suite


def react_suite(clips: Sequence[ScoredClip], ctx: MetricContext) -> dict[str, float]:
    """The REACT keys that can be computed on ``clips`` (see the module docstring)."""
    windows, params = _windows(clips, ctx)
    reasons = _reasons(windows)
    out = {key: _COMPUTE[key](windows, params) for key in REACT_KEYS if key not in reasons}
    if not out:
        raise MetricSkipped("; ".join(f"{key}: {why}" for key, why in reasons.items()))
    return out


def react_skipped(clips: Sequence[ScoredClip], ctx: MetricContext | None = None
                  ) -> dict[str, str]:
    """REACT keys that :func:`react_suite` leaves out on ``clips``, each with the reason."""
    try:
        windows, _ = _windows(clips, ctx or MetricContext())
    except MetricSkipped as e:
        return dict.fromkeys(REACT_KEYS, e.reason)
    return _reasons(windows)


def _windows(clips: Sequence[ScoredClip], ctx: MetricContext
             ) -> tuple[list[Window], dict[str, Any]]:
    params = {"window_s": float(ctx.param("react", "window_s", 30.0)),
              "groups": _groups(ctx.param("react", "dtw_groups", DEFAULT_DTW_GROUPS)),
              "radius": ctx.param("react", "dtw_radius", None),
              "max_lag_s": float(ctx.param("react", "tlcc_max_lag_s", 2.0))}
    tracks = face_tracks(clips, "react")
    if not tracks:
        raise MetricSkipped("no clip has gen_face (the model does not generate faces)")
    windows = [(t, w) for t in tracks
               for w in window_slices(len(t.gen), max(1, round(params["window_s"] * t.fps)))]
    return windows, params


def _groups(value: Any) -> list[tuple[int, int, float]]:
    try:
        groups = [(int(s), int(e), float(w)) for s, e, w in value]
    except (TypeError, ValueError) as e:
        raise UsageError(f"metric react: param dtw_groups={value!r}; expected a list of "
                         "[start, end, weight], e.g. [[0, 52, 0.0192], [52, 64, 0.0833]]") from e
    if not groups or any(not 0 <= s < e <= 64 for s, e, _ in groups):
        raise UsageError(f"metric react: param dtw_groups={value!r}; each group needs "
                         "0 <= start < end <= 64")
    return groups


def _reasons(windows: list[Window]) -> dict[str, str]:
    reasons = {}
    if not any(t.ref_mask[w].sum() >= 2 for t, w in windows):
        why = "no window has 2 frames with a real listener face (ref_face missing or masked)"
        reasons["frcorr"] = reasons["frdist"] = why
    if not any(t.n_samples >= 2 for t, _ in windows):
        reasons["frdiv"] = ("needs at least 2 generated samples per clip (gen_face plus "
                            "gen_samples); the model produced one")
    if not any(w.stop - w.start >= 2 for _, w in windows):
        reasons["frvar"] = "no window has 2 frames"
    if len(windows) < 2:
        reasons["frdvs"] = "needs at least 2 windows (inputs) over the split, found " + str(
            len(windows))
    if not any(t.spk_mask[w].any() for t, w in windows):
        reasons["frsyn"] = "no clip has a speaker face (spk_face missing or masked)"
    return reasons


def _samples(t: FaceTracks) -> range:
    return range(t.n_samples)


def _frcorr(windows: list[Window], p: dict[str, Any]) -> float:
    vals = []
    for t, w in windows:
        m = t.ref_mask[w]
        if m.sum() >= 2:
            ref = t.ref[w][m]  # type: ignore[index]
            vals.append(np.mean([ccc(t.sample(k)[w][m], ref) for k in _samples(t)]))
    return float(np.mean(vals))


def _frdist(windows: list[Window], p: dict[str, Any]) -> float:
    vals = []
    for t, w in windows:
        m = t.ref_mask[w]
        if m.sum() >= 2:
            ref = t.ref[w][m]  # type: ignore[index]
            samples = np.stack([t.sample(k)[w][m] for k in _samples(t)])
            vals.append(grouped_dtw_samples(samples, ref, p["groups"], p["radius"]).mean())
    return float(np.mean(vals))


def _frdiv(windows: list[Window], p: dict[str, Any]) -> float:
    return float(np.mean([mean_pair_sq_distance(np.stack([t.sample(k)[w] for k in _samples(t)]))
                          for t, w in windows if t.n_samples >= 2]))


def _frvar(windows: list[Window], p: dict[str, Any]) -> float:
    return float(np.mean([np.mean([frame_variance(t.sample(k)[w]) for k in _samples(t)])
                          for t, w in windows if w.stop - w.start >= 2]))


def _frdvs(windows: list[Window], p: dict[str, Any]) -> float:
    length = min(w.stop - w.start for _, w in windows)
    n_samples = min(t.n_samples for t, _ in windows)
    return float(np.mean([mean_pair_sq_distance(
        np.stack([t.sample(k)[w.start:w.start + length] for t, w in windows]))
        for k in range(n_samples)]))


def _frsyn(windows: list[Window], p: dict[str, Any]) -> float:
    vals = []
    for t, w in windows:
        if t.spk_mask[w].any():
            max_lag = max(0, round(p["max_lag_s"] * t.fps) - 1)
            vals.append(np.mean([tlcc_offset(t.sample(k)[w], t.spk[w], max_lag,  # type: ignore[index]
                                             t.spk_mask[w]) for k in _samples(t)]))
    return float(np.mean(vals))


_COMPUTE: dict[str, Callable[[list[Window], dict[str, Any]], float]] = {
    "frcorr": _frcorr, "frdist": _frdist, "frdiv": _frdiv, "frvar": _frvar, "frdvs": _frdvs,
    "frsyn": _frsyn,
}
