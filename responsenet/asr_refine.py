"""Word-time refinement: move Whisper's coarse word times onto the track's own sound.

Whisper's word times come from cross-attention and are coarse: faster-whisper tiny.en on
synthetic speech has a median onset error near 100 ms and a 95th percentile of 400-800 ms, and
is late by about 70 ms (starts) and 130 ms (ends) on most words, while the first word after a
pause is often stretched back over the pause. A separated track is quiet between phrases and
often between words, so its short-time level gives sharp **sound runs**: spans louder than a
threshold, at 10 ms resolution (:func:`energy_db`, :func:`sound_runs`).

Each word is then assigned to a run, monotonically, at least total cost (a Viterbi pass,
:func:`responsenet.asr_align.assign_runs`), in one of three modes:

- ``snap``: the word starts a run; cost: how far the run's onset lies from Whisper's start
  window (1 per second up to ``soft_s``, then ``far_slope`` per second);
- ``share``: the word continues the previous word's run (speech without a gap between them):
  ``share_cost`` plus how far Whisper's start lies outside the run;
- ``keep``: nothing fits; Whisper's times stay (``keep_cost``).

A word owns the runs after its onset run that follow within ``max_closure_s`` and start before
Whisper's end + ``end_slack_s`` (closures inside a word: ``closure_cost`` each); every other
run passed over costs ``skip_cost``; the end of the sound a word owns costs ``end_weight`` times
its distance from Whisper's end window. Whisper's windows (:func:`~responsenet.asr_align.
whisper_windows`) are its start and end, moved earlier by the track's measured lags, and widened
for stretched words: a word longer than ``stretch`` x (``base_word_s`` + ``char_s`` per letter)
may start or end anywhere within the excess.

**Calibration.** A first pass assigns words with zero lags; the medians of (Whisper start -
snapped onset) and (Whisper end - owned sound end) over unstretched words become the track's
lags (at least ``calibration_words`` words each, clipped to ``max_lag_s``), and a second pass
assigns again with them. The lags are model-specific, so they are measured, not built in.

**Placement** (:func:`~responsenet.asr_align.place_words`): a snapped word starts at its run's
onset (only runs at least ``min_onset_run_s`` long can start a word); inside a group of a
snapped word and the words sharing its run, each boundary blends Whisper's (lag-corrected) time
with the time given by splitting the group in proportion to letters (``share_char_weight``); a
kept word keeps its lag-corrected times; a word not followed by a shared word ends where the
sound it owns ends. Words come out ordered and never overlapping, each at least ``min_word_s``
long.

**Rescue** (:func:`refine_track`): words the ``silent_track`` rule removed only because
Whisper put them in a pause are moved onto free sound between their neighbours and kept.

Everything here is pure: arrays and numbers in and out.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from responsenet.asr import Word
from responsenet.asr_align import (
    KEEP,
    SHARE,
    SNAP,
    assign_runs,
    free_chains,
    place_words,
    rescue_group,
    whisper_windows,
)


@dataclass(frozen=True)
class RefineParams:
    """Thresholds and costs of refinement; times in seconds, levels in dB, costs in seconds.

    Attributes:
        hop_s: level frame step (the resolution of onsets).
        window_s: level window, centred on each frame time.
        peak_drop_db: a frame is sound when within this many dB of the track's loud level (its
            99th-percentile frame)...
        floor_rise_db: ...and at least this many dB above its noise floor (10th percentile).
        min_gap_s: quieter gaps shorter than this inside sound are bridged.
        min_run_s: sound runs shorter than this are dropped (clicks).
        mask_pad_s: with a speech mask, only sound within this distance of speech counts.
        search_s: a word snaps only to onsets within this of its start window...
        min_onset_run_s: ...and only to runs at least this long (a short run is a word's tail
            or a click, not a word's start; synthetic words start with runs of 60 ms or more).
        soft_s: onset distance up to which the snap cost grows 1:1...
        far_slope: ...and its slope beyond (far misses are Whisper's, not the onset's).
        share_cost: a word that continues the previous word's run.
        closure_cost: each run a word owns after its onset run.
        skip_cost: each run passed over that no word owns.
        keep_cost: a word left at Whisper's times.
        end_weight: weight of the owned sound's end distance from Whisper's end window.
        end_slack_s: a word owns later runs starting up to this after Whisper's end.
        max_closure_s: ...and only across quiet gaps up to this long.
        base_word_s: expected word duration = this + ``char_s`` per letter or digit...
        char_s: ...used to spot stretched words.
        stretch: a word longer than this x its expected duration is stretched.
        share_char_weight: inside continuous speech, word boundaries are this x the place
            given by letter counts + (1 - this) x Whisper's (lag-corrected) place.
        min_word_s: shortest word the placement produces.
        start_lag_s: Whisper's starts are this late (set by calibration).
        end_lag_s: Whisper's ends are this late (set by calibration).
        calibrate: measure the two lags on the track first (see the module docstring).
        calibration_words: words needed to measure a lag.
        calibration_slack_s: words stretched by more than this are left out of the measure.
        max_lag_s: measured lags are clipped to +-this.
    """

    hop_s: float = 0.01
    window_s: float = 0.02
    peak_drop_db: float = 45.0
    floor_rise_db: float = 12.0
    min_gap_s: float = 0.02
    min_run_s: float = 0.03
    mask_pad_s: float = 0.2
    search_s: float = 2.5
    min_onset_run_s: float = 0.05
    soft_s: float = 0.1
    far_slope: float = 0.25
    share_cost: float = 0.3
    closure_cost: float = 0.02
    skip_cost: float = 0.15
    keep_cost: float = 1.0
    end_weight: float = 0.25
    end_slack_s: float = 0.15
    max_closure_s: float = 0.2
    base_word_s: float = 0.1
    char_s: float = 0.05
    stretch: float = 2.0
    share_char_weight: float = 0.5
    min_word_s: float = 0.04
    start_lag_s: float = 0.0
    end_lag_s: float = 0.0
    calibrate: bool = True
    calibration_words: int = 4
    calibration_slack_s: float = 0.1
    max_lag_s: float = 0.3


def energy_db(audio: np.ndarray, sample_rate: int, hop_s: float = 0.01,
              window_s: float = 0.02) -> np.ndarray:
    """Short-time level of ``audio`` (float [n_samples]) in dB, one value per ``hop_s``.

    Returns:
        ``float32 [ceil(n_samples / hop)]``: frame ``k`` is the RMS level of the ``window_s``
        of samples centred on ``k * hop_s`` (zero-padded at the ends), ``20 log10`` of it;
        digital silence gives -200 dB.
    """
    hop, win = max(round(hop_s * sample_rate), 1), max(round(window_s * sample_rate), 1)
    audio = np.asarray(audio, dtype=np.float64)
    n = -(-len(audio) // hop)
    padded = np.concatenate([np.zeros(win // 2), audio, np.zeros(win + hop)])
    power = np.concatenate([[0.0], np.cumsum(padded ** 2)])
    starts = np.arange(n) * hop
    mean = (power[starts + win] - power[starts]) / win
    return (10.0 * np.log10(np.maximum(mean, 1e-20))).astype(np.float32)


def sound_runs(level_db: np.ndarray, p: RefineParams = RefineParams(),
               speech: np.ndarray | None = None, fps: float = 25.0) -> np.ndarray:
    """Spans where the track sounds, from its level per frame.

    Args:
        level_db: float [n_hops] from :func:`energy_db` (frame ``k`` at ``k * p.hop_s``).
        p: thresholds.
        speech: optional bool [n_frames] speech mask per video frame at ``fps``; sound farther
            than ``p.mask_pad_s`` from any speech frame is ignored.
        fps: frame rate of ``speech``.

    Returns:
        float64 [n_runs, 2]: ``(start, end)`` seconds, sorted and disjoint.
    """
    level = np.asarray(level_db, dtype=np.float64)
    if level.size == 0:
        return np.zeros((0, 2))
    loud = float(np.percentile(level, 99))
    floor = float(np.percentile(level, 10))
    active = level > max(loud - p.peak_drop_db, floor + p.floor_rise_db)
    if speech is not None:
        active &= _near_speech(np.asarray(speech, dtype=bool), len(level), p, fps)
    runs = _runs(active)
    runs = _bridge(runs, round(p.min_gap_s / p.hop_s))
    runs = [(a, b) for a, b in runs if (b - a) * p.hop_s >= p.min_run_s - 1e-9]
    return np.array(runs, dtype=np.float64).reshape(-1, 2) * p.hop_s


def _near_speech(speech: np.ndarray, n_hops: int, p: RefineParams, fps: float) -> np.ndarray:
    """bool [n_hops]: hop times within ``mask_pad_s`` of a speech frame."""
    index = np.floor(np.arange(n_hops) * p.hop_s * fps + 1e-9).astype(int)
    near = np.zeros(n_hops, bool)
    inside = index < len(speech)
    near[inside] = speech[index[inside]]
    pad = round(p.mask_pad_s / p.hop_s)
    if pad and near.any():
        kernel = np.ones(2 * pad + 1)
        near = np.convolve(near.astype(float), kernel, mode="same") > 0
    return near


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Half-open index spans of True runs."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def _bridge(runs: list[tuple[int, int]], min_gap: int) -> list[tuple[int, int]]:
    merged: list[list[int]] = []
    for a, b in runs:
        if merged and a - merged[-1][1] < min_gap:
            merged[-1][1] = b
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def track_runs(audio: np.ndarray, sample_rate: int, speech: np.ndarray | None = None,
               fps: float = 25.0, p: RefineParams = RefineParams()) -> np.ndarray:
    """:func:`sound_runs` of a track's audio (float [n_samples] at ``sample_rate`` Hz)."""
    return sound_runs(energy_db(audio, sample_rate, p.hop_s, p.window_s), p, speech, fps)


def refine_words(words: list[Word], audio: np.ndarray, sample_rate: int,
                 speech: np.ndarray | None = None, fps: float = 25.0,
                 p: RefineParams = RefineParams()) -> list[Word]:
    """Refined times of ``words`` (one track's, in order) from that track's audio.

    Args:
        words: Whisper's words, seconds in the audio's time.
        audio: float [n_samples] mono at ``sample_rate`` Hz (the separated track).
        sample_rate: in Hz.
        speech: optional bool [n_frames] speech mask per video frame at ``fps``.
        fps: frame rate of ``speech``.
        p: thresholds and costs.

    Returns:
        The same words (text, prob) with new ``start``/``end``; ordered, non-overlapping.
    """
    if not words:
        return []
    return refine_with_runs(words, track_runs(audio, sample_rate, speech, fps, p), p)


def refine_track(words: list[Word], reasons: list[str | None], runs: np.ndarray,
                 p: RefineParams = RefineParams()) -> tuple[list[Word], list[str | None]]:
    """Refine the kept words, then rescue words judged silent only because of Whisper's times.

    Whisper places short isolated words (a backchannel "yeah") badly, sometimes seconds away
    in the pause after them, where the speech mask says silence. After the kept words are
    refined (:func:`refine_with_runs`), each group of consecutive ``silent_track`` words is
    moved onto **free sound** (runs no kept word covers) between its neighbours, within
    ``search_s`` of its Whisper start (:func:`~responsenet.asr_align.rescue_group`), and kept.
    Hallucinations in true silence, and leakage the mask calls silence, have no free sound
    and stay removed.

    Args:
        words: one track's Whisper words, in order.
        reasons: per word, the suppression reason or None (kept).
        runs: float [n_runs, 2] sound runs of the track (:func:`track_runs`).
        p: thresholds and costs.

    Returns:
        ``(words, reasons)``: every word, kept and rescued ones with refined times (removed
        ones unchanged); reasons with rescued words set to None.
    """
    words, reasons = list(words), list(reasons)
    kept = [i for i, r in enumerate(reasons) if r is None]
    for i, word in zip(kept, refine_with_runs([words[i] for i in kept], runs, p)):
        words[i] = word
    chains = free_chains(runs, [words[i] for i in kept], p)
    i = 0
    while i < len(words):
        j = i
        while j < len(words) and reasons[j] == "silent_track":
            j += 1
        if j > i:
            lo = max((words[k].end for k in range(i) if reasons[k] is None), default=0.0)
            hi = min((words[k].start for k in range(j, len(words)) if reasons[k] is None),
                     default=np.inf)
            found = rescue_group(words[i:j], chains, lo, hi, p)
            if found is not None:
                words[i:j], chain = found
                reasons[i:j] = [None] * (j - i)
                chains.remove(chain)
        i = max(j, i + 1)
    return words, reasons


def refine_with_runs(words: list[Word], runs: np.ndarray,
                     p: RefineParams = RefineParams()) -> list[Word]:
    """Refined times of ``words`` given the track's sound runs (float [n_runs, 2] seconds).

    With ``p.calibrate``, a first assignment measures how late Whisper is on this track
    (:func:`estimate_lags`) and a second assignment uses those lags.
    """
    if not words:
        return []
    if len(runs) == 0:
        return place_words(words, runs, [(KEEP, -1)] * len(words), p)
    assignment = assign_runs(whisper_windows(words, p), runs, p)
    if p.calibrate:
        start_lag, end_lag = estimate_lags(words, runs, assignment, p)
        p = replace(p, start_lag_s=start_lag, end_lag_s=end_lag)
        assignment = assign_runs(whisper_windows(words, p), runs, p)
    return place_words(words, runs, assignment, p)


def estimate_lags(words: list[Word], runs: np.ndarray, assignment: list[tuple[str, int]],
                  p: RefineParams = RefineParams()) -> tuple[float, float]:
    """How late Whisper's starts and ends are on this track, from a first assignment.

    The start lag is the median of (Whisper start - onset) over snapped words, the end lag the
    median of (Whisper end - end of owned sound) over words whose end is a run end; words
    stretched by more than ``calibration_slack_s`` are left out. Each lag needs
    ``calibration_words`` words, else it stays at ``p``'s value; both are clipped to
    ``[-max_lag_s, max_lag_s]``.

    Returns:
        ``(start_lag, end_lag)`` in seconds (positive: Whisper is late).
    """
    windows = whisper_windows(words, p)
    placed = place_words(words, runs, assignment, p)
    starts, ends = [], []
    for i, (mode, _run) in enumerate(assignment):
        stretched = windows[i, 1] - windows[i, 0] > p.calibration_slack_s
        if mode == KEEP or stretched:
            continue
        if mode == SNAP:
            starts.append(words[i].start - placed[i].start)
        following = assignment[i + 1][0] if i + 1 < len(words) else SNAP
        if following != SHARE:
            ends.append(words[i].end - placed[i].end)

    def lag(values: list[float], default: float) -> float:
        if len(values) < p.calibration_words:
            return default
        return float(np.clip(np.median(values), -p.max_lag_s, p.max_lag_s))

    return lag(starts, p.start_lag_s), lag(ends, p.end_lag_s)
