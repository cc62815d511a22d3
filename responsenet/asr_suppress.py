"""Suppression of hallucinated words: pure rules over one track's words, each with a reason.

Whisper invents text where a track is silent (or holds only the other speaker's leakage), loops
on a phrase, and emits runs of words it is unsure of. Four rules, applied in this order, each
removing words with a snake_case reason (:data:`REASONS`):

- ``repetitive_segment``: every word of a Whisper segment whose text compresses too well
  (zlib compression ratio above ``max_compression_ratio``, Whisper's own threshold 2.4: a
  decoding loop such as "see you next time, see you next time, ..."). Whisper itself would
  decode such a window again at a higher temperature; with the fallback off this rule drops it.
- ``silent_track``: the word lies (mostly) where the track's speech mask says silence. With the
  mask widened by ``speech_pad_s`` on both sides, a word is kept when at least
  ``min_speech_overlap`` of its span, or at least ``min_speech_s`` seconds of it, is speech
  (Whisper often stretches a word over the pause before it, so a share alone would be unfair).
  A word Whisper gives no duration (at most ``POINT_S``) is kept when its start lies in speech.
- ``repeated_ngram``: a phrase of ``n <= max_ngram`` words repeated back to back
  ``repeat_min_count`` or more times (single words: ``repeat_min_count_single``); the first
  occurrence is kept, the repeats are removed. Words compare case- and punctuation-blind.
- ``low_probability_run``: ``low_prob_run`` or more consecutive words, each with probability
  below ``low_prob``.
"""

from __future__ import annotations

import itertools
import re
import zlib
from dataclasses import dataclass

import numpy as np

from responsenet.asr import Word

REASONS = ("repetitive_segment", "silent_track", "repeated_ngram", "low_probability_run")
#: Words at most this long (Whisper gives some zero-length words) are judged by their start.
POINT_S = 0.001


@dataclass(frozen=True)
class SuppressParams:
    """Thresholds of the suppression rules (see the module docstring); seconds, shares 0..1."""

    speech_pad_s: float = 0.1
    min_speech_overlap: float = 0.5
    min_speech_s: float = 0.12
    max_ngram: int = 4
    repeat_min_count: int = 3
    repeat_min_count_single: int = 5
    low_prob: float = 0.15
    low_prob_run: int = 3
    max_compression_ratio: float = 2.4


def speech_seconds(words: list[Word], speech: np.ndarray, fps: float,
                   pad_s: float = 0.0) -> np.ndarray:
    """Seconds of each word inside speech.

    Args:
        words: with ``start``/``end`` in seconds.
        speech: bool [n_frames]; frame ``i`` covers ``[i / fps, (i + 1) / fps)``.
        fps: frames per second of ``speech``.
        pad_s: each speech span is widened by this much on both sides first.

    Returns:
        float64 [n_words].
    """
    spans = speech_spans(speech, fps, pad_s)
    out = np.zeros(len(words))
    for i, w in enumerate(words):
        out[i] = sum(max(0.0, min(w.end, b) - max(w.start, a)) for a, b in spans)
    return out


def speech_spans(speech: np.ndarray, fps: float, pad_s: float = 0.0) -> list[tuple[float, float]]:
    """Speech as sorted, disjoint ``(start, end)`` seconds, each widened by ``pad_s``."""
    mask = np.asarray(speech, dtype=bool)
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    spans: list[list[float]] = []
    for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
        start, end = max(0.0, a / fps - pad_s), b / fps + pad_s
        if spans and start <= spans[-1][1]:
            spans[-1][1] = end
        else:
            spans.append([start, end])
    return [(a, b) for a, b in spans]


def silent_words(words: list[Word], speech: np.ndarray, fps: float,
                 p: SuppressParams = SuppressParams()) -> np.ndarray:
    """bool [n_words]: True where the word lies (mostly) outside speech (rule ``silent_track``)."""
    inside = speech_seconds(words, speech, fps, p.speech_pad_s)
    length = np.array([w.end - w.start for w in words])
    keep = (inside >= p.min_speech_overlap * length - 1e-9) & (length > POINT_S)
    keep |= inside >= p.min_speech_s - 1e-9
    spans = speech_spans(speech, fps, p.speech_pad_s)
    for i, w in enumerate(words):
        if length[i] <= POINT_S:  # Whisper gave no duration: judge the point
            keep[i] = any(a <= w.start <= b for a, b in spans)
    return ~keep


def normalized(text: str) -> str:
    """Lower case, letters/digits/apostrophes only (``"Hello,"`` -> ``"hello"``)."""
    return re.sub(r"[^\w']+", "", text.lower())


def repeated_ngrams(texts: list[str], p: SuppressParams = SuppressParams()) -> np.ndarray:
    """bool [n_words]: True for the repeats of a phrase said too many times in a row.

    At each position the shortest phrase (1..``max_ngram`` words) that repeats back to back at
    least its threshold (``repeat_min_count_single`` for one word, ``repeat_min_count`` for
    more) has every occurrence after the first marked; the scan goes on after the repeats.
    """
    keys = [normalized(t) for t in texts]
    removed = np.zeros(len(keys), dtype=bool)
    i = 0
    while i < len(keys):
        step = 1
        for n in range(1, p.max_ngram + 1):
            phrase = keys[i:i + n]
            if len(phrase) < n:
                break
            count = 1
            while keys[i + count * n:i + (count + 1) * n] == phrase:
                count += 1
            needed = p.repeat_min_count_single if n == 1 else p.repeat_min_count
            if count >= needed:
                removed[i + n:i + count * n] = True
                step = count * n
                break
        i += step
    return removed


def low_probability_runs(probs: list[float], p: SuppressParams = SuppressParams()) -> np.ndarray:
    """bool [n_words]: True inside runs of at least ``low_prob_run`` words below ``low_prob``."""
    low = np.asarray(probs, dtype=np.float64) < p.low_prob
    removed = np.zeros(len(low), dtype=bool)
    edges = np.diff(np.concatenate([[0], low.astype(np.int8), [0]]))
    for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
        if b - a >= p.low_prob_run:
            removed[a:b] = True
    return removed


def compression_ratio(text: str) -> float:
    """``len(utf-8 bytes) / len(zlib-compressed bytes)``, as Whisper computes it (0 for "")."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def repetitive_segments(words: list[Word], segment_starts: list[int],
                        p: SuppressParams = SuppressParams()) -> np.ndarray:
    """bool [n_words]: True for the words of segments whose text (the words joined by spaces)
    has a compression ratio above ``max_compression_ratio``."""
    removed = np.zeros(len(words), dtype=bool)
    bounds = [*segment_starts, len(words)]
    for a, b in itertools.pairwise(bounds):
        if compression_ratio(" ".join(w.text for w in words[a:b])) > p.max_compression_ratio:
            removed[a:b] = True
    return removed


def suppression_reasons(words: list[Word], speech: np.ndarray | None, fps: float,
                        p: SuppressParams = SuppressParams(),
                        segment_starts: list[int] | None = None) -> list[str | None]:
    """The reason each word is removed, or None where it is kept.

    The rules run in order (repetitive_segment, silent_track, repeated_ngram,
    low_probability_run), each on the words the rules before it kept.

    Args:
        words: one track's words, in order.
        speech: bool [n_frames] speech mask at ``fps``, or None to skip ``silent_track``.
        fps: frame rate of ``speech``.
        p: thresholds.
        segment_starts: index of the first word of each Whisper segment, or None to skip
            ``repetitive_segment``.
    """
    reasons: list[str | None] = [None] * len(words)
    if segment_starts is not None:
        for i in np.flatnonzero(repetitive_segments(words, segment_starts, p)):
            reasons[i] = "repetitive_segment"
    if speech is not None and words:
        for i in np.flatnonzero(silent_words(words, speech, fps, p)):
            reasons[i] = reasons[i] or "silent_track"
    for reason, rule in (("repeated_ngram", lambda ws: repeated_ngrams([w.text for w in ws], p)),
                         ("low_probability_run",
                          lambda ws: low_probability_runs([w.prob for w in ws], p))):
        alive = [i for i, r in enumerate(reasons) if r is None]
        for k in np.flatnonzero(rule([words[i] for i in alive])):
            reasons[alive[k]] = reason
    return reasons


def split_by_reason(words: list[Word], reasons: list[str | None],
                    ) -> tuple[list[Word], list[tuple[Word, str]]]:
    """``(kept, removed)``: kept words in order; removed ``(word, reason)`` by rule, then time."""
    kept = [w for w, r in zip(words, reasons) if r is None]
    removed = [(i, w, r) for i, (w, r) in enumerate(zip(words, reasons)) if r is not None]
    removed.sort(key=lambda item: (REASONS.index(item[2]), item[0]))
    return kept, [(w, r) for _, w, r in removed]


def suppress(words: list[Word], speech: np.ndarray | None, fps: float,
             p: SuppressParams = SuppressParams(), segment_starts: list[int] | None = None,
             ) -> tuple[list[Word], list[tuple[Word, str]]]:
    """:func:`suppression_reasons`, split into ``(kept, removed)`` (:func:`split_by_reason`)."""
    return split_by_reason(words, suppression_reasons(words, speech, fps, p, segment_starts))
