"""Stage 5, transcribe: words with times per separated track, hallucinations removed, times refined.

Inputs: the ``separate`` result: per track ``{track}.wav`` (16 kHz mono, clip time) and
``{track}.vad.npy`` (bool per video frame), listed in ``meta["tracks"]`` with ``meta["fps"]``,
``meta["n_frames"]`` and ``meta["sample_rate"]``. Steps, per track: silence the audio outside
the (padded) speech mask, or skip a track without speech; Whisper with word timestamps
(:mod:`responsenet.asr`); suppression of hallucinated words (:mod:`responsenet.asr_suppress`);
refinement of word times on the track's sound onsets (:mod:`responsenet.asr_refine`); write
``{track}.words.json`` and ``{track}.removed.json``. See docs/stages/transcribe.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from responsenet.asr import AsrOptions, Transcript, Word, load_backend
from responsenet.asr_refine import RefineParams, refine_track, track_runs
from responsenet.asr_suppress import (
    SuppressParams,
    speech_spans,
    split_by_reason,
    suppression_reasons,
)
from responsenet.build.stages.base import Stage, StageConfig, StageContext
from responsenet.build.workspace import write_json_atomic
from responsenet.errors import StageFailure, UsageError
from responsenet.wavio import read_wav, resample

SAMPLE_RATE = 16000
#: Libraries whose version is part of the fingerprint, per backend.
LIBRARIES = {"faster-whisper": ("faster-whisper", "ctranslate2"),
             "openai-whisper": ("openai-whisper", "torch")}


class TranscribeConfig(StageConfig):
    """Settings of the transcribe stage (see docs/stages/transcribe.md)."""

    backend: Literal["faster-whisper", "openai-whisper"] = "faster-whisper"
    model: str = Field("tiny.en", description="Whisper size; .en sizes are English-only")
    model_path: str | None = Field(None, description="explicit weights (folder or .pt file)")
    allow_download: bool = Field(False, description="fetch catalog weights when missing")
    language: str | None = Field(None, description="None: detect (an .en model implies en)")
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    compute_type: str | None = Field(None, description="None: int8 on CPU, float16 on CUDA")
    beam_size: int = Field(5, ge=1, le=20)
    threads: int = Field(2, ge=1, le=64, description="CPU threads for Whisper")
    condition_on_previous_text: bool = False
    temperature_fallback: bool = Field(False, description="retry degenerate windows hotter")
    max_new_tokens: int | None = Field(None, ge=1, description="tokens per 30 s window")
    vad_filter: bool = Field(True, description="silence audio outside the speech mask")
    vad_pad_s: float = Field(0.2, ge=0, description="speech mask widened by this for Whisper")
    speech_pad_s: float = Field(0.1, ge=0, description="mask widening for silent_track")
    min_speech_overlap: float = Field(0.5, ge=0, le=1)
    min_speech_s: float = Field(0.12, ge=0)
    repeat_max_ngram: int = Field(4, ge=1)
    repeat_min_count: int = Field(3, ge=2)
    repeat_min_count_single: int = Field(5, ge=2)
    low_prob: float = Field(0.15, ge=0, le=1)
    low_prob_run: int = Field(3, ge=1)
    max_compression_ratio: float = Field(2.4, gt=0, description="a Whisper segment whose text "
                                         "compresses better is a decoding loop")
    refine: bool = Field(True, description="snap word times to the track's sound onsets")
    refine_search_s: float = Field(2.5, gt=0, description="farthest snap from Whisper's time")
    refine_peak_drop_db: float = Field(45.0, gt=0, description="sound: within this of the peak")
    refine_calibrate: bool = Field(True, description="measure Whisper's lag per track first")

    def asr_options(self) -> AsrOptions:
        return AsrOptions(self.backend, self.model, self.model_path, self.device,
                          self.compute_type, self.beam_size, self.threads,
                          self.condition_on_previous_text, self.allow_download,
                          self.temperature_fallback, self.max_new_tokens)

    def suppress_params(self) -> SuppressParams:
        return SuppressParams(self.speech_pad_s, self.min_speech_overlap, self.min_speech_s,
                              self.repeat_max_ngram, self.repeat_min_count,
                              self.repeat_min_count_single, self.low_prob, self.low_prob_run,
                              self.max_compression_ratio)

    def refine_params(self) -> RefineParams:
        return RefineParams(search_s=self.refine_search_s, peak_drop_db=self.refine_peak_drop_db,
                            calibrate=self.refine_calibrate)


@dataclass
class TrackWords:
    """One track's result: final words, removed words with reasons, the raw transcript, time
    spent, and how many words judged silent were rescued onto free sound by refinement."""

    words: list[Word]
    removed: list[tuple[Word, str]]
    transcript: Transcript | None
    seconds: float
    rescued: int = 0


class TranscribeStage(Stage):
    """Whisper word timestamps per separated track, with suppression and refinement."""

    name = "transcribe"
    version = "1"
    unit = "clip"
    requires = ("separate",)
    resources: ClassVar[dict[str, float]] = {"CPU": 1, "GPU": 0}
    Config = TranscribeConfig

    def input_fingerprint(self, source, config: TranscribeConfig) -> dict[str, Any]:
        """The weights' catalog checksum and the chosen backend's library versions."""
        from responsenet.asr import CATALOG
        from responsenet.assets_catalog import ASSETS

        name = CATALOG.get((config.backend, config.model))
        versions = {}
        for package in LIBRARIES[config.backend]:
            try:
                versions[package] = metadata.version(package)
            except metadata.PackageNotFoundError:
                versions[package] = None
        return {"asset_sha256": ASSETS.get(name).sha256 if name else None, **versions}

    def run(self, ctx: StageContext) -> dict[str, Any]:
        cfg: TranscribeConfig = ctx.config
        separate = ctx.inputs["separate"]
        fps, n_frames = float(separate.meta["fps"]), int(separate.meta["n_frames"])
        duration = n_frames / fps
        backend = None
        tracks, results = [], []
        for entry in separate.meta["tracks"]:
            where = f"clip {ctx.item_id} track {entry['track']}"
            audio, speech = _read_track(separate.dir, entry, n_frames, where)
            if backend is None and (speech.any() or not cfg.vad_filter):
                backend = load_backend(cfg.asr_options())  # no model load for silent clips
            result = transcribe_track(backend, audio, speech, fps, duration, cfg)
            results.append(result)
            tracks.append(_write_track(ctx.out_dir, entry["track"], result))
        language, probability = _clip_language(results, cfg)
        return {"backend": cfg.backend, "model": cfg.model, "language": language,
                "language_probability": probability, "fps": fps, "n_frames": n_frames,
                "tracks": tracks}


def transcribe_track(backend, audio: np.ndarray, speech: np.ndarray, fps: float,
                     duration: float, cfg: TranscribeConfig) -> TrackWords:
    """Words of one track: Whisper on the speech, then suppression and refinement (which
    rescues words judged silent only because Whisper put them in a pause).

    Args:
        backend: a loaded :class:`responsenet.asr.Backend` (None allowed when ``speech`` is
            all False and ``cfg.vad_filter``: nothing is transcribed).
        audio: float32 [n_samples] at 16 kHz, clip time.
        speech: bool [n_frames] speech mask at ``fps``.
        fps: video frame rate.
        duration: clip length in seconds; words are kept inside ``[0, duration]``.
        cfg: the stage config.
    """
    start = time.perf_counter()
    if cfg.vad_filter and not speech.any():
        return TrackWords([], [], None, 0.0)
    heard = gate_audio(audio, speech, fps, cfg.vad_pad_s) if cfg.vad_filter else audio
    language = cfg.language or ("en" if cfg.model.endswith(".en") else None)
    transcript = backend.transcribe(heard, language)
    words = transcript.words
    reasons = suppression_reasons(words, speech, fps, cfg.suppress_params(),
                                  transcript.segment_starts)
    silent = reasons.count("silent_track")
    if cfg.refine:
        params = cfg.refine_params()
        runs = track_runs(audio, SAMPLE_RATE, speech, fps, params)
        words, reasons = refine_track(words, reasons, runs, params)
    kept, removed = split_by_reason(words, reasons)
    return TrackWords(clip_to(kept, duration), removed, transcript,
                      time.perf_counter() - start, silent - reasons.count("silent_track"))


def gate_audio(audio: np.ndarray, speech: np.ndarray, fps: float, pad_s: float) -> np.ndarray:
    """``audio`` with zeros outside the speech mask widened by ``pad_s`` (times unchanged)."""
    gated = np.zeros_like(audio)
    for a, b in speech_spans(speech, fps, pad_s):
        lo, hi = round(a * SAMPLE_RATE), round(b * SAMPLE_RATE)
        gated[lo:hi] = audio[lo:hi]
    return gated


def clip_to(words: list[Word], duration: float) -> list[Word]:
    """Words cut to ``[0, duration]``, those left empty dropped, ordered without overlap."""
    out: list[Word] = []
    for w in words:
        start = max(w.start, 0.0, out[-1].end if out else 0.0)
        end = min(w.end, duration)
        if end > start:
            out.append(Word(w.text, round(start, 3), round(end, 3), round(w.prob, 4)))
    return out


def _read_track(folder: Path, entry: dict[str, Any], n_frames: int,
                where: str) -> tuple[np.ndarray, np.ndarray]:
    """The track's 16 kHz audio and its bool [n_frames] speech mask, or StageFailure."""
    wav, vad = folder / entry["audio"], folder / entry["vad"]
    try:
        audio, rate = read_wav(wav)
    except UsageError as e:
        raise StageFailure("bad_input", f"{where}: {e}; run the separate stage again "
                           "(--force separate)") from e
    if rate != SAMPLE_RATE:
        audio = resample(audio, rate, SAMPLE_RATE)
    try:
        speech = np.load(vad).astype(bool).reshape(-1)
    except (OSError, ValueError) as e:
        raise StageFailure("bad_input", f"{where}: cannot read the speech mask {vad}: {e}; run "
                           "the separate stage again (--force separate)") from e
    if len(speech) != n_frames:
        raise StageFailure("bad_input", f"{where}: speech mask {vad.name} has {len(speech)} "
                           f"frames, expected {n_frames} (separate meta n_frames); run the "
                           "separate stage again (--force separate)")
    return audio, speech


def _write_track(out_dir: Path, track: str, result: TrackWords) -> dict[str, Any]:
    """Write ``{track}.words.json`` and ``{track}.removed.json``; return the meta entry."""
    words_file, removed_file = f"{track}.words.json", f"{track}.removed.json"
    write_json_atomic(out_dir / words_file, [w.to_dict() for w in result.words])
    removed = [{**w.to_dict(), "reason": reason} for w, reason in result.removed]
    write_json_atomic(out_dir / removed_file, removed)
    reasons: dict[str, int] = {}
    for _, reason in result.removed:
        reasons[reason] = reasons.get(reason, 0) + 1
    transcript = result.transcript
    return {"track": track, "words": words_file, "removed": removed_file,
            "n_words": len(result.words), "n_removed": len(result.removed),
            "removed_by_reason": reasons, "rescued": result.rescued,
            "transcribed": transcript is not None,
            "language": transcript.language if transcript else None,
            "language_probability": transcript.language_probability if transcript else None,
            "seconds": round(result.seconds, 3)}


def _clip_language(results: list[TrackWords],
                   cfg: TranscribeConfig) -> tuple[str | None, float | None]:
    """The clip's language: given, implied by an .en model, else the track with most words."""
    if cfg.language or cfg.model.endswith(".en"):
        return cfg.language or "en", None
    heard = [r for r in results if r.transcript is not None]
    if not heard:
        return None, None
    best = max(heard, key=lambda r: len(r.words))
    return best.transcript.language, best.transcript.language_probability
