"""Sample-exact audio windows from WAV files and frame-exact video windows from mp4 files."""

from __future__ import annotations

import functools
import subprocess
import wave
from pathlib import Path

import numpy as np

from responsenet.errors import UsageError
from responsenet.media import MediaInfo, probe, require_tool

_PCM = {1: (np.uint8, 128.0, 127.0), 2: (np.int16, 0.0, 32767.0), 4: (np.int32, 0.0, 2**31 - 1.0)}


def read_audio_window(path: str | Path, start_sample: int, n_samples: int,
                      sample_rate: int = 16000) -> np.ndarray:
    """Samples ``[start_sample, start_sample + n_samples)`` of a PCM WAV file.

    Reads only that span. Samples scale as ``responsenet.wavio.read_wav`` scales them (16-bit:
    ``x / 32767``, clipped to [-1, 1]); channels are averaged. Samples outside the file are zero.

    Args:
        path: a PCM WAV file at ``sample_rate``.
        start_sample: first sample (may be negative or past the end: zeros there).
        n_samples: samples to return.
        sample_rate: the rate the file must have, Hz.

    Returns:
        float32 [n_samples].

    Raises:
        UsageError: the file is missing or unreadable, or has another rate or sample width.
    """
    try:
        with wave.open(str(path), "rb") as wav:
            rate, width, channels = wav.getframerate(), wav.getsampwidth(), wav.getnchannels()
            first = min(max(start_sample, 0), wav.getnframes())
            stop = min(max(start_sample + n_samples, first), wav.getnframes())
            wav.setpos(first)
            raw = wav.readframes(stop - first)
    except (OSError, EOFError, wave.Error) as e:
        raise UsageError(f"cannot read audio window from {path}: {e}; expected a 16 kHz PCM "
                         "WAV (responsenet validate ROOT checks the corpus media)") from e
    if rate != sample_rate or width not in _PCM:
        raise UsageError(f"{path}: {rate} Hz, {8 * width}-bit; expected {sample_rate} Hz PCM "
                         f"(convert: ffmpeg -i IN -ac 1 -ar {sample_rate} -c:a pcm_s16le OUT.wav)")
    dtype, zero, scale = _PCM[width]
    pcm = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(-1, channels)
    out = np.zeros(n_samples, np.float32)
    span = out[first - start_sample: stop - start_sample]
    if channels == 1 and not zero:  # the usual 16-bit mono file: one pass, no temporaries
        np.divide(pcm[:, 0], np.float32(scale), out=span)
    else:
        span[:] = ((pcm.astype(np.float32) - np.float32(zero)) / np.float32(scale)).mean(axis=1)
    return np.clip(out, -1.0, 1.0, out=out)


@functools.lru_cache(maxsize=256)
def _probe(path: str) -> MediaInfo:
    return probe(path)


def read_video_window(path: str | Path, start_frame: int, n_frames: int, fps: float,
                      size: tuple[int, int] | None = None) -> np.ndarray:
    """Frames ``[start_frame, start_frame + n_frames)`` of a constant-fps video, RGB.

    ffmpeg seeks to the frame before ``start_frame`` and decodes from the preceding keyframe,
    dropping frames before ``start_frame`` (accurate seek), so frame k of the result is frame
    ``start_frame + k`` of the file. Frames past the end of the file are zeros.

    Args:
        path: the face video (constant ``fps``).
        start_frame: first frame.
        n_frames: frames to return.
        fps: the video's frame rate, frames/s.
        size: ``(width, height)`` to scale frames to; None keeps the file's size.

    Returns:
        uint8 [n_frames, H, W, 3].

    Raises:
        UsageError: ffmpeg is missing, or the file has no video stream or cannot be decoded.
    """
    info = _probe(str(path))
    if not info.has_video:
        raise UsageError(f"{path}: no video stream; expected the track's face video")
    width, height = size or (info.width, info.height)
    seek = ["-ss", f"{(start_frame - 0.5) / fps:.6f}"] if start_frame > 0 else []
    scale = ["-vf", f"scale={width}:{height}:flags=area"] if size else []
    cmd = [require_tool("ffmpeg"), "-nostdin", "-hide_banner", "-loglevel", "error", *seek,
           "-i", str(path), "-map", "0:v:0", "-frames:v", str(n_frames), *scale,
           "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.decode(errors="replace").strip().splitlines()[-3:])
        raise UsageError(f"ffmpeg cannot decode frames {start_frame}..{start_frame + n_frames} "
                         f"of {path}: {tail or proc.returncode}")
    frame_bytes = width * height * 3
    decoded = np.frombuffer(proc.stdout, np.uint8)[: len(proc.stdout) // frame_bytes * frame_bytes]
    out = np.zeros((n_frames, height, width, 3), np.uint8)
    frames = decoded.reshape(-1, height, width, 3)[:n_frames]
    out[: len(frames)] = frames
    return out
