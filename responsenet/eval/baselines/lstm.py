"""The small LSTM listener of the paper's baselines: speaker face + audio in, listener face +
Chrono-Text out, one frame at a time.

Per frame t the input is the speaker's face (64 values standardised by train statistics, 0 where
the face is masked), the face mask (1), log audio energies of the frame's samples
(``audio_features``: log RMS + ``audio_bands`` mel-spaced bands, standardised), and embeddings
of the speaker's Chrono-Text token at t and of the listener token the model emitted at t-1
(``[PAUSE]`` before the first frame). A ``layers``-deep LSTM of ``hidden`` units feeds two heads:
the listener face at t (de-standardised) and logits over a ChronoVocab of the train split.
Tokens are decoded greedily, never ``[PAD]``/``[UNK]``, never ``[LASTING]`` after ``[PAUSE]``.
Training (``lstm_train.train_lstm``) uses teacher forcing on the same inputs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from responsenet.data.vocab import ChronoVocab
from responsenet.errors import UsageError
from responsenet.eval.baselines.common import place, slots_of
from responsenet.eval.protocol import (
    FACE_DIM,
    ClipContext,
    ListenerChunk,
    ResponseModel,
    SpeakerChunk,
    samples_for,
)

CHECKPOINT_FORMAT = "responsenet.baseline.lstm"
DEFAULT_CHECKPOINT = Path("baselines") / "lstm.pt"
_LOG_FLOOR = 1e-8


def audio_features(audio: np.ndarray, n_frames: int, sample_rate: int, fps: float,
                   n_bands: int) -> np.ndarray:
    """Log energies of each frame's samples: float32 [n_frames, n_bands + 1] (none: [n, 0]).

    Column 0 is log mean square; columns 1.. are log mean power (Hann-windowed rFFT) in
    ``n_bands`` bands whose edges are evenly spaced on the mel scale from 0 to ``sample_rate/2``
    (each band at least one bin). Missing samples count as zeros; each frame is computed from
    its own samples only, so a whole clip at once equals the same clip chunk by chunk.
    """
    if n_bands <= 0:
        return np.zeros((n_frames, 0), np.float32)
    per_frame = samples_for(1, fps, sample_rate)
    frames = np.zeros(n_frames * per_frame, np.float64)
    audio = np.asarray(audio, np.float64).reshape(-1)[: len(frames)]
    frames[: len(audio)] = audio
    frames = frames.reshape(n_frames, per_frame)
    power = np.abs(np.fft.rfft(frames * np.hanning(per_frame), axis=1)) ** 2 / per_frame
    starts = _band_starts(n_bands, power.shape[1], sample_rate)
    widths = np.diff([*starts, power.shape[1]])
    bands = np.add.reduceat(power, starts, axis=1) / widths
    rms = (frames**2).mean(axis=1, keepdims=True)
    return np.log(np.concatenate([rms, bands], axis=1) + _LOG_FLOOR).astype(np.float32)


def _band_starts(n_bands: int, n_bins: int, sample_rate: int) -> np.ndarray:
    if n_bands > n_bins:
        raise UsageError(f"audio_bands={n_bands} exceeds the {n_bins} FFT bins of one frame")
    mel_top = 2595.0 * np.log10(1.0 + sample_rate / 2 / 700.0)
    hz = 700.0 * (10 ** (np.linspace(0.0, mel_top, n_bands + 1)[:-1] / 2595.0) - 1.0)
    starts = np.round(hz / (sample_rate / 2) * (n_bins - 1)).astype(np.int64)
    for i in range(1, n_bands):
        starts[i] = max(starts[i], starts[i - 1] + 1)
    return np.minimum(starts, n_bins - n_bands + np.arange(n_bands))


def speaker_inputs(face: np.ndarray, mask: np.ndarray, audio: np.ndarray,
                   norm: dict[str, np.ndarray]) -> np.ndarray:
    """Model input per frame: float32 [n, 64 + 1 + A] from face [n, 64], mask bool [n] and
    ``audio_features`` [n, A], standardised by ``norm`` (masked faces become 0)."""
    face = (face - norm["speaker_mean"]) / norm["speaker_std"] * mask[:, None]
    audio = (audio - norm["audio_mean"]) / norm["audio_std"]
    return np.concatenate([face, mask[:, None], audio], axis=1).astype(np.float32)


class ListenerLSTM(nn.Module):
    """features [B, L, F] + speaker and previous listener token ids [B, L] -> listener face
    (standardised) [B, L, 64], token logits [B, L, V], LSTM state ([layers, B, hidden] x 2)."""

    def __init__(self, n_features: int, vocab_size: int, hidden: int = 128, layers: int = 1,
                 embed_dim: int = 32):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=ChronoVocab.pad_id)
        self.lstm = nn.LSTM(n_features + 2 * embed_dim, hidden, layers, batch_first=True)
        self.face_head = nn.Linear(hidden, FACE_DIM)
        self.token_head = nn.Linear(hidden, vocab_size)

    def forward(self, features: torch.Tensor, speaker_tokens: torch.Tensor,
                previous_tokens: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None
                = None) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        x = torch.cat([features, self.embed(speaker_tokens), self.embed(previous_tokens)], -1)
        out, state = self.lstm(x, state)
        return self.face_head(out), self.token_head(out), state


def resolve_device(device: str) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (cuda when available)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"device={device!r} but PyTorch sees no CUDA GPU; use device=cpu")
    try:
        return torch.device(device)
    except RuntimeError as e:
        raise UsageError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto") from e


def save_checkpoint(path: str | Path, model: ListenerLSTM, vocab: ChronoVocab,
                    config: dict[str, Any], norm: dict[str, np.ndarray],
                    train: dict[str, Any]) -> Path:
    """Write the state dict, vocabulary, config, normalisation stats and training record."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"format": CHECKPOINT_FORMAT, "version": 1,
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "vocab": vocab.to_dict(), "config": config, "train": train,
            "norm": {k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in norm.items()}}
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(data, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint`` (UsageError when it is not one)."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UsageError(f"cannot read the LSTM checkpoint {path}: {type(e).__name__}: {e}; "
                         "train it again with `responsenet train-baseline lstm --data DIR`") from e
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise UsageError(f"{path} is not an LSTM baseline checkpoint (format "
                         f"{CHECKPOINT_FORMAT!r}); train one with `responsenet train-baseline "
                         "lstm --data DIR`")
    return data


class LSTMListener(ResponseModel):
    """The trained LSTM as a streaming listener (``outputs`` face and text).

    ``reset_batch(clips)`` + ``step_batch(chunks)`` run every clip in one batched forward pass
    per frame (LSTM state [layers, B, hidden] on ``device``); ``reset``/``step`` are the same
    path with B = 1. Deterministic: greedy decoding, no sampling.

    Args:
        checkpoint: a dict from ``load_checkpoint``.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
    """

    outputs = frozenset({"face", "text"})
    chunk_frames = 1

    def __init__(self, checkpoint: dict[str, Any], device: str = "cpu"):
        self.config = dict(checkpoint["config"])
        self.vocab = ChronoVocab.from_dict(checkpoint["vocab"])
        self.norm = {k: v.numpy() for k, v in checkpoint["norm"].items()}
        self.fps, self.sample_rate = self.config["fps"], self.config["sample_rate"]
        self.device = resolve_device(device)
        self.model = ListenerLSTM(self.config["n_features"], len(self.vocab),
                                  self.config["hidden"], self.config["layers"],
                                  self.config["embed_dim"])
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.to(self.device).eval()
        self._banned = torch.zeros(len(self.vocab), dtype=torch.bool, device=self.device)
        self._banned[[self.vocab.pad_id, self.vocab.unk_id]] = True
        self._state: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def from_args(cls, *, corpus: str | Path | None = None, seed: int = 0,
                  checkpoint: str | Path | None = None, device: str = "cpu") -> LSTMListener:
        """Load ``checkpoint``, by default ``{corpus}/baselines/lstm.pt``."""
        if checkpoint is None:
            if corpus is None:
                raise UsageError("lstm needs checkpoint=PATH or a corpus holding "
                                 f"{DEFAULT_CHECKPOINT}")
            checkpoint = Path(corpus) / DEFAULT_CHECKPOINT
        if not Path(checkpoint).is_file():
            raise UsageError(f"no LSTM checkpoint at {checkpoint}; train one with "
                             "`responsenet train-baseline lstm --data DIR` (or pass "
                             "--model-args checkpoint=PATH)")
        return cls(load_checkpoint(checkpoint), device=device)

    def reset(self, clip: ClipContext) -> None:
        self.reset_batch([clip])

    def reset_batch(self, clips: Sequence[ClipContext]) -> None:
        """Start ``clips`` together; ``step_batch`` finds each one by ``clip_id``."""
        shape = (self.config["layers"], len(clips), self.config["hidden"])
        self._state = (torch.zeros(shape, device=self.device),
                       torch.zeros(shape, device=self.device))
        self._previous = torch.full((len(clips),), self.vocab.pause_id, device=self.device)
        self._slots = slots_of(clips)

    def step(self, obs: SpeakerChunk) -> ListenerChunk:
        return self.step_batch([obs])[0]

    @torch.no_grad()
    def step_batch(self, obs: Sequence[SpeakerChunk]) -> list[ListenerChunk]:
        """One chunk for each clip still running, found by ``clip_id`` in the last reset; one
        batched LSTM step per frame over those clips."""
        slots = place(getattr(self, "_slots", None), obs, "LSTMListener")
        inputs = [self._inputs(o) for o in obs]
        faces = [np.empty((o.n_frames, FACE_DIM), np.float32) for o in obs]
        tokens: list[list[str]] = [[] for _ in obs]
        for k in range(max((o.n_frames for o in obs), default=0)):
            rows = [j for j, o in enumerate(obs) if o.n_frames > k]
            face, token_ids = self._frame([slots[j] for j in rows], [inputs[j] for j in rows], k)
            for r, j in enumerate(rows):
                faces[j][k] = face[r]
                tokens[j].append(self.vocab.id_to_token(int(token_ids[r])))
        return [ListenerChunk(face=f, chrono=t) for f, t in zip(faces, tokens)]

    def _frame(self, live: list[int], inputs: list[tuple[np.ndarray, np.ndarray]],
               k: int) -> tuple[np.ndarray, np.ndarray]:
        """Advance the clips ``live`` by their frame ``k``: face [m, 64], token ids [m]."""
        index = torch.tensor(live, device=self.device)
        features = torch.from_numpy(np.stack([f[k] for f, _ in inputs])).to(self.device)
        speaker = torch.from_numpy(np.stack([t[k] for _, t in inputs])).to(self.device)
        h, c = self._state  # type: ignore[misc]
        previous = self._previous[index]
        face, logits, (h_new, c_new) = self.model(features[:, None], speaker[:, None],
                                                   previous[:, None], (h[:, index], c[:, index]))
        h[:, index], c[:, index] = h_new, c_new
        logits = logits[:, 0].masked_fill(self._banned, -torch.inf)
        lasting = previous == self.vocab.pause_id
        logits[lasting, self.vocab.lasting_id] = -torch.inf
        chosen = logits.argmax(dim=-1)
        self._previous[index] = chosen
        face = face[:, 0].cpu().numpy() * self.norm["listener_std"] + self.norm["listener_mean"]
        return face.astype(np.float32), chosen.cpu().numpy()

    def _inputs(self, obs: SpeakerChunk) -> tuple[np.ndarray, np.ndarray]:
        audio = audio_features(obs.audio, obs.n_frames, self.sample_rate, self.fps,
                               self.config["audio_bands"])
        features = speaker_inputs(np.asarray(obs.face, np.float32),
                                  np.asarray(obs.face_mask, bool), audio, self.norm)
        return features, self.vocab.encode(list(obs.chrono))
