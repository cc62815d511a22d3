"""Voice activity with Silero VAD, run directly through onnxruntime.

The model (asset ``silero_vad``: ``silero_vad.onnx``, carried by the ``silero-vad`` package) reads
16 kHz audio in windows of 512 samples (32 ms), each preceded by the last 64 samples of the window
before it (zeros for the first), and carries a recurrent state ``float32 [2, 1, 128]`` from window
to window; it returns one speech probability per window. The last window is zero-padded.

Probabilities become speech segments the way silero-vad's ``get_speech_timestamps`` does it, as
pure functions of the probabilities (:func:`segments_from_probabilities`):

1. hysteresis: speech starts at a window with probability >= ``threshold`` and ends at the first
   window below ``threshold - 0.15`` (at least 0.01);
2. silences shorter than ``min_silence_s`` between two segments are bridged;
3. segments shorter than ``min_speech_s`` are dropped;
4. each segment grows by ``pad_s`` on both sides (cut at the audio ends; overlaps merge).

A video frame counts as speech when at least half of its span lies in a segment
(:func:`frames_from_segments`); frame ``i`` covers samples
``[round(i * sr / fps), round((i + 1) * sr / fps))``.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from responsenet.assets import resolve
from responsenet.errors import UsageError
from responsenet.wavio import resample

#: The rate the model runs at, in Hz.
MODEL_RATE = 16000
#: Samples per window at :data:`MODEL_RATE` (32 ms).
WINDOW = 512
#: Samples of the previous window prepended to each window.
CONTEXT = 64
#: Size of the recurrent state the model carries: ``[2, batch, 128]``.
STATE_SHAPE = (2, 1, 128)
#: Probability drop below ``threshold`` that ends a segment (silero-vad's ``neg_threshold``).
HYSTERESIS = 0.15
#: Seconds per window.
WINDOW_S = WINDOW / MODEL_RATE


def speech_probability(audio: np.ndarray, sample_rate: int = 16000, *,
                       model_path: str | Path | None = None) -> np.ndarray:
    """Silero VAD speech probability per 32 ms window.

    Args:
        audio: mono ``float [n_samples]`` in [-1, 1] at ``sample_rate``.
        sample_rate: in Hz; resampled to 16 kHz when different.
        model_path: the ``silero_vad`` asset (its folder, or its ``silero_vad.onnx``); default:
            the usual places (``$RESPONSENET_MODELS``, the cache, the ``silero-vad`` package).

    Returns:
        ``float32 [ceil(n_16k / 512)]`` in [0, 1]: window ``j`` covers 16 kHz samples
        ``[512 j, 512 (j + 1))``, i.e. seconds ``[0.032 j, 0.032 (j + 1))``.

    Raises:
        AssetMissing: reason ``weights_missing``, the weights are not found.
        UsageError: onnxruntime is not installed.
        ValueError: ``audio`` is not one-dimensional or ``sample_rate`` is not positive.
    """
    audio = _mono(audio, sample_rate)
    session = _session(str(_model_file(model_path)))
    audio = resample(audio, int(sample_rate), MODEL_RATE)
    n_windows = -(-len(audio) // WINDOW)
    padded = np.zeros(CONTEXT + n_windows * WINDOW, dtype=np.float32)
    padded[CONTEXT : CONTEXT + len(audio)] = audio
    state = np.zeros(STATE_SHAPE, dtype=np.float32)
    sr = np.array(MODEL_RATE, dtype=np.int64)
    probs = np.empty(n_windows, dtype=np.float32)
    for j in range(n_windows):
        window = padded[j * WINDOW : (j + 1) * WINDOW + CONTEXT][None, :]
        out, state = session.run(None, {"input": window, "state": state, "sr": sr})
        probs[j] = out[0, 0]
    return probs


def speech_segments(audio: np.ndarray, sample_rate: int = 16000, *, threshold: float = 0.5,
                    min_speech_s: float = 0.1, min_silence_s: float = 0.1, pad_s: float = 0.03,
                    model_path: str | Path | None = None, **_frame_options,
                    ) -> list[tuple[float, float]]:
    """Speech segments of ``audio`` in seconds, sorted and disjoint.

    Args:
        audio: mono ``float [n_samples]`` at ``sample_rate`` Hz.
        sample_rate: in Hz.
        threshold, min_speech_s, min_silence_s, pad_s: see :func:`segments_from_probabilities`.
        model_path: see :func:`speech_probability`.
        **_frame_options: ``fps`` and ``n_frames`` are accepted (so that one options dict serves
            :func:`speech_mask` too) and ignored.

    Returns:
        ``[(start, end), ...]`` seconds within ``[0, n_samples / sample_rate]``.
    """
    unknown = set(_frame_options) - {"fps", "n_frames"}
    if unknown:
        raise TypeError(f"speech_segments got unexpected options {sorted(unknown)}")
    probs = speech_probability(audio, sample_rate, model_path=model_path)
    return segments_from_probabilities(
        probs, len(audio) / sample_rate, threshold=threshold, min_speech_s=min_speech_s,
        min_silence_s=min_silence_s, pad_s=pad_s)


def speech_mask(audio: np.ndarray, sample_rate: int = 16000, *, fps: float = 25.0,
                n_frames: int | None = None, threshold: float = 0.5, min_speech_s: float = 0.1,
                min_silence_s: float = 0.1, pad_s: float = 0.03,
                model_path: str | Path | None = None) -> np.ndarray:
    """Speech or not per video frame.

    Args:
        audio: mono ``float [n_samples]`` at ``sample_rate`` Hz.
        sample_rate: in Hz.
        fps: video frame rate.
        n_frames: frames wanted; default ``round(n_samples / sample_rate * fps)``. Frames past
            the audio's end are False.
        threshold, min_speech_s, min_silence_s, pad_s: see :func:`segments_from_probabilities`.
        model_path: see :func:`speech_probability`.

    Returns:
        ``bool [n_frames]``: True where at least half of the frame lies in a speech segment.
    """
    segments = speech_segments(audio, sample_rate, threshold=threshold, min_speech_s=min_speech_s,
                               min_silence_s=min_silence_s, pad_s=pad_s, model_path=model_path)
    if n_frames is None:
        n_frames = round(len(audio) / sample_rate * fps)
    return frames_from_segments(segments, n_frames, fps, sample_rate)


def segments_from_probabilities(probs: np.ndarray, duration: float, *, threshold: float = 0.5,
                                min_speech_s: float = 0.1, min_silence_s: float = 0.1,
                                pad_s: float = 0.03, window_s: float = WINDOW_S,
                                ) -> list[tuple[float, float]]:
    """Speech segments from per-window probabilities (pure; see the module docstring).

    Args:
        probs: ``float [n_windows]``; window ``j`` covers seconds ``[j, j + 1) * window_s``.
        duration: audio length in seconds; segments are cut to ``[0, duration]``.
        threshold: probability that starts speech; speech ends below
            ``max(threshold - 0.15, 0.01)``.
        min_speech_s: segments shorter than this (after bridging) are dropped.
        min_silence_s: gaps shorter than this between segments are bridged.
        pad_s: seconds added on both sides of each kept segment.
        window_s: seconds per window.

    Returns:
        ``[(start, end), ...]`` seconds, sorted and disjoint.
    """
    low = max(threshold - HYSTERESIS, 0.01)
    segments: list[list[float]] = []
    start = None
    for j, p in enumerate(np.asarray(probs, dtype=np.float64)):
        if start is None and p >= threshold:
            start = j
        elif start is not None and p < low:
            segments.append([start * window_s, j * window_s])
            start = None
    if start is not None:
        segments.append([start * window_s, len(probs) * window_s])
    bridged: list[list[float]] = []
    for seg in segments:
        if bridged and seg[0] - bridged[-1][1] < min_silence_s:
            bridged[-1][1] = seg[1]
        else:
            bridged.append(seg)
    kept = [s for s in bridged if s[1] - s[0] >= min_speech_s]
    padded: list[list[float]] = []
    for a, b in kept:
        a, b = max(0.0, a - pad_s), min(duration, b + pad_s)
        if padded and a <= padded[-1][1]:
            padded[-1][1] = max(padded[-1][1], b)
        elif b > a:
            padded.append([a, b])
    return [(round(a, 6), round(b, 6)) for a, b in padded]


def frames_from_segments(segments: list[tuple[float, float]], n_frames: int, fps: float,
                         sample_rate: int) -> np.ndarray:
    """``bool [n_frames]``: True where at least half of frame ``i`` (samples
    ``[round(i * sr / fps), round((i + 1) * sr / fps))``) lies in the disjoint ``segments``."""
    edges = np.round(np.arange(n_frames + 1) * (sample_rate / fps)) / sample_rate
    if not segments or n_frames == 0:
        return np.zeros(n_frames, dtype=bool)
    # covered(t): seconds of speech in [0, t], piecewise linear through the segment ends
    points = np.asarray(segments, dtype=np.float64).reshape(-1)
    lengths = np.diff(np.asarray(segments, dtype=np.float64), axis=1)[:, 0]
    ends = np.cumsum(lengths)
    covered = np.stack([ends - lengths, ends], axis=1).reshape(-1)
    inside = np.diff(np.interp(edges, points, covered, left=0.0, right=float(ends[-1])))
    return inside >= 0.5 * np.diff(edges) - 1e-9


def _mono(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"voice activity expects mono audio of shape [n_samples], got "
                         f"{audio.shape}; average the channels first")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive number of Hz, got {sample_rate}")
    return audio


def _model_file(model_path: str | Path | None) -> Path:
    """The ONNX file: ``model_path`` itself when it is a file, else the asset's file."""
    folder = resolve("silero_vad", model_path)
    if model_path is not None and Path(model_path).expanduser().is_file():
        return Path(model_path).expanduser()
    return folder / "silero_vad.onnx"


@functools.cache
def _session(path: str, threads: int = 1):
    """One onnxruntime session per model file, with ``threads`` intra-op threads."""
    try:
        import onnxruntime
    except ImportError as e:
        raise UsageError("voice activity detection needs onnxruntime, which is not installed; "
                         "install it: pip install 'responsenet[asr]'") from e
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(path, sess_options=options,
                                        providers=["CPUExecutionProvider"])
