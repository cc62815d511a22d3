"""espeak-ng voices: the set, word synthesis, its cache, and how different the voices sound."""

from __future__ import annotations

import itertools
import re
import subprocess

import numpy as np
import pytest

from responsenet.errors import UsageError
from responsenet.synth import voices as voices_module
from responsenet.synth.audio import mean_pitch_hz
from responsenet.synth.voices import (
    VOICES,
    clear_word_cache,
    contrasting_pair,
    synthesize_word,
    synthesize_words,
    voice_by_name,
)

SENTENCE = "I think we should try the new place for lunch on friday"


@pytest.fixture(scope="module")
def pitch_table() -> dict[str, float]:
    """Mean f0 (Hz) of every voice saying ``SENTENCE`` word by word."""
    table = {}
    for voice in VOICES:
        words = synthesize_words(voice, SENTENCE.split())
        table[voice.name] = mean_pitch_hz(np.concatenate(words), 16000)
    return table


def test_voice_set_is_varied_and_named_stably():
    assert len(VOICES) >= 8
    assert len({v.name for v in VOICES}) == len(VOICES)
    assert all(re.fullmatch(r"espeak-[a-z0-9]+-[mf]-(low|mid|high)", v.name) for v in VOICES)
    assert {v.gender for v in VOICES} == {"male", "female"}
    assert len({v.espeak.split("+")[0] for v in VOICES}) >= 3  # accents
    assert all(0 <= v.pitch <= 99 and 80 <= v.speed <= 450 for v in VOICES)
    assert voice_by_name("espeak-us-m-mid").espeak == "en-us+m3"
    with pytest.raises(UsageError, match="available: espeak-us-m-low"):
        voice_by_name("espeak-nope")


def test_word_is_trimmed_read_only_float_audio():
    voice = voice_by_name("espeak-us-f-mid")
    audio = synthesize_word(voice, "saturday")
    assert audio.dtype == np.float32 and audio.ndim == 1 and not audio.flags.writeable
    assert 0.2 < len(audio) / 16000 < 1.0
    assert np.max(np.abs(audio)) <= 1.0
    loud = np.flatnonzero(np.abs(audio) >= 0.01 * np.max(np.abs(audio)))
    # trimmed: sound within ~10 ms of both ends (5 ms margin plus the resampling filter)
    assert loud[0] <= 0.010 * 16000 and len(audio) - loud[-1] <= 0.010 * 16000
    assert synthesize_word(voice, "saturday") is audio  # cached
    assert len(synthesize_word(voice, "saturday", sample_rate=8000)) == pytest.approx(
        len(audio) / 2, abs=2)


def test_synthesis_is_deterministic_across_cache_clears():
    voice = voice_by_name("espeak-gb-f-mid")
    first = synthesize_word(voice, "garden").copy()
    clear_word_cache()
    again = synthesize_word(voice, "garden")
    np.testing.assert_array_equal(first, again)


def test_backchannel_spellings_are_spoken_not_spelled():
    voice = voice_by_name("espeak-us-m-mid")
    for text in ("mm-hm", "uh-huh", "yeah"):
        assert 0.15 < len(synthesize_word(voice, text)) / 16000 < 0.9, text


def test_espeak_gets_an_argument_list_with_the_text_after_a_separator(monkeypatch):
    calls = []
    real_run = subprocess.run

    def spy(command, **kwargs):
        calls.append((command, kwargs))
        return real_run(command, **kwargs)

    monkeypatch.setattr(voices_module.subprocess, "run", spy)
    text = "$(touch pwned);"
    audio = synthesize_word(voice_by_name("espeak-us-m-low"), text)
    command, kwargs = calls[-1]
    assert isinstance(command, list) and not kwargs.get("shell", False)
    assert command[-2:] == ["--", text] and "-w" in command
    assert len(audio) > 0


def test_missing_espeak_says_how_to_install(monkeypatch):
    monkeypatch.setattr(voices_module.shutil, "which", lambda name: None)
    with pytest.raises(UsageError, match="apt-get install espeak-ng"):
        synthesize_word(voice_by_name("espeak-us-m-low"), "uncachedword")


def test_empty_text_is_rejected():
    with pytest.raises(ValueError, match="needs a word"):
        synthesize_word(VOICES[0], "  ")


def test_male_and_female_voices_have_separate_pitch_ranges(pitch_table):
    male = [pitch_table[v.name] for v in VOICES if v.gender == "male"]
    female = [pitch_table[v.name] for v in VOICES if v.gender == "female"]
    assert max(male) < 120 and min(female) > 140, pitch_table


def test_every_contrasting_pair_differs_in_pitch_by_more_than_15_percent(pitch_table):
    for a, b in itertools.product(VOICES, VOICES):
        if a.gender != b.gender:
            low, high = sorted((pitch_table[a.name], pitch_table[b.name]))
            assert high / low > 1.15, (a.name, b.name)
    rng = np.random.default_rng(0)
    pairs = [contrasting_pair(rng) for _ in range(50)]
    assert all(a.gender != b.gender for a, b in pairs)
    assert len({a for a, _ in pairs}) >= 6  # every voice can lead a conversation
