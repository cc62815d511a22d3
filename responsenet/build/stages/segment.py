"""Stage 2, segment: one downloaded source -> constant-fps clips between camera cuts.

Inputs: the ``download`` result (``meta["file"]``, ``meta["range_applied"]``). Steps: probe;
decode once to 64x36 thumbnails of the ``fps`` CFR stream and a 16 kHz mono mixture (no video
encode); measure frame-to-frame distances, find cuts, turn the shots into clip spans; then decode
again and encode the kept frames once, split into frame-exact ``{clip_id}.mp4`` files (no audio)
at forced keyframes, and cut a sample-exact ``{clip_id}.wav`` per clip. See
docs/stages/segment.md.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from responsenet.build import cuts as cutmath
from responsenet.build.stages.base import Stage, StageConfig, StageContext
from responsenet.errors import StageFailure
from responsenet.media import (
    MediaInfo,
    decode_errors,
    probe,
    require_tool,
    run_ffmpeg,
    x264_threads,
)

#: Thumbnail size (width, height) used for cut detection and luma measures.
THUMB_SIZE = (64, 36)
#: A decoded stream may fall short of the probed duration by this many seconds (or 5%) before
#: the source counts as corrupt.
DECODE_SLACK_S = 1.0

Preset = Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                 "slower", "veryslow"]


class SegmentConfig(StageConfig):
    """Settings of the segment stage (defaults as in ResponseNet: 25 fps, 16 kHz)."""

    fps: float = Field(25.0, gt=0, le=120, description="output frame rate, frames/s")
    sample_rate: int = Field(16000, ge=8000, le=48000, description="output audio rate, Hz")
    cut_threshold: float = Field(0.12, gt=0, le=1, description="frame distance counted as a cut")
    min_cut_gap: float = Field(0.5, ge=0, description="seconds between two cuts, at least")
    min_clip_seconds: float = Field(2.0, gt=0, description="shorter shots are dropped")
    max_clip_seconds: float | None = Field(None, gt=0, description="longer shots are split")
    crf: int = Field(18, ge=0, le=51, description="x264 quality of the clip videos")
    preset: Preset = "veryfast"
    reencode: Literal["always", "when_cut"] = Field(
        "always", description="'always': an H.264 file per clip; 'when_cut': only when the "
        "source gives several clips - a source that gives one keeps no clip video, and crop "
        "decodes its frames from the source through the same frame-exact filter (one encode "
        "less: about 8 core-seconds per minute of 720p, and one generation of compression)")
    encode_threads: int = Field(3, ge=1, le=16, description="x264 threads; fixed, because x264 "
                                "output depends on it: the same source then encodes to the same "
                                "bytes on any machine and executor")
    black_luma: float = Field(24.0, ge=0, le=255, description="frame mean luma counted as black")
    silence_dbfs: float = Field(-50.0, le=0, description="frame RMS counted as silent, dBFS")
    max_damaged_share: float = Field(0.01, ge=0, le=1, description="packets ffmpeg cannot "
                                     "decode per frame of the range, above which the source is "
                                     "corrupt_media")

    @property
    def min_frames(self) -> int:
        return max(1, math.ceil(self.min_clip_seconds * self.fps - 1e-6))

    @property
    def max_frames(self) -> int | None:
        if self.max_clip_seconds is None:
            return None
        return math.floor(self.max_clip_seconds * self.fps + 1e-6)

    @property
    def min_gap_frames(self) -> int:
        return max(1, round(self.min_cut_gap * self.fps))

    @model_validator(mode="after")
    def _max_at_least_twice_min(self) -> SegmentConfig:
        if self.max_frames is not None and self.max_frames < 2 * self.min_frames:
            raise ValueError(f"max_clip_seconds ({self.max_clip_seconds}) must be at least twice "
                             f"min_clip_seconds ({self.min_clip_seconds}) so that every piece of "
                             "a split shot is long enough; raise it or leave it unset")
        return self


@dataclass(frozen=True)
class Window:
    """The part of the downloaded file to use: ``offset`` is its start in source time (s)."""

    offset: float
    seek: float | None
    length: float | None
    expected: float

    def seconds_at(self, fps: float):
        """A function: frame index of the normalised stream -> seconds in source time."""
        return lambda frame: round(self.offset + frame / fps, 6)


@dataclass(frozen=True)
class Decoded:
    """What the decode pass keeps of one source (the thumbnails inside a temporary folder)."""

    thumbs: np.ndarray  # uint8 [T, 36, 64, 3], memory-mapped
    audio: np.ndarray  # int16 [N], mono
    errors: list[str]  # ffmpeg's lines about packets it could not decode


class SegmentStage(Stage):
    """Probe, decode, detect camera cuts and write frame-exact clips with quality measures."""

    name = "segment"
    version = "4"
    unit = "source"
    requires = ("download",)
    resources: ClassVar[dict[str, float]] = {"CPU": 1, "memory": 0.5 * 2**30}
    Config = SegmentConfig

    def run(self, ctx: StageContext) -> dict[str, Any]:
        cfg: SegmentConfig = ctx.config
        download = ctx.inputs["download"]
        src = download.dir / download.meta["file"]
        info = probe(src)
        _check_streams(ctx.item_id, info)
        window = _window(ctx, info)
        with tempfile.TemporaryDirectory(prefix="_segment-", dir=ctx.out_dir) as tmp:
            decoded = _decode(src, Path(tmp), window, cfg, ctx.item_id)
            _check_decoded(ctx.item_id, len(decoded.thumbs) / cfg.fps, "video", window.expected)
            _check_decoded(ctx.item_id, len(decoded.audio) / cfg.sample_rate, "audio",
                           window.expected)
            _check_damage(ctx.item_id, decoded.errors, len(decoded.thumbs), cfg)
            distances = cutmath.frame_distances(decoded.thumbs)
            luma = cutmath.frame_luma(decoded.thumbs)
            cut_frames = cutmath.detect_cuts(distances, cfg.cut_threshold, cfg.min_gap_frames)
            kept, dropped = cutmath.clip_spans(len(distances), cut_frames, cfg.min_frames,
                                               cfg.max_frames)
            if not kept:
                raise _too_short(ctx.item_id, len(distances), cut_frames, cfg)
            if cfg.reencode == "when_cut" and len(kept) == 1:
                videos: list[Path | None] = [None]  # crop decodes it from the source
            else:
                videos = list(_encode_clips(src, Path(tmp), window, kept, cfg, ctx.item_id))
            clips = [_write_clip(ctx, decoded, luma, info, window, index, span, video, src)
                     for index, (span, video) in enumerate(zip(kept, videos, strict=True))]
        np.save(ctx.out_dir / "distances.npy", distances)
        seconds = window.seconds_at(cfg.fps)
        return {
            "fps": cfg.fps, "sample_rate": cfg.sample_rate, "source_probe": info.to_dict(),
            "n_frames": len(distances), "range": [seconds(0), seconds(len(distances))],
            "cuts": [seconds(f) for f in cut_frames], "cut_frames": cut_frames, "clips": clips,
            "dropped": [{"start": seconds(a), "end": seconds(b), "start_frame": a,
                         "n_frames": b - a, "reason": "too_short"} for a, b in dropped],
        }


def _check_streams(source_id: str, info: MediaInfo) -> None:
    """Raise ``no_video`` / ``no_audio`` when the probed file lacks a stream."""
    if not info.has_video:
        raise StageFailure("no_video", f"source {source_id}: expected a video stream, found only "
                           "audio; point the manifest at the video, or drop this source")
    if not info.has_audio:
        raise StageFailure("no_audio", f"source {source_id}: expected an audio stream, found "
                           "video only; download a format with audio (e.g. yt-dlp 'bv*+ba')")


def _window(ctx: StageContext, info: MediaInfo) -> Window:
    """The time range to normalise: the manifest's, unless the download already applied it."""
    applied = ctx.inputs["download"].meta.get("range_applied")
    if applied is not None:
        return Window(float(applied[0] or 0.0), None, None, info.duration)
    start, end = ctx.source.start or 0.0, ctx.source.end
    if info.duration and start >= info.duration:
        raise StageFailure("bad_range", f"source {ctx.item_id}: manifest start {start:.2f} s is "
                           f"past the end of the media ({info.duration:.2f} s); fix its start")
    if end is not None and end <= start:
        raise StageFailure("bad_range", f"source {ctx.item_id}: manifest end {end:.2f} s is not "
                           f"after its start {start:.2f} s; fix the range")
    stop = min(end, info.duration) if (end is not None and info.duration) else end
    length = None if stop is None else stop - start
    expected = length if length is not None else max(0.0, info.duration - start)
    return Window(start, start or None, length, expected)


def _cfr_chain(cfg: SegmentConfig) -> str:
    """The filters that turn the first video stream into the CFR stream whose frames are counted."""
    return (f"[0:v:0]fps={cfg.fps}:start_time=0,scale=trunc(iw/2)*2:trunc(ih/2)*2,"
            "format=yuv420p")


def _window_args(window: Window) -> list[str]:
    """ffmpeg input options that cut ``window`` out of the source (none for the whole file)."""
    args = ["-ss", f"{window.seek:.6f}"] if window.seek else []
    return args + (["-t", f"{window.length:.6f}"] if window.length else [])


def _decode(src: Path, tmp: Path, window: Window, cfg: SegmentConfig, source_id: str) -> Decoded:
    """Decode pass (no video encode): CFR thumbnails (raw RGB) and the mono mixture WAV."""
    width, height = THUMB_SIZE
    graph = f"{_cfr_chain(cfg)},scale={width}:{height}:flags=area,format=rgb24[thumbs]"
    thumbs, audio = tmp / "thumbs.rgb", tmp / "mixture.wav"
    args = [*_window_args(window), "-i", str(src), "-filter_complex", graph,
            "-map", "[thumbs]", "-f", "rawvideo", "-fps_mode", "passthrough", str(thumbs),
            "-map", "0:a:0", "-af", f"aresample={cfg.sample_rate}:async=1:first_pts=0",
            "-ac", "1", "-c:a", "pcm_s16le", str(audio)]
    stderr = run_ffmpeg(args, what=f"decode source {source_id}", reason="corrupt_media")
    frame_bytes = width * height * 3
    n_frames = thumbs.stat().st_size // frame_bytes
    frames = (np.memmap(thumbs, dtype=np.uint8, mode="r", shape=(n_frames, height, width, 3))
              if n_frames else np.zeros((0, height, width, 3), np.uint8))
    return Decoded(frames, _read_wav(audio), decode_errors(stderr))


def _check_decoded(source_id: str, decoded: float, what: str, expected: float) -> None:
    """Raise ``corrupt_media`` when decoding stopped well short of the probed duration."""
    if expected - decoded > max(DECODE_SLACK_S, 0.05 * expected):
        raise StageFailure("corrupt_media", f"source {source_id}: expected {expected:.2f} s of "
                           f"{what}, decoded only {decoded:.2f} s (damaged or truncated file?); "
                           "download it again")


def _check_damage(source_id: str, errors: list[str], n_frames: int,
                  cfg: SegmentConfig) -> None:
    """Raise ``corrupt_media`` when ffmpeg could not decode too many packets: it goes on past a
    damaged stretch (grey or smeared pictures, clicks), so the length alone does not show it."""
    if len(errors) > cfg.max_damaged_share * max(n_frames, 1):
        raise StageFailure("corrupt_media", f"source {source_id}: ffmpeg could not decode "
                           f"{len(errors)} packets of {n_frames / cfg.fps:.2f} s of media, more "
                           f"than segment.max_damaged_share={cfg.max_damaged_share:g} per frame "
                           f"(first: {errors[0].strip()}); the file is damaged, download it again")


def _too_short(source_id: str, n_frames: int, cut_frames: list[int],
               cfg: SegmentConfig) -> StageFailure:
    bounds = [0, *cut_frames, n_frames]
    longest = max(b - a for a, b in itertools.pairwise(bounds)) / cfg.fps
    return StageFailure("too_short", f"source {source_id}: expected at least one shot of "
                        f"min_clip_seconds={cfg.min_clip_seconds} s, found {len(bounds) - 1} "
                        f"shot(s) in {n_frames / cfg.fps:.2f} s, the longest {longest:.2f} s; "
                        "lower min_clip_seconds or raise cut_threshold")


def _write_clip(ctx: StageContext, decoded: Decoded, luma: np.ndarray, info: MediaInfo,
                window: Window, index: int, span: cutmath.Span, video: Path | None,
                src: Path) -> dict[str, Any]:
    """Check and move the encoded ``video`` of one span, write its WAV; return its meta entry.

    Without a ``video`` (``reencode: when_cut``, one clip) the entry's ``decode`` says how to
    get the clip's frames from the source instead (:func:`clip_decode`).
    """
    cfg: SegmentConfig = ctx.config
    clip_id = f"{ctx.item_id}_{index:03d}"
    start_frame, n_frames = span[0], span[1] - span[0]
    if video is not None:
        if (written := _frame_count(video)) != n_frames:
            raise StageFailure("ffmpeg_failed", f"clip {clip_id}: expected {n_frames} frames "
                               f"from frame {start_frame} of the normalised stream, wrote "
                               f"{written}")
        video.replace(ctx.out_dir / f"{clip_id}.mp4")
    samples = _clip_samples(decoded.audio, start_frame, n_frames, cfg)
    _write_wav(ctx.out_dir / f"{clip_id}.wav", samples, cfg.sample_rate)
    bounds = cutmath.sample_bounds(start_frame, n_frames, cfg.fps, cfg.sample_rate)
    frame_db = cutmath.frame_rms_dbfs(samples, bounds)
    clip_luma = luma[start_frame : start_frame + n_frames]
    quality = {
        "mean_luma": round(float(clip_luma.mean()), 3),
        "black_fraction": round(float(np.mean(clip_luma < cfg.black_luma)), 4),
        "rms_dbfs": round(cutmath.rms_dbfs(samples), 3),
        "silent_fraction": round(float(np.mean(frame_db < cfg.silence_dbfs)), 4),
        "source_fps": info.fps, "source_variable_fps": info.variable_fps,
        "source_width": info.width, "source_height": info.height,
        "source_rotation": info.rotation,
    }
    seconds = window.seconds_at(cfg.fps)
    entry = {"clip_id": clip_id, "index": index, "start": seconds(start_frame),
             "end": seconds(span[1]), "start_frame": start_frame,
             "n_frames": n_frames, "duration": round(n_frames / cfg.fps, 6),
             "video": f"{clip_id}.mp4", "audio": f"{clip_id}.wav", "quality": quality}
    if video is None:
        entry["video"] = None
        entry["decode"] = {
            "source": os.path.relpath(src, ctx.out_dir), "input_args": _window_args(window),
            "filters": [_cfr_chain(cfg).removeprefix("[0:v:0]"),
                        f"select='between(n,{start_frame},{span[1] - 1})'",
                        "setpts=round(N/(FRAME_RATE*TB))"],
            "size": [info.width // 2 * 2, info.height // 2 * 2]}
    return entry


def clip_decode(segment_dir: Path, clip: dict[str, Any]) -> dict[str, Any]:
    """``decode_frames`` arguments that give a clip's frames: its video, or (a clip that
    segment did not encode) the source through the frame-exact filter of its ``decode``."""
    if clip.get("video"):
        return {"path": segment_dir / clip["video"]}
    recipe = clip["decode"]
    return {"path": segment_dir / recipe["source"], "input_args": list(recipe["input_args"]),
            "filters": list(recipe["filters"]), "known_size": tuple(recipe["size"])}


def _encode_clips(src: Path, tmp: Path, window: Window, kept: list[cutmath.Span],
                  cfg: SegmentConfig, source_id: str) -> list[Path]:
    """Decode the source again and encode the frames of the ``kept`` spans, once.

    The CFR stream is rebuilt exactly as in :func:`_decode`; ``select`` keeps the spans' frames
    (renumbered without gaps), a keyframe is forced at each span's first frame and the segment
    muxer starts a new file there, so file ``i`` holds exactly the frames of ``kept[i]``.

    Returns:
        The encoded files, one per kept span, in order.
    """
    runs = "+".join(f"between(n,{a},{b - 1})" for a, b in cutmath.merge_adjacent(kept))
    graph = f"{_cfr_chain(cfg)},select='{runs}',setpts=round(N/(FRAME_RATE*TB))[clips]"
    ends = cutmath.packed_ends(kept)
    args = [*_window_args(window), "-i", str(src), "-filter_complex", graph, "-map", "[clips]",
            "-an", "-frames:v", str(ends[-1]), "-fps_mode", "passthrough", "-c:v", "libx264",
            "-crf", str(cfg.crf), "-preset", cfg.preset, *x264_threads(cfg.encode_threads),
            "-pix_fmt", "yuv420p", "-forced-idr", "1"]
    if len(ends) > 1:
        args += ["-force_key_frames", ",".join(f"{f / cfg.fps:.6f}" for f in ends[:-1])]
    args += ["-avoid_negative_ts", "disabled", "-f", "segment",
             "-segment_frames", ",".join(map(str, ends)), "-reset_timestamps", "1",
             "-segment_format", "mp4", "-segment_format_options", "movflags=+faststart",
             str(tmp / "clip-%06d.mp4")]
    run_ffmpeg(args, what=f"encode the clips of source {source_id}")
    videos = sorted(tmp.glob("clip-*.mp4"))
    if len(videos) != len(kept):
        raise StageFailure("ffmpeg_failed", f"source {source_id}: expected {len(kept)} clip "
                           f"videos from one encode, ffmpeg wrote {len(videos)}")
    return videos


def _frame_count(path: Path) -> int:
    """Frames in the first video stream as the container records them (no decoding)."""
    proc = subprocess.run([require_tool("ffprobe"), "-v", "error", "-select_streams", "v:0",
                           "-show_entries", "stream=nb_frames", "-of", "json", str(path)],
                          capture_output=True, text=True, check=False)
    streams = json.loads(proc.stdout or "{}").get("streams") or [{}]
    return int(streams[0].get("nb_frames") or -1)


def _clip_samples(audio: np.ndarray, start_frame: int, n_frames: int,
                  cfg: SegmentConfig) -> np.ndarray:
    """The mixture samples of a span, zero-padded at the end when the audio is short."""
    first = round(start_frame * cfg.sample_rate / cfg.fps)
    count = int(cutmath.sample_bounds(start_frame, n_frames, cfg.fps, cfg.sample_rate)[-1])
    out = np.zeros(count, dtype=np.int16)
    piece = audio[first : first + count]
    out[: len(piece)] = piece
    return out


def _read_wav(path: Path) -> np.ndarray:
    """Mono s16 WAV -> int16 [N]."""
    with wave.open(str(path), "rb") as f:
        return np.frombuffer(f.readframes(f.getnframes()), dtype="<i2").copy()


def _write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    """int16 [N] -> mono s16 WAV at ``sample_rate`` Hz."""
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes(samples.astype("<i2").tobytes())
