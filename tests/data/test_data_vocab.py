"""ChronoVocab: special tokens first, frequency order, encode/decode and JSON round trips."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from responsenet.chrono import LASTING, PAUSE
from responsenet.data import SPECIALS, ChronoVocab
from responsenet.errors import UsageError
from responsenet.shards import read_tracks

words = st.text(min_size=1, max_size=8)
streams = st.lists(st.lists(st.one_of(words, st.sampled_from([PAUSE, LASTING])), max_size=20),
                   max_size=5)


def test_special_tokens_come_first_then_words_by_frequency():
    vocab = ChronoVocab.build([["b", PAUSE, "a", LASTING, "c"], ["c", "a", "c", PAUSE]])
    assert SPECIALS == ("[PAD]", "[UNK]", "[PAUSE]", "[LASTING]")
    assert vocab.tokens == [*SPECIALS, "c", "a", "b"]
    assert (vocab.pad_id, vocab.unk_id, vocab.pause_id, vocab.lasting_id) == (0, 1, 2, 3)
    assert vocab.counts == {"c": 3, "a": 2, "b": 1}


def test_min_count_and_max_size():
    streams_ = [["a", "a", "b", "c", "c", "c"]]
    assert ChronoVocab.build(streams_, min_count=2).tokens[4:] == ["c", "a"]
    assert ChronoVocab.build(streams_, max_size=5).tokens[4:] == ["c"]
    with pytest.raises(ValueError, match="max_size must be >= 4"):
        ChronoVocab.build(streams_, max_size=3)


def test_unknown_tokens_encode_to_unk():
    vocab = ChronoVocab.build([["yes"]])
    assert vocab.encode(["yes", "no", PAUSE]).tolist() == [4, 1, 2]
    assert vocab.decode([4, 1, 0, 0], strip_pad=True) == ["yes", "[UNK]"]
    with pytest.raises(IndexError, match="outside this vocabulary of 5 ids"):
        vocab.decode([5])


@settings(max_examples=60, deadline=None)
@given(streams)
def test_encode_decode_round_trip(token_streams):
    vocab = ChronoVocab.build(token_streams)
    for stream in token_streams:
        ids = vocab.encode(stream)
        assert ids.dtype == np.int64
        assert vocab.decode(ids) == stream
        assert np.array_equal(vocab.encode(pa.array(stream, pa.string())), ids)


@settings(max_examples=60, deadline=None)
@given(streams, st.lists(words, max_size=10))
def test_tokens_outside_the_vocabulary_decode_as_unk(token_streams, others):
    vocab = ChronoVocab.build(token_streams)
    assert vocab.decode(vocab.encode(others)) == [t if t in vocab else "[UNK]" for t in others]


@settings(max_examples=40, deadline=None)
@given(streams)
def test_json_round_trip(tmp_path_factory, token_streams):
    vocab = ChronoVocab.build(token_streams)
    path = vocab.save(tmp_path_factory.mktemp("vocab") / "vocab.json")
    loaded = ChronoVocab.load(path)
    assert loaded == vocab and loaded.tokens == vocab.tokens and loaded.counts == vocab.counts


def test_from_corpus_counts_both_tracks_of_the_split(corpus):
    streams_ = read_tracks(corpus / "shards/val/tracks-00000.parquet",
                           columns=["chrono"]).column("chrono").to_pylist()
    assert len(streams_) == 4
    assert ChronoVocab.from_corpus(corpus, "val") == ChronoVocab.build(streams_)


def test_load_refuses_other_json(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"tokens": ["a", "b"]}))
    with pytest.raises(UsageError, match="not a Chrono-Text vocabulary"):
        ChronoVocab.load(path)
    with pytest.raises(UsageError, match="cannot read"):
        ChronoVocab.load(tmp_path / "missing.json")
