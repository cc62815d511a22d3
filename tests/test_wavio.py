"""WAV read/write round trips and exact-ratio resampling."""

from __future__ import annotations

import math
import wave
from pathlib import Path

import numpy as np
import pytest

from responsenet.errors import UsageError
from responsenet.wavio import read_wav, resample, write_wav


def _raw_wav(path: Path, samples: np.ndarray, width: int, channels: int, rate: int) -> None:
    """Write integer samples ``[n, channels]`` as a WAV file with the standard library."""
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes(samples.tobytes())


@pytest.mark.parametrize("n", [0, 1, 16000, 12345])
def test_write_read_round_trip_within_one_step(tmp_path, n):
    audio = np.random.default_rng(n).uniform(-1, 1, n).astype(np.float32)
    path = tmp_path / "a.wav"
    write_wav(path, audio, 16000)
    back, rate = read_wav(path)
    assert rate == 16000
    assert back.dtype == np.float32 and back.shape == (n,)
    assert np.max(np.abs(back - audio), initial=0.0) <= 1 / 32767 + 1e-7


def test_write_clips_out_of_range_and_overwrites_atomically(tmp_path):
    path = tmp_path / "a.wav"
    write_wav(path, np.zeros(10, np.float32), 8000)
    write_wav(path, np.array([2.0, -3.0, 0.5], np.float32), 8000)
    back, _ = read_wav(path)
    np.testing.assert_allclose(back, [1.0, -1.0, 0.5], atol=1 / 32767)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav"]  # no temp file left


def test_stereo_is_averaged_and_pcm_widths_are_scaled(tmp_path):
    left = np.array([32767, 0, -32767], np.int16)
    right = np.array([0, 16384, -32767], np.int16)
    _raw_wav(tmp_path / "s.wav", np.stack([left, right], axis=1), 2, 2, 22050)
    audio, rate = read_wav(tmp_path / "s.wav")
    assert rate == 22050
    np.testing.assert_allclose(audio, [0.5, 16384 / 32767 / 2, -1.0], atol=1e-6)
    _raw_wav(tmp_path / "u8.wav", np.array([128, 255, 1], np.uint8), 1, 1, 8000)
    np.testing.assert_allclose(read_wav(tmp_path / "u8.wav")[0], [0.0, 1.0, -1.0], atol=1e-6)
    _raw_wav(tmp_path / "i32.wav", np.array([2**31 - 1, 0], np.int32), 4, 1, 8000)
    np.testing.assert_allclose(read_wav(tmp_path / "i32.wav")[0], [1.0, 0.0], atol=1e-6)


def test_read_errors_say_what_to_do(tmp_path):
    with pytest.raises(UsageError, match="ffmpeg"):
        read_wav(tmp_path / "missing.wav")
    (tmp_path / "text.wav").write_text("not audio")
    with pytest.raises(UsageError, match="PCM WAV"):
        read_wav(tmp_path / "text.wav")


def test_write_rejects_multichannel_arrays(tmp_path):
    with pytest.raises(ValueError, match=r"mono audio of shape \[n_samples\]"):
        write_wav(tmp_path / "a.wav", np.zeros((10, 2)), 16000)


@pytest.mark.parametrize("from_rate,to_rate", [(22050, 16000), (16000, 22050), (48000, 16000),
                                               (44100, 16000), (16000, 8000)])
@pytest.mark.parametrize("n", [1, 999, 22050, 30001])
def test_resample_length_is_exact(from_rate, to_rate, n):
    out = resample(np.zeros(n, np.float32), from_rate, to_rate)
    assert out.dtype == np.float32
    assert len(out) == math.ceil(n * to_rate / from_rate)


def test_resample_keeps_a_tone_and_same_rate_is_identity():
    t_in = np.arange(22050) / 22050
    out = resample(np.sin(2 * np.pi * 440 * t_in), 22050, 16000)
    t_out = np.arange(len(out)) / 16000
    interior = slice(800, -800)  # away from the filter's edge transients
    np.testing.assert_allclose(out[interior], np.sin(2 * np.pi * 440 * t_out)[interior],
                               atol=2e-3)
    same = np.arange(5, dtype=np.float32)
    np.testing.assert_array_equal(resample(same, 16000, 16000), same)
    with pytest.raises(ValueError, match="positive"):
        resample(same, 0, 16000)
