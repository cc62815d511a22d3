"""The clips of a corpus split as the benchmark sees them: speaker streams in, listener truth out.

``load_eval_clip`` reads one clip's two rows (speaker and listener) with the per-frame arrays the
harness hands to a model (speaker) and the references the metrics compare with (listener).
Dimension legend: ``T`` = frames, ``S`` = audio samples at 16 kHz (``T * 640`` at 25 fps).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from responsenet.chrono import plain_text
from responsenet.data.clips import FACE_DIM, ClipStore
from responsenet.data.index import ClipRef, scan_clips
from responsenet.errors import StageFailure, UsageError
from responsenet.eval.protocol import ClipContext, samples_for
from responsenet.media import decode_frames
from responsenet.wavio import read_wav, resample

_MODALITIES = frozenset({"face", "words"})


@dataclass
class Track:
    """One role's per-frame data.

    Attributes:
        face: float32 [T, 64]; face_mask: bool [T]; vad: bool [T]; chrono: T tokens.
        audio_path, video_path: media files of the track (None when the corpus has none).
    """

    face: np.ndarray
    face_mask: np.ndarray
    vad: np.ndarray
    chrono: list[str]
    audio_path: Path | None
    video_path: Path | None

    @property
    def text(self) -> str:
        """The track's words in order, one string."""
        return plain_text(self.chrono)


@dataclass
class EvalClip:
    """A clip ready for the harness: its speaker stream and the real listener."""

    ref: ClipRef
    speaker: Track
    listener: Track
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def clip_id(self) -> str:
        return self.ref.clip_id

    @property
    def n_frames(self) -> int:
        return self.ref.n_frames

    def context(self, sample_rate: int) -> ClipContext:
        return ClipContext(clip_id=self.clip_id, fps=self.ref.fps, sample_rate=sample_rate,
                           n_frames=self.n_frames, history=tuple(self.history))

    def speaker_audio(self, sample_rate: int) -> np.ndarray:
        """float32 [S] speaker audio at ``sample_rate``, cut or zero-padded to the clip length
        (zeros when the corpus holds no speaker audio)."""
        n = samples_for(self.n_frames, self.ref.fps, sample_rate)
        out = np.zeros(n, np.float32)
        if self.speaker.audio_path is None:
            return out
        audio, rate = read_wav(self.speaker.audio_path)
        if rate != sample_rate:
            audio = resample(audio, rate, sample_rate)
        out[:min(n, len(audio))] = audio[:n]
        return out


    def speaker_video(self, size: tuple[int, int]) -> np.ndarray:
        """uint8 [T, H, W, 3] speaker frames scaled to ``size`` = (width, height); a video
        shorter than the clip repeats its last frame.

        Raises:
            UsageError: the corpus holds no speaker video for this clip.
            StageFailure: ``corrupt_media`` when the video does not decode.
        """
        if self.speaker.video_path is None:
            raise UsageError(f"clip {self.clip_id}: the corpus holds no speaker video")
        frames = list(itertools.islice(decode_frames(self.speaker.video_path, size=size),
                                       self.n_frames))
        if not frames:
            raise StageFailure("corrupt_media", f"{self.speaker.video_path}: no frames")
        frames += [frames[-1]] * (self.n_frames - len(frames))
        return np.stack(frames)


def eval_refs(root: str | Path, split: str, limit: int | None = None) -> list[ClipRef]:
    """The clips of ``split`` in a stable order (by clip id), at most ``limit``."""
    refs = sorted(scan_clips(root, split), key=lambda r: r.clip_id)
    if not refs:
        raise UsageError(f"{root}: split {split!r} holds no clips")
    return refs[:limit] if limit else refs


class EvalClipReader:
    """Reads :class:`EvalClip` objects from one corpus (file handles kept per process)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._store = ClipStore(self.root, _MODALITIES, vocab=None, cache_clips=0)

    def load(self, ref: ClipRef) -> EvalClip:
        data = self._store.load(ref)
        extra = _strings(ref)
        tracks = {}
        for role, track in data.tracks.items():
            face = track.face if track.face is not None else np.zeros((ref.n_frames, FACE_DIM),
                                                                      np.float32)
            tracks[role] = Track(face=face, face_mask=np.asarray(track.face_mask, bool),
                                 vad=np.asarray(track.vad, bool), chrono=extra[role]["chrono"],
                                 audio_path=track.audio_path, video_path=track.video_path)
        return EvalClip(ref, tracks["speaker"], tracks["listener"],
                        history=extra["speaker"]["history"])


def _strings(ref: ClipRef) -> dict[str, dict[str, Any]]:
    """Chrono tokens and history of both rows of ``ref``, by role."""
    table = pq.ParquetFile(ref.shard).read_row_groups(
        list(ref.row_groups), columns=["clip_id", "role", "chrono", "history"], use_threads=False)
    out = {}
    for row in table.to_pylist():
        if row["clip_id"] == ref.clip_id:
            out[row["role"]] = {"chrono": list(row["chrono"]), "history": row["history"] or []}
    return out
