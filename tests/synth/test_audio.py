"""Mixing, noise at a set SNR, frame envelopes and pitch, against hand-built signals."""

from __future__ import annotations

import numpy as np
import pytest

from responsenet.synth.audio import (
    active_mask,
    add_noise,
    frame_boundaries,
    frame_envelope,
    mean_pitch_hz,
    mix,
)
from responsenet.synth.script import plan_conversation
from responsenet.synth.voices import voice_by_name

SR = 16000


def harmonic_tone(f0: float, seconds: float, sr: int = SR) -> np.ndarray:
    """Five harmonics of ``f0`` with 1/k amplitudes, 0.3 peak-ish: ``float64 [seconds * sr]``."""
    t = np.arange(round(seconds * sr)) / sr
    return 0.3 * sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))


def burst(amplitude: float = 0.5) -> tuple[np.ndarray, slice]:
    """1 s silence, 1 s of a 200 Hz sine (an integer number of periods), 1 s silence."""
    audio = np.zeros(3 * SR)
    on = slice(SR, 2 * SR)
    audio[on] = amplitude * np.sin(2 * np.pi * 200 * np.arange(SR) / SR)
    return audio, on


@pytest.fixture(scope="module")
def track():
    rng = np.random.default_rng(7)
    voices = (voice_by_name("espeak-us-m-mid"), voice_by_name("espeak-us-f-mid"))
    return plan_conversation(rng, voices, 10.0)[0]


def test_mix_sums_without_scaling_below_the_peak_limit():
    a, b = np.full(4, 0.25, np.float32), np.array([0.5, -0.25, 0.0, 0.7], np.float32)
    mixed, gain = mix([a, b])
    assert gain == 1.0 and mixed.dtype == np.float32
    np.testing.assert_array_equal(mixed, a + b)


def test_mix_scales_down_to_the_peak_limit():
    a = np.array([0.9, 0.1, -0.2], np.float32)
    mixed, gain = mix([a, a])
    assert gain == pytest.approx(0.98 / 1.8)
    assert np.max(np.abs(mixed)) == pytest.approx(0.98)
    np.testing.assert_allclose(mixed, 2 * a * gain, rtol=1e-6)


def test_mix_rejects_tracks_of_different_lengths():
    with pytest.raises(ValueError, match=r"lengths \[2, 3\]"):
        mix([np.zeros(2), np.zeros(3)])
    with pytest.raises(ValueError, match="at least one"):
        mix([])


def test_active_mask_marks_the_sounding_part_only():
    audio, on = burst()
    mask = active_mask(audio, SR)
    assert mask[on].all() and mask.sum() == SR
    assert not active_mask(np.zeros(100), SR).any()


@pytest.mark.parametrize("color", ["white", "pink"])
@pytest.mark.parametrize("snr_db", [0.0, 10.0, 25.0])
def test_noise_has_the_requested_snr_over_the_speech(color, snr_db):
    audio, _ = burst(amplitude=0.5)
    noisy = add_noise(audio, snr_db, np.random.default_rng(1), color=color)
    noise = noisy.astype(np.float64) - audio
    # the sine's power is A^2 / 2 = 0.125; the silence around it must not count
    measured = 10 * np.log10(0.125 / np.mean(noise**2))
    assert measured == pytest.approx(snr_db, abs=0.1)


def test_pink_noise_has_more_power_at_low_frequencies():
    audio, _ = burst()
    noise = add_noise(audio, 0.0, np.random.default_rng(2), color="pink") - audio
    power = np.abs(np.fft.rfft(noise)) ** 2
    freqs = np.fft.rfftfreq(len(noise), 1 / SR)
    low, high = power[(freqs > 50) & (freqs < 200)].mean(), power[freqs > 4000].mean()
    assert low > 10 * high


def test_noise_snr_on_a_conversation_track(track):
    noisy = add_noise(track.audio, 5.0, np.random.default_rng(3))
    signal = track.audio.astype(np.float64)
    speech = active_mask(signal, SR)
    measured = 10 * np.log10(np.mean(signal[speech] ** 2) / np.mean((noisy - signal) ** 2))
    assert measured == pytest.approx(5.0, abs=0.1)


def test_noise_rejects_silence_and_unknown_colors():
    with pytest.raises(ValueError, match="silence"):
        add_noise(np.zeros(100), 10, np.random.default_rng(0))
    with pytest.raises(ValueError, match="'white' or 'pink'"):
        add_noise(burst()[0], 10, np.random.default_rng(0), color="brown")


@pytest.mark.parametrize("n_samples,fps,n_frames", [(16000, 25, 25), (16001, 25, 25),
                                                    (16320, 25, 26), (16000, 30, 30),
                                                    (0, 25, 0)])
def test_envelope_has_one_value_per_video_frame(n_samples, fps, n_frames):
    assert len(frame_envelope(np.zeros(n_samples), fps, SR)) == n_frames
    edges = frame_boundaries(n_samples, fps, SR)
    assert len(edges) == n_frames + 1 and edges[0] == 0


def test_envelope_is_zero_in_silence_and_one_on_a_steady_tone():
    audio, _ = burst()
    env = frame_envelope(audio)
    assert env.dtype == np.float32 and len(env) == 75
    assert np.all(env[:25] == 0) and np.all(env[50:] == 0)
    np.testing.assert_allclose(env[26:49], 1.0, atol=1e-3)


def test_envelope_follows_the_words_of_a_track(track):
    env = frame_envelope(track.audio, 25, SR)
    assert len(env) == 250 and env.min() >= 0 and env.max() <= 1
    edges = frame_boundaries(len(track.audio), 25, SR)
    silent = [i for i in range(250) if not track.audio[edges[i] : edges[i + 1]].any()]
    assert silent and all(env[i] == 0 for i in silent)
    for word in track.words:
        inside = np.arange(int(np.ceil(word.start * 25)), int(np.floor(word.end * 25)))
        if len(inside):
            assert env[inside].mean() > 0.2, word


@pytest.mark.parametrize("f0", [150.0, 220.0, 95.0])
def test_pitch_of_harmonic_tones(f0):
    tone = np.concatenate([np.zeros(SR // 2), harmonic_tone(f0, 1.0), np.zeros(SR // 2)])
    tone += 0.003 * np.random.default_rng(0).standard_normal(len(tone))
    assert mean_pitch_hz(tone, SR) == pytest.approx(f0, rel=0.05)


def test_pitch_tracks_a_missing_fundamental_and_other_rates():
    t = np.arange(SR) / SR
    no_fundamental = sum(np.sin(2 * np.pi * 200 * k * t) for k in (2, 3, 4)) * 0.2
    assert mean_pitch_hz(no_fundamental, SR) == pytest.approx(200, rel=0.05)
    assert mean_pitch_hz(harmonic_tone(150, 1.0, 22050), 22050) == pytest.approx(150, rel=0.05)


def test_pitch_of_silence_is_nan():
    assert np.isnan(mean_pitch_hz(np.zeros(SR), SR))
    assert np.isnan(mean_pitch_hz(np.zeros(10), SR))
