"""TTS voices of synthetic participants (espeak-ng), and word-by-word synthesis.

Each word is synthesized on its own, so the exact sample span of every word in a conversation is
known: the conversation planner places these arrays at chosen offsets.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from responsenet.errors import ResponseNetError, UsageError
from responsenet.wavio import read_wav, resample

ESPEAK = "espeak-ng"
ESPEAK_RATE = 22050
TRIM_THRESHOLD = 0.01  # of the word's peak amplitude
TRIM_MARGIN_S = 0.005
# spellings espeak-ng would read letter by letter, mapped to what it should say
PRONOUNCE = {"mm-hm": "umhum"}


@dataclass(frozen=True)
class Voice:
    """One espeak-ng voice.

    Attributes:
        name: stable id, ``espeak-{accent}-{m|f}-{low|mid|high}``.
        espeak: espeak-ng voice with variant, e.g. ``en-us+m3`` (``-v``).
        pitch: base pitch 0..99 (``-p``).
        speed: words per minute (``-s``).
        gender: ``"male"`` or ``"female"``.
    """

    name: str
    espeak: str
    pitch: int
    speed: int
    gender: str


# Mean f0 of each voice speaking a line word by word (mean_pitch_hz; tests/synth/test_voices.py):
#   us-m-low 71, scot-m-low 74, us-m-mid 94, 029-m-mid 100, nyc-m-high 110 Hz;
#   029-f-low 148, gb-f-mid 178, us-f-mid 191, lancs-f-mid 197, us-f-high 237 Hz.
# Male voices stay below 120 Hz and female voices above 140 Hz, so any male/female pair differs
# by more than 15% (by at least 33%).
VOICES: tuple[Voice, ...] = (
    Voice("espeak-us-m-low", "en-us+m1", 30, 170, "male"),
    Voice("espeak-us-m-mid", "en-us+m3", 50, 190, "male"),
    Voice("espeak-nyc-m-high", "en-us-nyc+m7", 65, 205, "male"),
    Voice("espeak-scot-m-low", "en-gb-scotland+m4", 40, 175, "male"),
    Voice("espeak-029-m-mid", "en-029+m2", 55, 185, "male"),
    Voice("espeak-us-f-mid", "en-us+f3", 50, 190, "female"),
    Voice("espeak-us-f-high", "en-us+f5", 70, 210, "female"),
    Voice("espeak-gb-f-mid", "en-gb-x-rp+f2", 50, 180, "female"),
    Voice("espeak-029-f-low", "en-029+f4", 40, 175, "female"),
    Voice("espeak-lancs-f-mid", "en-gb-x-gbclan+f4", 65, 195, "female"),
)


_SYNTHESIZED: set[tuple[Voice, str, int]] = set()  # keys already in the cache (no threads needed)


def voice_by_name(name: str) -> Voice:
    """The voice of ``VOICES`` called ``name``; UsageError listing the names when unknown."""
    for voice in VOICES:
        if voice.name == name:
            return voice
    raise UsageError(f"unknown voice {name!r}; available: {', '.join(v.name for v in VOICES)}")


def contrasting_pair(rng: np.random.Generator) -> tuple[Voice, Voice]:
    """Two voices of different gender, in random order: their mean pitch differs by > 15%.

    This is the default pairing for a conversation (track 0, track 1).
    """
    first = VOICES[int(rng.integers(len(VOICES)))]
    others = [v for v in VOICES if v.gender != first.gender]
    second = others[int(rng.integers(len(others)))]
    return first, second


def synthesize_word(voice: Voice, text: str, sample_rate: int = 16000) -> np.ndarray:
    """Speak ``text`` alone with ``voice``, trimmed of leading and trailing silence.

    Silence is trimmed at 1% of the peak amplitude, keeping a 5 ms margin, before resampling
    from espeak-ng's 22050 Hz. Results are cached per (voice, text, sample_rate).

    Args:
        voice: one of ``VOICES`` (or any Voice espeak-ng knows).
        text: one word or a short phrase, e.g. ``"hello"`` or ``"mm-hm"``.
        sample_rate: output rate in Hz.

    Returns:
        read-only ``float32 [n_samples]`` in [-1, 1].

    Raises:
        UsageError: espeak-ng is not installed.
        ValueError: ``text`` is empty or produces no sound.
    """
    if not text.strip():
        raise ValueError(f"synthesize_word needs a word to say, got {text!r}")
    return _synthesize_cached(voice, text, int(sample_rate))


@functools.lru_cache(maxsize=16384)
def _synthesize_cached(voice: Voice, text: str, sample_rate: int) -> np.ndarray:
    raw = trim_silence(_run_espeak(voice, PRONOUNCE.get(text, text)), ESPEAK_RATE)
    if len(raw) == 0:
        raise ValueError(f"espeak-ng voice {voice.espeak!r} produced no sound for {text!r}")
    audio = np.clip(resample(raw, ESPEAK_RATE, sample_rate), -1.0, 1.0)
    audio.flags.writeable = False
    _SYNTHESIZED.add((voice, text, sample_rate))
    return audio


def synthesize_words(voice: Voice, texts: list[str], sample_rate: int = 16000,
                     workers: int = 8) -> list[np.ndarray]:
    """``synthesize_word`` for many texts, running espeak-ng for the uncached ones in parallel.

    Returns:
        one read-only ``float32 [n_samples]`` per text, in order; the same arrays as
        ``synthesize_word`` gives (it fills the same cache).
    """
    missing = [t for t in dict.fromkeys(texts) if (voice, t, sample_rate) not in _SYNTHESIZED]
    if len(missing) > 1:
        with ThreadPoolExecutor(max_workers=min(workers, len(missing))) as pool:
            list(pool.map(lambda t: synthesize_word(voice, t, sample_rate), missing))
    return [synthesize_word(voice, t, sample_rate) for t in texts]


def clear_word_cache() -> None:
    """Forget every synthesized word (tests use it to check that synthesis is deterministic)."""
    _synthesize_cached.cache_clear()
    _SYNTHESIZED.clear()


def trim_silence(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Cut leading and trailing samples below 1% of the peak, keeping 5 ms of margin.

    Returns:
        ``float32 [n]``, a slice of ``audio``; empty when ``audio`` is silent.
    """
    peak = float(np.max(np.abs(audio), initial=0.0))
    if peak == 0.0:
        return audio[:0]
    loud = np.flatnonzero(np.abs(audio) >= TRIM_THRESHOLD * peak)
    margin = round(TRIM_MARGIN_S * sample_rate)
    return audio[max(0, loud[0] - margin) : loud[-1] + 1 + margin]


def _run_espeak(voice: Voice, text: str) -> np.ndarray:
    """Run espeak-ng (argument list, no shell) and return its ``float32`` 22050 Hz output."""
    binary = shutil.which(ESPEAK)
    if binary is None:
        raise UsageError("espeak-ng not found on PATH; synthetic voices need it; "
                         "install it: apt-get install espeak-ng")
    with tempfile.TemporaryDirectory(prefix="responsenet-espeak-") as tmp:
        wav = Path(tmp) / "word.wav"
        command = [binary, "-v", voice.espeak, "-p", str(voice.pitch), "-s", str(voice.speed),
                   "-w", str(wav), "--", text]
        # close_fds=False lets CPython use posix_spawn (much cheaper than fork for a big
        # process); our own descriptors are non-inheritable anyway.
        result = subprocess.run(command, capture_output=True, text=True, check=False,
                                close_fds=False)
        if result.returncode != 0 or not wav.exists():
            raise ResponseNetError(
                f"espeak-ng failed for voice {voice.espeak!r} and text {text!r} "
                f"(exit {result.returncode}): {result.stderr.strip()}; check the voice exists: "
                "espeak-ng --voices=en")
        audio, rate = read_wav(wav)
    if rate != ESPEAK_RATE:
        audio = resample(audio, rate, ESPEAK_RATE)
    return audio
