"""ffmpeg and ffprobe at the edge: probing media and running ffmpeg with argument lists.

Nothing here builds a shell string: every call passes a list of arguments to ``subprocess``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from queue import Empty, Queue
from typing import TypeVar

import numpy as np

from responsenet.errors import StageFailure, UsageError

T = TypeVar("T")


def require_tool(name: str) -> str:
    """Return the path of an executable, or raise a UsageError that says how to install it."""
    found = shutil.which(name)
    if found is None:
        raise UsageError(f"{name} not found on PATH; install it (Debian: apt-get install ffmpeg)")
    return found



def x264_threads(threads: int) -> list[str]:
    """ffmpeg output options that make libx264 encode the same bytes on every run.

    x264's output depends on its thread count, so a fixed count replaces "auto" (which follows
    the CPUs the process may use: a Ray worker, a container and a laptop differ). Its threaded
    lookahead (``sync-lookahead``, on whenever threads > 1 and the preset looks ahead) makes the
    output depend on thread timing as well: under load the same command gave different bytes
    from run to run, so it is turned off. Frame threads stay, so encodes still use the cores.
    """
    return ["-threads", str(threads), "-x264-params", "sync-lookahead=0"]

@dataclass(frozen=True)
class MediaInfo:
    """What ffprobe says about a media file.

    Attributes:
        duration: container duration in seconds (0.0 when unknown).
        width, height: video size in pixels (0 without video).
        fps: average frame rate in frames per second (0.0 without video).
        nominal_fps: the stream's declared (``r_frame_rate``) rate.
        variable_fps: True when average and declared rates disagree by more than 1%.
        rotation: clockwise degrees (0, 90, 180 or 270) a player turns the stored picture by,
            from the stream's display matrix (phones record sideways and set one). ffmpeg
            applies it when decoding, so ``width`` and ``height`` are the size as displayed
            (and as decoded), not as stored.
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
    rotation: int = 0
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


class UnreadableMedia(StageFailure):
    """ffprobe cannot read a file (reason ``corrupt_media``); ``detail`` is ffprobe's own words."""

    def __init__(self, path: str | Path, detail: str):
        super().__init__("corrupt_media", f"ffprobe cannot read {path}: {detail}")
        self.path, self.detail = str(path), detail

    def __reduce__(self):
        return (type(self), (self.path, self.detail))


def _rotation(stream: dict) -> int:
    """Clockwise display rotation in degrees (0/90/180/270) from the display matrix or the
    legacy ``rotate`` tag. ffprobe reports the matrix's angle counter-clockwise."""
    for side in stream.get("side_data_list") or []:
        if "rotation" in side:
            return round(-float(side["rotation"])) % 360
    tag = (stream.get("tags") or {}).get("rotate")
    return round(float(tag)) % 360 if tag else 0


def probe(path: str | Path) -> MediaInfo:
    """Probe ``path`` with ffprobe; raise :class:`UnreadableMedia` if it is unreadable."""
    cmd = [require_tool("ffprobe"), "-v", "error", "-print_format", "json",
           "-show_format", "-show_streams", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        detail = lines[-1].removeprefix(f"{path}: ") if lines else "no detail"
        raise UnreadableMedia(path, detail)
    data = json.loads(proc.stdout or "{}")
    streams = data.get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video"
                  and not s.get("disposition", {}).get("attached_pic")), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    duration = float(data.get("format", {}).get("duration") or 0.0)
    info = {"duration": duration, "has_video": video is not None, "has_audio": audio is not None}
    if video is not None:
        avg, nominal = _rate(video.get("avg_frame_rate")), _rate(video.get("r_frame_rate"))
        rotation = _rotation(video)
        size = (int(video.get("width", 0)), int(video.get("height", 0)))
        width, height = size[::-1] if rotation in (90, 270) else size
        info.update(width=width, height=height, rotation=rotation,
                    fps=avg or nominal, nominal_fps=nominal, video_codec=video.get("codec_name", ""),
                    variable_fps=bool(avg and nominal and abs(avg - nominal) / nominal > 0.01))
    if audio is not None:
        info.update(sample_rate=int(audio.get("sample_rate", 0)),
                    channels=int(audio.get("channels", 0)))
    return MediaInfo(**info)


def run_ffmpeg(args: list[str], *, what: str, reason: str = "ffmpeg_failed") -> str:
    """Run ffmpeg with ``args`` (no shell); raise StageFailure(reason) with its last error lines.

    Returns:
        ffmpeg's error output (errors it survived, such as damaged packets; see
        :func:`decode_errors`).
    """
    cmd = [require_tool("ffmpeg"), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, errors="replace")
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:]) or f"exit code {proc.returncode}"
        raise StageFailure(reason, f"ffmpeg failed to {what}: {tail}")
    return proc.stderr


#: ffmpeg's line for a packet its decoder rejected: "Error while decoding stream #0:1: ..."
#: (ffmpeg 4-6), "[vist#0:0/h264 @ 0x..] Decoding error: ..." or "... Error submitting packet
#: to decoder: ..." (ffmpeg 7).
_DECODE_ERROR = re.compile(r"Error while decoding stream #\d+:\d+"
                           r"|\[[av]ist#\d+:\d+/[^\]]*\] (?:Decoding error"
                           r"|Error submitting packet to decoder)")


def decode_errors(stderr: str) -> list[str]:
    """The lines of ffmpeg's error output that report a packet it could not decode."""
    return [line for line in stderr.splitlines() if _DECODE_ERROR.search(line)]


def decode_frames(path: str | Path, *, size: tuple[int, int] | None = None,
                  every: int = 1, scaler: str = "area", ahead: int = 0,
                  input_args: Sequence[str] = (), filters: Sequence[str] = (),
                  known_size: tuple[int, int] | None = None) -> Iterator[np.ndarray]:
    """Frames of the video at ``path``, decoded by ffmpeg: uint8 RGB [H, W, 3] each.

    Args:
        path: a video file.
        size: ``(width, height)`` to scale every frame to (area filter); None keeps the size.
        every: yield only frames ``0, every, 2 * every, ...`` (decoded, then dropped by ffmpeg).
        scaler: ffmpeg's scaling algorithm with ``size`` (``area``; ``fast_bilinear`` is about
            twice as fast and good enough for face detection).
        ahead: frames a background thread reads ahead of the consumer (0: none). A pipe holds
            less than one frame, so without it ffmpeg and the consumer take turns; with a few
            frames of slack they run at the same time on two cores.
        input_args: ffmpeg options before ``-i`` (e.g. ``-ss``/``-t`` of a time window).
        filters: video filters run first (e.g. segment's frame-exact CFR chain and ``select``
            of a clip's frames); frames then pass through unchanged in timing.
        known_size: ``(width, height)`` of the frames ``filters`` put out (required with
            ``filters`` that change the size; default: the probed size).

    Raises:
        StageFailure: ``corrupt_media`` when ffprobe or ffmpeg cannot read the file.
    """
    info = probe(path)
    if not info.has_video or not info.width or not info.height:
        raise StageFailure("corrupt_media", f"{path}: expected a video, found no video stream")
    width, height = size or known_size or (info.width, info.height)
    chain = list(filters)
    chain += [f"select='not(mod(n\\,{every}))'"] if every > 1 else []
    chain += [f"scale={width}:{height}:flags={scaler}"] if size else []
    cmd = [require_tool("ffmpeg"), "-nostdin", "-hide_banner", "-loglevel", "error",
           *input_args, "-i", str(path), "-map", "0:v:0",
           *(["-vf", ",".join(chain)] if chain else []),
           *(["-fps_mode", "passthrough"] if every > 1 or filters else []),
           "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)
        try:
            frames = _read_frames(proc.stdout, width, height)
            yield from (read_ahead(frames, ahead) if ahead > 0 else frames)
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


def read_ahead(items: Iterator[T], depth: int) -> Iterator[T]:
    """Yield ``items`` while a background thread produces up to ``depth`` of them in advance.

    For producers that wait outside the GIL (a pipe read, a native decoder). An exception of
    the producer is raised here, in order; when the consumer stops early the thread stops after
    at most one more item.
    """
    queue: Queue = Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                queue.put((item, None))
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, which raises it
            queue.put((end, error))
            return
        queue.put((end, None))

    thread = threading.Thread(target=produce, name="read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, error = queue.get()
            if error is not None:
                raise error
            if item is end:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                queue.get_nowait()
            except Empty:
                thread.join(timeout=0.01)


def _read_frames(pipe, width: int, height: int) -> Iterator[np.ndarray]:
    """uint8 RGB [height, width, 3] frames read from a raw rgb24 byte stream until it ends."""
    size = width * height * 3
    while len(chunk := pipe.read(size)) == size:
        yield np.frombuffer(chunk, np.uint8).reshape(height, width, 3)
