"""Helpers of tests/data: ramp WAVs for a tiny corpus and the exact values its tracks hold."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from responsenet.testing.corpus import SPLITS, clip_id_for, make_track

N_CLIPS, N_FRAMES = 6, 100
ROLES = ("speaker", "listener")


def ramp(clip_index: int, role: str, n_samples: int) -> np.ndarray:
    """int16 [n_samples] written to a track's WAV: sample s is a known function of s."""
    offset = 1000 * clip_index + (7919 if role == "listener" else 0)
    return ((np.arange(n_samples) + offset) % 30000 - 15000).astype(np.int16)


def write_ramp_wavs(root: Path, n_clips: int, n_frames: int) -> None:
    """Replace the corpus's placeholder WAVs with 16 kHz mono ramps (``ramp``)."""
    for i in range(n_clips):
        for role in ROLES:
            with wave.open(str(root / "media" / clip_id_for(i) / f"{role}.wav"), "wb") as wav:
                wav.setnchannels(1)
                wav.setsampwidth(2)
                wav.setframerate(16000)
                wav.writeframes(ramp(i, role, n_frames * 640).tobytes())


def expected_track(clip_index: int, role: str, n_frames: int = N_FRAMES) -> dict:
    """The row ``make_tiny_corpus`` wrote for this track (same seed, same values)."""
    return make_track(clip_id_for(clip_index), role, n_frames=n_frames,
                      split=SPLITS[clip_index % len(SPLITS)], seed=0)


