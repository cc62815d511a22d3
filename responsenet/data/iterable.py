"""Streaming PyTorch dataset: clips sharded over DDP ranks and DataLoader workers, a shuffle
buffer, and a resumable position.

Everything that decides the order works on window keys ``(clip index, start frame, frames)``,
never on loaded data, so resuming replays the order without reading a shard and then loads
only what is still to come.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from responsenet.data.clips import ClipData, ClipStore
from responsenet.data.index import ClipRef, scan_clips, window_starts
from responsenet.data.items import (
    MODALITIES,
    WindowReader,
    check_modalities,
    check_role,
    resolve_vocab,
)
from responsenet.data.vocab import ChronoVocab
from responsenet.errors import UsageError

Key = tuple[int, int, int]  # (clip index, start frame, n_frames)
_STATE_FORMAT = "responsenet.stream_state"
#: State entries that must match between the saving and the resuming stream.
_CONFIG_KEYS = ("seed", "rank", "world_size", "window_frames", "stride_frames", "drop_last",
                "shuffle", "shuffle_buffer", "n_clips")


def dist_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """``(rank, world_size)``: the given ones, else torch.distributed's when it is initialised,
    else ``(0, 1)``."""
    if rank is None or world_size is None:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            rank = dist.get_rank() if rank is None else rank
            world_size = dist.get_world_size() if world_size is None else world_size
    rank, world_size = rank or 0, world_size or 1
    if not 0 <= rank < world_size:
        raise UsageError(f"rank must be in [0, world_size), got rank={rank}, "
                         f"world_size={world_size}")
    return rank, world_size


def shuffle_buffer(keys: Iterable[Key], size: int, rng: np.random.Generator) -> Iterator[Key]:
    """Yield ``keys`` in an approximately shuffled order using a buffer of ``size`` keys.

    The buffer fills with the first ``size`` keys; each later key replaces a uniformly chosen
    buffered key, which is yielded; the rest are yielded in random order at the end.
    ``size <= 1`` yields ``keys`` unchanged.
    """
    if size <= 1:
        yield from keys
        return
    buffer: list[Key] = []
    for key in keys:
        if len(buffer) < size:
            buffer.append(key)
            continue
        i = int(rng.integers(size))
        yield buffer[i]
        buffer[i] = key
    for i in rng.permutation(len(buffer)):
        yield buffer[int(i)]


class ResponseNetStream(torch.utils.data.IterableDataset):
    """Windows of a split as a stream, for DDP and multi-worker DataLoaders, resumable.

    Items are those of ``ResponseNetDataset`` (same keys and shapes) plus ``stream_worker``
    (int, the DataLoader worker that made it, 0 without workers), ``stream_num_workers`` (int,
    the loader's ``num_workers``) and ``stream_index`` (int, the item's position in that
    worker's sequence), which ``mark_consumed`` uses to record progress.

    Order of epoch ``e`` (``set_epoch``): clips are permuted by ``(seed, e)`` (when
    ``shuffle``) and dealt out: rank ``r`` of ``world_size`` takes ``order[r::world_size]``,
    and DataLoader worker ``w`` of ``num_workers`` takes every ``num_workers``-th of those from
    ``w``. So ranks and workers read disjoint clips and together yield every window exactly once
    per epoch, and a rank's windows do not depend on its number of workers. Each worker streams
    its clips' windows in order through a shuffle buffer of ``shuffle_buffer`` windows seeded by
    ``(seed, e, r, w)``. Ranks may get different numbers of windows (whole clips are dealt);
    ``len(stream)`` is this rank's count.

    Resuming: ``state_dict()`` records the epoch and how many items each worker has handed
    out; a stream given that state by ``load_state_dict`` skips them (without reading data)
    on its next iteration. Without workers (``num_workers=0``) the count is kept as items are
    yielded. With workers, every worker runs its own copy of the stream, so call
    ``mark_consumed(batch)`` on each batch the training loop has used; the state then is exact
    (each worker's items arrive in order) and must be resumed with the same ``num_workers``,
    ``world_size`` and settings.

    Memory: a worker keeps loaded the clips that have windows waiting in its buffer, about
    ``shuffle_buffer`` windows' worth of frames, and drops a clip once its last window is out
    (unless ``cache_clips`` keeps it).

    Args:
        root, split, window_frames, stride_frames, modalities, target_role, drop_last, vocab,
        video_size: as for ``ResponseNetDataset``.
        cache_clips: clips a worker keeps after their last window (an LRU, default 0). With
            ``persistent_workers=True`` and room for the worker's share of the split, later
            epochs read no Parquet (clips are dealt anew each epoch, so a worker meets about
            ``1 / num_workers`` of its clips again per epoch until it holds all of them).
        shuffle: permute clips per epoch and pass windows through the shuffle buffer.
        shuffle_buffer: windows in the shuffle buffer (<= 1: clip order only).
        seed: seed of every random choice; give every rank the same seed (the ranks' clips
            are disjoint only when they deal out the same permutation).
        rank, world_size: this process's DDP rank; None takes torch.distributed's when it is
            initialised, else 0 of 1.
    """

    def __init__(self, root: str | Path, split: str | None = None, window_frames: int = 256,
                 stride_frames: int | None = None, modalities: Iterable[str] = MODALITIES,
                 target_role: str = "listener", *, drop_last: bool = False,
                 vocab: ChronoVocab | str | Path | None = None,
                 video_size: tuple[int, int] | None = None, cache_clips: int = 0,
                 shuffle: bool = True,
                 shuffle_buffer: int = 1000, seed: int = 0, rank: int | None = None,
                 world_size: int | None = None):
        super().__init__()
        self.root, self.split = Path(root), split
        self.window_frames, self.stride_frames = window_frames, stride_frames or window_frames
        self.modalities = check_modalities(modalities)
        self.target_role = check_role(target_role)
        self.drop_last, self.shuffle, self.shuffle_buffer = drop_last, shuffle, shuffle_buffer
        self.seed, self.epoch = seed, 0
        self.rank, self.world_size = dist_rank(rank, world_size)
        self.vocab = resolve_vocab(root, vocab, self.modalities)
        self.clips: list[ClipRef] = scan_clips(root, split)
        self._starts = [window_starts(ref.n_frames, window_frames, self.stride_frames,
                                      drop_last) for ref in self.clips]
        self._reader = WindowReader(ClipStore(root, self.modalities, self.vocab, cache_clips),
                                    self.target_role, video_size)
        self._consumed: dict[int, int] = {}
        self._num_workers: int | None = None
        self._resume: dict[int, int] = {}

    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch``'s order from the next iteration on; progress starts at zero.

        Call it before each epoch in every process (as with ``DistributedSampler``); workers
        see it when the DataLoader creates them (not with ``persistent_workers=True``).
        """
        self.epoch = epoch
        self._consumed, self._resume, self._num_workers = {}, {}, None

    def __len__(self) -> int:
        """Windows this rank yields per epoch (all its workers together)."""
        order = self._clip_order()
        return sum(len(self._starts[c]) for c in order[self.rank::self.world_size])

    def shard_keys(self, worker: int = 0, num_workers: int = 0) -> list[Key]:
        """The keys ``(clip index, start frame, n_frames)`` worker ``worker`` of this rank
        yields this epoch, in order."""
        mine = self._clip_order()[self.rank::self.world_size][worker::max(1, num_workers)]
        clip_keys = ((c, s, min(s + self.window_frames, self.clips[c].n_frames) - s)
                     for c in mine for s in self._starts[c])
        size = self.shuffle_buffer if self.shuffle else 0
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker, 1])
        return list(shuffle_buffer(clip_keys, size, rng))

    def _clip_order(self) -> list[int]:
        if not self.shuffle:
            return list(range(len(self.clips)))
        return [int(i) for i in np.random.default_rng([self.seed, self.epoch, 0]).permutation(
            len(self.clips))]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (0, 0) if info is None else (info.id, info.num_workers)
        skip = self._take_resume(worker, num_workers)
        keys = self.shard_keys(worker, num_workers)
        remaining: dict[int, int] = {}
        for clip, _, _ in keys:
            remaining[clip] = remaining.get(clip, 0) + 1
        loaded: dict[int, ClipData] = {}
        for index, (clip, start, n) in enumerate(keys):
            if index >= skip:
                if clip not in loaded:
                    loaded[clip] = self._reader.store.get(self.clips[clip])
                item = self._reader.item(loaded[clip], start, n)
                item.update(stream_worker=worker, stream_num_workers=num_workers,
                            stream_index=index)
                if info is None:
                    self._record(worker, num_workers, index + 1)
                yield item
            remaining[clip] -= 1
            if remaining[clip] == 0:
                loaded.pop(clip, None)

    def _take_resume(self, worker: int, num_workers: int) -> int:
        """Items worker ``worker`` skips: its count from ``load_state_dict`` (used once)."""
        if self._resume and self._num_workers not in (None, num_workers):
            raise UsageError(f"this stream's state was saved with num_workers="
                             f"{self._num_workers}, the DataLoader has num_workers={num_workers}; "
                             "resume with the same num_workers (sharding depends on it)")
        skip = self._resume.pop(worker, 0)
        if torch.utils.data.get_worker_info() is None:
            self._consumed = {worker: skip} if skip else {}
            self._num_workers = num_workers
        return skip

    def _record(self, worker: int, num_workers: int, count: int) -> None:
        self._num_workers = num_workers
        self._consumed[worker] = max(self._consumed.get(worker, 0), count)

    def mark_consumed(self, batch: Mapping[str, Any]) -> None:
        """Record that the training loop used ``batch`` (a collated batch or one item).

        Needed with DataLoader workers (idempotent without them).
        """
        workers = np.atleast_1d(_numpy(batch["stream_worker"]))
        n_workers = np.atleast_1d(_numpy(batch["stream_num_workers"]))
        indices = np.atleast_1d(_numpy(batch["stream_index"]))
        for worker, num_workers, index in zip(workers, n_workers, indices):
            self._record(int(worker), int(num_workers), int(index) + 1)

    def state_dict(self) -> dict[str, Any]:
        """Where this rank's stream stands: settings, epoch and items consumed per worker."""
        config = {key: getattr(self, key) for key in _CONFIG_KEYS if key != "n_clips"}
        return {"format": _STATE_FORMAT, "version": 1, **config, "n_clips": len(self.clips),
                "epoch": self.epoch, "num_workers": self._num_workers,
                "consumed": {str(w): n for w, n in sorted(self._consumed.items())}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state`` (from ``state_dict``) on the next iteration.

        Raises:
            UsageError: not a stream state, or saved with other settings, rank or corpus.
        """
        if state.get("format") != _STATE_FORMAT:
            raise UsageError("not a ResponseNetStream state: expected the dict returned by "
                             "ResponseNetStream.state_dict()")
        mine = self.state_dict()
        different = [f"{k}: saved {state.get(k)!r}, now {mine[k]!r}"
                     for k in _CONFIG_KEYS if state.get(k) != mine[k]]
        if different:
            raise UsageError("cannot resume this stream from a state saved with other settings "
                             f"({'; '.join(different)}); create the stream with the saved ones")
        self.epoch = int(state["epoch"])
        self._resume = {int(w): int(n) for w, n in state["consumed"].items()}
        self._consumed = dict(self._resume)
        self._num_workers = state["num_workers"]


def _numpy(value: Any) -> np.ndarray:
    return value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
