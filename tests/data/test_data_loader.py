"""Both datasets behind torch.utils.data.DataLoader(num_workers=2)."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from responsenet.data import ResponseNetDataset, ResponseNetStream, collate

WINDOW = 16
MODALITIES = ("face", "chrono", "words", "audio")


def _loader(dataset, **kwargs) -> DataLoader:
    return DataLoader(dataset, batch_size=5, num_workers=2, collate_fn=collate, **kwargs)


def _batch_keys(batch) -> list[tuple[str, int, int]]:
    return list(zip(batch["clip_id"], batch["start_frame"].tolist(), batch["n_frames"].tolist()))


def test_map_style_gives_every_window_once_per_epoch(corpus):
    ds = ResponseNetDataset(corpus, None, WINDOW, modalities=MODALITIES)
    by_key = {w: k for k, w in enumerate(ds.windows())}
    loader = _loader(ds, shuffle=True, generator=torch.Generator().manual_seed(0),
                     persistent_workers=True)
    for _ in range(2):
        seen = []
        for batch in loader:
            seen += _batch_keys(batch)
            first = ds[by_key[_batch_keys(batch)[0]]]
            n = first["n_frames"]
            assert torch.equal(batch["listener_face"][0, :n], first["listener_face"])
            assert torch.equal(batch["speaker_audio"][0, : n * 640], first["speaker_audio"])
            assert batch["listener_words"][0] == first["listener_words"]
        assert sorted(seen) == sorted(ds.windows())


def test_stream_workers_and_ranks_cover_every_window_once(corpus):
    all_windows = sorted(ResponseNetDataset(corpus, None, WINDOW, modalities=("face",)).windows())
    seen, workers = [], set()
    for rank in range(2):
        stream = ResponseNetStream(corpus, None, WINDOW, modalities=MODALITIES,
                                   shuffle_buffer=10, rank=rank, world_size=2)
        for batch in _loader(stream):
            seen += _batch_keys(batch)
            workers |= {(rank, w) for w in batch["stream_worker"].tolist()}
            assert set(batch["stream_num_workers"].tolist()) == {2}
    assert sorted(seen) == all_windows
    assert workers == {(0, 0), (0, 1), (1, 0), (1, 1)}


def test_stream_resumes_with_workers_from_mark_consumed(corpus):
    def per_worker(batches) -> dict[int, list]:
        out: dict[int, list] = {0: [], 1: []}
        for batch in batches:
            for key, worker in zip(_batch_keys(batch), batch["stream_worker"].tolist()):
                out[worker].append(key)
        return out

    uninterrupted = list(_loader(ResponseNetStream(corpus, None, WINDOW, modalities=("face",))))
    stream = ResponseNetStream(corpus, None, WINDOW, modalities=("face",))
    head = []
    for batch in _loader(stream):
        head.append(batch)
        stream.mark_consumed(batch)
        if len(head) == 3:
            break
    state = stream.state_dict()
    assert state["num_workers"] == 2 and sum(state["consumed"].values()) == 15
    restarted = ResponseNetStream(corpus, None, WINDOW, modalities=("face",))
    restarted.load_state_dict(state)
    tail = list(_loader(restarted))
    done, rest, full = per_worker(head), per_worker(tail), per_worker(uninterrupted)
    for worker in (0, 1):
        assert done[worker] + rest[worker] == full[worker]
