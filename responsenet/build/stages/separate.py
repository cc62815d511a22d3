"""Stage 4, separate: a clip's mixture -> one voice channel per face track.

Backends: ``avgate`` (default; no weights: the mixture gated by each face's mouth activity, see
:mod:`responsenet.separation.avgate`) and ``mossformer2`` (MossFormer2 speech separation, the GPU
path; weights per ../shared/MODELS.md). Whatever the backend, the sources are matched to the faces
by correlating loudness with mouth activity (:mod:`responsenet.separation.assign`), and each
channel gets a Silero VAD mask and leakage/SNR estimates. See docs/stages/separate.md.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from responsenet.build.stages.base import Stage, StageConfig, StageContext
from responsenet.errors import StageFailure
from responsenet.separation import assign
from responsenet.separation.avgate import GateSettings, avgate, mouth_opening
from responsenet.wavio import read_wav, write_wav


class SeparateConfig(StageConfig):
    """Settings of the separate stage."""

    backend: Literal["avgate", "mossformer2"] = "avgate"
    weights: str | None = Field(None, description="mossformer2 checkpoint folder or file")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    chunk_s: float = Field(4.0, gt=0.5, description="mossformer2 chunk length, seconds")
    gate_threshold: float = Field(0.25, gt=0, lt=1, description="mouth activity = speaking")
    gate_dominance: float = Field(1.5, ge=0, description="stronger face speaks alone (0: off)")
    gate_min_gap_s: float = Field(0.2, ge=0)
    gate_pad_s: float = Field(0.1, ge=0)
    gate_ramp_s: float = Field(0.06, ge=0)
    vad_threshold: float = Field(0.5, gt=0, lt=1, description="Silero speech probability")
    min_confidence: float = Field(0.1, ge=0, le=1,
                                  description="assignments below this are flagged low_confidence")


class SeparateStage(Stage):
    """Separate the mixture into one channel per face track and assign voices to faces."""

    name = "separate"
    version = "1"
    unit = "clip"
    requires = ("segment", "face")
    resources: ClassVar[dict[str, float]] = {"CPU": 1, "GPU": 0}
    Config = SeparateConfig

    def run(self, ctx: StageContext) -> dict[str, Any]:
        cfg: SeparateConfig = ctx.config
        segment, face = ctx.inputs["segment"], ctx.inputs["face"]
        clip = next(c for c in segment.meta["clips"] if c["clip_id"] == ctx.item_id)
        fps, n_frames = float(segment.meta["fps"]), int(clip["n_frames"])
        mixture, rate = read_wav(segment.dir / clip["audio"])
        tracks = [t["track"] for t in face.meta["tracks"]]
        openings = []
        for entry in face.meta["tracks"]:
            arrays = np.load(face.dir / entry["file"])
            openings.append(mouth_opening(arrays["blendshapes"], arrays["present"],
                                          face.meta["blendshape_names"]))
        return separate_clip(ctx, cfg, mixture, rate, fps, n_frames, tracks, openings)


def separate_clip(ctx: StageContext, cfg: SeparateConfig, mixture: np.ndarray, rate: int,
                  fps: float, n_frames: int, tracks: list[str],
                  openings: list[np.ndarray]) -> dict[str, Any]:
    """Separate, assign, measure and write; return the stage metadata."""
    from responsenet.vad import speech_mask

    mix_speech = speech_mask(mixture, rate, fps=fps, n_frames=n_frames,
                             threshold=cfg.vad_threshold)
    if not mix_speech.any():
        raise StageFailure("no_speech", f"clip {ctx.item_id}: the mixture holds no speech "
                           f"(Silero VAD found none; {_level(mixture)}); nothing to separate")
    settings = GateSettings(cfg.gate_threshold, cfg.gate_dominance, cfg.gate_min_gap_s,
                            cfg.gate_pad_s, cfg.gate_ramp_s)
    gate = avgate(mixture, openings, mix_speech, fps, rate, settings)
    if cfg.backend == "mossformer2":
        sources = _mossformer2(cfg, mixture, rate)
    else:
        sources = gate.channels
    match = assign.assign_sources(sources, gate.activity, fps, rate)
    channels = sources[list(match.order)]
    np.save(ctx.out_dir / "gains.npy", gate.gains)
    meta_tracks = []
    for k, track in enumerate(tracks):
        write_wav(ctx.out_dir / f"{track}.wav", channels[k], rate)
        vad = speech_mask(channels[k], rate, fps=fps, n_frames=n_frames,
                          threshold=cfg.vad_threshold)
        np.save(ctx.out_dir / f"{track}.vad.npy", vad)
        meta_tracks.append({
            "track": track, "audio": f"{track}.wav", "vad": f"{track}.vad.npy",
            "source": int(match.order[k]),
            "speech_seconds": round(float(vad.sum() / fps), 3),
            "mouth_speaking_seconds": round(float(gate.talking[k].sum() / fps), 3),
            "leakage_db": _round(assign.leakage_db(channels[k], gate.talking[k], fps, rate)),
            "snr_db": _round(assign.snr_db(channels[k], vad, fps, rate))})
    both = gate.talking.all(axis=0) & mix_speech
    return {
        "backend": cfg.backend, "fps": fps, "n_frames": n_frames, "sample_rate": rate,
        "assignment": {"order": list(match.order), "confidence": round(match.confidence, 4),
                       "correlation": np.round(match.correlation, 4).tolist(),
                       "low_confidence": match.confidence < cfg.min_confidence},
        "overlap_seconds": round(float(both.sum() / fps), 3),
        "mixture_speech_seconds": round(float(mix_speech.sum() / fps), 3),
        "tracks": meta_tracks, "gains": "gains.npy"}


def _level(mixture: np.ndarray) -> str:
    """The mixture's loudness in words, for a no_speech message: silence and noise differ."""
    rms = float(np.sqrt(np.mean(np.square(mixture, dtype=np.float64)))) if mixture.size else 0.0
    if rms < 1e-5:
        return "the audio is silent"
    return f"its level is {20 * np.log10(rms):.1f} dBFS: sound, but not speech"


def _round(value: float) -> float | None:
    return None if np.isnan(value) else round(value, 2)


def _device(cfg: SeparateConfig) -> str:
    if cfg.device != "auto":
        return cfg.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@functools.cache
def _model(weights: str | None, device: str):
    from responsenet.separation.mossformer import load_mossformer2

    return load_mossformer2(weights, device=device)


def _mossformer2(cfg: SeparateConfig, mixture: np.ndarray, rate: int) -> np.ndarray:
    from responsenet.separation.mossformer import separate_mossformer2

    device = _device(cfg)
    return separate_mossformer2(_model(cfg.weights, device), mixture, rate,
                                chunk_s=cfg.chunk_s, device=device)
