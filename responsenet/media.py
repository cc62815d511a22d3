"""ffmpeg and ffprobe at the edge: probing media and running ffmpeg with argument lists.

Nothing here builds a shell string: every call passes a list of arguments to ``subprocess``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

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
