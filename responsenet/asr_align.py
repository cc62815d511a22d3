"""Assignment of Whisper's words to a track's sound runs, and the word times that follow.

Pure functions behind :mod:`responsenet.asr_refine` (which documents the method); ``p`` is a
:class:`responsenet.asr_refine.RefineParams`. Runs are float [n_runs, 2] ``(start, end)``
seconds, sorted and disjoint; words are :class:`responsenet.asr.Word` in order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from responsenet.asr import Word

if TYPE_CHECKING:
    from responsenet.asr_refine import RefineParams

SNAP, SHARE, KEEP = "snap", "share", "keep"
State = tuple[int, str]  # (index of the last run owned so far, mode of the last word)
#: States costing more than the best by this are dropped (keeps long clips linear in length).
BEAM = 3.0


def whisper_windows(words: list[Word], p: RefineParams) -> np.ndarray:
    """Where Whisper says each word starts and ends, widened for stretched words.

    Whisper often stretches a word over a pause (the first word after a pause starts far too
    early, the last one before it ends far too late). A word longer than ``stretch`` times its
    expected duration (``base_word_s + char_s`` per letter or digit) gets the excess as slack:
    its start may lie anywhere in ``[start, start + slack]`` and its end in
    ``[end - slack, end]`` at no cost.

    Returns:
        float64 [n_words, 4]: ``start_lo, start_hi, end_lo, end_hi`` in seconds.
    """
    rows = []
    for w in words:
        letters = sum(ch.isalnum() for ch in w.text) or 1
        expected = p.base_word_s + p.char_s * letters
        slack = max(0.0, (w.end - w.start) - p.stretch * expected)
        start, end = w.start - p.start_lag_s, w.end - p.end_lag_s
        rows.append((start, start + slack, end - slack, end))
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


def _cost(t: float, lo: float, hi: float, p: RefineParams) -> float:
    """Distance of ``t`` from ``[lo, hi]``, with slope ``far_slope`` past ``soft_s``."""
    d = max(lo - t, t - hi, 0.0)
    return d if d <= p.soft_s else p.soft_s + p.far_slope * (d - p.soft_s)


def owned_until(runs: np.ndarray, run: int, limit: int, end_hi: float,
                p: RefineParams) -> int:
    """The last run a word starting in ``run`` owns: runs after it (before ``limit``) that
    follow within ``max_closure_s`` of the previous owned run and start before ``end_hi +
    end_slack_s`` (closures and short pauses inside the word)."""
    owned = run
    for r in range(run + 1, limit):
        if runs[r, 0] - runs[owned, 1] > p.max_closure_s or runs[r, 0] > end_hi + p.end_slack_s:
            break
        owned = r
    return owned


def assign_runs(windows: np.ndarray, runs: np.ndarray,
                p: RefineParams) -> list[tuple[str, int]]:
    """Assign each word to a sound run, monotonically, at least total cost (Viterbi).

    Args:
        windows: float [n_words, 4] from :func:`whisper_windows`, in word order.
        runs: float [n_runs, 2] from :func:`sound_runs`.
        p: costs (see the module docstring).

    Returns:
        Per word ``(mode, run)``: mode ``snap`` (starts run ``run``), ``share`` (continues run
        ``run``, which an earlier word started) or ``keep`` (``run`` = -1).
    """
    onsets = runs[:, 0]
    layers: list[dict[State, tuple[float, State | None]]] = []
    previous: dict[State, tuple[float, State | None]] = {(-1, KEEP): (0.0, None)}
    for i, (s_lo, s_hi, _, _) in enumerate(windows):
        layer: dict[State, tuple[float, State | None]] = {}
        candidates = np.flatnonzero((onsets >= s_lo - p.search_s) & (onsets <= s_hi + p.search_s)
                                    & (runs[:, 1] - onsets >= p.min_onset_run_s - 1e-9))
        for key, (cost, _) in previous.items():
            last, mode = key
            _offer(layer, (last, KEEP), cost + p.keep_cost, key)
            if mode != KEEP:
                share = p.share_cost + _cost(float(np.clip(s_lo, *runs[last])), s_lo, s_hi, p)
                _offer(layer, (last, SHARE), cost + share, key)
            for j in candidates[candidates > last]:
                step = _cost(onsets[j], s_lo, s_hi, p) + _passed_cost(windows, runs, i, key, j, p)
                _offer(layer, (int(j), SNAP), cost + step, key)
        best = min(c for c, _ in layer.values())
        layers.append(layer)
        previous = {k: v for k, v in layer.items() if v[0] <= best + BEAM}
    if not layers:
        return []
    final = {k: c + _passed_cost(windows, runs, len(windows), k, len(runs), p, trailing=True)
             for k, (c, _) in previous.items()}
    key: State | None = min(final, key=final.__getitem__)
    path = []
    for layer in reversed(layers):
        path.append(key)
        key = layer[key][1]
    return [(mode, run if mode != KEEP else -1) for run, mode in reversed(path)]


def _offer(layer: dict, key: State, cost: float, back: State) -> None:
    if key not in layer or cost < layer[key][0]:
        layer[key] = (cost, back)


def _passed_cost(windows: np.ndarray, runs: np.ndarray, i: int, key: State, j: int,
                 p: RefineParams, trailing: bool = False) -> float:
    """Cost of the runs between the previous word's run (``key``) and run ``j`` where word
    ``i`` starts, plus the end cost of word ``i - 1``, which owns some of them."""
    last, mode = key
    if mode == KEEP or i == 0:
        return 0.0 if trailing else p.skip_cost * (j - last - 1)
    _, _, e_lo, e_hi = windows[i - 1]
    owned = owned_until(runs, last, j, e_hi, p)
    skipped = 0 if trailing else j - owned - 1
    return (p.closure_cost * (owned - last) + p.skip_cost * skipped
            + p.end_weight * _cost(runs[owned, 1], e_lo, e_hi, p))


# --- placing words -----------------------------------------------------------------------------

def place_words(words: list[Word], runs: np.ndarray, assignment: list[tuple[str, int]],
                p: RefineParams) -> list[Word]:
    """New word times from an assignment (:func:`assign_runs`); text and prob unchanged.

    A snapped word starts at its run's onset; a kept word keeps Whisper's (lag-corrected)
    times. A word followed by a shared word ends where that word starts; otherwise it ends with
    the last run it owns (:func:`owned_until`). Shared words are placed by :func:`spread_shared`.

    Returns:
        Words with ``start < end``, ordered, not overlapping.
    """
    n = len(words)
    windows = whisper_windows(words, p)
    starts, ends = windows[:, 0].tolist(), windows[:, 3].tolist()
    for i, (mode, run) in enumerate(assignment):
        if mode == SNAP:
            starts[i] = float(runs[run, 0])
        elif mode == SHARE:
            starts[i] = float(np.clip(windows[i, 0], runs[run, 0], runs[run, 1]))
    for i, (mode, run) in enumerate(assignment):
        if mode == KEEP:
            continue
        following = assignment[i + 1] if i + 1 < n else (KEEP, len(runs))
        if following[0] == SHARE:
            ends[i] = starts[i + 1]
            continue
        limit = following[1] if following[0] == SNAP else len(runs)
        ends[i] = float(runs[owned_until(runs, run, limit, windows[i, 3], p), 1])
    spread_shared(words, assignment, starts, ends, p.share_char_weight)
    return _ordered(words, starts, ends, p.min_word_s)


def spread_shared(words: list[Word], assignment: list[tuple[str, int]], starts: list[float],
                  ends: list[float], char_weight: float) -> None:
    """Place the boundaries inside each group of a snapped word and the shared words after it.

    Within a group's span (the snapped word's start to the last word's end), each boundary is
    ``char_weight`` x its place when the span is cut in proportion to the words' letters, plus
    ``1 - char_weight`` x Whisper's (lag-corrected, clipped) start. ``starts`` and ``ends`` are
    updated in place; a word ends where the next word of its group starts.
    """
    i, n = 0, len(words)
    while i < n:
        j = i + 1
        while j < n and assignment[j][0] == SHARE:
            j += 1
        if j - i > 1 and assignment[i][0] == SNAP:
            letters = np.array([max(sum(c.isalnum() for c in w.text), 1) for w in words[i:j]])
            share = np.cumsum(letters)[:-1] / letters.sum()
            span0, span1 = starts[i], ends[j - 1]
            for k in range(i + 1, j):
                by_letters = span0 + share[k - i - 1] * (span1 - span0)
                starts[k] = char_weight * by_letters + (1 - char_weight) * starts[k]
                ends[k - 1] = starts[k]
        i = j


def _ordered(words: list[Word], starts: list[float], ends: list[float],
             min_word: float) -> list[Word]:
    """Words with the given times, made ordered and non-overlapping (each at least
    ``min_word`` long where room allows)."""
    out: list[Word] = []
    for i, word in enumerate(words):
        start = max(starts[i], out[-1].end if out else 0.0)
        end = ends[i]
        if i + 1 < len(words):
            end = min(end, max(starts[i + 1], start + min_word))
        end = max(end, start + min_word)
        out.append(Word(word.text, round(start, 3), round(end, 3), word.prob))
    return out




# --- rescuing words Whisper put in a pause -------------------------------------------------

def free_chains(runs: np.ndarray, placed: list[Word], p: RefineParams) -> list[tuple[float, float]]:
    """Sound no placed word covers: runs that overlap no word, chained across quiet gaps up
    to ``max_closure_s``; ``(start, end)`` seconds in time order."""
    chains: list[list[float]] = []
    for a, b in runs:
        if any(w.start < b and a < w.end for w in placed):
            continue
        if chains and a - chains[-1][1] <= p.max_closure_s and not any(
                chains[-1][1] <= w.start < a for w in placed):
            chains[-1][1] = float(b)
        else:
            chains.append([float(a), float(b)])
    return [(a, b) for a, b in chains]


def rescue_group(group: list[Word], chains: list[tuple[float, float]], lo: float, hi: float,
                 p: RefineParams) -> tuple[list[Word], tuple[float, float]] | None:
    """Place consecutive words judged silent on free sound between their neighbours.

    Args:
        group: the words, in order, with Whisper's times.
        chains: free sound (:func:`free_chains`).
        lo, hi: the end of the placed word before the group and the start of the one after.
        p: ``search_s`` bounds how far from Whisper's start the sound may lie.

    Returns:
        The words placed over the chain nearest to the first word's Whisper start (boundaries
        in proportion to letters) and that chain, or None when no chain fits.
    """
    window = whisper_windows(group[:1], p)[0]
    fits = [(a, b) for a, b in chains if lo <= a and b <= hi
            and window[0] - p.search_s <= a <= window[1] + p.search_s]
    if not fits:
        return None
    a, b = min(fits, key=lambda chain: _cost(chain[0], window[0], window[1], p))
    letters = np.array([max(sum(c.isalnum() for c in w.text), 1) for w in group])
    edges = a + np.concatenate([[0.0], np.cumsum(letters) / letters.sum()]) * (b - a)
    return [Word(w.text, round(float(s), 3), round(float(e), 3), w.prob)
            for w, s, e in zip(group, edges[:-1], edges[1:])], (a, b)
