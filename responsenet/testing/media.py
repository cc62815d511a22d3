"""Small deterministic media files made with ffmpeg's built-in sources, for tests and demos.

These are plumbing fixtures (known duration, frame rate, streams, cut times); conversations with
faces and voices come from ``responsenet synth``.
"""

from __future__ import annotations

from collections.abc import Sequence
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


def shot_frames(shots, fps: float = 25) -> list[int]:
    """Frame count of each shot of :func:`make_shots_video`: ``round(seconds * fps)``."""
    return [round(seconds * fps) for _, seconds in shots]


def make_shots_video(path: str | Path, shots=(("testsrc2", 3.0), ("smptebars", 3.0)), *,
                     fps: float = 25, size=(160, 90), audio: bool = True,
                     tone_hz: float | Sequence[float] = 440.0) -> Path:
    """Write an H.264/AAC mp4 of several shots joined by hard cuts.

    Shot ``i`` shows test pattern ``shots[i][0]`` (one of :data:`PATTERNS`) for exactly
    ``round(shots[i][1] * fps)`` frames (:func:`shot_frames`), so cut ``i`` falls at frame
    ``sum(shot_frames[:i + 1])``, i.e. at that frame count divided by ``fps`` seconds. The audio
    changes at the same instants when ``tone_hz`` gives one tone per shot.

    Args:
        path: output file (.mp4).
        shots: ``(pattern, seconds)`` pairs, in order.
        fps: constant frame rate of the video stream.
        size: (width, height) in pixels.
        audio: include a 44.1 kHz stereo AAC track.
        tone_hz: sine frequency in Hz for all shots, or one per shot (0 = silence).
    """
    path, (width, height) = Path(path), size
    counts = shot_frames(shots, fps)
    tones = [tone_hz] * len(shots) if isinstance(tone_hz, (int, float)) else list(tone_hz)
    args: list[str] = []
    for pattern, seconds in shots:
        args += ["-f", "lavfi", "-i", (f"{pattern}=size={width}x{height}:rate={fps}:"
                 f"duration={seconds + 1}")]
    chains = [f"[{i}:v]trim=end_frame={n},setpts=PTS-STARTPTS,format=yuv420p[v{i}]"
              for i, n in enumerate(counts)]
    if audio:
        chains += [f"{_tone(hz)},atrim=duration={n / fps:.6f}[a{i}]"
                   for i, (hz, n) in enumerate(zip(tones, counts))]
    pads = "".join(f"[v{i}]" + (f"[a{i}]" if audio else "") for i in range(len(shots)))
    graph = ";".join([*chains, f"{pads}concat=n={len(shots)}:v=1:a={int(audio)}[v]"
                      + ("[a]" if audio else "")])
    args += ["-filter_complex", graph, "-map", "[v]", "-c:v", "libx264", "-preset", "ultrafast",
             "-r", str(fps)]
    if audio:
        args += ["-map", "[a]", "-c:a", "aac", "-b:a", "64k"]
    run_ffmpeg([*args, str(path)], what=f"make test video {path.name}")
    return path


def _tone(hz: float) -> str:
    """A lavfi 44.1 kHz stereo source: a sine of ``hz`` Hz, or silence when ``hz`` is 0."""
    if hz:
        return f"sine=frequency={hz}:sample_rate=44100,aformat=channel_layouts=stereo"
    return "anullsrc=sample_rate=44100:channel_layout=stereo"


def make_vfr_video(path: str | Path, *, duration: float = 4.0, fps: float = 30,
                   size=(160, 90), audio: bool = True, tone_hz: float = 440.0) -> Path:
    """Write a genuinely variable-frame-rate H.264/AAC mp4 of one moving test pattern.

    Frames of a ``fps`` pattern are kept irregularly, and their timestamps kept as they were:
    all frames in the first 3/8 of ``duration``, every third frame up to 3/4 of it, every second
    frame after that. ffprobe then reports ``r_frame_rate`` = ``fps`` but a lower
    ``avg_frame_rate``.

    Args:
        path: output file (.mp4).
        duration: seconds (the audio lasts exactly this long).
        fps: rate of the underlying pattern (the fastest stretch).
        size: (width, height) in pixels.
        audio: include a 44.1 kHz stereo AAC sine tone.
    """
    path, (width, height) = Path(path), size
    first, second = 0.375 * duration, 0.75 * duration
    keep = (f"lt(t\\,{first})+gte(t\\,{first})*lt(t\\,{second})*not(mod(n\\,3))"
            f"+gte(t\\,{second})*not(mod(n\\,2))")
    args = ["-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={fps}:duration={duration}"]
    if audio:
        args += ["-f", "lavfi", "-i", (f"sine=frequency={tone_hz}:sample_rate=44100:"
                 f"duration={duration}"), "-map", "1:a", "-ac", "2", "-c:a", "aac", "-b:a", "64k"]
    args += ["-map", "0:v", "-vf", f"select='{keep}'", "-fps_mode", "vfr", "-c:v", "libx264",
             "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    run_ffmpeg([*args, "-t", str(duration), str(path)], what=f"make test video {path.name}")
    return path
