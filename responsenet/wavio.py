"""Read, write and resample PCM WAV audio with the standard library and numpy only.

Audio in memory is always mono ``float32 [n_samples]`` in [-1, 1]; on disk it is 16-bit PCM.
"""

from __future__ import annotations

import os
import uuid
import wave
from fractions import Fraction
from pathlib import Path

import numpy as np

from responsenet.errors import UsageError

PCM_SCALE = 32767.0
_DTYPES = {1: np.uint8, 2: np.int16, 4: np.int32}


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a PCM WAV file as mono float audio.

    Args:
        path: a WAV file with 8-, 16- or 32-bit integer PCM samples and any channel count.

    Returns:
        ``(audio, sample_rate)``: ``audio`` is ``float32 [n_samples]`` in [-1, 1], the mean of the
        channels; ``sample_rate`` in Hz.

    Raises:
        UsageError: the file is missing, not a WAV file, or uses an unsupported sample width.
    """
    path = Path(path)
    try:
        with wave.open(str(path), "rb") as wav:
            n_channels, width = wav.getnchannels(), wav.getsampwidth()
            sample_rate, raw = wav.getframerate(), wav.readframes(wav.getnframes())
    except (OSError, EOFError, wave.Error) as e:
        raise UsageError(f"cannot read {path} as a PCM WAV file: {e}; expected a 16-bit PCM "
                         "WAV (convert with: ffmpeg -i IN -ac 1 -c:a pcm_s16le OUT.wav)") from e
    if width not in _DTYPES:
        raise UsageError(f"{path}: expected 8-, 16- or 32-bit PCM samples, got {8 * width}-bit; "
                         "convert with: ffmpeg -i IN -c:a pcm_s16le OUT.wav")
    samples = np.frombuffer(raw, dtype=np.dtype(_DTYPES[width]).newbyteorder("<"))
    if width == 1:  # 8-bit WAV is unsigned with a 128 offset
        audio = (samples.astype(np.float32) - 128.0) / 127.0
    else:
        audio = samples.astype(np.float32) / float(2 ** (8 * width - 1) - 1)
    audio = audio.reshape(-1, n_channels).mean(axis=1, dtype=np.float32)
    return np.clip(audio, -1.0, 1.0).astype(np.float32, copy=False), sample_rate


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int) -> None:
    """Write mono audio as a 16-bit PCM WAV file, atomically (temp file, then ``os.replace``).

    Args:
        path: destination; its folder must exist.
        audio: ``float [n_samples]`` in [-1, 1]; values outside are clipped.
        sample_rate: in Hz.

    Raises:
        ValueError: ``audio`` is not one-dimensional or ``sample_rate`` is not positive.
    """
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"write_wav expects mono audio of shape [n_samples], got {audio.shape}; "
                         "average the channels first")
    if sample_rate <= 0:
        raise ValueError(f"write_wav expects a positive sample rate in Hz, got {sample_rate}")
    pcm = np.round(np.clip(audio, -1.0, 1.0) * PCM_SCALE).astype("<i2")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")  # umask permissions
    try:
        with open(tmp, "wb") as handle, wave.open(handle, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(int(sample_rate))
            wav.writeframes(pcm.tobytes())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample by the exact rational factor ``to_rate / from_rate`` (polyphase filter).

    Args:
        audio: ``float [n_samples]`` at ``from_rate`` Hz.
        from_rate: input rate in Hz.
        to_rate: output rate in Hz.

    Returns:
        ``float32 [ceil(n_samples * to_rate / from_rate)]`` at ``to_rate`` Hz; the input itself
        (as float32) when the rates are equal.
    """
    try:
        from scipy.signal import resample_poly
    except ImportError as e:
        raise UsageError("resampling needs scipy, which is not installed; "
                         "install it: pip install scipy") from e
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError(f"sample rates must be positive Hz, got {from_rate} -> {to_rate}")
    audio = np.asarray(audio, dtype=np.float32)
    if from_rate == to_rate:
        return audio
    ratio = Fraction(int(to_rate), int(from_rate))
    out = resample_poly(audio, ratio.numerator, ratio.denominator)
    return out.astype(np.float32, copy=False)
