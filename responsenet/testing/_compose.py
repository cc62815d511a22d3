"""Helpers of :mod:`responsenet.testing.realmedia`: turn plans, audio placement, the ffmpeg graph.

Everything here works on the frame grid of the output video: a turn is
``(participant, start_frame, end_frame)`` with ``end_frame`` exclusive. The planning functions are
pure (numbers in, numbers out); only :func:`read_audio`, :func:`write_wav` and :func:`encode` touch
files.
"""

from __future__ import annotations

import itertools
import math
import tempfile
import wave
from pathlib import Path

import numpy as np

from responsenet.media import run_ffmpeg, x264_threads

#: A turn on the frame grid: (participant index 0|1, start_frame, end_frame exclusive).
FrameTurn = tuple[int, int, int]
#: One piece of a panel's picture: ("play" | "hold", first source frame, number of output frames).
Segment = tuple[str, int, int]

PANELS = {"lr": ("left", "right"), "tb": ("top", "bottom")}


def to_frame(seconds: float, fps: float) -> int:
    """Nearest frame index of a time in seconds (halves round up: 2.1 s at 25 fps -> 53)."""
    return math.floor(seconds * fps + 0.5 + 1e-9)


def snap_turns(turns: list[tuple[int, float, float]], fps: float) -> list[FrameTurn]:
    """Round ``(participant, start, end)`` turns in seconds to the frame grid and check them.

    Returns:
        Turns sorted by start frame. Raises ValueError for a participant other than 0 or 1, an
        empty or negative turn, or two turns of the same participant that overlap.
    """
    snapped = []
    for who, start, end in turns:
        if who not in (0, 1):
            raise ValueError(f"turn {(who, start, end)}: participant must be 0 or 1, got {who!r}")
        start_frame, end_frame = to_frame(start, fps), to_frame(end, fps)
        if start_frame < 0 or end_frame <= start_frame:
            raise ValueError(f"turn {(who, start, end)}: expected 0 <= start < end seconds with at "
                             f"least one frame (1/{fps} s) between them")
        snapped.append((who, start_frame, end_frame))
    check_disjoint(snapped, fps)
    return sorted(snapped, key=lambda t: (t[1], t[0]))


def check_disjoint(turns: list[FrameTurn], fps: float) -> None:
    """Raise ValueError when two turns of one participant overlap (times in the message in s)."""
    for who in (0, 1):
        spans = sorted((a, b) for w, a, b in turns if w == who)
        for (a0, b0), (a1, b1) in itertools.pairwise(spans):
            if a1 < b0:
                raise ValueError(f"participant {who} has overlapping turns {a0 / fps}-{b0 / fps} s "
                                 f"and {a1 / fps}-{b1 / fps} s; one participant's turns must be "
                                 "disjoint")


def stretch_turn(turns: list[FrameTurn], index: int, n_frames: int, fps: float) -> list[FrameTurn]:
    """Give ``turns[index]`` a new length of ``n_frames`` frames and move the turns after it.

    Turns that start at or after the stretched turn's start and end after its old end move by
    the change in length (so an overlap at its end is kept); turns inside it (backchannels) and
    turns that started before it stay where they are.
    """
    _, start, end = turns[index]
    delta = n_frames - (end - start)
    out = []
    for j, (w, a, b) in enumerate(turns):
        if j == index:
            out.append((w, a, a + n_frames))
        elif a >= start and b > end:
            out.append((w, a + delta, b + delta))
        else:
            out.append((w, a, b))
    if any(a < 0 for _, a, _ in out):
        raise ValueError("a shorter speech_over turn would move later turns before t=0; pass turns")
    check_disjoint(out, fps)
    return sorted(out, key=lambda t: (t[1], t[0]))


def panel_segments(spans: list[tuple[int, int]], n_frames: int) -> list[Segment]:
    """Plan one panel's picture: the clip plays during ``spans`` and freezes in between.

    Args:
        spans: that participant's turns as sorted, disjoint ``(start_frame, end_frame)``.
        n_frames: length of the output video in frames.

    Returns:
        Segments covering frames ``[0, n_frames)`` in order. The clip resumes where it paused, so
        turn ``k`` plays source frames from the sum of earlier turns' lengths; a hold shows the
        last frame played (source frame 0 before the first turn).
    """
    segments: list[Segment] = []
    played, frame = 0, 0
    for start, end in spans:
        if start > frame:
            segments.append(("hold", max(played - 1, 0), start - frame))
        segments.append(("play", played, end - start))
        played, frame = played + end - start, end
    if frame < n_frames:
        segments.append(("hold", max(played - 1, 0), n_frames - frame))
    return segments


def voice_track(source: np.ndarray | None, spans: list[tuple[int, int]],
                speech: np.ndarray | None, n_frames: int, fps: float,
                sample_rate: int) -> np.ndarray:
    """One participant's audio: float32 [n_frames / fps * sample_rate] samples.

    Args:
        source: the clip's audio, float32 [samples]; it resumes where it paused and loops.
        spans: that participant's turns as ``(start_frame, end_frame)``.
        speech: audio that replaces ``source`` during the first turn (zero-padded), or None.
        n_frames, fps: length of the output video in frames, and its frame rate.
        sample_rate: Hz of ``source``, ``speech`` and the result.
    """
    per_frame = sample_rate / fps
    pieces, played = [], 0
    for k, (start, end) in enumerate(spans):
        n = round((end - start) * per_frame)
        if k == 0 and speech is not None:
            piece = cut(speech, 0, n, loop=False)
        else:
            piece = cut(source, round(played * per_frame), n, loop=True)
        pieces.append((round(start * per_frame), piece))
        played += end - start
    return place_audio(round(n_frames * per_frame), pieces)


def place_audio(n_samples: int, pieces: list[tuple[int, np.ndarray]]) -> np.ndarray:
    """float32 [n_samples]: each ``(start_sample, samples)`` piece added at its place."""
    track = np.zeros(n_samples, np.float32)
    for start, samples in pieces:
        stop = min(start + len(samples), n_samples)
        track[start:stop] += samples[: stop - start]
    return track


def cut(source: np.ndarray, start: int, n: int, *, loop: bool) -> np.ndarray:
    """float32 [n]: ``source[start:start + n]``, wrapping around when ``loop``, else zero-padded."""
    if loop:
        return source[(start + np.arange(n)) % len(source)]
    piece = source[start:start + n]
    return np.pad(piece, (0, n - len(piece)))


def normalize(x: np.ndarray, sample_rate: int, target_dbfs: float = -24.0) -> np.ndarray:
    """Scale ``x`` so that its active 40 ms frames (within 30 dB of the loudest) have RMS
    ``target_dbfs`` dB relative to full scale."""
    hop = int(0.04 * sample_rate)
    frames = x[: len(x) // hop * hop].reshape(-1, hop)
    rms = np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1))
    if len(rms) == 0 or rms.max() <= 0:
        return x
    active = rms[rms >= rms.max() * 10 ** (-30 / 20)]
    level = np.sqrt((active ** 2).mean())
    return (x * (10 ** (target_dbfs / 20) / level)).astype(np.float32)


def read_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Decode the first audio stream of ``path`` to float32 [samples] mono at ``sample_rate`` Hz."""
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="rn-audio-") as tmp:
        wav = Path(tmp) / "audio.wav"
        run_ffmpeg(["-i", str(path), "-vn", "-ac", "1", "-ar", str(sample_rate),
                    "-c:a", "pcm_s16le", str(wav)], what=f"decode the audio of {path.name}")
        with wave.open(str(wav), "rb") as f:
            data = f.readframes(f.getnframes())
    return np.frombuffer(data, np.int16).astype(np.float32) / 32768.0


def write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    """Write float samples in [-1, 1] as a 16-bit mono WAV."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes(pcm.tobytes())


def panel_graph(index: int, segments: list[Segment], panel_size: tuple[int, int],
                fps: float) -> str:
    """ffmpeg filter chains turning input ``index`` into the panel stream ``[p{index}]``."""
    w, h = panel_size
    k = len(segments)
    chains = [f"[{index}:v]fps={fps},scale={w}:{h}:force_original_aspect_ratio=decrease,"
              f"pad={w}:{h}:(ow-iw)/2:(oh-ih)/2,setsar=1,split={k}"
              + "".join(f"[s{index}_{j}]" for j in range(k))]
    for j, (kind, first, n) in enumerate(segments):
        last = first + (n if kind == "play" else 1)
        chain = f"[s{index}_{j}]trim=start_frame={first}:end_frame={last},setpts=PTS-STARTPTS"
        if kind == "hold":
            chain += f",loop=loop={n - 1}:size=1:start=0,setpts=N/({fps}*TB)"
        chains.append(chain + f"[g{index}_{j}]")
    chains.append("".join(f"[g{index}_{j}]" for j in range(k))
                  + f"concat=n={k}:v=1:a=0,setpts=N/({fps}*TB)[p{index}]")
    return ";".join(chains)


def loops_needed(segments: list[Segment], clip_duration: float, fps: float) -> int:
    """How many extra times the clip must repeat (ffmpeg ``-stream_loop``) to feed ``segments``."""
    needed = max(first + (n if kind == "play" else 1) for kind, first, n in segments)
    available = max(math.floor(clip_duration * fps) - 1, 1)
    return max(math.ceil(needed / available) - 1, 0)


def encode(out: Path, clips: list[Path], loops: list[int], graph: str, wav: Path, *,
           n_frames: int, fps: float, sample_rate: int) -> None:
    """Run ffmpeg: the two clips through ``graph`` (ending in ``[v]``) plus ``wav`` into ``out``
    (H.264 yuv420p, constant ``fps``, exactly ``n_frames`` frames; AAC mono ``sample_rate`` Hz).

    The only keyframe is frame 0 (no scene-cut keyframes), so a frozen panel is never re-encoded
    from scratch: after ~3 frames of encoder refinement it changes by < 0.01 grey levels a frame.
    """
    args: list[str] = []
    for clip, extra in zip(clips, loops):
        args += ["-stream_loop", str(extra), "-i", str(clip)]
    args += ["-i", str(wav), "-filter_complex", graph, "-map", "[v]", "-map", f"{len(clips)}:a",
             "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", *x264_threads(2),
             "-pix_fmt", "yuv420p",
             "-g", str(max(n_frames, 1)), "-sc_threshold", "0",
             "-r", str(fps), "-fps_mode", "cfr",
             "-c:a", "aac", "-b:a", "64k", "-ar", str(sample_rate), "-ac", "1",
             "-t", f"{n_frames / fps:.6f}", "-movflags", "+faststart", "-f", "mp4", str(out)]
    run_ffmpeg(args, what=f"compose {out.name}")
