"""ffmpeg and ffprobe at the edge: probing media and running ffmpeg with argument lists.

Nothing here builds a shell string: every call passes a list of arguments to ``subprocess``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from responsenet.errors import StageFailure, UsageError


def require_tool(name: str) -> str:
    """Return the path of an executable, or raise a UsageError that says how to install it."""
    found = shutil.which(name)
    if found is None:
        raise UsageError(f"{name} not found on PATH; install it (Debian: apt-get install ffmpeg)")
    return found


@dataclass(frozen=True)
class MediaInfo:
    """What ffprobe says about a media file.

    Attributes:
        duration: container duration in seconds (0.0 when unknown).
        width, height: video size in pixels (0 without video).
        fps: average frame rate in frames per second (0.0 without video).
        nominal_fps: the stream's declared (``r_frame_rate``) rate.
        variable_fps: True when average and declared rates disagree by more than 1%.
        sample_rate, channels: first audio stream's rate in Hz and channel count (0 without audio).
    """

    duration: float
    has_video: bool
    has_audio: bool
    width: int = 0
    height: int = 0
    fps: float = 0.0
    nominal_fps: float = 0.0
    variable_fps: bool = False
    video_codec: str = ""
    sample_rate: int = 0
    channels: int = 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _rate(text: str | None) -> float:
    try:
        value = Fraction(text or "0")
    except (ValueError, ZeroDivisionError):
        return 0.0
    return float(value)


def probe(path: str | Path) -> MediaInfo:
    """Probe ``path`` with ffprobe; raise ``StageFailure('corrupt_media')`` if it is unreadable."""
    cmd = [require_tool("ffprobe"), "-v", "error", "-print_format", "json",
           "-show_format", "-show_streams", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        detail = proc.stderr.strip().splitlines()[-1:] or ["no detail"]
        raise StageFailure("corrupt_media", f"ffprobe cannot read {path}: {detail[0]}")
    data = json.loads(proc.stdout or "{}")
    streams = data.get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video"
                  and not s.get("disposition", {}).get("attached_pic")), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    duration = float(data.get("format", {}).get("duration") or 0.0)
    info = {"duration": duration, "has_video": video is not None, "has_audio": audio is not None}
    if video is not None:
        avg, nominal = _rate(video.get("avg_frame_rate")), _rate(video.get("r_frame_rate"))
        info.update(width=int(video.get("width", 0)), height=int(video.get("height", 0)),
                    fps=avg or nominal, nominal_fps=nominal, video_codec=video.get("codec_name", ""),
                    variable_fps=bool(avg and nominal and abs(avg - nominal) / nominal > 0.01))
    if audio is not None:
        info.update(sample_rate=int(audio.get("sample_rate", 0)),
                    channels=int(audio.get("channels", 0)))
    return MediaInfo(**info)


def run_ffmpeg(args: list[str], *, what: str, reason: str = "ffmpeg_failed") -> None:
    """Run ffmpeg with ``args`` (no shell); raise StageFailure(reason) with its last error lines."""
    cmd = [require_tool("ffmpeg"), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:]) or f"exit code {proc.returncode}"
        raise StageFailure(reason, f"ffmpeg failed to {what}: {tail}")


def decode_frames(path: str | Path, *, size: tuple[int, int] | None = None,
                  every: int = 1, scaler: str = "area") -> Iterator[np.ndarray]:
    """Frames of the video at ``path``, decoded by ffmpeg: uint8 RGB [H, W, 3] each.

    Args:
        path: a video file.
        size: ``(width, height)`` to scale every frame to (area filter); None keeps the size.
        every: yield only frames ``0, every, 2 * every, ...`` (decoded, then dropped by ffmpeg).
        scaler: ffmpeg's scaling algorithm with ``size`` (``area``; ``fast_bilinear`` is about
            twice as fast and good enough for face detection).

    Raises:
        StageFailure: ``corrupt_media`` when ffprobe or ffmpeg cannot read the file.
    """
    info = probe(path)
    if not info.has_video or not info.width or not info.height:
        raise StageFailure("corrupt_media", f"{path}: expected a video, found no video stream")
    width, height = size or (info.width, info.height)
    chain = [f"select='not(mod(n\\,{every}))'"] if every > 1 else []
    chain += [f"scale={width}:{height}:flags={scaler}"] if size else []
    cmd = [require_tool("ffmpeg"), "-nostdin", "-hide_banner", "-loglevel", "error",
           "-i", str(path), "-map", "0:v:0", *(["-vf", ",".join(chain)] if chain else []),
           *(["-fps_mode", "passthrough"] if every > 1 else []),
           "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)
        try:
            yield from _read_frames(proc.stdout, width, height)
        except BaseException:  # the consumer stopped early or failed: stop ffmpeg too
            proc.kill()
            proc.wait()
            raise
        finally:
            proc.stdout.close()
        if (code := proc.wait()) != 0:
            err.seek(0)
            tail = " | ".join(err.read().decode(errors="replace").strip().splitlines()[-3:])
            raise StageFailure("corrupt_media", f"ffmpeg failed to decode {path}: "
                               f"{tail or f'exit code {code}'}")


def _read_frames(pipe, width: int, height: int) -> Iterator[np.ndarray]:
    """uint8 RGB [height, width, 3] frames read from a raw rgb24 byte stream until it ends."""
    size = width * height * 3
    while len(chunk := pipe.read(size)) == size:
        yield np.frombuffer(chunk, np.uint8).reshape(height, width, 3)
