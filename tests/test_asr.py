"""Pure parts of speech recognition: suppression rules, refinement, scoring, weights lookup.

Every input is built by hand and every expected output is exact (times to the millisecond).
No Whisper model runs here; tests/build/stages/test_transcribe.py runs the real ones.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from responsenet.asr import (
    AsrOptions,
    Word,
    clean_words,
    collect_segments,
    merge_fragments,
    weights_location,
)
from responsenet.asr_align import KEEP, SHARE, SNAP, assign_runs, whisper_windows
from responsenet.asr_refine import (
    RefineParams,
    energy_db,
    estimate_lags,
    refine_track,
    refine_with_runs,
    refine_words,
    sound_runs,
)
from responsenet.asr_score import (
    align_words,
    normalize_words,
    onset_errors,
    word_error_rate,
    word_errors,
)
from responsenet.asr_suppress import (
    SuppressParams,
    compression_ratio,
    low_probability_runs,
    repeated_ngrams,
    repetitive_segments,
    silent_words,
    speech_seconds,
    speech_spans,
    suppress,
)
from responsenet.errors import AssetMissing, UsageError

FIXED = RefineParams(calibrate=False)


def words_of(*spec: tuple[str, float, float]) -> list[Word]:
    return [Word(text, start, end, 0.9) for text, start, end in spec]


def times(words: list[Word]) -> list[tuple[str, float, float]]:
    return [(w.text, w.start, w.end) for w in words]


# --- suppression ---------------------------------------------------------------------------

def test_speech_spans_are_seconds_widened_and_merged():
    mask = np.array([0, 1, 1, 0, 0, 1], dtype=bool)
    assert speech_spans(mask, fps=10) == [(0.1, 0.3), (0.5, 0.6)]
    assert speech_spans(mask, fps=10, pad_s=0.1) == [(0.0, 0.7)]
    assert speech_spans(np.zeros(4, bool), fps=10) == []


def test_silent_track_rule_uses_share_or_seconds_of_speech():
    speech = np.zeros(40, bool)
    speech[10:20] = True  # speech 1.0-2.0 s at 10 fps; widened by 0.1 s: 0.9-2.1 s
    words = words_of(("inside", 1.2, 1.5), ("before", 0.0, 0.5), ("stretched", 0.5, 1.3),
                     ("edge", 2.05, 3.0), ("long", 1.95, 3.0), ("point", 1.5, 1.5),
                     ("lost", 3.0, 3.0))
    assert np.allclose(speech_seconds(words, speech, 10, pad_s=0.1),
                       [0.3, 0, 0.4, 0.05, 0.15, 0, 0])
    # stretched: 0.4 of 0.8 s = 50% -> kept; long: 0.15 s >= 0.12 s -> kept; edge: neither;
    # zero-length words count where they sit
    assert silent_words(words, speech, 10).tolist() == [0, 1, 0, 1, 0, 0, 1]
    strict = SuppressParams(min_speech_overlap=0.9, min_speech_s=1.0)
    assert silent_words(words, speech, 10, strict).tolist() == [0, 1, 1, 1, 1, 0, 1]


def test_repeated_phrases_keep_the_first_occurrence():
    texts = ["Thank", "you", "thank", "you.", "Thank", "you!", "bye"]
    assert repeated_ngrams(texts).tolist() == [0, 0, 1, 1, 1, 1, 0]
    assert not repeated_ngrams(["thank", "you", "thank", "you"]).any()  # twice is speech
    assert not repeated_ngrams(["no"] * 4).any()  # single words need 5
    assert repeated_ngrams(["no"] * 5 + ["way"]).tolist() == [0, 1, 1, 1, 1, 0]
    abc = "a b c a b c a b c d".split()
    assert repeated_ngrams(abc).tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 1, 0]
    assert repeated_ngrams(["so", "a", "b", "a", "b", "a", "b"]).tolist() == [0, 0, 0, 1, 1, 1, 1]


def test_low_probability_runs_need_the_run_length():
    probs = [0.9, 0.1, 0.1, 0.9, 0.1, 0.1, 0.1, 0.05]
    assert low_probability_runs(probs).tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert low_probability_runs(probs, SuppressParams(low_prob_run=2)).tolist() == [
        0, 1, 1, 0, 1, 1, 1, 1]
    assert low_probability_runs([]).tolist() == []


def test_segments_that_compress_too_well_are_decoding_loops():
    assert compression_ratio("") == 0.0
    assert compression_ratio("Okay, good for you.") < 1.2
    assert compression_ratio("see you next time, " * 12) > 5
    loop = [Word(t, 11.1 + 0.05 * i, 11.15 + 0.05 * i) for i, t in
            enumerate(("We'll", *(["see", "you", "next", "time,"] * 6)))]
    words = words_of(("Sorry,", 8.6, 9.0), ("expensive?", 10.5, 11.1)) + loop
    removed = repetitive_segments(words, [0, 2])
    assert removed.tolist() == [False, False] + [True] * len(loop)
    assert not repetitive_segments(words, [0, 2], SuppressParams(max_compression_ratio=10)).any()
    kept, gone = suppress(words, None, 25.0, segment_starts=[0, 2])
    assert [w.text for w in kept] == ["Sorry,", "expensive?"]
    assert {r for _, r in gone} == {"repetitive_segment"}


def test_suppress_applies_rules_in_order_with_reasons():
    speech = np.zeros(100, bool)
    speech[:60] = True  # speech 0-6 s at 10 fps
    words = [Word("hello", 0.1, 0.4, 0.9), Word("bye", 0.5, 0.8, 0.9),
             Word("bye", 0.9, 1.2, 0.9), Word("bye", 1.3, 1.6, 0.9), Word("bye", 1.7, 2.0, 0.9),
             Word("bye", 2.1, 2.4, 0.9), Word("um", 3.0, 3.2, 0.1), Word("uh", 3.3, 3.5, 0.1),
             Word("er", 3.6, 3.8, 0.1), Word("ok", 4.0, 4.3, 0.8), Word("ghost", 8.0, 8.5, 0.9)]
    kept, removed = suppress(words, speech, fps=10)
    assert [w.text for w in kept] == ["hello", "bye", "ok"]
    assert [(w.text, w.start, reason) for w, reason in removed] == [
        ("ghost", 8.0, "silent_track"), ("bye", 0.9, "repeated_ngram"),
        ("bye", 1.3, "repeated_ngram"), ("bye", 1.7, "repeated_ngram"),
        ("bye", 2.1, "repeated_ngram"), ("um", 3.0, "low_probability_run"),
        ("uh", 3.3, "low_probability_run"), ("er", 3.6, "low_probability_run")]
    kept, removed = suppress(words[-1:], None, fps=10)  # no mask: no silent_track rule
    assert [w.text for w in kept] == ["ghost"] and removed == []


# --- sound runs ----------------------------------------------------------------------------

def test_energy_db_is_centred_rms_level():
    audio = np.zeros(8000, np.float32)
    audio[1600:3200] = 0.5  # 0.1-0.2 s
    level = energy_db(audio, 16000, hop_s=0.01, window_s=0.02)
    assert level.shape == (50,) and level.dtype == np.float32
    assert level[0] == pytest.approx(-200.0)
    assert level[10] == pytest.approx(10 * np.log10(0.125), abs=1e-4)  # half the window sounds
    assert level[15] == pytest.approx(10 * np.log10(0.25), abs=1e-4)
    assert level[20] == pytest.approx(10 * np.log10(0.125), abs=1e-4)
    assert level[22] == pytest.approx(-200.0)


def test_sound_runs_bridge_short_gaps_and_drop_clicks():
    quiet, loud = -200.0, 0.0
    level = np.array([quiet] * 10 + [loud] * 20 + [quiet] * 1 + [loud] * 5 + [quiet] * 2
                     + [loud] * 6 + [quiet] * 10 + [loud] * 2 + [quiet] * 10, np.float32)
    runs = sound_runs(level, FIXED)
    # 10 ms gap bridged, 20 ms gap kept, 20 ms click dropped
    assert np.allclose(runs, [[0.10, 0.36], [0.38, 0.44]])
    speech = np.zeros(3, bool)
    speech[2] = True  # 25 fps: speech 0.08-0.12 s; sound counts within 0.2 s of it (to 0.32 s)
    assert np.allclose(sound_runs(level, FIXED, speech, fps=25.0), [[0.10, 0.32]])
    assert sound_runs(np.zeros(0, np.float32), FIXED).shape == (0, 2)


def test_sound_threshold_follows_peak_and_noise_floor():
    level = np.array([-60.0] * 50 + [-20.0] * 30 + [-50.0] * 10 + [-10.0] * 30, np.float32)
    # loud level -10 dB, floor -60 dB: threshold max(-55, -48) = -48 dB
    assert np.allclose(sound_runs(level, FIXED), [[0.50, 0.80], [0.90, 1.20]])


# --- assignment and placement --------------------------------------------------------------

def refine(words: list[Word], runs: list[list[float]], p: RefineParams = FIXED) -> list[Word]:
    return refine_with_runs(words, np.array(runs, dtype=np.float64).reshape(-1, 2), p)


def test_each_word_snaps_to_its_own_onset():
    runs = [[1.0, 1.3], [1.4, 1.7], [2.5, 3.0]]
    words = words_of(("one", 1.08, 1.36), ("two", 1.46, 1.80), ("three", 2.0, 3.1))
    windows = whisper_windows(words, FIXED)
    assert np.allclose(windows[2], [2.0, 2.4, 2.7, 3.1])  # "three" is stretched by 0.4 s
    assignment = assign_runs(windows, np.array(runs), FIXED)
    assert assignment == [(SNAP, 0), (SNAP, 1), (SNAP, 2)]
    assert times(refine(words, runs)) == [("one", 1.0, 1.3), ("two", 1.4, 1.7),
                                          ("three", 2.5, 3.0)]


def test_a_word_owns_its_closures():
    runs = [[1.0, 1.2], [1.25, 1.4], [1.5, 1.8]]
    words = words_of(("hello", 1.05, 1.45), ("world", 1.55, 1.9))
    assert assign_runs(whisper_windows(words, FIXED), np.array(runs), FIXED) == [
        (SNAP, 0), (SNAP, 2)]
    assert times(refine(words, runs)) == [("hello", 1.0, 1.4), ("world", 1.5, 1.8)]


def test_words_in_continuous_speech_share_a_run():
    words = words_of(("I", 1.1, 1.3), ("went", 1.4, 1.8))
    assert assign_runs(whisper_windows(words, FIXED), np.array([[1.0, 2.0]]), FIXED) == [
        (SNAP, 0), (SHARE, 0)]
    # the boundary: half Whisper's start (1.4), half the letter share of the run (1.0 + 1/5 s)
    assert times(refine(words, [[1.0, 2.0]])) == [("I", 1.0, 1.3), ("went", 1.3, 2.0)]
    whisper_only = RefineParams(calibrate=False, share_char_weight=0.0)
    assert times(refine(words, [[1.0, 2.0]], whisper_only)) == [("I", 1.0, 1.4),
                                                                ("went", 1.4, 2.0)]
    letters_only = RefineParams(calibrate=False, share_char_weight=1.0)
    assert times(refine(words, [[1.0, 2.0]], letters_only)) == [("I", 1.0, 1.2),
                                                                ("went", 1.2, 2.0)]


def test_short_runs_are_not_word_starts():
    words = words_of(("fellow", 1.05, 1.45), ("Americans", 1.5, 2.0))
    runs = np.array([[1.0, 1.6], [1.7, 1.73]])  # a 30 ms tail ('s') after the phrase
    assert assign_runs(whisper_windows(words, FIXED), runs, FIXED) == [(SNAP, 0), (SHARE, 0)]
    loose = RefineParams(calibrate=False, min_onset_run_s=0.0)
    assert assign_runs(whisper_windows(words, loose), runs, loose) == [(SNAP, 0), (SNAP, 1)]


def test_a_word_far_from_any_sound_keeps_whisper_times():
    words = words_of(("x", 1.0, 1.2))
    assert assign_runs(whisper_windows(words, FIXED), np.array([[10.0, 10.5]]), FIXED) == [
        (KEEP, -1)]
    assert times(refine(words, [[10.0, 10.5]])) == [("x", 1.0, 1.2)]
    assert times(refine(words, [])) == [("x", 1.0, 1.2)]


def test_a_word_stretched_over_a_pause_snaps_to_the_sound_after_it():
    words = words_of(("right", 0.5, 3.45), ("now", 3.45, 3.95))
    runs = [[3.0, 3.4], [3.5, 3.9]]
    assert times(refine(words, runs)) == [("right", 3.0, 3.4), ("now", 3.5, 3.9)]


def test_words_whisper_put_in_a_pause_are_rescued_onto_free_sound():
    words = words_of(("yeah", 3.08, 4.0), ("was", 4.2, 4.6), ("it", 4.7, 5.1),
                     ("thanks", 6.0, 6.5))
    reasons = ["silent_track", None, None, "silent_track"]
    runs = np.array([[0.9, 1.3], [4.1, 4.6], [4.65, 5.0]])
    placed, after = refine_track(words, reasons, runs, FIXED)
    assert times(placed) == [("yeah", 0.9, 1.3), ("was", 4.1, 4.6), ("it", 4.65, 5.0),
                             ("thanks", 6.0, 6.5)]
    assert after == [None, None, None, "silent_track"]  # no free sound for "thanks"
    # sound that kept words cover is never free: a leaked word stays removed
    leaked = words_of(("was", 4.2, 4.6), ("ghost", 4.61, 4.64), ("it", 4.7, 5.1))
    _, after = refine_track(leaked, [None, "silent_track", None], runs[1:], FIXED)
    assert after == [None, "silent_track", None]
    # without refinement sound, nothing is rescued
    _, after = refine_track(words, reasons, np.zeros((0, 2)), FIXED)
    assert after == reasons


def test_placement_keeps_words_ordered_and_apart():
    rng = np.random.default_rng(7)
    for _ in range(50):
        starts = np.sort(rng.uniform(0, 10, 12))
        words = [Word(f"w{i}", float(s), float(s + rng.uniform(0, 0.8)), 0.5)
                 for i, s in enumerate(starts)]
        edges = np.sort(rng.uniform(0, 10, 16))
        runs = edges.reshape(-1, 2)
        out = refine_with_runs(words, runs, RefineParams())
        assert [w.text for w in out] == [w.text for w in words]
        assert all(w.end > w.start for w in out)
        assert all(a.end <= b.start for a, b in itertools.pairwise(out))


def test_lags_are_measured_from_unstretched_snapped_words():
    runs = np.array([[i, i + 0.3] for i in range(1, 6)], dtype=np.float64)
    words = [Word(f"w{i}", i + 0.07, i + 0.42, 0.9) for i in range(1, 6)]
    assignment = assign_runs(whisper_windows(words, FIXED), runs, FIXED)
    assert estimate_lags(words, runs, assignment, FIXED) == pytest.approx((0.07, 0.12))
    few = estimate_lags(words[:3], runs[:3], assignment[:3], FIXED)
    assert few == (0.0, 0.0)  # fewer than calibration_words: no lag measured


def test_calibration_recovers_late_whisper_times():
    # Whisper places each word 90 ms late and ends 130 ms late; the last word sits between
    # two onsets, closer to the wrong one until the lag is known.
    runs = [[1.0, 1.3], [1.4, 1.7], [1.8, 2.1], [2.2, 2.5], [2.6, 2.75], [2.8, 3.1]]
    words = words_of(("a", 1.09, 1.43), ("b", 1.49, 1.83), ("c", 1.89, 2.23),
                     ("d", 2.29, 2.63), ("e", 2.72, 3.23))
    assert times(refine(words, runs, RefineParams())) == [
        ("a", 1.0, 1.3), ("b", 1.4, 1.7), ("c", 1.8, 2.1), ("d", 2.2, 2.5), ("e", 2.6, 3.1)]
    assert times(refine(words, runs))[-1] == ("e", 2.8, 3.1)  # without calibration


def test_refine_words_on_audio_finds_onsets_to_the_hop():
    sr, rng = 16000, np.random.default_rng(0)
    audio = np.zeros(4 * sr, np.float32)
    truth = [(0.50, 0.80), (0.86, 1.30), (1.37, 1.60), (2.40, 2.90), (2.95, 3.30)]
    for a, b in truth:
        audio[round(a * sr):round(b * sr)] = 0.3 * rng.standard_normal(round((b - a) * sr))
    words = [Word(f"w{i}", a + 0.08 + 0.03 * (i % 2), b + 0.1, 0.9)
             for i, (a, b) in enumerate(truth)]
    words[3] = Word("w3", 1.7, 2.95, 0.9)  # stretched back over the pause
    refined = refine_words(words, audio, sr)
    assert np.abs(np.array([w.start for w in refined]) - [a for a, _ in truth]).max() <= 0.011
    assert np.abs(np.array([w.end for w in refined]) - [b for _, b in truth]).max() <= 0.011


# --- Whisper output cleanup, scoring, weights ----------------------------------------------

def test_hyphen_fragments_join_the_word_before():
    raw = [Word(" Uh", 1.0, 1.1, 0.2), Word("-huh.", 1.1, 1.6, 0.8), Word(" Yes", 2.0, 2.2, 0.9)]
    assert merge_fragments(raw) == [Word(" Uh-huh.", 1.0, 1.6, 0.2), Word(" Yes", 2.0, 2.2, 0.9)]
    assert clean_words([*raw, Word("  ", 3.0, 3.1, 0.5), Word(" x", 4.0, 3.9, 0.5)]) == [
        Word("Uh-huh.", 1.0, 1.6, 0.2), Word("Yes", 2.0, 2.2, 0.9), Word("x", 4.0, 4.0, 0.5)]
    words, starts = collect_segments([raw[:2], [Word(" ", 1.7, 1.8)], raw[2:]])
    assert [w.text for w in words] == ["Uh-huh.", "Yes"] and starts == [0, 1]


def test_word_dict_round_trip():
    word = Word("hi", 1.25, 1.5, 0.75)
    assert Word.from_dict(word.to_dict()) == word
    assert word.to_dict() == {"text": "hi", "start": 1.25, "end": 1.5, "prob": 0.75}


def test_normalisation_and_word_error_rate_by_hand():
    assert normalize_words("And so, my fellow Americans: ask!") == [
        "and", "so", "my", "fellow", "americans", "ask"]
    assert normalize_words("Uh -huh. uh-huh MM-HM it's 'quoted'") == [
        "uhhuh", "uhhuh", "mmhm", "it's", "quoted"]
    assert align_words(list("abcd"), list("axc")) == [
        ("ok", 0, 0), ("sub", 1, 1), ("ok", 2, 2), ("del", 3, None)]
    assert word_errors("a b c d", "a x c") == (2, 4)
    assert word_errors("a b", "a b c") == (1, 2)
    assert word_error_rate("IT WAS THE FIRST", "It was the first.") == 0.0
    assert word_error_rate("", "") == 0.0 and word_error_rate("", "x") == 1.0


def test_onset_errors_use_only_correct_words():
    truth = [{"text": "we", "start": 1.0}, {"text": "went", "start": 1.5},
             {"text": "home", "start": 2.0}]
    words = [Word("We", 1.1, 1.4), Word("want", 1.5, 1.9), Word("home.", 1.95, 2.3)]
    assert np.allclose(onset_errors(truth, words), [0.1, -0.05])


def test_model_sizes_without_an_offline_copy_say_where_to_get_them(monkeypatch, tmp_path):
    monkeypatch.setenv("RESPONSENET_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(AssetMissing) as info:
        weights_location(AsrOptions(model="small.en"))
    assert info.value.reason == "weights_missing"
    assert "Systran/faster-whisper-small.en" in info.value.message
    assert "faster_whisper_small_en" in info.value.message and "model_path" in info.value.message
    with pytest.raises(AssetMissing, match="large-v3.pt"):
        weights_location(AsrOptions(backend="openai-whisper", model="large-v3"))
    folder = tmp_path / "models" / "faster_whisper_small_en"
    folder.mkdir(parents=True)
    for name in ("model.bin", "config.json"):
        (folder / name).write_text("{}")
    assert weights_location(AsrOptions(model="small.en")) == folder
    assert weights_location(AsrOptions(model="small.en", model_path=str(folder))) == folder
    with pytest.raises(AssetMissing, match="does not hold model.bin"):  # never replaced
        weights_location(AsrOptions(model="small.en", model_path=str(tmp_path)))


def test_unknown_backend_is_a_usage_error():
    from responsenet.asr import backends

    with pytest.raises(UsageError, match="faster-whisper"):
        backends.get("faster-whisperr")
