"""Pure audio math for synthetic conversations: mixing, noise at a set SNR, envelopes, pitch.

All audio is mono ``float32 [n_samples]`` in [-1, 1]; no function here reads or writes files.
"""

from __future__ import annotations

import numpy as np

MIX_PEAK = 0.98
ACTIVE_FRAME_S = 0.010
ACTIVE_FLOOR_DB = -40.0
PITCH_RANGE_HZ = (60.0, 500.0)
LOUDNESS_EXPONENT = 0.6  # perceived loudness grows about as amplitude ** 0.6 (Stevens)


def mix(tracks: list[np.ndarray]) -> tuple[np.ndarray, float]:
    """Sum equally long tracks, scaled down only when the sum would peak above 0.98.

    Args:
        tracks: ``float [n_samples]`` each, all of the same length.

    Returns:
        ``(mixture, gain)``: ``mixture`` is ``float32 [n_samples]`` = ``gain * sum(tracks)``;
        ``gain`` is 1.0 unless the sum peaks above 0.98, then ``0.98 / peak``. Apply the same gain
        to the separate tracks to keep them consistent with the mixture.
    """
    if not tracks:
        raise ValueError("mix needs at least one track, got none")
    lengths = {len(t) for t in tracks}
    if len(lengths) != 1:
        raise ValueError(f"mix needs tracks of one length, got lengths {sorted(lengths)}; "
                         "pad or trim them to the conversation duration first")
    total = np.sum([np.asarray(t, dtype=np.float64) for t in tracks], axis=0)
    peak = float(np.max(np.abs(total), initial=0.0))
    gain = MIX_PEAK / peak if peak > MIX_PEAK else 1.0
    return (total * gain).astype(np.float32), gain


def active_mask(audio: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
    """Which samples belong to the non-silent part of ``audio``.

    The audio is cut into 10 ms blocks; a block is active when its energy is within 40 dB of the
    loudest block.

    Returns:
        ``bool [n_samples]``; all False for all-zero audio.
    """
    audio = np.asarray(audio, dtype=np.float64)
    block = max(1, round(ACTIVE_FRAME_S * sample_rate))
    n_blocks = -(-len(audio) // block)
    padded = np.zeros(n_blocks * block)
    padded[: len(audio)] = audio
    energy = np.mean(padded.reshape(n_blocks, block) ** 2, axis=1)
    loudest = float(np.max(energy, initial=0.0))
    if loudest == 0.0:
        return np.zeros(len(audio), dtype=bool)
    active = energy >= loudest * 10 ** (ACTIVE_FLOOR_DB / 10)
    return np.repeat(active, block)[: len(audio)]


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator, *,
              color: str = "white", sample_rate: int = 16000) -> np.ndarray:
    """Add stationary noise at exactly ``snr_db`` relative to the speech.

    The signal power is the mean square over the non-silent part of ``audio`` (see
    ``active_mask``: 10 ms blocks within 40 dB of the loudest one), so pauses do not dilute it.
    The noise is scaled so that its mean square over the whole clip is ``P_signal / 10**(snr/10)``.
    The result is not clipped (clipping would change the SNR).

    Args:
        audio: ``float [n_samples]``, not all zero.
        snr_db: wanted signal-to-noise ratio in dB.
        rng: source of the noise samples.
        color: ``"white"`` (flat spectrum) or ``"pink"`` (power falling as 1/f).
        sample_rate: in Hz, for the 10 ms activity blocks.

    Returns:
        ``float32 [n_samples]``: ``audio + noise``.
    """
    audio = np.asarray(audio, dtype=np.float64)
    active = active_mask(audio, sample_rate)
    if not active.any():
        raise ValueError("add_noise needs audio with some sound to set an SNR, got silence")
    if color == "white":
        noise = rng.standard_normal(len(audio))
    elif color == "pink":
        noise = _pink_noise(rng, len(audio))
    else:
        raise ValueError(f"noise color must be 'white' or 'pink', got {color!r}")
    signal_power = float(np.mean(audio[active] ** 2))
    noise *= np.sqrt(signal_power / 10 ** (snr_db / 10) / np.mean(noise**2))
    return (audio + noise).astype(np.float32)


def _pink_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """``float64 [n]`` noise whose power spectrum falls as 1/f (white noise shaped in frequency)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.arange(len(spectrum), dtype=np.float64)
    freqs[0] = 1.0
    return np.fft.irfft(spectrum / np.sqrt(freqs), n)


def frame_boundaries(n_samples: int, fps: float, sample_rate: int) -> np.ndarray:
    """Sample index where each video frame starts, plus the end: ``int64 [n_frames + 1]``.

    ``n_frames = round(n_samples * fps / sample_rate)``; frame ``i`` covers samples
    ``[round(i * sample_rate / fps), round((i + 1) * sample_rate / fps))``, cut at the audio end.
    """
    n_frames = round(n_samples * fps / sample_rate)
    edges = np.round(np.arange(n_frames + 1) * (sample_rate / fps)).astype(np.int64)
    return np.minimum(edges, n_samples)


def frame_envelope(audio: np.ndarray, fps: float = 25, sample_rate: int = 16000) -> np.ndarray:
    """Loudness per video frame, for driving a mouth opening.

    Per frame (see ``frame_boundaries``), the RMS of its samples, divided by the 95th percentile
    of the RMS of the non-silent frames, clipped to [0, 1], raised to the power 0.6 (loudness
    grows about as amplitude ** 0.6, so soft sounds still open the mouth) and smoothed with a
    [1/4, 1/2, 1/4] kernel. Silent frames (RMS below 1e-6) stay exactly 0 after smoothing.

    Returns:
        ``float32 [n_frames]`` in [0, 1], ``n_frames = round(len(audio) * fps / sample_rate)``.
    """
    audio = np.asarray(audio, dtype=np.float64)
    edges = frame_boundaries(len(audio), fps, sample_rate)
    energy = np.concatenate([[0.0], np.cumsum(audio**2)])
    counts = np.diff(edges)
    sums = np.maximum(energy[edges[1:]] - energy[edges[:-1]], 0.0)
    rms = np.sqrt(np.divide(sums, counts, out=np.zeros(len(counts)), where=counts > 0))
    sounding = rms > 1e-6
    if not sounding.any():
        return np.zeros(len(rms), dtype=np.float32)
    level = np.clip(rms / np.percentile(rms[sounding], 95), 0.0, 1.0) ** LOUDNESS_EXPONENT
    smooth = np.convolve(np.pad(level, 1, mode="edge"), [0.25, 0.5, 0.25], mode="valid")
    return np.where(sounding, np.clip(smooth, 0.0, 1.0), 0.0).astype(np.float32)


def mean_pitch_hz(audio: np.ndarray, sample_rate: int = 16000) -> float:
    """Mean fundamental frequency of the voiced part of ``audio`` (YIN, 60-500 Hz).

    Every 10 ms, a 25 ms window is compared with itself shifted by up to 1/60 s (the YIN
    cumulative-mean-normalised difference). Windows within 30 dB of the loudest whose difference
    dips below 0.2 are voiced; the dip's lag, refined by a parabola, gives their f0. The result
    is the geometric mean of the voiced f0 values within a factor 1.3 of their median (octave
    errors dropped).

    Args:
        audio: ``float [n_samples]``.
        sample_rate: in Hz.

    Returns:
        f0 in Hz, or ``nan`` when no window is voiced.
    """
    f0 = _frame_pitches(np.asarray(audio, dtype=np.float64), sample_rate)
    if len(f0) == 0:
        return float("nan")
    median = np.median(f0)
    kept = f0[(f0 > median / 1.3) & (f0 < median * 1.3)]
    return float(np.exp(np.mean(np.log(kept))))


def _frame_pitches(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """YIN f0 estimates of the voiced windows: ``float64 [n_voiced]`` in Hz."""
    lag_min = int(sample_rate / PITCH_RANGE_HZ[1])
    lag_max = int(np.ceil(sample_rate / PITCH_RANGE_HZ[0]))
    width, hop = round(0.025 * sample_rate), round(0.010 * sample_rate)
    size = width + lag_max
    if len(audio) < size:
        return np.zeros(0)
    starts = np.arange(0, len(audio) - size + 1, hop)
    frames = audio[starts[:, None] + np.arange(size)]
    power = np.sum(frames[:, :width] ** 2, axis=1)
    loud = power > np.max(power) * 1e-3
    frames = frames[loud & (power > 0)]
    if len(frames) == 0:
        return np.zeros(0)
    cmnd = _cmnd(frames, width, lag_max)
    lags = np.arange(lag_max + 1)
    search = cmnd[:, lag_min : lag_max]
    below = search < 0.2
    first = np.where(below.any(axis=1), below.argmax(axis=1), search.argmin(axis=1))
    # walk from the first dip below the threshold down to its local minimum
    best = np.array([_local_min(row, i) for row, i in zip(search, first)])
    voiced = search[np.arange(len(search)), best] < 0.2
    tau = best[voiced] + lag_min
    rows = cmnd[voiced]
    left, mid, right = (rows[np.arange(len(rows)), tau + k] for k in (-1, 0, 1))
    denom = left - 2 * mid + right
    shift = np.divide(left - right, 2 * denom, out=np.zeros(len(mid)), where=denom > 1e-12)
    return sample_rate / (lags[tau] + np.clip(shift, -1, 1))


def _local_min(row: np.ndarray, i: int) -> int:
    while i + 1 < len(row) and row[i + 1] < row[i]:
        i += 1
    return i


def _cmnd(frames: np.ndarray, width: int, lag_max: int) -> np.ndarray:
    """YIN cumulative-mean-normalised difference ``float64 [n_frames, lag_max + 1]``."""
    size = frames.shape[1]
    n_fft = 1 << int(np.ceil(np.log2(size + width)))
    head = np.fft.rfft(frames[:, :width], n_fft)
    whole = np.fft.rfft(frames, n_fft)
    cross = np.fft.irfft(np.conj(head) * whole, n_fft)[:, : lag_max + 1]
    squares = np.concatenate([np.zeros((len(frames), 1)), np.cumsum(frames**2, axis=1)], axis=1)
    lags = np.arange(lag_max + 1)
    shifted = squares[:, lags + width] - squares[:, lags]
    diff = squares[:, [width]] + shifted - 2 * cross
    diff[:, 0] = 0.0
    running = np.cumsum(diff[:, 1:], axis=1) / np.arange(1, lag_max + 1)
    out = np.ones_like(diff)
    out[:, 1:] = np.divide(diff[:, 1:], running, out=np.ones_like(running), where=running > 0)
    return out
