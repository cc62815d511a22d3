"""Silero VAD through onnxruntime: probabilities, segments and per-frame masks on known speech."""

from __future__ import annotations

import shutil
import sys
from itertools import pairwise

import numpy as np
import pytest

from responsenet import vad
from responsenet.errors import AssetMissing, UsageError
from responsenet.testing.realmedia import require_realmedia
from responsenet.wavio import read_wav, resample

pytest.importorskip("onnxruntime", reason="onnxruntime (extra 'asr') runs Silero VAD")
try:
    vad._model_file(None)
except AssetMissing as e:
    pytest.skip(f"Silero VAD weights not installed: {e}", allow_module_level=True)

SR = 16000
FPS = 25


def truth_frames(spans: list[tuple[float, float]], n_samples: int, sr: int = SR) -> np.ndarray:
    """Frames at least half covered by ``spans`` (independent of vad.frames_from_segments)."""
    inside = np.zeros(n_samples, dtype=bool)
    for start, end in spans:
        inside[round(start * sr) : round(end * sr)] = True
    n_frames = round(n_samples / sr * FPS)
    edges = np.minimum(np.round(np.arange(n_frames + 1) * sr / FPS).astype(int), n_samples)
    return np.array([inside[a:b].mean() >= 0.5 if b > a else False
                     for a, b in pairwise(edges)])


@pytest.fixture(scope="module")
def conversation():
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is needed to synthesize speech")
    from responsenet.synth.script import plan_conversation
    from responsenet.synth.voices import contrasting_pair

    rng = np.random.default_rng(0)
    return plan_conversation(rng, contrasting_pair(rng), 10.0)


@pytest.fixture(scope="module")
def jfk():
    return read_wav(require_realmedia() / "speech" / "jfk_16k_mono.wav")


def test_mask_matches_synthetic_speech_truth(conversation):
    for track in conversation:
        truth = truth_frames(track.speech, len(track.audio))
        mask = vad.speech_mask(track.audio, SR)
        assert mask.shape == truth.shape and mask.dtype == bool
        agreement = float((mask == truth).mean())
        assert agreement >= 0.9, (agreement, track.speech)


def test_words_at_known_offsets_are_found(conversation):
    speaker = conversation[0]
    segments = vad.speech_segments(speaker.audio, SR)
    for word in speaker.words:
        if word.end - word.start >= 0.15:
            assert any(a <= word.start + 0.05 and word.end - 0.05 <= b for a, b in segments), word


def test_silence_and_quiet_noise_are_not_speech():
    silence = np.zeros(3 * SR, dtype=np.float32)
    assert vad.speech_probability(silence).max() < 0.1
    assert not vad.speech_mask(silence).any()
    assert vad.speech_segments(silence) == []
    noise = (0.003 * np.random.default_rng(1).standard_normal(3 * SR)).astype(np.float32)
    assert vad.speech_mask(noise).mean() <= 0.1


def test_probability_windows_and_empty_audio():
    assert vad.speech_probability(np.zeros(1000, np.float32)).shape == (2,)  # ceil(1000 / 512)
    assert vad.speech_probability(np.zeros(0, np.float32)).shape == (0,)
    assert vad.speech_mask(np.zeros(0, np.float32)).shape == (0,)
    with pytest.raises(ValueError, match="mono"):
        vad.speech_probability(np.zeros((2, 1000), np.float32))


def test_same_probabilities_as_the_silero_package(jfk):
    torch = pytest.importorskip("torch", reason="the silero-vad package's wrapper needs torch")
    from silero_vad.utils_vad import OnnxWrapper

    audio, sr = jfk
    wrapper = OnnxWrapper(str(vad._model_file(None)), force_onnx_cpu=True)
    reference = wrapper.audio_forward(torch.from_numpy(audio), sr).numpy()[0]
    np.testing.assert_allclose(vad.speech_probability(audio, sr), reference, atol=1e-5)


def test_jfk_speech_and_pauses(jfk):
    audio, sr = jfk
    segments = vad.speech_segments(audio, sr)
    speech_s = sum(b - a for a, b in segments)
    assert speech_s >= 0.6 * len(audio) / sr, segments
    assert 0.1 <= segments[0][0] <= 0.6 and segments[-1][1] >= 10.0, segments
    pauses = [b[0] - a[1] for a, b in pairwise(segments) if b[0] - a[1] >= 0.3]
    assert len(pauses) >= 2, segments  # between the phrases of "ask not ... for your country"
    mask = vad.speech_mask(audio, sr)
    assert len(mask) == 275 and 0.6 <= mask.mean() <= 0.9


def test_stereo_left_speaker_span():
    audio, sr = read_wav(require_realmedia() / "speech" / "stereo_diarization_left_spkA.wav")
    segments = vad.speech_segments(audio, sr)
    assert 0.05 <= segments[0][0] <= 0.5 and segments[-1][1] >= 4.4, segments  # about 0.2-5.0 s


def test_resampled_input_gives_the_same_mask(jfk):
    audio, sr = jfk
    low = resample(audio, sr, 8000)
    at_16k, at_8k = vad.speech_mask(audio, sr), vad.speech_mask(low, 8000)
    assert at_8k.shape == at_16k.shape
    assert (at_8k == at_16k).mean() >= 0.95
    assert len(vad.speech_probability(low, 8000)) == len(vad.speech_probability(audio, sr))


def test_n_frames_past_the_audio_are_false(jfk):
    audio, sr = jfk
    mask = vad.speech_mask(audio[: 2 * sr], sr, n_frames=100, fps=FPS)
    assert mask.shape == (100,) and not mask[50:].any() and mask[:50].any()


def test_model_path_bad_and_explicit(tmp_path, jfk):
    with pytest.raises(AssetMissing) as info:
        vad.speech_probability(np.zeros(SR, np.float32), model_path=tmp_path)
    assert info.value.reason == "weights_missing" and "silero_vad" in str(info.value)
    explicit = vad._model_file(None)
    assert vad.speech_probability(jfk[0][:SR], model_path=explicit).shape == (32,)


def test_missing_onnxruntime_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(UsageError, match=r"responsenet\[asr\]"):
        vad._session("/nonexistent-for-this-test.onnx")


def test_segments_from_probabilities_rules():
    w = 0.032
    # hysteresis: 0.4 keeps speech going (>= 0.35), 0.3 ends it
    probs = np.array([0.0, 0.6, 0.4, 0.4, 0.4, 0.3, 0.0, 0.0, 0.0, 0.0])
    assert vad.segments_from_probabilities(probs, 1.0, pad_s=0.0) == [(w, round(5 * w, 6))]
    # a 1-window gap (32 ms) is bridged; a lone short blip is dropped
    probs = np.array([0.9] * 5 + [0.0] + [0.9] * 5 + [0.0] * 10 + [0.9] + [0.0] * 5)
    assert vad.segments_from_probabilities(probs, 1.0, pad_s=0.0) == [(0.0, round(11 * w, 6))]
    # padding is cut at the audio ends and padded neighbours merge
    probs = np.array([0.9] * 4 + [0.0] * 4 + [0.9] * 4)
    got = vad.segments_from_probabilities(probs, 12 * w, min_silence_s=0.05, pad_s=0.07)
    assert got == [(0.0, round(12 * w, 6))]


def test_frames_from_segments_half_rule():
    # 25 fps at 16 kHz: frames are 40 ms; a segment 0.02-0.10 covers half of frame 0, all of 1,
    # half of frame 2; 0.141-0.16 covers under half of frame 3
    mask = vad.frames_from_segments([(0.02, 0.10), (0.141, 0.16)], 5, 25, SR)
    assert mask.tolist() == [True, True, True, False, False]
    assert not vad.frames_from_segments([], 3, 25, SR).any()
