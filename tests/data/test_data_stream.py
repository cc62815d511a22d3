"""ResponseNetStream (no workers): every window once, shuffling, DDP sharding, resumable state."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from responsenet.data import ResponseNetDataset, ResponseNetStream
from responsenet.data.iterable import dist_rank, shuffle_buffer
from responsenet.errors import UsageError

WINDOW = 16  # 100-frame clips: 7 windows each, the last one 4 frames


def _stream(corpus, **kwargs) -> ResponseNetStream:
    kwargs = {"modalities": ("face", "chrono"), **kwargs}
    return ResponseNetStream(corpus, None, WINDOW, **kwargs)


def _keys(items) -> list[tuple[str, int, int]]:
    return [(it["clip_id"], it["start_frame"], it["n_frames"]) for it in items]


@pytest.fixture(scope="module")
def all_windows(corpus) -> list[tuple[str, int, int]]:
    return sorted(ResponseNetDataset(corpus, None, WINDOW, modalities=("face",)).windows())


@pytest.mark.parametrize("kwargs", [{}, {"shuffle": False}, {"shuffle_buffer": 1},
                                    {"shuffle_buffer": 5, "seed": 3}])
def test_every_window_once_per_epoch(corpus, all_windows, kwargs):
    stream = _stream(corpus, **kwargs)
    keys = _keys(stream)
    assert sorted(keys) == all_windows
    assert len(stream) == len(all_windows) == 42


def test_items_equal_the_map_style_items(corpus):
    ds = ResponseNetDataset(corpus, None, WINDOW, modalities=("face", "chrono", "audio"))
    by_key = {w: k for k, w in enumerate(ds.windows())}
    for item in _stream(corpus, modalities=("face", "chrono", "audio"), shuffle_buffer=8):
        expected = ds[by_key[(item["clip_id"], item["start_frame"], item["n_frames"])]]
        for key in ("speaker_face", "listener_face", "listener_chrono", "speaker_audio"):
            assert torch.equal(item[key], expected[key])


def test_without_shuffle_the_order_is_the_corpus_order(corpus, all_windows):
    ds = ResponseNetDataset(corpus, None, WINDOW, modalities=("face",))
    assert _keys(_stream(corpus, shuffle=False)) == ds.windows()


def test_order_depends_on_seed_and_epoch_only(corpus):
    first = _keys(_stream(corpus, seed=1))
    assert _keys(_stream(corpus, seed=1)) == first
    assert _keys(_stream(corpus, seed=2)) != first
    stream = _stream(corpus, seed=1)
    stream.set_epoch(1)
    assert _keys(stream) != first
    assert sorted(_keys(stream)) == sorted(first)


def test_a_clip_is_dropped_from_memory_after_its_last_window(corpus, monkeypatch):
    stream = _stream(corpus, shuffle=False)
    loads = []
    original = stream._reader.store.load
    monkeypatch.setattr(stream._reader.store, "load", lambda ref: loads.append(ref) or
                        original(ref))
    list(stream)
    assert len(loads) == 6  # once per clip


def test_cache_clips_keeps_clips_across_epochs(corpus, monkeypatch):
    stream = _stream(corpus, cache_clips=6)
    loads = []
    original = stream._reader.store.load
    monkeypatch.setattr(stream._reader.store, "load", lambda ref: loads.append(ref) or
                        original(ref))
    first = _keys(stream)
    stream.set_epoch(1)
    second = _keys(stream)
    assert len(loads) == 6 and sorted(first) == sorted(second) and first != second


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_ranks_cover_all_windows_disjointly(corpus, all_windows, world_size):
    per_rank = [_keys(_stream(corpus, rank=r, world_size=world_size, seed=5))
                for r in range(world_size)]
    assert sorted(k for keys in per_rank for k in keys) == all_windows
    assert [len(_stream(corpus, rank=r, world_size=world_size)) for r in range(world_size)] == \
        [len(keys) for keys in per_rank]


def test_rank_comes_from_torch_distributed_when_initialised(corpus, monkeypatch):
    dist = torch.distributed
    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 3)
    stream = _stream(corpus)
    assert (stream.rank, stream.world_size) == (1, 3)
    assert _keys(stream) == _keys(_stream(corpus, rank=1, world_size=3))


def test_rank_and_world_size_are_checked():
    assert dist_rank(None, None) == (0, 1)
    assert dist_rank(2, 3) == (2, 3)
    with pytest.raises(UsageError, match="rank must be in"):
        dist_rank(3, 3)


@settings(max_examples=25, deadline=None)
@given(k=st.integers(0, 42), buffer=st.sampled_from([0, 1, 4, 1000]), seed=st.integers(0, 3),
       epoch=st.integers(0, 2), rank=st.integers(0, 1))
def test_resumed_stream_continues_where_it_stopped(corpus, k, buffer, seed, epoch, rank):
    settings_ = {"shuffle_buffer": buffer, "seed": seed, "rank": rank, "world_size": 2}
    full = _stream(corpus, **settings_)
    full.set_epoch(epoch)
    uninterrupted = list(full)
    stream = _stream(corpus, **settings_)
    stream.set_epoch(epoch)
    iterator = iter(stream)
    consumed = [next(iterator) for _ in range(min(k, len(uninterrupted)))]
    state = stream.state_dict()
    restarted = _stream(corpus, **settings_)
    restarted.load_state_dict(state)
    rest = list(restarted)
    assert _keys(consumed + rest) == _keys(uninterrupted)
    for got, expected in zip(rest, uninterrupted[len(consumed):]):
        assert torch.equal(got["listener_face"], expected["listener_face"])
        assert got["stream_index"] == expected["stream_index"]
    assert restarted.state_dict()["consumed"] == ({"0": len(uninterrupted)}
                                                 if uninterrupted else {})


def test_state_survives_json_and_a_second_resume(corpus):
    import json

    stream = _stream(corpus, shuffle_buffer=5)
    iterator = iter(stream)
    head = [next(iterator) for _ in range(10)]
    state = json.loads(json.dumps(stream.state_dict()))
    assert state["consumed"] == {"0": 10} and state["epoch"] == 0
    second = _stream(corpus, shuffle_buffer=5)
    second.load_state_dict(state)
    iterator = iter(second)
    middle = [next(iterator) for _ in range(5)]
    third = _stream(corpus, shuffle_buffer=5)
    third.load_state_dict(second.state_dict())
    assert _keys(head + middle + list(third)) == _keys(_stream(corpus, shuffle_buffer=5))


def test_state_from_other_settings_is_refused(corpus):
    state = _stream(corpus, seed=1).state_dict()
    with pytest.raises(UsageError, match="seed: saved 1, now 2"):
        _stream(corpus, seed=2).load_state_dict(state)
    with pytest.raises(UsageError, match="not a ResponseNetStream state"):
        _stream(corpus).load_state_dict({"epoch": 1})


def test_mark_consumed_records_batches(corpus):
    stream = _stream(corpus)
    batch = {"stream_worker": torch.tensor([0, 1, 0]), "stream_num_workers": torch.tensor([2] * 3),
             "stream_index": torch.tensor([3, 0, 4])}
    stream.mark_consumed(batch)
    state = stream.state_dict()
    assert (state["consumed"], state["num_workers"]) == ({"0": 5, "1": 1}, 2)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(), max_size=50), st.integers(0, 60), st.integers(0, 9))
def test_shuffle_buffer_is_a_permutation(values, size, seed):
    keys = [(v, 0, 0) for v in values]
    out = list(shuffle_buffer(keys, size, np.random.default_rng(seed)))
    assert sorted(out) == sorted(keys)
    if size <= 1:
        assert out == keys


def test_resuming_with_another_number_of_workers_is_refused(corpus):
    stream = _stream(corpus)
    stream.mark_consumed({"stream_worker": [0], "stream_num_workers": [2], "stream_index": [4]})
    restarted = _stream(corpus)
    restarted.load_state_dict(stream.state_dict())
    with pytest.raises(UsageError, match="saved with num_workers=2, the DataLoader has "
                                         "num_workers=0"):
        next(iter(restarted))
