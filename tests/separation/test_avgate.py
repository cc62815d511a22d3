"""avgate gains and the voice-to-face assignment, on constructed inputs with exact answers."""

from __future__ import annotations

import numpy as np

from responsenet.separation.assign import assign_sources, frame_loudness, si_sdr
from responsenet.separation.avgate import (
    GateSettings,
    avgate,
    frame_gains,
    mouth_activity,
    mouth_opening,
    speaking,
)

FPS, SR = 25.0, 16000


def test_mouth_opening_uses_jaw_and_lower_lip_and_masks_missing_faces():
    names = ["jawOpen", "mouthLowerDownLeft", "mouthLowerDownRight", "eyeBlinkLeft"]
    blend = np.array([[0.4, 0.2, 0.2, 0.9], [0.4, 0.2, 0.2, 0.9]], np.float32)
    opening = mouth_opening(blend, np.array([True, False]), names)
    assert np.allclose(opening, [0.6, 0.0])


def test_speaking_closes_short_gaps_and_pads():
    activity = np.zeros(50, np.float32)
    activity[10:20] = activity[23:30] = 1.0  # a 3-frame gap (0.12 s) inside speech
    mask = speaking(activity, FPS, GateSettings(min_gap_s=0.2, pad_s=0.08))
    assert mask[8:32].all() and not mask[:7].any() and not mask[33:].any()


def test_gains_follow_the_rules():
    activity = np.array([[1.0, 0.0, 0.9, 0.2, 0.0], [0.0, 1.0, 0.8, 0.6, 0.0]], np.float32)
    talking = np.array([[1, 0, 1, 0, 0], [0, 1, 1, 0, 0]], bool)
    speech = np.array([1, 1, 1, 1, 0], bool)
    gains = frame_gains(activity, talking, speech)
    assert np.allclose(gains[:, 0], [1, 0]) and np.allclose(gains[:, 1], [0, 1])
    assert np.allclose(gains[:, 2], [1, 1])  # overlap: both keep the mixture
    assert np.allclose(gains[:, 3], [0.25, 0.75])  # nobody's mouth: shares of activity
    assert np.allclose(gains[:, 4], [0, 0])  # no speech in the mixture


def _two_talkers(seconds: float = 4.0):
    """Two tones taking turns (A 0-2 s, B 2-4 s) and mouths that move with them."""
    n, t = int(seconds * SR), np.arange(int(seconds * SR)) / SR
    a = 0.3 * np.sin(2 * np.pi * 180 * t) * (t < 2)
    b = 0.3 * np.sin(2 * np.pi * 260 * t) * (t >= 2)
    frames = np.arange(int(seconds * FPS)) / FPS
    wobble = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * frames)
    openings = [np.where(frames < 2, wobble, 0.02), np.where(frames >= 2, wobble, 0.02)]
    return n, a, b, [o.astype(np.float32) for o in openings], frames


def test_avgate_separates_turns_and_assignment_finds_the_order():
    _, a, b, openings, frames = _two_talkers()
    mixture = (a + b).astype(np.float32)
    result = avgate(mixture, openings, np.ones(len(frames), bool), FPS, SR)
    for channel, reference in zip(result.channels, (a, b)):
        assert si_sdr(channel, reference) - si_sdr(mixture, reference) > 10
    swapped = result.channels[::-1]
    match = assign_sources(swapped, result.activity, FPS, SR)
    assert match.order == (1, 0) and match.confidence > 0.3


def test_mouth_activity_is_zero_for_a_still_face():
    assert not mouth_activity(np.full(40, 0.3, np.float32), FPS).any()


def test_frame_loudness_and_si_sdr_known_values():
    tone = 0.5 * np.sin(2 * np.pi * 100 * np.arange(SR) / SR)
    loud = frame_loudness(tone, 25, FPS, SR)
    assert np.allclose(loud, 10 * np.log10(0.125), atol=0.05)
    assert si_sdr(2 * tone, tone) > 100
    noisy = tone + 0.05 * np.random.default_rng(0).standard_normal(SR)
    assert abs(si_sdr(noisy, tone) - 10 * np.log10(0.125 / 0.0025)) < 0.3
