"""Backend ``avgate``: split a two-person mixture by who is visibly speaking (no weights needed).

Each participant's channel is the mixture multiplied by a gain that follows that participant's
mouth activity (MediaPipe blendshapes from the ``face`` stage) inside the mixture's speech (VAD):

1. Mouth opening per frame: ``jawOpen + (mouthLowerDownLeft + mouthLowerDownRight) / 2``, zero
   where no face is present. Activity = the mouth's movement (frame-to-frame change, averaged
   over 0.2 s) plus its opening above the track's resting level (20th percentile) *weighted by
   how much it moves* — a mouth frozen open (a still frame, a smile) is not talking — smoothed
   and divided by the track's 95th percentile (so both faces are on one scale).
2. A track is *speaking* in a frame when its activity exceeds ``threshold``, with short gaps
   (< ``min_gap_s``) closed and ``pad_s`` added on both sides (the mouth moves a little before and
   after the sound). Where both seem to speak but one face's activity is ``dominance`` times the
   other's, only the stronger one speaks.
3. Gains per frame, where the mixture has speech: a track that speaks alone gets 1, the other 0.
   **Overlap rule**: where both speak, both get 1 (the overlapped speech is kept in both channels,
   not split; the leakage estimate of the stage reports it). Where neither face speaks but the
   mixture does, each track gets its share of the activity ``a_k / (a_0 + a_1)`` (both 0.5 when
   neither mouth moves). Outside the mixture's speech both gains are 0.
4. Gains are smoothed with a ``ramp_s`` moving average and interpolated to sample resolution, so
   channels fade in and out instead of clicking.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

#: Blendshapes that make up the mouth opening, with their weights.
MOUTH_WEIGHTS = {"jawOpen": 1.0, "mouthLowerDownLeft": 0.5, "mouthLowerDownRight": 0.5}


@dataclass(frozen=True)
class GateSettings:
    """Tunables of the gate (seconds unless noted)."""

    threshold: float = 0.25  # activity (0..1 scale) above which a face is speaking
    dominance: float = 1.5  # a face whose activity is this many times the other's speaks alone
    min_gap_s: float = 0.2
    pad_s: float = 0.1
    ramp_s: float = 0.06


def mouth_opening(blendshapes: np.ndarray, present: np.ndarray, names: list[str]) -> np.ndarray:
    """float32 [T]: the weighted mouth blendshapes (:data:`MOUTH_WEIGHTS`), 0 where no face."""
    opening = np.zeros(len(blendshapes), np.float32)
    for name, weight in MOUTH_WEIGHTS.items():
        opening += weight * blendshapes[:, names.index(name)]
    return np.where(present, opening, 0.0).astype(np.float32)


def _smooth(values: np.ndarray, width: int) -> np.ndarray:
    if width <= 1:
        return values
    kernel = np.ones(width) / width
    return np.convolve(np.pad(values, width // 2, mode="edge"), kernel, mode="valid")[
        : len(values)]


def mouth_activity(opening: np.ndarray, fps: float) -> np.ndarray:
    """float32 [T] in [0, 1]: opening above rest plus movement, smoothed, scaled per track."""
    if not opening.any():
        return np.zeros(len(opening), np.float32)
    level = np.maximum(opening - np.percentile(opening, 20), 0.0)
    motion = _smooth(np.abs(np.diff(opening, prepend=opening[:1])), max(1, round(0.2 * fps)))
    moving = np.clip(motion / max(np.percentile(motion, 90), 1e-6), 0.0, 1.0)
    raw = _smooth(level * moving + 2.0 * motion, max(1, round(0.12 * fps)))
    scale = np.percentile(raw, 95)
    if scale <= 1e-6:
        return np.zeros(len(opening), np.float32)
    return np.clip(raw / scale, 0.0, 1.0).astype(np.float32)


def _close_gaps(mask: np.ndarray, max_gap: int) -> np.ndarray:
    """Fill runs of False shorter than ``max_gap`` that lie between two True frames."""
    out = mask.copy()
    on = np.flatnonzero(mask)
    for a, b in itertools.pairwise(on):
        if 1 < b - a <= max_gap:
            out[a:b] = True
    return out


def _dilate(mask: np.ndarray, pad: int) -> np.ndarray:
    if pad <= 0 or not mask.any():
        return mask
    kernel = np.ones(2 * pad + 1)
    return np.convolve(mask.astype(float), kernel, mode="same") > 0


def speaking(activity: np.ndarray, fps: float, settings: GateSettings) -> np.ndarray:
    """bool [T]: frames where a face counts as speaking (step 2 of the module doc)."""
    mask = activity > settings.threshold
    mask = _close_gaps(mask, round(settings.min_gap_s * fps))
    return _dilate(mask, round(settings.pad_s * fps))


def frame_gains(activity: np.ndarray, talking: np.ndarray, mix_speech: np.ndarray) -> np.ndarray:
    """float32 [2, T] gains per frame (step 3 of the module doc).

    Args:
        activity: float [2, T] mouth activity of the two tracks.
        talking: bool [2, T] speaking masks.
        mix_speech: bool [T], the mixture's voice activity.
    """
    gains = talking.astype(np.float32)
    nobody = mix_speech & ~talking.any(axis=0)
    total = activity.sum(axis=0)
    share = np.where(total > 1e-6, activity / np.maximum(total, 1e-6), 0.5)
    gains[:, nobody] = share[:, nobody]
    gains[:, ~mix_speech] = 0.0
    return gains


def sample_gains(gains: np.ndarray, n_samples: int, fps: float, sample_rate: int,
                 ramp_s: float) -> np.ndarray:
    """float32 [2, n_samples]: frame gains smoothed over ``ramp_s`` and interpolated between
    frame centres."""
    width = max(1, round(ramp_s * fps))
    smooth = np.stack([_smooth(g, width) for g in gains])
    centres = (np.arange(gains.shape[1]) + 0.5) * sample_rate / fps
    positions = np.arange(n_samples)
    return np.stack([np.interp(positions, centres, g) for g in smooth]).astype(np.float32)


@dataclass
class GateResult:
    """Channels and what decided them.

    Attributes:
        channels: float32 [2, n_samples], track order.
        activity: float32 [2, T] mouth activity.
        talking: bool [2, T] speaking masks.
        gains: float32 [2, T] frame gains.
    """

    channels: np.ndarray
    activity: np.ndarray
    talking: np.ndarray
    gains: np.ndarray


def avgate(mixture: np.ndarray, openings: list[np.ndarray], mix_speech: np.ndarray, fps: float,
           sample_rate: int, settings: GateSettings = GateSettings()) -> GateResult:
    """Separate ``mixture`` (float [n]) into two channels following the two mouths.

    Args:
        mixture: the clip's mono mixture.
        openings: per track, float [T] mouth opening (:func:`mouth_opening`).
        mix_speech: bool [T], voice activity of the mixture per frame.
        fps, sample_rate: frame and sample rates.
    """
    activity = np.stack([mouth_activity(o, fps) for o in openings])
    talking = np.stack([speaking(a, fps, settings) for a in activity])
    if settings.dominance > 0:
        for k in (0, 1):  # a clearly weaker face in a frame where both seem to speak: silent
            talking[k] &= ~(activity[1 - k] > settings.dominance * activity[k])
    gains = frame_gains(activity, talking, mix_speech)
    per_sample = sample_gains(gains, len(mixture), fps, sample_rate, settings.ramp_s)
    channels = (per_sample * np.asarray(mixture, np.float32)[None, :]).astype(np.float32)
    return GateResult(channels, activity, talking, gains)
