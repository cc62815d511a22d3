"""What the baselines share: train-split reading, the neutral face, Chrono-Text repair, and the
state-per-clip base class that gives every baseline the same ``step`` and ``step_batch``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from responsenet.chrono import LASTING, PAUSE
from responsenet.data.clips import ClipData, ClipStore
from responsenet.data.index import ClipRef, scan_clips
from responsenet.data.vocab import ChronoVocab
from responsenet.errors import UsageError
from responsenet.eval.protocol import (
    FACE_DIM,
    ClipContext,
    ListenerChunk,
    ResponseModel,
    SpeakerChunk,
    samples_for,
)
from responsenet.schema import FRAME_WIDTHS

TRAIN_SPLIT = "train"


def neutral_face() -> np.ndarray:
    """The face used when no corpus is given: float32 [64], every blendshape 0 and the pose the
    top 3 rows of the identity transform (no rotation, no translation)."""
    face = np.zeros(FACE_DIM, np.float32)
    face[FRAME_WIDTHS["blendshapes"]:] = np.eye(3, 4, dtype=np.float32).reshape(-1)
    return face


def require_corpus(corpus: str | Path | None, baseline: str) -> Path:
    if corpus is None:
        raise UsageError(f"baseline {baseline!r} learns from the train split and needs a corpus: "
                         f"pass corpus=DIR (responsenet eval --data DIR)")
    return Path(corpus)


def train_refs(corpus: str | Path) -> list[ClipRef]:
    """Clips of the corpus's train split (UsageError naming the splits when there is none)."""
    refs = scan_clips(corpus, TRAIN_SPLIT)
    if not refs:
        raise UsageError(f"{corpus}: the {TRAIN_SPLIT!r} split holds no clips; the baselines "
                         "learn from it")
    return refs


def iter_clips(corpus: str | Path, refs: Sequence[ClipRef], modalities: Sequence[str],
               vocab: ChronoVocab | None = None) -> Iterator[ClipData]:
    """Load ``refs`` one at a time (nothing is cached)."""
    store = ClipStore(corpus, frozenset(modalities), vocab, cache_clips=0)
    for ref in refs:
        yield store.load(ref)


def train_mean_face(corpus: str | Path) -> np.ndarray:
    """Mean listener face of the train split over frames with a face: float32 [64].

    Raises:
        UsageError: no train clip has a listener frame with a face.
    """
    total, count = np.zeros(FACE_DIM, np.float64), 0
    for clip in iter_clips(corpus, train_refs(corpus), ["face"]):
        track = clip.tracks["listener"]
        total += track.face[track.face_mask].sum(axis=0, dtype=np.float64)
        count += int(track.face_mask.sum())
    if count == 0:
        raise UsageError(f"{corpus}: no listener frame of the {TRAIN_SPLIT!r} split has a face "
                         "(face_present is false everywhere); rebuild the face stage")
    return (total / count).astype(np.float32)


def repair_chrono(previous: str | None, token: str) -> str:
    """``token`` made valid after ``previous``: a ``[LASTING]`` at the stream start or after a
    ``[PAUSE]`` continues no word, so it becomes ``[PAUSE]`` (as ``chrono.decode`` reads it)."""
    if token == LASTING and previous in (None, PAUSE):
        return PAUSE
    return token


def silence(n_frames: int, model: Any) -> np.ndarray:
    """float32 zeros for ``n_frames`` frames of ``model``'s audio."""
    return np.zeros(samples_for(n_frames, model.fps, model.sample_rate), np.float32)


class StatefulBaseline(ResponseModel):
    """A baseline written as ``new_state(clip)`` and ``advance(state, obs)``.

    ``reset``/``step`` drive one clip; ``reset_batch``/``step_batch`` drive many in lock-step
    with one state per clip, so both paths give identical answers by construction.
    """

    chunk_frames = 1

    @classmethod
    def from_args(cls, *, corpus: str | Path | None = None, seed: int = 0,
                  **kwargs: Any) -> StatefulBaseline:
        """Build from ``--model-args`` plus the harness's data root and run seed."""
        return cls(corpus=corpus, seed=seed, **kwargs)

    def new_state(self, clip: ClipContext) -> Any:
        raise NotImplementedError

    def advance(self, state: Any, obs: SpeakerChunk) -> ListenerChunk:
        raise NotImplementedError

    def reset(self, clip: ClipContext) -> None:
        self.reset_batch([clip])

    def reset_batch(self, clips: Sequence[ClipContext]) -> None:
        """Start ``clips`` together; ``step_batch`` finds each one's state by ``clip_id``."""
        self._slots = slots_of(clips)
        self._states = [self.new_state(clip) for clip in clips]

    def step(self, obs: SpeakerChunk) -> ListenerChunk:
        return self.step_batch([obs])[0]

    def step_batch(self, obs: Sequence[SpeakerChunk]) -> list[ListenerChunk]:
        """One chunk for each clip still running (the harness leaves finished clips out)."""
        slots = place(getattr(self, "_slots", None), obs, type(self).__name__)
        return [self.advance(self._states[i], o) for i, o in zip(slots, obs)]


def slots_of(clips: Sequence[ClipContext]) -> dict[str, int]:
    """clip_id -> position in a ``reset_batch`` call."""
    return {clip.clip_id: i for i, clip in enumerate(clips)}


def place(slots: dict[str, int] | None, obs: Sequence[SpeakerChunk], model: str) -> list[int]:
    """Positions of ``obs`` in the last reset: by ``clip_id``, or the only clip when one was
    reset and the chunk carries no id. Raises UsageError for a chunk of a clip never reset."""
    if not slots:
        raise UsageError(f"{model}.step got a chunk before reset(clip) or reset_batch(clips)")
    out = []
    for o in obs:
        if o.clip_id in slots:
            out.append(slots[o.clip_id])
        elif len(slots) == 1 and not o.clip_id:
            out.append(0)
        else:
            raise UsageError(f"{model}.step got a chunk of clip {o.clip_id or '(no id)'!r} but "
                             f"was reset for {sorted(slots)}; call reset(clip) or "
                             "reset_batch(clips) first")
    return out
