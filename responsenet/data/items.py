"""Build one window's item dict (both tracks, frame-aligned) from a loaded clip.

The item layout is documented on ``responsenet.data.ResponseNetDataset`` and in docs/data.md.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from responsenet.data.clips import ClipData, ClipStore, TrackData
from responsenet.data.index import ClipRef, split_names
from responsenet.data.media import read_audio_window, read_video_window
from responsenet.data.vocab import ChronoVocab
from responsenet.errors import UsageError
from responsenet.schema import ROLES

MODALITIES: tuple[str, ...] = ("face", "chrono", "words", "audio", "video")
SAMPLE_RATE = 16000


def check_modalities(modalities: Any) -> frozenset[str]:
    """The modalities as a set; raises UsageError naming an unknown one and the known ones."""
    if isinstance(modalities, str):
        modalities = (modalities,)
    chosen = frozenset(modalities)
    for name in sorted(chosen - set(MODALITIES)):
        close = difflib.get_close_matches(name, MODALITIES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UsageError(f"unknown modality {name!r}.{hint} Known: {', '.join(MODALITIES)}")
    return chosen


def check_role(target_role: str) -> str:
    if target_role not in ROLES:
        raise UsageError(f"target_role must be one of {list(ROLES)}, got {target_role!r}")
    return target_role


def resolve_vocab(root: str | Path, vocab: ChronoVocab | str | Path | None,
                  modalities: frozenset[str]) -> ChronoVocab | None:
    """The vocabulary to encode Chrono-Text with: given, loaded from a JSON path, or (None)
    built from the corpus's ``train`` split (every split when there is no ``train``)."""
    if "chrono" not in modalities:
        return None
    if isinstance(vocab, ChronoVocab):
        return vocab
    if vocab is not None:
        return ChronoVocab.load(vocab)
    return ChronoVocab.from_corpus(root, "train" if "train" in split_names(root) else None)


class WindowReader:
    """Turns (clip, start frame, frame count) into an item dict.

    Args:
        store: loads clips (its modalities decide which shard columns are read).
        target_role: ``listener`` or ``speaker``, stored as ``item["target"]``.
        video_size: ``(width, height)`` to scale video frames to; None keeps the file's size.
    """

    def __init__(self, store: ClipStore, target_role: str,
                 video_size: tuple[int, int] | None = None):
        self.store, self.target_role, self.video_size = store, target_role, video_size

    def item(self, clip: ClipData, start_frame: int, n_frames: int) -> dict[str, Any]:
        ref = clip.ref
        item: dict[str, Any] = {"clip_id": ref.clip_id, "split": ref.split,
                                "start_frame": start_frame, "n_frames": n_frames,
                                "fps": ref.fps, "target": self.target_role}
        for role in ROLES:
            item.update(self._track_item(ref, role, clip.tracks[role], start_frame, n_frames))
        return item

    def _track_item(self, ref: ClipRef, role: str, track: TrackData, start: int,
                    n: int) -> dict[str, Any]:
        frames, modalities = slice(start, start + n), self.store.modalities
        out: dict[str, Any] = {}
        if "face" in modalities:
            out[f"{role}_face"] = torch.from_numpy(track.face[frames].copy())
            out[f"{role}_face_mask"] = torch.from_numpy(track.face_mask[frames].copy())
        out[f"{role}_vad"] = torch.from_numpy(track.vad[frames].copy())
        if "chrono" in modalities:
            out[f"{role}_chrono"] = torch.from_numpy(track.chrono[frames].copy())
        if "words" in modalities:
            out[f"{role}_words"] = track.words.in_window(start, n, ref.fps)
        if "audio" in modalities:
            first, stop = (round(f * SAMPLE_RATE / ref.fps) for f in (start, start + n))
            path = _media(track.audio_path, ref, role, "audio")
            out[f"{role}_audio"] = torch.from_numpy(
                read_audio_window(path, first, stop - first, SAMPLE_RATE))
        if "video" in modalities:
            path = _media(track.video_path, ref, role, "video")
            out[f"{role}_video"] = torch.from_numpy(
                read_video_window(path, start, n, ref.fps, self.video_size))
        return out


def _media(path: Path | None, ref: ClipRef, role: str, kind: str) -> Path:
    if path is None:
        raise UsageError(f"clip {ref.clip_id} role {role} has no {kind}_path in {ref.shard}; "
                         f"leave {kind!r} out of modalities or rebuild the shard stage")
    return path


def window_table(clips: list[ClipRef], starts: list[list[int]], window_frames: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat (clip index, start frame, frame count) arrays, int64 [N] each, of all windows."""
    clip_index = np.repeat(np.arange(len(clips)), [len(s) for s in starts]).astype(np.int64)
    start = np.array([f for s in starts for f in s], np.int64)
    n_frames = np.array([ref.n_frames for ref in clips], np.int64)[clip_index]
    return clip_index, start, np.minimum(start + window_frames, n_frames) - start
