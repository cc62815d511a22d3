"""Scoring recognised words against known truth: word error rate and word onset errors.

Text is compared after :func:`normalize_words`: lower case, hyphenated words joined
(``uh-huh``, Whisper's ``Uh -huh`` -> ``uhhuh``), every other character that is not a letter,
digit or apostrophe treated as a space. The WER is split into sufficient statistics
(:func:`word_errors` -> ``(errors, reference words)``) so that corpora add up exactly.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np


def normalize_words(text: str) -> list[str]:
    """Lower-case word tokens of ``text`` with punctuation removed and hyphens joined."""
    text = re.sub(r"\s*-\s*", "", text.lower())
    text = re.sub(r"[^\w']+|_", " ", text)
    return [t.strip("'") for t in text.split() if t.strip("'")]


def align_words(ref: Sequence[str], hyp: Sequence[str]) -> list[tuple[str, int | None, int | None]]:
    """A minimum-edit alignment of two token lists.

    Returns:
        ``(op, ref_index, hyp_index)`` in order; op is ``ok``, ``sub``, ``del`` (hyp index None)
        or ``ins`` (ref index None).
    """
    n, m = len(ref), len(hyp)
    cost = np.zeros((n + 1, m + 1), dtype=np.int64)
    cost[:, 0], cost[0, :] = np.arange(n + 1), np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost[i, j] = min(cost[i - 1, j] + 1, cost[i, j - 1] + 1,
                             cost[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]))
    ops: list[tuple[str, int | None, int | None]] = []
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0 and cost[i, j] == cost[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]):
            ops.append(("ok" if ref[i - 1] == hyp[j - 1] else "sub", i - 1, j - 1))
            i, j = i - 1, j - 1
        elif i > 0 and cost[i, j] == cost[i - 1, j] + 1:
            ops.append(("del", i - 1, None))
            i -= 1
        else:
            ops.append(("ins", None, j - 1))
            j -= 1
    return ops[::-1]


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """``(substitutions + deletions + insertions, reference words)`` after normalisation."""
    ref, hyp = normalize_words(reference), normalize_words(hypothesis)
    errors = sum(op != "ok" for op, _, _ in align_words(ref, hyp))
    return errors, len(ref)


def word_error_rate(reference: str, hypothesis: str) -> float:
    """WER of ``hypothesis`` against ``reference`` (0 for two empty texts)."""
    errors, total = word_errors(reference, hypothesis)
    return errors / total if total else float(errors > 0)


def _key(word: dict[str, Any] | Any) -> str:
    text = word["text"] if isinstance(word, dict) else word.text
    return " ".join(normalize_words(text))


def _start(word: dict[str, Any] | Any) -> float:
    return float(word["start"] if isinstance(word, dict) else word.start)


def onset_errors(truth: Sequence[Any], words: Sequence[Any]) -> np.ndarray:
    """Start-time errors of correctly recognised words.

    Args:
        truth: reference words (dicts with ``text``/``start`` or objects with those attributes).
        words: recognised words, the same kinds.

    Returns:
        float64 [n_correct]: ``word.start - truth.start`` in seconds for every pair that the
        minimum-edit alignment of the normalised texts marks ``ok``.
    """
    ops = align_words([_key(w) for w in truth], [_key(w) for w in words])
    return np.array([_start(words[j]) - _start(truth[i]) for op, i, j in ops if op == "ok"],
                    dtype=np.float64)
