"""Chrono-Text (responsenet.chrono): encode/decode rules and round trips, turns, roles, prompts.

The property tests check the documented rules against independent descriptions of them (which
frames must be silent, where a packed onset may go), not against a copy of the encoder.
"""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from responsenet.chrono import (
    DEFAULT_SYSTEM,
    LASTING,
    PAUSE,
    Turn,
    Word,
    assign_roles,
    build_prompt,
    clip_words,
    decode,
    encode,
    escape,
    history,
    is_special,
    normalize_text,
    place,
    plain_text,
    turns,
    unescape,
)

L, P = LASTING, PAUSE

# --- strategies ----------------------------------------------------------------------------

TEXTS = st.one_of(
    st.text(alphabet="ab'?,. \t", max_size=6),
    st.sampled_from(["[PAUSE]", "[LASTING]", "\\[PAUSE]", "\\\\[LASTING]", "--", "New  York"]),
)


@st.composite
def clips(draw):
    """(words, n_frames, fps) with at most n_frames words, some outside the clip."""
    fps = draw(st.sampled_from([25.0, 30.0, 10.0]))
    n_frames = draw(st.integers(0, 80))
    duration = n_frames / fps
    word = st.builds(Word, TEXTS, st.floats(-1.0, duration + 1.0),
                     st.floats(0.0, 1.5)).map(lambda w: Word(w.text, w.start, w.start + w.end))
    words = draw(st.lists(word, max_size=n_frames))
    return words, n_frames, fps


def kept_in_order(words, n_frames, fps):
    """The words a stream must hold, in order: non-empty text, touching [0, duration)."""
    kept = [w for w in words
            if normalize_text(w.text) and math.floor(w.start * fps + 1e-6) < n_frames
            and math.ceil(max(w.end, w.start) * fps - 1e-6) > 0]
    return sorted(kept, key=lambda w: w.start)  # stable: ties keep input order


def natural(word, fps):
    return max(math.floor(word.start * fps + 1e-6), 0)


# --- properties ------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(clips())
def test_one_token_per_frame_and_the_same_words_back(clip):
    words, n_frames, fps = clip
    tokens = encode(words, n_frames, fps)
    assert len(tokens) == n_frames
    decoded = decode(tokens, fps)
    assert [w.text for w in decoded] == [normalize_text(w.text)
                                         for w in kept_in_order(words, n_frames, fps)]
    assert encode(words, n_frames, fps) == tokens  # deterministic
    assert encode(decoded, n_frames, fps) == tokens  # a decoded stream encodes to itself


@settings(max_examples=300, deadline=None)
@given(clips())
def test_onsets_take_the_first_free_frame_and_stay_in_bounds(clip):
    words, n_frames, fps = clip
    placements = place(words, n_frames, fps)
    onsets = [round(w.start * fps) for w in decode(encode(words, n_frames, fps), fps)]
    assert onsets == [p.frame for p in placements] == sorted(set(onsets))
    taken = set(onsets)
    for p in placements:
        if p.shift > 0:  # pushed: every frame from its own up to its onset is an earlier onset
            assert all(f in taken and f < p.frame for f in range(p.natural_frame, p.frame))
            assert p.shift <= sum(q.frame < p.frame and q.frame >= p.natural_frame
                                  for q in placements)
        elif p.shift < 0:  # pulled back at the clip end: every later frame is taken
            assert all(f in taken for f in range(p.frame, n_frames))
        # the decoded onset is within one frame of the true onset, plus the shift
        true_start = max(p.word.start, 0.0)
        assert p.frame / fps - true_start < p.shift / fps + 1e-9
        assert true_start - p.frame / fps < (1 - p.shift) / fps + 1e-9


@settings(max_examples=300, deadline=None)
@given(clips())
def test_pause_exactly_where_no_word_sounds(clip):
    words, n_frames, fps = clip
    tokens = encode(words, n_frames, fps)
    sounding = set()
    for word in kept_in_order(words, n_frames, fps):
        end = math.ceil(max(word.end, word.start) * fps - 1e-6)
        sounding |= set(range(natural(word, fps), min(end, n_frames)))
    sounding |= {p.frame for p in place(words, n_frames, fps)}
    assert {i for i, t in enumerate(tokens) if t != PAUSE} == sounding


@settings(max_examples=200, deadline=None)
@given(clips())
def test_unpacked_words_keep_their_frames(clip):
    words, n_frames, fps = clip
    words = [w for w in kept_in_order(words, n_frames, fps) if w.start >= 0]
    frames = [natural(w, fps) for w in words]
    if len(set(frames)) < len(frames):
        words = [w for i, w in enumerate(words) if frames.index(frames[i]) == i]
    apart = []  # no overlap within the track
    for word in words:
        if not apart or word.start >= apart[-1].end:
            apart.append(word)
    words = apart
    decoded = decode(encode(words, n_frames, fps), fps)
    for true, got in zip(words, decoded, strict=True):
        assert 0 <= true.start - got.start < 1 / fps + 1e-9
        if true.end <= n_frames / fps:
            assert abs(got.end - true.end) <= 1 / fps + 1e-9


@given(st.lists(st.sampled_from(["a", "b?", L, P, "\\[PAUSE]"]), max_size=30))
def test_decode_reads_any_stream_and_reencodes_it_without_orphans(tokens):
    words = decode(tokens)
    assert [w.text for w in words] == [unescape(t) for t in tokens if not is_special(t)]
    cleaned = encode(words, len(tokens))
    expected, inside = [], False  # orphan [LASTING] (no word before it) reads as [PAUSE]
    for token in tokens:
        inside = (inside and token == L) or not is_special(token)
        expected.append(token if inside else P)
    assert cleaned == expected


def test_distinct_onsets_do_not_depend_on_input_order():
    words = [Word("one", 0.1, 0.3), Word("two", 0.35, 0.5), Word("three", 0.8, 0.9)]
    shuffled = words[:]
    random.Random(0).shuffle(shuffled)
    assert encode(shuffled, 30) == encode(words, 30) == encode(words[::-1], 30)


# --- Figure 7 of OmniResponse: words with [LASTING] runs, [PAUSE] runs between --------------

def test_figure_7_shape():
    words = [Word("Hi,", 0.00, 0.20), Word("how", 0.40, 0.56), Word("are", 0.56, 0.68),
             Word("you?", 0.68, 0.92)]
    tokens = encode(words, 25)
    assert tokens == (["Hi,", L, L, L, L] + [P] * 5 + ["how", L, L, L] + ["are", L, L]
                      + ["you?", L, L, L, L, L] + [P, P])
    assert decode(tokens) == [Word("Hi,", 0.0, 0.2), Word("how", 0.4, 0.56),
                              Word("are", 0.56, 0.68), Word("you?", 0.68, 0.92)]
    assert plain_text(tokens) == "Hi, how are you?"


# --- one test per edge-case rule -----------------------------------------------------------

def test_frame_edges_belong_to_the_later_frame():
    assert encode([Word("a", 0.04, 0.08)], 4) == [P, "a", P, P]
    assert encode([Word("a", 0.0399, 0.0801)], 4) == ["a", L, L, P]


def test_several_onsets_in_one_frame_take_the_next_free_frames_in_order():
    words = [Word("a", 0.100, 0.105), Word("b", 0.105, 0.110), Word("c", 0.110, 0.300)]
    assert encode(words, 10) == [P, P, "a", "b", "c", L, L, L, P, P]
    assert [p.shift for p in place(words, 10)] == [0, 1, 2]
    # a word whose own frame is taken by a packed onset moves on too
    words.append(Word("d", 0.13, 0.14))  # frame 3, taken by "b"
    assert encode(words, 10) == [P, P, "a", "b", "c", "d", L, L, P, P]


def test_packed_onsets_at_the_clip_end_are_pulled_back():
    words = [Word("x", 0.15, 0.155), Word("y", 0.155, 0.156), Word("z", 0.157, 0.158)]
    assert encode(words, 5) == [P, P, "x", "y", "z"]
    assert [p.shift for p in place(words, 5)] == [-1, 0, 1]


def test_more_words_than_frames_is_an_error():
    with pytest.raises(ValueError, match="3 words start inside a clip of 2 frames"):
        encode([Word("a", 0, 0.01), Word("b", 0.01, 0.02), Word("c", 0.02, 0.03)], 2)


def test_a_word_shorter_than_a_frame_keeps_its_onset_frame():
    assert encode([Word("uh", 0.05, 0.06)], 3) == [P, "uh", P]
    assert encode([Word("zero", 0.05, 0.05), Word("neg", 0.09, 0.01)], 3) == [P, "zero", "neg"]


def test_clip_edges_clamp_the_start_and_truncate_the_end():
    words = [Word("gone", -0.5, -0.1), Word("late", -0.06, 0.1), Word("cut", 0.12, 9.0),
             Word("after", 0.2, 0.3)]
    assert encode(words, 5) == ["late", L, L, "cut", L]
    assert decode(encode(words, 5)) == [Word("late", 0.0, 0.12), Word("cut", 0.12, 0.2)]
    assert encode([Word("edge", -0.1, 0.0)], 2) == [P, P]


def test_punctuation_is_kept_or_stripped_at_word_ends():
    words = [Word("Well,", 0, 0.1), Word("don't", 0.1, 0.2), Word("...", 0.2, 0.3),
             Word("(yes)!", 0.3, 0.4)]
    assert [w.text for w in decode(encode(words, 10))] == ["Well,", "don't", "...", "(yes)!"]
    stripped = encode(words, 10, punctuation="strip")
    assert [w.text for w in decode(stripped)] == ["Well", "don't", "yes"]
    assert stripped[5:7] == [P, P]  # "..." is no word any more: its frames are silent
    with pytest.raises(ValueError, match="punctuation must be"):
        normalize_text("a", "drop")  # type: ignore[arg-type]


def test_whitespace_is_normalised_and_empty_words_dropped():
    words = [Word("  ", 0, 0.1), Word(" hello\t", 0.1, 0.15), Word("New \n York", 0.2, 0.25)]
    assert encode(words, 8) == [P, P, "hello", L, P, "New York", L, P]


def test_words_that_read_as_special_tokens_are_escaped():
    assert escape("[PAUSE]") == "\\[PAUSE]" and escape("\\[LASTING]") == "\\\\[LASTING]"
    assert escape("[pause]") == "[pause]" and escape("a\\b") == "a\\b"
    words = [Word("[PAUSE]", 0, 0.04), Word("\\[PAUSE]", 0.04, 0.08), Word("[LASTING]", 0.08, 0.1)]
    tokens = encode(words, 3)
    assert tokens == ["\\[PAUSE]", "\\\\[PAUSE]", "\\[LASTING]"]
    assert not any(is_special(t) for t in tokens)
    assert [w.text for w in decode(tokens)] == ["[PAUSE]", "\\[PAUSE]", "[LASTING]"]


def test_overlapping_words_in_one_track_last_until_all_have_ended():
    words = [Word("long", 0.0, 0.4), Word("short", 0.08, 0.12)]
    assert encode(words, 12) == ["long", L, "short", L, L, L, L, L, L, L, P, P]


def test_bad_arguments():
    with pytest.raises(ValueError, match="finite"):
        encode([Word("a", float("nan"), 1.0)], 5)
    with pytest.raises(ValueError, match="fps > 0"):
        encode([], 5, fps=0)
    with pytest.raises(ValueError, match="fps > 0"):
        decode(["a"], fps=0)
    with pytest.raises(ValueError, match="frame 1"):
        decode(["a", "  "])
    assert encode([], 0) == [] and decode([]) == []


def test_decode_at_another_frame_rate():
    assert decode(["a", L, P, "b"], fps=10.0) == [Word("a", 0.0, 0.2), Word("b", 0.3, 0.4)]


def test_clip_words_are_what_the_stream_holds():
    words = [Word("b", 0.3, 9.0, 0.5), Word(" a ", -1.0, 0.1, 0.9), Word("x", -2, -1),
             Word("", 0.2, 0.25)]
    assert clip_words(words, 10) == [Word("a", 0.0, 0.1, 0.9), Word("b", 0.3, 0.4, 0.5)]


def test_word_dict_round_trip_and_errors():
    word = Word("hi", 0.5, 0.75, 0.875)
    assert Word.from_dict(word.to_dict()) == word
    assert Word.from_dict({"text": "a", "start": 1, "end": 2}) == Word("a", 1.0, 2.0, None)
    for bad in ({"text": "a", "start": 1}, {"text": 3, "start": 1, "end": 2},
                {"text": "a", "start": "x", "end": 2}, {"text": "a", "start": 1, "end": "inf"}):
        with pytest.raises(ValueError):
            Word.from_dict(bad)


# --- turns, history, roles, prompts ------------------------------------------------------------

TRACKS = {
    "left": [Word("so", 0.0, 0.2), Word("I", 0.3, 0.4), Word("went", 0.5, 0.8),
             Word("home", 1.6, 1.9)],
    "right": [Word("mhm", 0.9, 1.1), Word("", 2.5, 2.7), Word("nice", 3.0, 3.2)],
}


def test_turns_merge_words_closer_than_the_gap():
    assert turns(TRACKS, 0.5) == [
        Turn("left", 0.0, 0.8, "so I went", "left"),
        Turn("right", 0.9, 1.1, "mhm", "right"),
        Turn("left", 1.6, 1.9, "home", "left"),
        Turn("right", 2.5, 3.2, "nice", "right"),
    ]
    assert [t.text for t in turns(TRACKS, 1.0)] == ["so I went home", "mhm", "nice"]
    # a gap of exactly merge_gap_s splits
    assert len(turns({"a": [Word("x", 0, 1), Word("y", 1.5, 2)]}, 0.5)) == 2


def test_turns_use_roles_and_serialise():
    labelled = turns(TRACKS, 0.5, roles={"left": "speaker", "right": "listener"})
    assert [t.role for t in labelled] == ["speaker", "listener", "speaker", "listener"]
    assert labelled[0].to_dict() == {"role": "speaker", "start": 0.0, "end": 0.8,
                                     "text": "so I went", "track": "left"}
    assert Turn.from_dict(labelled[0].to_dict()) == labelled[0]
    assert Turn("speaker", 1, 2, "x").to_dict() == {"role": "speaker", "start": 1, "end": 2,
                                                    "text": "x"}
    assert labelled[0].shifted(-10.0) == Turn("speaker", -10.0, -9.2, "so I went", "left")
    with pytest.raises(ValueError, match="no role for track 'right'"):
        turns(TRACKS, roles={"left": "speaker"})


def test_history_keeps_finished_turns_before_a_time():
    all_turns = turns(TRACKS, 0.5, roles={"left": "speaker", "right": "listener"})
    assert [t.text for t in history(all_turns, 1.9)] == ["so I went", "mhm", "home"]
    assert [t.text for t in history(all_turns, 1.85)] == ["so I went", "mhm"]
    assert [t.text for t in history(all_turns, 10, max_turns=2)] == ["home", "nice"]
    assert history(all_turns, 10, max_turns=0) == [] and history(all_turns, 0.0) == []


def test_roles_by_rule_and_by_manifest():
    assert assign_roles({"left": 4.2, "right": 1.0}, None) == (
        {"left": "speaker", "right": "listener"}, "rule")
    assert assign_roles({"left": 1.0, "right": 4.2}, {}) == (
        {"left": "listener", "right": "speaker"}, "rule")
    assert assign_roles({"right": 2.0, "left": 2.0}, None) == (  # tie: first name speaks
        {"left": "speaker", "right": "listener"}, "rule")
    assert assign_roles({"left": 4.2, "right": 1.0}, {"left": "listener"}) == (
        {"left": "listener", "right": "speaker"}, "manifest")
    assert assign_roles({"top": 0, "bottom": 9}, {"top": "speaker", "bottom": "listener"}) == (
        {"top": "speaker", "bottom": "listener"}, "manifest")


@pytest.mark.parametrize("speech, hints, fragment", [
    ({"left": 1.0}, None, "exactly two tracks"),
    ({"left": 1.0, "right": 2.0}, {"top": "speaker"}, "to the clip's tracks"),
    ({"left": 1.0, "right": 2.0}, {"left": "speaker", "right": "speaker"}, "both tracks"),
    ({"left": 1.0, "right": 2.0}, {"left": "host"}, "must give 'speaker' or 'listener'"),
])
def test_bad_role_inputs(speech, hints, fragment):
    with pytest.raises(ValueError, match=fragment):
        assign_roles(speech, hints)


def test_prompt_alternates_history_and_ends_with_the_dynamic_texts():
    past = [Turn("speaker", -9, -7, "I finally fixed my bike"), Turn("listener", -7, -6, "nice"),
            Turn("speaker", -5, -4, "it took"), Turn("speaker", -3.5, -2, "all weekend")]
    messages = build_prompt(past, ["so", L, P, "what"], [P, P, "mhm", L])
    assert messages == [
        {"role": "system", "content": DEFAULT_SYSTEM},
        {"role": "user", "content": "I finally fixed my bike"},
        {"role": "assistant", "content": "nice"},
        {"role": "user", "content": "it took\n\nall weekend\n\n"
                                    "Speaker, Chrono-Text so far:\nso [LASTING] [PAUSE] what\n"
                                    "Listener (you), Chrono-Text so far:\n"
                                    "[PAUSE] [PAUSE] mhm [LASTING]"},
    ]
    assert build_prompt([], "a", "", system="S") == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Speaker, Chrono-Text so far:\na\n"
                                    "Listener (you), Chrono-Text so far:\n"}]
    with pytest.raises(ValueError, match="role 'left'"):
        build_prompt([Turn("left", 0, 1, "x")], "", "")
