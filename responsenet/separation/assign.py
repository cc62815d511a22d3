"""Assign separated voices to faces, and measure what each channel holds.

Any separation backend returns sources in an arbitrary order. A source belongs to the face whose
mouth moves when it sounds: for every (source, track) pair we correlate the source's loudness per
video frame with the track's mouth activity, and keep the permutation with the larger total.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def frame_loudness(audio: np.ndarray, n_frames: int, fps: float, sample_rate: int) -> np.ndarray:
    """float32 [n_frames]: log energy per video frame (dB, floor -80), frame i covering samples
    ``[round(i * sr / fps), round((i + 1) * sr / fps))``."""
    edges = np.minimum(np.round(np.arange(n_frames + 1) * sample_rate / fps).astype(int),
                       len(audio))
    power = np.concatenate([[0.0], np.cumsum(np.asarray(audio, np.float64) ** 2)])
    counts = np.maximum(np.diff(edges), 1)
    mean = (power[edges[1:]] - power[edges[:-1]]) / counts
    return (10 * np.log10(np.maximum(mean, 1e-8))).astype(np.float32)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() < 1e-9 or b.std() < 1e-9:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


@dataclass(frozen=True)
class Assignment:
    """Which source goes to which track, and how sure that is.

    Attributes:
        order: ``order[track] = source index``.
        correlation: float [n_sources, n_tracks] loudness-activity correlations.
        confidence: the margin of the chosen permutation's total correlation over the other's,
            divided by 4: in [0, 1]; near 0 means the two choices are equally plausible.
    """

    order: tuple[int, int]
    correlation: np.ndarray
    confidence: float


def assign_sources(sources: np.ndarray, activity: np.ndarray, fps: float,
                   sample_rate: int) -> Assignment:
    """Match two sources (float [2, n]) to two tracks' mouth activity (float [2, T])."""
    n_frames = activity.shape[1]
    loud = [frame_loudness(s, n_frames, fps, sample_rate) for s in sources]
    corr = np.array([[_corr(loud[j], activity[k]) for k in range(2)] for j in range(2)])
    straight = corr[0, 0] + corr[1, 1]
    crossed = corr[1, 0] + corr[0, 1]
    if straight >= crossed:
        return Assignment((0, 1), corr, float((straight - crossed) / 4))
    return Assignment((1, 0), corr, float((crossed - straight) / 4))


def leakage_db(channel: np.ndarray, own: np.ndarray, fps: float, sample_rate: int) -> float:
    """Mean power of ``channel`` where its own face is not speaking relative to where it is,
    in dB (lower is cleaner; capped at -80). NaN when the face never or always speaks."""
    loud = 10 ** (frame_loudness(channel, len(own), fps, sample_rate) / 10)
    if own.all() or not own.any():
        return float("nan")
    ratio = loud[~own].mean() / max(loud[own].mean(), 1e-12)
    return float(max(10 * np.log10(max(ratio, 1e-12)), -80.0))


def snr_db(channel: np.ndarray, speech: np.ndarray, fps: float, sample_rate: int) -> float:
    """Mean power in the channel's speech frames over its non-speech frames, in dB (capped at 80;
    NaN without speech or without non-speech frames)."""
    loud = 10 ** (frame_loudness(channel, len(speech), fps, sample_rate) / 10)
    if speech.all() or not speech.any():
        return float("nan")
    ratio = loud[speech].mean() / max(loud[~speech].mean(), 1e-12)
    return float(min(10 * np.log10(max(ratio, 1e-12)), 80.0))


def si_sdr(estimate: np.ndarray, reference: np.ndarray) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (Le Roux et al., 2019)."""
    estimate = np.asarray(estimate, np.float64) - np.mean(estimate)
    reference = np.asarray(reference, np.float64) - np.mean(reference)
    energy = np.dot(reference, reference)
    if energy <= 0:
        return float("nan")
    target = np.dot(estimate, reference) / energy * reference
    noise = estimate - target
    return float(10 * np.log10(max(np.dot(target, target), 1e-20) /
                               max(np.dot(noise, noise), 1e-20)))
