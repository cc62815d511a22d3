"""Test models for the harness: each checks or breaks one part of the contract."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from responsenet.eval import ListenerChunk, ResponseModel, samples_for

CALLS = {"step": 0, "step_batch": 0}


def _answer(obs, fill: float = 0.0, sample_rate: int = 16000) -> ListenerChunk:
    face = np.full((obs.n_frames, 64), fill, np.float32)
    return ListenerChunk(face=face, chrono=["[PAUSE]"] * obs.n_frames,
                         audio=np.zeros(samples_for(obs.n_frames, 25, sample_rate), np.float32))


class Recorder(ResponseModel):
    """Echoes the speaker's face back and records every chunk it was given."""

    outputs = frozenset({"face", "text", "audio"})

    def __init__(self, chunk_frames: int = 1):
        self.chunk_frames = chunk_frames
        self.seen: dict[str, list] = {}
        self.contexts = []

    def reset(self, clip):
        self.contexts.append(clip)
        self.seen[clip.clip_id] = []
        self.current = clip.clip_id

    def step(self, obs):
        CALLS["step"] += 1
        self.seen[self.current].append(obs)
        out = _answer(obs)
        out.face[:] = obs.face
        return out


class LookAhead(ResponseModel):
    """Tries every way it knows to reach a frame it was not given."""

    outputs = frozenset({"face"})

    def reset(self, clip):
        self.n = clip.n_frames

    def step(self, obs):
        leaks = []
        for name in ("audio", "face", "face_mask"):
            array = getattr(obs, name)
            if array.base is not None and np.size(array.base) > np.size(array):
                leaks.append(name)
        if leaks:
            raise RuntimeError(f"saw more than the chunk through {leaks}")
        return ListenerChunk(face=np.zeros((obs.n_frames, 64), np.float32))


class Batched(Recorder):
    """Recorder with a lock-step path; answers are identical to step's."""

    def reset_batch(self, clips):
        self.batch_sizes = getattr(self, "batch_sizes", [])
        for clip in clips:
            self.reset(clip)

    def step_batch(self, chunks):
        CALLS["step_batch"] += 1
        self.batch_sizes.append(len(chunks))
        outs = []
        for obs in chunks:
            self.seen[obs.clip_id].append(obs)
            out = _answer(obs)
            out.face[:] = obs.face
            outs.append(out)
        return outs


class Flaky(ResponseModel):
    """Breaks on one clip: raises, or returns the wrong length, at frame 10."""

    outputs = frozenset({"face", "text"})

    def __init__(self, bad_clip: str = "", how: str = "raise"):
        self.bad_clip, self.how = bad_clip, how

    def reset(self, clip):
        self.clip = clip.clip_id

    def step(self, obs):
        if self.clip == self.bad_clip and obs.start_frame == 10:
            if self.how == "raise":
                raise ValueError("model exploded")
            return ListenerChunk(face=np.zeros((obs.n_frames + 1, 64), np.float32),
                                 chrono=["[PAUSE]"] * obs.n_frames)
        return _answer(obs, fill=0.5)


class Watcher(ResponseModel):
    """Asks for the speaker's video; answers with frames whose grey level encodes the frame."""

    outputs = frozenset({"face", "video"})
    inputs = frozenset({"audio", "face", "video"})
    video_size = (32, 24)
    chunk_frames = 4

    seen: ClassVar[dict[str, list[float]]] = {}  # clip id -> mean grey level of each speaker frame

    def reset(self, clip):
        self.means = Watcher.seen[clip.clip_id] = []

    def step(self, obs):
        self.means += [float(f.mean()) for f in obs.video]
        frames = np.stack([np.full((24, 32, 3), 10 * (obs.start_frame + i), np.uint8)
                           for i in range(obs.n_frames)])
        return ListenerChunk(face=np.zeros((obs.n_frames, 64), np.float32), video=frames)
