"""Training of the LSTM baseline on a corpus's train split, with teacher forcing.

Each train clip is cut into windows of ``window_frames`` frames (the LSTM state starts at zero
in each window); the loss per batch is the MSE of the standardised listener face over frames
with a face plus ``token_weight`` times the cross-entropy of the listener's Chrono-Text token,
with the true previous listener token as input (``[PAUSE]`` before the clip's first frame).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from responsenet.data.index import window_starts
from responsenet.data.vocab import ChronoVocab
from responsenet.errors import UsageError
from responsenet.eval.baselines.common import iter_clips, train_refs
from responsenet.eval.baselines.lstm import (
    ListenerLSTM,
    audio_features,
    resolve_device,
    save_checkpoint,
    speaker_inputs,
)
from responsenet.wavio import read_wav, resample

log = logging.getLogger(__name__)
SAMPLE_RATE = 16000


@dataclass
class _Clip:
    features: np.ndarray  # float32 [T, F]
    speaker_tokens: np.ndarray  # int64 [T]
    previous_tokens: np.ndarray  # int64 [T], listener token at t-1
    listener_tokens: np.ndarray  # int64 [T]
    listener_face: np.ndarray  # float32 [T, 64], standardised
    listener_mask: np.ndarray  # bool [T]


@dataclass
class TrainResult:
    """What ``train_lstm`` did; losses are per-epoch means over batches."""

    path: Path
    losses: list[float] = field(default_factory=list)
    face_losses: list[float] = field(default_factory=list)
    token_losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    n_clips: int = 0
    n_windows: int = 0
    audio_missing_clips: int = 0


def train_lstm(corpus: str | Path, out_path: str | Path, *, epochs: int = 30, hidden: int = 128,
               layers: int = 1, embed_dim: int = 32, audio_bands: int = 16,
               window_frames: int = 250, batch_size: int = 16, lr: float = 3e-3,
               token_weight: float = 1.0, max_vocab: int = 4000, seed: int = 0,
               device: str = "cpu", progress: bool = True) -> TrainResult:
    """Train the LSTM listener on ``{corpus}``'s train split and save it to ``out_path``.

    Speaker audio comes from each clip's speaker WAV; a clip whose WAV is missing or unreadable
    gets silent audio features (counted in ``audio_missing_clips`` and logged). Same corpus,
    options and seed on the CPU give the same checkpoint.
    """
    started = time.perf_counter()
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    dev = resolve_device(device)
    refs = train_refs(corpus)
    fps = {ref.fps for ref in refs}
    if len(fps) != 1:
        raise UsageError(f"{corpus}: train clips have several frame rates {sorted(fps)}; the "
                         "LSTM baseline needs one")
    config = {"fps": fps.pop(), "sample_rate": SAMPLE_RATE, "hidden": hidden, "layers": layers,
              "embed_dim": embed_dim, "audio_bands": audio_bands, "window_frames": window_frames,
              "batch_size": batch_size, "lr": lr, "epochs": epochs, "token_weight": token_weight,
              "max_vocab": max_vocab, "seed": seed}
    vocab = ChronoVocab.from_corpus(corpus, "train", max_size=max_vocab)
    clips, norm, missing = _prepare(corpus, refs, vocab, config)
    config["n_features"] = clips[0].features.shape[1]
    windows = [(c, s) for c, clip in enumerate(clips)
               for s in window_starts(len(clip.features), window_frames)]
    model = ListenerLSTM(config["n_features"], len(vocab), hidden, layers, embed_dim).to(dev)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    result = TrainResult(Path(out_path), n_clips=len(clips), n_windows=len(windows),
                         audio_missing_clips=missing)
    bar = _epochs(epochs, progress)
    for epoch in bar:
        order = torch.randperm(len(windows), generator=generator).tolist()
        sums = np.zeros(3)
        for first in range(0, len(order), batch_size):
            batch = _batch([windows[i] for i in order[first:first + batch_size]], clips,
                           window_frames, dev)
            face_loss, token_loss = _losses(model, batch)
            loss = face_loss + token_weight * token_loss
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimiser.step()
            sums += [loss.item(), face_loss.item(), token_loss.item()]
        means = sums / max(1, -(-len(order) // batch_size))
        for values, mean in zip((result.losses, result.face_losses, result.token_losses), means):
            values.append(float(mean))
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{means[0]:.4f}")
        elif progress:
            log.info("lstm: epoch %d/%d loss %.4f (face %.4f, tokens %.4f)", epoch + 1, epochs,
                     *means)
    result.seconds = time.perf_counter() - started
    train = {"corpus": str(corpus), "clips": len(clips), "windows": len(windows),
             "audio_missing_clips": missing, "losses": result.losses, "device": str(dev),
             "face_losses": result.face_losses, "token_losses": result.token_losses,
             "seconds": result.seconds}
    save_checkpoint(out_path, model.cpu(), vocab, config, norm, train)
    return result


def _prepare(corpus: str | Path, refs: list, vocab: ChronoVocab,
             config: dict) -> tuple[list[_Clip], dict[str, np.ndarray], int]:
    """Read the train clips and standardise them: (clips, norm stats, clips without audio)."""
    raw, missing = [], 0
    for clip in iter_clips(corpus, refs, ["face", "chrono"], vocab):
        speaker, listener = clip.tracks["speaker"], clip.tracks["listener"]
        audio = _speaker_audio(speaker.audio_path, clip.ref.clip_id)
        missing += audio is None
        feats = audio_features(np.zeros(0) if audio is None else audio, clip.ref.n_frames,
                               SAMPLE_RATE, config["fps"], config["audio_bands"])
        raw.append((speaker, listener, feats))
    if missing:
        log.warning("lstm: %d of %d train clips have no readable speaker audio; their audio "
                    "features are those of silence", missing, len(raw))
    norm = _norm(raw)
    clips = []
    for speaker, listener, feats in raw:
        tokens = listener.chrono
        clips.append(_Clip(
            speaker_inputs(speaker.face, speaker.face_mask, feats, norm), speaker.chrono,
            np.concatenate([[vocab.pause_id], tokens[:-1]]).astype(np.int64), tokens,
            ((listener.face - norm["listener_mean"]) / norm["listener_std"]).astype(np.float32),
            listener.face_mask))
    return clips, norm, missing


def _speaker_audio(path: Path | None, clip_id: str) -> np.ndarray | None:
    if path is None:
        return None
    try:
        audio, rate = read_wav(path)
    except UsageError as e:
        log.debug("lstm: clip %s: %s", clip_id, e)
        return None
    return audio if rate == SAMPLE_RATE else resample(audio, rate, SAMPLE_RATE)


def _norm(raw: list) -> dict[str, np.ndarray]:
    def stats(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = rows.astype(np.float64)
        if not len(rows):
            return np.zeros(rows.shape[1]), np.ones(rows.shape[1])
        return rows.mean(axis=0), np.maximum(rows.std(axis=0), 1e-4)

    speaker = np.concatenate([s.face[s.face_mask] for s, _, _ in raw])
    listener = np.concatenate([li.face[li.face_mask] for _, li, _ in raw])
    audio = np.concatenate([a for _, _, a in raw])
    norm = {}
    for name, rows in (("speaker", speaker), ("listener", listener), ("audio", audio)):
        norm[f"{name}_mean"], norm[f"{name}_std"] = stats(rows)
    return {k: v.astype(np.float32) for k, v in norm.items()}


def _batch(windows: list[tuple[int, int]], clips: list[_Clip], length: int,
           dev: torch.device) -> dict[str, torch.Tensor]:
    """Stack windows, padding short ones (tokens PAD = 0, masks False)."""
    n_features = clips[0].features.shape[1]
    out = {"features": np.zeros((len(windows), length, n_features), np.float32),
           "face": np.zeros((len(windows), length, 64), np.float32),
           "mask": np.zeros((len(windows), length), bool)}
    for name in ("speaker_tokens", "previous_tokens", "listener_tokens"):
        out[name] = np.zeros((len(windows), length), np.int64)
    for row, (c, start) in enumerate(windows):
        clip, stop = clips[c], start + length
        n = len(clip.features[start:stop])
        out["features"][row, :n] = clip.features[start:stop]
        out["face"][row, :n] = clip.listener_face[start:stop]
        out["mask"][row, :n] = clip.listener_mask[start:stop]
        for name in ("speaker_tokens", "previous_tokens", "listener_tokens"):
            out[name][row, :n] = getattr(clip, name)[start:stop]
    return {k: torch.from_numpy(v).to(dev) for k, v in out.items()}


def _losses(model: ListenerLSTM, batch: dict[str, torch.Tensor]
            ) -> tuple[torch.Tensor, torch.Tensor]:
    face, logits, _ = model(batch["features"], batch["speaker_tokens"], batch["previous_tokens"])
    mask = batch["mask"].float()
    face_loss = (((face - batch["face"]) ** 2).mean(-1) * mask).sum() / mask.sum().clamp(min=1)
    token_loss = F.cross_entropy(logits.transpose(1, 2), batch["listener_tokens"],
                                 ignore_index=ChronoVocab.pad_id)
    return face_loss, token_loss


def _epochs(epochs: int, progress: bool) -> Iterable[int]:
    """A tqdm bar over the epochs when tqdm is installed, else a plain range (the epoch log
    lines are the progress then)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return range(epochs)
    return tqdm(range(epochs), desc="lstm", unit="epoch", disable=not progress)

