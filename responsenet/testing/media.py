"""Small deterministic media files made with ffmpeg's built-in sources, for tests and demos.

These are plumbing fixtures (known duration, frame rate, streams, cut times); conversations with
faces and voices come from ``responsenet synth``.
"""

from __future__ import annotations

from pathlib import Path

from responsenet.media import run_ffmpeg

#: Distinct ffmpeg test patterns, one per shot, so that a hard cut changes the picture entirely.
PATTERNS = ("testsrc2", "smptebars", "rgbtestsrc", "pal100bars")


def make_video(path: str | Path, *, duration: float = 3.0, fps: float = 25, size=(320, 180),
               audio: bool = True, video: bool = True, tone_hz: float = 440.0) -> Path:
    """Write an H.264/AAC mp4 of one moving test pattern and a sine tone.

    Args:
        path: output file (.mp4).
        duration: seconds.
        fps: constant frame rate of the video stream.
        size: (width, height) in pixels.
        audio: include a 44.1 kHz stereo AAC sine tone.
        video: include the video stream (False writes an audio-only file).
    """
    path = Path(path)
    width, height = size
    args: list[str] = []
    if video:
        args += ["-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={fps}:duration={duration}"]
    if audio:
        args += ["-f", "lavfi", "-i",
                 f"sine=frequency={tone_hz}:sample_rate=44100:duration={duration}", "-ac", "2"]
    if video:
        args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    if audio:
        args += ["-c:a", "aac", "-b:a", "64k"]
    run_ffmpeg([*args, "-t", str(duration), str(path)], what=f"make test video {path.name}")
    return path


def truncate(src: str | Path, dst: str | Path, keep_fraction: float = 0.3) -> Path:
    """Copy the first ``keep_fraction`` of ``src``'s bytes to ``dst``: a broken, truncated file."""
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: max(1, int(len(data) * keep_fraction))])
    return Path(dst)
