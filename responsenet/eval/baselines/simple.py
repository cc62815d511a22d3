"""Reference listeners that learn nothing or only look things up: silent, mirror, random train
clip and nearest neighbour. All are causal, one frame per step, and CPU-only.

Every class takes ``corpus`` (the data root, whose ``train`` split it reads) and ``seed`` (the
run seed) as keyword arguments, as the harness passes them, plus its own options.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from responsenet.chrono import PAUSE
from responsenet.data.clips import ClipStore
from responsenet.data.vocab import ChronoVocab
from responsenet.errors import UsageError
from responsenet.eval.baselines.common import (
    StatefulBaseline,
    iter_clips,
    neutral_face,
    place,
    repair_chrono,
    require_corpus,
    silence,
    train_mean_face,
    train_refs,
)
from responsenet.eval.protocol import FACE_DIM, ClipContext, ListenerChunk, SpeakerChunk


class SilentListener(StatefulBaseline):
    """Says nothing and holds still: ``[PAUSE]`` tokens, silent audio, and a constant face.

    The face is the mean listener face of the train split (frames with a face) when ``corpus``
    is given, else ``neutral_face()`` (blendshapes 0, identity pose).
    """

    outputs = frozenset({"face", "text", "audio"})

    def __init__(self, *, corpus: str | Path | None = None, seed: int = 0):
        self.face = neutral_face() if corpus is None else train_mean_face(corpus)

    def new_state(self, clip: ClipContext) -> None:
        return None

    def advance(self, state: None, obs: SpeakerChunk) -> ListenerChunk:
        n = obs.n_frames
        return ListenerChunk(face=np.tile(self.face, (n, 1)), chrono=[PAUSE] * n,
                             audio=silence(n, self))


class MirrorListener(StatefulBaseline):
    """Copies the speaker's face ``delay_frames`` frames late, says nothing.

    Output frame t is speaker frame ``t - delay_frames`` as received (masked frames included).
    For ``t < delay_frames`` no such frame exists yet, so the output is the train mean listener
    face (``neutral_face()`` without a corpus).

    Args:
        delay_frames: the lag in frames (>= 0; 0 copies the current frame).
    """

    outputs = frozenset({"face", "text"})

    def __init__(self, *, corpus: str | Path | None = None, seed: int = 0,
                 delay_frames: int = 8):
        if int(delay_frames) < 0:
            raise UsageError(f"mirror: delay_frames must be >= 0, got {delay_frames}")
        self.delay_frames = int(delay_frames)
        self.fallback = neutral_face() if corpus is None else train_mean_face(corpus)

    def new_state(self, clip: ClipContext) -> list[np.ndarray]:
        return []  # the last delay_frames + 1 speaker frames, oldest first

    def advance(self, state: list[np.ndarray], obs: SpeakerChunk) -> ListenerChunk:
        faces = np.empty((obs.n_frames, FACE_DIM), np.float32)
        for i in range(obs.n_frames):
            state.append(np.asarray(obs.face[i], np.float32))
            if len(state) > self.delay_frames + 1:
                state.pop(0)
            full = len(state) == self.delay_frames + 1
            faces[i] = state[0] if full else self.fallback
        return ListenerChunk(face=faces, chrono=[PAUSE] * obs.n_frames)


@dataclass
class _Replay:
    face: np.ndarray  # float32 [T, 64]
    chrono: list[str]  # T tokens
    frame: int  # next frame of the source clip to play
    previous: str | None = None


class RandomTrainListener(StatefulBaseline):
    """Replays a real train-split listener: face and Chrono-Text, looped or cut to length.

    The train clip and the start frame inside it are drawn from
    ``numpy.random.default_rng([seed, crc32(clip_id)])``, so a (seed, clip) pair always gets the
    same replay and another seed usually another one. Frames play as stored (masked frames
    included); a ``[LASTING]`` that would follow ``[PAUSE]`` (start offset, loop seam) becomes
    ``[PAUSE]``.
    """

    outputs = frozenset({"face", "text"})

    def __init__(self, *, corpus: str | Path | None = None, seed: int = 0):
        self.corpus = require_corpus(corpus, "random_train")
        self.seed = int(seed)
        self.refs = train_refs(self.corpus)
        self.vocab = ChronoVocab.from_corpus(self.corpus, "train")
        self._store = ClipStore(self.corpus, frozenset({"face", "chrono"}), self.vocab)

    def pick(self, clip_id: str) -> tuple[int, int]:
        """(index into ``refs``, start frame) replayed for ``clip_id``."""
        rng = np.random.default_rng([self.seed, zlib.crc32(clip_id.encode())])
        index = int(rng.integers(len(self.refs)))
        return index, int(rng.integers(self.refs[index].n_frames))

    def new_state(self, clip: ClipContext) -> _Replay:
        index, start = self.pick(clip.clip_id)
        track = self._store.get(self.refs[index]).tracks["listener"]
        return _Replay(track.face, self.vocab.decode(track.chrono), start)

    def advance(self, state: _Replay, obs: SpeakerChunk) -> ListenerChunk:
        rows = (state.frame + np.arange(obs.n_frames)) % len(state.face)
        tokens = []
        for row in rows:
            state.previous = repair_chrono(state.previous, state.chrono[row])
            tokens.append(state.previous)
        state.frame += obs.n_frames
        return ListenerChunk(face=state.face[rows].copy(), chrono=tokens)


@dataclass
class _Window:
    frames: list[np.ndarray] = field(default_factory=list)  # last window_frames, standardised
    previous: str | None = None


class NearestListener(StatefulBaseline):
    """Answers each frame with the listener frame of the closest train-split speaker moment.

    A moment is the speaker's last ``window_frames`` face frames (frames before the clip start
    repeat its first frame), each face dimension standardised by the train speaker mean and
    standard deviation. The search is exact brute force over at most ``max_train_frames`` train
    moments (a seeded random subset when there are more): squared distances by one matrix
    product in float64, the 8 best re-ranked by direct differences, ties to the earlier moment.
    The answer is the listener face and Chrono-Text token paired with the winning moment
    (``[LASTING]`` after ``[PAUSE]`` becomes ``[PAUSE]``). ``step_batch`` searches all clips'
    queries in one product.

    Args:
        window_frames: frames per moment (>= 1).
        max_train_frames: most train moments kept (>= 1).
    """

    outputs = frozenset({"face", "text"})

    def __init__(self, *, corpus: str | Path | None = None, seed: int = 0,
                 window_frames: int = 5, max_train_frames: int = 20000):
        corpus = require_corpus(corpus, "nearest")
        if int(window_frames) < 1 or int(max_train_frames) < 1:
            raise UsageError(f"nearest: window_frames and max_train_frames must be >= 1, got "
                             f"{window_frames}, {max_train_frames}")
        self.window_frames = int(window_frames)
        refs = train_refs(corpus)
        keep = np.arange(sum(ref.n_frames for ref in refs))
        if len(keep) > int(max_train_frames):
            rng = np.random.default_rng(int(seed))
            keep = np.sort(rng.choice(len(keep), int(max_train_frames), replace=False))
        vocab = ChronoVocab.from_corpus(corpus, "train")
        sums, windows, faces, self.tokens = np.zeros((2, FACE_DIM)), [], [], []
        first = 0
        for clip in iter_clips(corpus, refs, ["face", "chrono"], vocab):
            speaker, listener = clip.tracks["speaker"], clip.tracks["listener"]
            rows = keep[(keep >= first) & (keep < first + clip.ref.n_frames)] - first
            first += clip.ref.n_frames
            sums += [speaker.face.sum(axis=0, dtype=np.float64),
                     (speaker.face.astype(np.float64) ** 2).sum(axis=0)]
            windows.append(self._windows(speaker.face.astype(np.float64), rows))
            faces.append(listener.face[rows])
            tokens = vocab.decode(listener.chrono)
            self.tokens += [tokens[row] for row in rows]
        self.mean = sums[0] / first
        self.std = np.maximum(np.sqrt(np.maximum(sums[1] / first - self.mean**2, 0.0)), 1e-6)
        tile = (1, self.window_frames)
        self.keys = (np.concatenate(windows) - np.tile(self.mean, tile)) / np.tile(self.std, tile)
        self.key_norms = np.einsum("nd,nd->n", self.keys, self.keys)
        self.faces = np.concatenate(faces)

    def _standardise(self, face: np.ndarray) -> np.ndarray:
        return (np.asarray(face, np.float64) - self.mean) / self.std

    def _windows(self, frames: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """frames [T, 64] -> [len(rows), window_frames * 64]: the row for frame t holds frames
        t-w+1 .. t, oldest first (indices below 0 clamped to 0)."""
        index = rows[:, None] + np.arange(1 - self.window_frames, 1)[None, :]
        return frames[np.maximum(index, 0)].reshape(len(rows), -1)

    def nearest(self, queries: np.ndarray) -> np.ndarray:
        """Indices of the nearest train moments: queries float64 [m, D] -> int64 [m]."""
        # one matrix-vector product per query: OpenBLAS runs small matrix-matrix products on
        # all its threads, which on a busy 2-core machine made a batch of 4 queries 25x slower
        rough = self.key_norms[None, :] - 2.0 * np.stack([self.keys @ q for q in queries])
        k = min(8, len(self.keys))
        best = np.argpartition(rough, k - 1, axis=1)[:, :k]
        best.sort(axis=1)
        exact = ((self.keys[best] - queries[:, None, :]) ** 2).sum(axis=2)
        return best[np.arange(len(queries)), np.argmin(exact, axis=1)]

    def new_state(self, clip: ClipContext) -> _Window:
        return _Window()

    def queries(self, state: _Window, obs: SpeakerChunk) -> np.ndarray:
        """Push the chunk's frames into ``state``: one query row per frame, [n, D]."""
        rows = []
        for frame in self._standardise(obs.face):
            state.frames = [*state.frames[1:], frame] if state.frames else \
                [frame] * self.window_frames
            rows.append(np.concatenate(state.frames))
        return np.asarray(rows).reshape(obs.n_frames, -1)

    def answer(self, state: _Window, index: np.ndarray) -> ListenerChunk:
        tokens = []
        for i in index:
            state.previous = repair_chrono(state.previous, self.tokens[i])
            tokens.append(state.previous)
        return ListenerChunk(face=self.faces[index].astype(np.float32), chrono=tokens)

    def advance(self, state: _Window, obs: SpeakerChunk) -> ListenerChunk:
        return self.answer(state, self.nearest(self.queries(state, obs)))

    def step_batch(self, obs: Sequence[SpeakerChunk]) -> list[ListenerChunk]:
        """Every running clip's nearest-neighbour search in one matrix product."""
        slots = place(getattr(self, "_slots", None), obs, type(self).__name__)
        states = [self._states[i] for i in slots]
        parts = [self.queries(state, o) for state, o in zip(states, obs)]
        if not parts:
            return []
        found = np.split(self.nearest(np.concatenate(parts)), np.cumsum([len(p) for p in parts]))
        return [self.answer(state, index) for state, index in zip(states, found)]
