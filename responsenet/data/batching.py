"""Batch window items of different lengths: pad to the longest window and add masks."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from responsenet.schema import ROLES

#: Item keys (after the ``{role}_`` prefix) whose first axis is frames.
FRAME_KEYS: tuple[str, ...] = ("face", "face_mask", "vad", "chrono", "video")
#: Item keys (after the prefix) whose first axis is audio samples.
SAMPLE_KEYS: tuple[str, ...] = ("audio",)


def collate(batch: Sequence[Mapping[str, Any]], pad_to_frames: int | None = None
            ) -> dict[str, Any]:
    """Collate window items (``ResponseNetDataset`` / ``ResponseNetStream``) into a batch.

    Per-frame tensors are padded with zeros (``False`` for masks, ``[PAD]`` = 0 for Chrono-Text
    ids) to T = the longest window (or ``pad_to_frames``), audio to S = the longest audio.
    Legend: B = batch size, T = frames, S = samples, H x W = video frame size, ``{r}`` = role.

    Returns:
        The items' keys, batched: per-frame tensors ``[B, T, ...]``, ``{r}_audio`` float32
        ``[B, S]``; ints and floats (``start_frame``, ``n_frames``, ``fps``, ``stream_*``) as
        tensors ``[B]``; strings and word lists as lists of length B. Added:
        ``{r}_frame_mask`` bool [B, T] (True on a window's real frames; the same for both
        roles) and, with audio, ``{r}_audio_mask`` bool [B, S].

    Raises:
        ValueError: the batch is empty, or an item is longer than ``pad_to_frames``.
    """
    if not batch:
        raise ValueError("collate needs at least one item")
    n_frames = torch.tensor([item["n_frames"] for item in batch], dtype=torch.int64)
    longest = int(n_frames.max())
    if pad_to_frames is not None and longest > pad_to_frames:
        raise ValueError(f"a window has {longest} frames, more than pad_to_frames="
                         f"{pad_to_frames}; raise pad_to_frames to the dataset's window_frames")
    frames = pad_to_frames or longest
    out: dict[str, Any] = {}
    for key in batch[0]:
        values = [item[key] for item in batch]
        kind = _kind(key)
        if kind == "frames":
            out[key] = _pad(values, frames)
        elif kind == "samples":
            samples = max(round(frames * len(v) / item["n_frames"]) if item["n_frames"] else 0
                          for v, item in zip(values, batch))
            out[key] = _pad(values, max(samples, max(len(v) for v in values)))
            out[f"{key}_mask"] = _mask([len(v) for v in values], out[key].shape[1])
        else:
            out[key] = _plain(values)
    for role in ROLES:
        if f"{role}_vad" in out:
            out[f"{role}_frame_mask"] = _mask(n_frames.tolist(), frames)
    return out


def _kind(key: str) -> str:
    role, _, rest = key.partition("_")
    if role in ROLES:
        if rest in FRAME_KEYS:
            return "frames"
        if rest in SAMPLE_KEYS:
            return "samples"
    return "plain"


def _pad(tensors: list[torch.Tensor], length: int) -> torch.Tensor:
    """Stack ``tensors`` (first axes of different lengths) as ``[B, length, ...]``, zeros after."""
    out = _empty(tensors[0], (len(tensors), length, *tensors[0].shape[1:]))
    if all(len(t) == length for t in tensors):
        return torch.stack(tensors, out=out)
    for i, tensor in enumerate(tensors):
        out[i, : len(tensor)] = tensor
        out[i, len(tensor):] = 0
    return out


def _empty(like: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised tensor like ``like``; in a DataLoader worker it lives in shared memory,
    so sending the batch to the main process does not copy it again (as ``default_collate``)."""
    if torch.utils.data.get_worker_info() is None:
        return like.new_empty(shape)
    storage = like._typed_storage()._new_shared(math.prod(shape), device=like.device)
    return like.new(storage).resize_(*shape)


def _mask(lengths: list[int], length: int) -> torch.Tensor:
    return torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]


def _plain(values: list[Any]) -> Any:
    first = values[0]
    if isinstance(first, torch.Tensor):
        return torch.stack(values) if all(v.shape == first.shape for v in values) else values
    if isinstance(first, bool) or not isinstance(first, int | float):
        return values
    return torch.tensor(values, dtype=torch.int64 if isinstance(first, int) else torch.float64)
