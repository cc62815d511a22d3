"""The streaming harness: it owns the clock and hands a model the speaker one chunk at a time.

A :class:`_Session` holds one clip's full speaker stream privately and gives out *copies* of the
frames ``[t, t + chunk)`` only (a view would expose the whole array through ``.base``), so a model
never sees a future frame. Clips run one after another, or ``batch_clips`` at a time in lock-step
through ``step_batch`` so that a GPU model runs one batched forward pass per step. Every model call
is timed apart from the harness's own work (chunk slicing, output checks, storing).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from responsenet.errors import ResponseNetError
from responsenet.eval.clips import EvalClip
from responsenet.eval.protocol import (
    FACE_DIM,
    OUTPUT_FIELDS,
    ListenerChunk,
    SpeakerChunk,
    check_output,
    samples_for,
)


@dataclass
class ClipRun:
    """What the model generated for one clip, and how long it took.

    Attributes:
        face: float32 [T, 64] or None; audio: float32 [S] or None; chrono: T tokens or None;
        video: uint8 [T, H, W, 3] or None; only the kinds in the model's ``outputs`` are kept.
        reason: None when the clip completed, else ``input_error`` (the speaker's media
            cannot be read), ``reset_error``, ``step_error`` or ``bad_output``; ``error`` the
            message naming the clip and frame.
        step_seconds: wall seconds of each model call that served this clip.
        share_seconds: this clip's share of each call (the call's seconds / clips in it).
        overhead_seconds: harness seconds per step (slicing, checks, storing).
    """

    clip_id: str
    n_frames: int
    fps: float
    face: np.ndarray | None = None
    audio: np.ndarray | None = None
    chrono: list[str] | None = None
    video: np.ndarray | None = None
    reason: str | None = None
    error: str | None = None
    step_seconds: list[float] = field(default_factory=list)
    share_seconds: list[float] = field(default_factory=list)
    overhead_seconds: list[float] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.reason is None


class _Session:
    """One clip in flight: its private speaker stream and the listener frames received so far."""

    def __init__(self, clip: EvalClip, model: Any, chunk_frames: int, video: np.ndarray | None):
        self.clip, self.model, self.chunk = clip, model, chunk_frames
        self.sample_rate, self.fps = int(model.sample_rate), float(clip.ref.fps)
        self._audio = clip.speaker_audio(self.sample_rate)
        self._video = video
        self.next_frame = 0
        self.outputs = frozenset(model.outputs)
        self.parts: dict[str, list] = {kind: [] for kind in self.outputs}
        self.run = ClipRun(clip.clip_id, clip.n_frames, self.fps)

    @property
    def done(self) -> bool:
        return self.run.reason is not None or self.next_frame >= self.clip.n_frames

    def chunk_at(self) -> SpeakerChunk:
        """Copies of the next chunk's frames (never more than the clip has)."""
        a = self.next_frame
        b = min(a + self.chunk, self.clip.n_frames)
        spk = self.clip.speaker
        s0 = samples_for(a, self.fps, self.sample_rate)
        s1 = samples_for(b, self.fps, self.sample_rate)
        return SpeakerChunk(
            start_frame=a, n_frames=b - a, audio=self._audio[s0:s1].copy(),
            face=spk.face[a:b].copy(), face_mask=spk.face_mask[a:b].copy(),
            chrono=list(spk.chrono[a:b]),
            video=None if self._video is None else self._video[a:b].copy(),
            clip_id=self.clip.clip_id)

    def accept(self, obs: SpeakerChunk, out: ListenerChunk) -> None:
        problems = check_output(out, self.model, obs, self.clip.clip_id)
        if problems:
            self.fail("bad_output", "; ".join(problems))
            return
        for kind in self.outputs:
            value = getattr(out, OUTPUT_FIELDS[kind])
            self.parts[kind].append(list(value) if kind == "text" else np.array(value))
        self.next_frame = obs.start_frame + obs.n_frames

    def fail(self, reason: str, message: str) -> None:
        self.run.reason, self.run.error = reason, message

    def finish(self) -> ClipRun:
        run = self.run
        if run.ok:
            for kind, parts in self.parts.items():
                if kind == "text":
                    run.chrono = [token for part in parts for token in part]
                elif kind == "face":
                    run.face = np.concatenate(parts).astype(np.float32).reshape(-1, FACE_DIM)
                elif kind == "audio":
                    run.audio = np.concatenate(parts).astype(np.float32)
                else:
                    run.video = np.concatenate(parts).astype(np.uint8)
        return run


def _exception_text(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def _reset(model: Any, sessions: list[_Session]) -> list[_Session]:
    """Reset the model for ``sessions`` (``reset_batch`` when it has one); drop failed clips."""
    contexts = [s.clip.context(s.sample_rate) for s in sessions]
    reset_batch = getattr(model, "reset_batch", None)
    if len(sessions) > 1 and callable(reset_batch):
        try:
            reset_batch(contexts)
        except Exception as e:  # noqa: BLE001 - the plugin failed: recorded for its clips
            for s in sessions:
                s.fail("reset_error", f"clip {s.clip.clip_id}: reset_batch raised "
                       f"{_exception_text(e)}")
        return [s for s in sessions if not s.done]
    for s, ctx in zip(sessions, contexts):
        try:
            model.reset(ctx)
        except Exception as e:  # noqa: BLE001 - the plugin failed: recorded for its clips
            s.fail("reset_error", f"clip {s.clip.clip_id}: reset raised {_exception_text(e)}")
    return [s for s in sessions if not s.done]


def _step_all(model: Any, active: list[_Session], batched: bool) -> None:
    """One lock-step: every active clip gets its next chunk and answers it."""
    started = time.perf_counter()
    chunks = [s.chunk_at() for s in active]
    prepared = time.perf_counter()
    if batched:
        try:
            outs = model.step_batch(chunks)
            if len(outs) != len(chunks):
                raise ValueError(f"step_batch returned {len(outs)} chunks for {len(chunks)} "
                                 "clips")
        except Exception as e:  # noqa: BLE001 - the plugin failed: recorded for its clips
            ids = ", ".join(s.clip.clip_id for s in active)
            for s, obs in zip(active, chunks):
                s.fail("step_error", f"clip {s.clip.clip_id} frame {obs.start_frame}: "
                       f"step_batch (clips {ids}) raised {_exception_text(e)}")
            return
        model_seconds = time.perf_counter() - prepared
        accepted = time.perf_counter()
        for s, obs, out in zip(active, chunks, outs):
            s.run.step_seconds.append(model_seconds)
            s.run.share_seconds.append(model_seconds / len(active))
            s.accept(obs, out)
        overhead = (prepared - started) + (time.perf_counter() - accepted)
        for s in active:
            s.run.overhead_seconds.append(overhead / len(active))
        return
    for s, obs in zip(active, chunks):
        t0 = time.perf_counter()
        try:
            out = model.step(obs)
        except Exception as e:  # noqa: BLE001 - the plugin failed: recorded for its clips
            s.fail("step_error", f"clip {s.clip.clip_id} frame {obs.start_frame}: step raised "
                   f"{_exception_text(e)}")
            continue
        t1 = time.perf_counter()
        s.accept(obs, out)
        s.run.step_seconds.append(t1 - t0)
        s.run.share_seconds.append(t1 - t0)
        s.run.overhead_seconds.append((prepared - started) / len(active)
                                      + time.perf_counter() - t1)


def generate(model: Any, clips: Iterable[EvalClip], *, offline: bool = False,
             batch_clips: int = 1, load_video: Callable[[EvalClip], np.ndarray] | None = None
             ) -> Iterator[ClipRun]:
    """Stream every clip through ``model``; yield one :class:`ClipRun` per clip, in order.

    Args:
        offline: hand over the whole speaker stream in one step (labelled offline in reports).
        batch_clips: clips run in lock-step; through ``step_batch`` when the model has it.
        load_video: speaker video frames uint8 [T, H, W, 3] for models with ``"video"`` in
            their ``inputs``.
    """
    batched = batch_clips > 1 and callable(getattr(model, "step_batch", None))
    wants_video = load_video is not None and "video" in set(getattr(model, "inputs", ()))
    pending: list[EvalClip] = []
    for clip in clips:
        pending.append(clip)
        if len(pending) >= max(1, batch_clips):
            yield from _run_batch(model, pending, offline, batched, load_video if wants_video
                                  else None)
            pending = []
    if pending:
        yield from _run_batch(model, pending, offline, batched,
                              load_video if wants_video else None)


def _run_batch(model: Any, clips: list[EvalClip], offline: bool, batched: bool,
               load_video: Callable[[EvalClip], np.ndarray] | None) -> Iterator[ClipRun]:
    sessions, broken = [], []
    for clip in clips:
        chunk = clip.n_frames if offline else int(model.chunk_frames)
        try:
            video = None if load_video is None else load_video(clip)
            sessions.append(_Session(clip, model, max(1, chunk), video))
        except (ResponseNetError, OSError, ValueError) as e:  # unreadable speaker media
            broken.append(ClipRun(clip.clip_id, clip.n_frames, float(clip.ref.fps),
                                  reason="input_error",
                                  error=f"clip {clip.clip_id}: cannot read the speaker's "
                                  f"media: {_exception_text(e)}"))
    yield from broken
    active = _reset(model, sessions)
    while active:
        _step_all(model, active, batched)
        active = [s for s in active if not s.done]
    for s in sessions:
        yield s.finish()
