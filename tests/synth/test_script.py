"""Conversation plans: exact word placement and the turn-taking guarantees, over many seeds.

The checks here are written independently of ``script.plan_problems``: they read the audio and
the word lists only.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from responsenet.synth.audio import mean_pitch_hz
from responsenet.synth.script import (
    BACKCHANNELS,
    INTERRUPTION_OPENERS,
    LISTENER_LINES,
    SPEAKER_LINES,
    PlacedWord,
    merge_speech,
    plan_conversation,
    plan_problems,
)
from responsenet.synth.voices import (
    clear_word_cache,
    contrasting_pair,
    synthesize_word,
    voice_by_name,
)

SR = 16000
VOICES = (voice_by_name("espeak-us-m-mid"), voice_by_name("espeak-us-f-mid"))
WINDOW = SR // 100  # 10 ms
PLANS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def plan(seed: int, duration: float, interruption: bool = False, voices=VOICES):
    return plan_conversation(np.random.default_rng(seed), voices, duration,
                             interruption=interruption)


def audible(audio: np.ndarray) -> np.ndarray:
    """``bool [n_windows]``: 10 ms windows with an RMS above -50 dBFS."""
    n = len(audio) // WINDOW
    rms = np.sqrt(np.mean(audio[: n * WINDOW].astype(np.float64).reshape(n, WINDOW) ** 2, 1))
    return rms > 10 ** (-50 / 20)


def words_in(track, start: float, end: float) -> list[PlacedWord]:
    return [w for w in track.words if start <= w.start and w.end <= end]


def main_turns(tracks) -> list[tuple[float, float, str, int]]:
    """Turns that are not backchannels, of both tracks, by start time."""
    return sorted((a, b, kind, i) for i, t in enumerate(tracks) for a, b, kind in t.turns
                  if kind != "backchannel")


def check_placement(tracks, duration: float) -> None:
    for track, voice in zip(tracks, VOICES):
        assert track.audio.dtype == np.float32 and len(track.audio) == round(duration * SR)
        covered = np.zeros(len(track.audio), dtype=bool)
        for previous, word in zip([None, *track.words], track.words):
            start, end = round(word.start * SR), round(word.end * SR)
            assert word.start * SR == pytest.approx(start) and 0 <= start < end <= len(covered)
            assert previous is None or previous.end <= word.start  # no overlap, in order
            np.testing.assert_array_equal(track.audio[start:end], synthesize_word(voice, word.text))
            head, tail = track.audio[start : start + 160], track.audio[end - 160 : end]
            assert np.any(head != 0) and np.any(tail != 0), word  # sound at both edges
            covered[start:end] = True
        assert not np.any(track.audio[~covered]), "sound outside the words"
        assert track.speech == merge_speech(track.words)


def check_backchannel(tracks) -> None:
    found = False
    for start, end, kind in tracks[1].turns:
        for turn_start, turn_end, _ in tracks[0].turns if kind == "backchannel" else []:
            words = words_in(tracks[0], turn_start, turn_end)
            before = [w for w in words if w.end <= start]
            after = [w for w in words if w.start >= end]
            during = [w for w in words if w.start < end and w.end > start]
            found |= bool(before and after and during)
    assert found, "no listener backchannel between two words of a speaker turn"


def check_turn_taking(tracks) -> None:
    turns = main_turns(tracks)
    assert len(turns) >= 3
    assert all(a[3] != b[3] for a, b in pairwise(turns)), "turns do not alternate"
    assert any(0.3 - 1e-6 <= b[0] - a[1] <= 1.0 + 1e-6 for a, b in pairwise(turns))
    both = audible(tracks[0].audio) & audible(tracks[1].audio)
    overlaps = [both[int(b[0] * 100) : int(a[1] * 100) + 1].sum() / 100
                for a, b in pairwise(turns) if b[0] < a[1]]
    assert overlaps and max(overlaps) >= 0.2, f"no 0.2 s overlap at a turn start: {overlaps}"


def check_interruption(tracks) -> None:
    cut = [t for t in tracks[1].turns if t[2] == "interruption"]
    assert len(cut) == 1
    start, end, _ = cut[0]
    turn = next(t for t in tracks[0].turns if t[0] < start <= t[1])
    assert turn[1] - start <= 0.5, "the interrupted speaker goes on too long"
    assert not [w for w in tracks[0].words if turn[1] < w.start < end]
    said = [w.text for w in words_in(tracks[0], turn[0], turn[1])]
    # the turn stops inside a line: its last words are a strict prefix of a pool line
    assert any(said[-k:] == line.split()[:k] for line in SPEAKER_LINES
               for k in range(2, len(line.split()) - 1)), said


@PLANS
@given(seed=st.integers(0, 2**32 - 1), duration=st.floats(8.0, 20.0), interruption=st.booleans())
def test_every_plan_keeps_its_guarantees(seed, duration, interruption):
    tracks = plan(seed, duration, interruption)
    check_placement(tracks, duration)
    check_backchannel(tracks)
    check_turn_taking(tracks)
    if interruption:
        check_interruption(tracks)
    else:
        assert not any(t[2] == "interruption" for t in tracks[1].turns)
    talk = [sum(w.end - w.start for w in t.words) for t in tracks]
    assert talk[0] > talk[1], "the speaker should talk more than the listener"
    assert plan_problems(tracks, interruption) == []


def test_plan_is_deterministic_for_a_seed():
    first, again, other = plan(11, 9.0, True), plan(11, 9.0, True), plan(12, 9.0, True)
    for a, b in zip(first, again):
        assert a.words == b.words and a.turns == b.turns and a.speech == b.speech
        np.testing.assert_array_equal(a.audio, b.audio)
    assert first[0].words != other[0].words


def test_words_are_resynthesized_identically_after_clearing_the_cache():
    tracks = plan(5, 8.0)
    clear_word_cache()
    for track, voice in zip(tracks, VOICES):
        for word in track.words[:4]:
            samples = track.audio[round(word.start * SR) : round(word.end * SR)]
            np.testing.assert_array_equal(samples, synthesize_word(voice, word.text))


def test_default_voice_pair_differs_in_pitch():
    # every male/female pair is checked on a sentence in test_voices; here one whole plan
    rng = np.random.default_rng(0)
    voices = contrasting_pair(rng)
    tracks = plan_conversation(rng, voices, 8.0)
    low, high = sorted(mean_pitch_hz(t.audio, SR) for t in tracks)
    assert high / low > 1.15, [v.name for v in voices]


@pytest.mark.parametrize("duration", [7.99, 0.0, -3.0, float("nan")])
def test_too_short_conversations_are_refused(duration):
    with pytest.raises(ValueError, match="at least 8 s"):
        plan(0, duration)


def test_speech_merges_words_closer_than_a_quarter_second():
    words = [PlacedWord("a", 0.0, 0.5), PlacedWord("b", 0.74, 1.0), PlacedWord("c", 1.26, 1.5)]
    assert merge_speech(words) == [(0.0, 1.0), (1.26, 1.5)]
    assert merge_speech([]) == []


def test_line_pools():
    assert len(SPEAKER_LINES) >= 40 and all(4 <= len(x.split()) <= 14 for x in SPEAKER_LINES)
    assert len(LISTENER_LINES) >= 15
    assert {"mm-hm", "yeah", "right", "okay", "I see", "uh-huh"} <= set(BACKCHANNELS)
    assert INTERRUPTION_OPENERS
    assert len(set(SPEAKER_LINES)) == len(SPEAKER_LINES)
