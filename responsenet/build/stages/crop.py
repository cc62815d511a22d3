"""Stage 3, crop: one clip -> layout, two tracked faces, and a square face video per track.

Three decodes of the clip: a sparse one (``layout_samples`` frames, detection-sized) to decide the
layout; a full one at detection size to detect each panel's face on every frame, follow the two
identities (panel swaps included) and measure face presence; a full-resolution one that cuts the
smoothed square crops and pipes them to one x264 encoder per track. See docs/stages/crop.md.
"""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from queue import Queue
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from responsenet import facetrack as ft
from responsenet.build.stages.base import Stage, StageConfig, StageContext
from responsenet.build.stages.face import model_file
from responsenet.build.stages.segment import clip_decode
from responsenet.errors import StageFailure
from responsenet.media import decode_frames, probe, require_tool, x264_threads

#: Frames decoded ahead of the crop threads, and queued for each track's encoder.
_QUEUED_FRAMES = 4

Preset = Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"]


class CropConfig(StageConfig):
    """Settings of the crop stage (ResponseNet: 1024-pixel face videos)."""

    size: int = Field(1024, ge=64, le=2048, description="side of the square face videos, px")
    scale: float = Field(1.8, ge=1.0, le=4.0, description="crop side / detected face side")
    smooth_center_s: float = Field(0.2, ge=0, description="Gaussian sigma of the crop centre, s")
    smooth_size_s: float = Field(1.0, ge=0, description="Gaussian sigma of the crop side, s")
    min_face_px: int = Field(40, ge=8, description="median face side below this: face_too_small")
    min_presence: float = Field(0.5, ge=0, le=1, description="a track found in fewer frames fails")
    layout_samples: int = Field(12, ge=3, le=200, description="frames sampled to find the layout")
    min_layout_share: float = Field(0.6, gt=0, le=1, description="sampled frames that must fit")
    detect_width: int = Field(640, ge=128, description="frames are shrunk to this width to detect")
    detect_every: int = Field(1, ge=1, le=10, description="search every n-th frame for faces; "
                              "boxes in between are interpolated")
    min_detection_confidence: float = Field(0.5, gt=0, lt=1)
    swap_min_frames: int = Field(5, ge=1, description="frames of crossed appearance for a swap")
    swap_ratio: float = Field(0.7, gt=0, le=1, description="crossed/straight distance for a swap")
    crf: int = Field(18, ge=0, le=51)
    preset: Preset = "veryfast"
    encode_threads: int = Field(1, ge=1, le=16, description="x264 threads per track encoder "
                                "(two run at once); fixed so output bytes do not depend on the "
                                "machine")
    model_path: str | None = Field(None, description="face_landmarker.task; default: assets")


class CropStage(Stage):
    """Find the layout and the two faces of a clip; write one square face video per track."""

    name = "crop"
    version = "2"
    unit = "clip"
    requires = ("segment",)
    resources: ClassVar[dict[str, float]] = {"CPU": 1, "memory": 1.0 * 2**30}
    Config = CropConfig

    def run(self, ctx: StageContext) -> dict[str, Any]:
        cfg: CropConfig = ctx.config
        segment = ctx.inputs["segment"]
        clip = next(c for c in segment.meta["clips"] if c["clip_id"] == ctx.item_id)
        source = clip_decode(segment.dir, clip)
        return crop_clip(source.pop("path"), ctx.out_dir, cfg, fps=float(segment.meta["fps"]),
                         n_frames=int(clip["n_frames"]), layout=ctx.source.layout,
                         clip_id=ctx.item_id, decode=source)


def crop_clip(video: Path, out_dir: Path, cfg: CropConfig, *, fps: float, n_frames: int,
              layout: str = "auto", clip_id: str = "clip",
              decode: dict[str, Any] | None = None) -> dict[str, Any]:
    """Crop the two faces of ``video`` into ``out_dir``; return the stage metadata.

    ``decode`` holds extra ``decode_frames`` arguments (``input_args``, ``filters``,
    ``known_size``) when the clip's frames come from its source rather than a clip video
    (segment's ``reencode: when_cut``; see ``segment.clip_decode``).

    Raises:
        StageFailure: ``no_face``, ``one_face``, ``too_many_faces``, ``face_too_small``,
            ``layout_unstable``, ``black_frames``, ``weights_missing`` or ``ffmpeg_failed``.
    """
    task_file = model_file(cfg.model_path)  # the FaceLandmarker bundle; its detector is used
    decode = dict(decode or {})
    if decode.get("known_size"):
        width, height = (int(v) for v in decode["known_size"])
    else:
        info = probe(video)
        width, height = info.width, info.height
        decode["known_size"] = (width, height)
    small = _detect_size(width, height, cfg.detect_width)
    k = width / small[0]
    with ft.face_detector(task_file, cfg.min_detection_confidence) as detector:
        samples = list(decode_frames(video, size=small, scaler="fast_bilinear",
                                     every=max(1, n_frames // cfg.layout_samples), **decode))
        if samples and np.mean([s.mean() for s in samples]) < 8:
            raise StageFailure("black_frames", f"clip {clip_id}: the sampled frames are black")
        looks = [_scaled(ft.look(detector, s), k) for s in samples]
        geometry, rects, decision = _layout(layout, looks, width, height, cfg, clip_id)
        tracker = ft.Tracker(n_frames, swap_min_frames=cfg.swap_min_frames,
                             swap_ratio=cfg.swap_ratio)
        small_rects = {n: tuple(round(v / k) for v in r) for n, r in rects.items()}
        count = 0
        for index, rgb in enumerate(decode_frames(video, size=small, scaler="fast_bilinear",
                                                  ahead=_QUEUED_FRAMES, **decode)):
            if index >= n_frames:
                break
            count += 1
            if index % cfg.detect_every:
                tracker.skip(index)
                continue
            found = ft.panel_detections(detector, rgb, geometry, small_rects)
            tracker.update(index, rgb, [found[name] for name in ft.PANELS[geometry]])
    if count != n_frames:
        raise StageFailure("frame_count_mismatch", f"clip {clip_id}: segment recorded "
                           f"{n_frames} frames, the video holds {count}")
    tracks = tracker.result()
    tracks.faces *= k
    searched = np.arange(n_frames) % cfg.detect_every == 0
    _check_faces(tracks, cfg, clip_id, ft.PANELS[geometry], searched)
    boxes = [ft.crop_boxes(tracks.faces[t], tracks.swaps, fps, cfg.scale, cfg.smooth_center_s,
                           cfg.smooth_size_s) for t in (0, 1)]
    names = ft.PANELS[geometry]
    panel_rects = [rects[n] for n in names]
    _encode(video, out_dir, names, boxes, tracks.panel_of, panel_rects, cfg, fps, decode,
            n_frames, clip_id)
    meta_tracks = []
    for t, name in enumerate(names):
        np.save(out_dir / f"{name}.boxes.npy", boxes[t])
        np.save(out_dir / f"{name}.faces.npy", tracks.faces[t])
        found = ~np.isnan(tracks.faces[t, searched, 0])
        meta_tracks.append({
            "track": name, "panel": name, "panel_rect": list(rects[name]),
            "video": f"{name}.mp4", "boxes": f"{name}.boxes.npy", "faces": f"{name}.faces.npy",
            "presence": round(float(found.mean()), 4),
            "median_face_px": round(float(np.nanmedian(np.maximum(tracks.faces[t, :, 2],
                                                                  tracks.faces[t, :, 3]))), 1),
            "frames_in_other_panel": int(np.sum(tracks.panel_of[t] != t))})
    return {"layout": geometry, "layout_source": decision, "manifest_layout": layout,
            "fps": fps, "n_frames": n_frames, "frame_size": [width, height],
            "crop_size": cfg.size, "tracks": meta_tracks, "swaps": tracks.swaps,
            "frames_with_extra_faces": tracks.extra_faces}


def _detect_size(width: int, height: int, detect_width: int) -> tuple[int, int]:
    if width <= detect_width:
        return width, height
    return detect_width, max(2, round(height * detect_width / width / 2) * 2)


def _scaled(faces: ft.FrameFaces, k: float) -> ft.FrameFaces:
    def up(ds: list[ft.Detection]) -> list[ft.Detection]:
        return [ft.Detection(d.x * k, d.y * k, d.w * k, d.h * k, d.score) for d in ds]

    return ft.FrameFaces(up(faces.full), {n: up(v) for n, v in faces.halves.items()})


def _layout(layout: str, looks: list[ft.FrameFaces], width: int, height: int, cfg: CropConfig,
            clip_id: str) -> tuple[str, dict[str, ft.Rect], str]:
    """(geometry, panel rects, "manifest" or "detected"); StageFailure when there is none."""
    if layout in ft.GEOMETRY:
        geometry = ft.GEOMETRY[layout]
        if geometry != "pip":
            return geometry, ft.split_rects(geometry, width, height), "manifest"
        if not any(ft._is_pip(s, width, height) for s in looks):
            raise StageFailure("layout_unstable", f"clip {clip_id}: the manifest says pip but no "
                               "sampled frame shows a large and a small face")
        return geometry, ft.pip_rects(looks, width, height), "manifest"
    decision = ft.decide_layout(looks, width, height, cfg.min_layout_share)
    if decision.layout is None:
        raise StageFailure(decision.reason, f"clip {clip_id}: {decision.message}")
    if decision.layout == "pip":
        return "pip", ft.pip_rects(looks, width, height), "detected"
    return decision.layout, ft.split_rects(decision.layout, width, height), "detected"


def _check_faces(tracks: ft.Tracks, cfg: CropConfig, clip_id: str, names: tuple[str, str],
                 searched: np.ndarray) -> None:
    """Raise the reason when a track is found too rarely, a panel is crowded or faces are tiny."""
    n_frames = int(searched.sum())
    presence = [float(np.mean(~np.isnan(tracks.faces[t, searched, 0]))) for t in (0, 1)]
    low = [names[t] for t in (0, 1) if presence[t] < cfg.min_presence]
    if len(low) == 2:
        raise StageFailure("no_face", f"clip {clip_id}: faces found in only {presence[0]:.0%} "
                           f"({names[0]}) and {presence[1]:.0%} ({names[1]}) of frames")
    if low:
        raise StageFailure("one_face", f"clip {clip_id}: the {low[0]} face is found in only "
                           f"{min(presence):.0%} of frames (min_presence {cfg.min_presence:.0%})")
    if tracks.extra_faces > 0.5 * n_frames:
        raise StageFailure("too_many_faces", f"clip {clip_id}: a panel holds more than one face "
                           f"in {tracks.extra_faces} of {n_frames} frames")
    sides = np.nanmedian(np.maximum(tracks.faces[:, :, 2], tracks.faces[:, :, 3]), axis=1)
    if sides.min() < cfg.min_face_px:
        raise StageFailure("face_too_small", f"clip {clip_id}: median face side "
                           f"{sides.min():.0f} px < min_face_px {cfg.min_face_px}")


def _encoder(path: Path, size: int, fps: float, cfg: CropConfig, log: Path) -> subprocess.Popen:
    cmd = [require_tool("ffmpeg"), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{size}x{size}", "-r", f"{fps}",
           "-i", "pipe:0", "-c:v", "libx264", "-preset", cfg.preset, "-crf", str(cfg.crf),
           *x264_threads(cfg.encode_threads),
           "-pix_fmt", "yuv420p", "-an", str(path)]
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=log.open("wb"))


def _encode(video: Path, out_dir: Path, names: tuple[str, str], boxes: list[np.ndarray],
            panel_of: np.ndarray, panel_rects: list[ft.Rect], cfg: CropConfig, fps: float,
            decode: dict[str, Any], n_frames: int, clip_id: str) -> None:
    """Cut each track's crop from every full-resolution frame and encode it.

    Decoding, cutting and the two encoders run at the same time: frames are decoded a few
    ahead, and each track has a thread that cuts its crop (OpenCV releases the GIL) and feeds
    its encoder, so no process waits for another's turn.
    """
    logs = [out_dir / f".{name}.ffmpeg.log" for name in names]
    encoders = [_encoder(out_dir / f"{name}.mp4", cfg.size, fps, cfg, log)
                for name, log in zip(names, logs)]
    queues: list[Queue] = [Queue(maxsize=_QUEUED_FRAMES) for _ in encoders]

    def feed(t: int) -> None:
        encoder, queue = encoders[t], queues[t]
        try:
            while (item := queue.get()) is not None:
                index, rgb = item
                panel = panel_rects[panel_of[t, index]]
                encoder.stdin.write(ft.crop_frame(rgb, boxes[t][index], panel, cfg.size).data)
        except BaseException as error:
            while queue.get() is not None:  # keep taking frames so the decoder loop never blocks
                pass
            if not isinstance(error, BrokenPipeError):  # a dead encoder: its log says why
                raise
        finally:
            try:
                encoder.stdin.close()
            except BrokenPipeError:
                pass

    with ThreadPoolExecutor(max_workers=len(encoders), thread_name_prefix="crop") as pool:
        feeders = [pool.submit(feed, t) for t in range(len(encoders))]
        try:
            for index, rgb in enumerate(decode_frames(video, ahead=_QUEUED_FRAMES, **decode)):
                if index >= n_frames:
                    break
                for queue in queues:
                    queue.put((index, rgb))
        finally:
            for queue in queues:
                queue.put(None)
            for feeder in feeders:
                feeder.result()
    codes = [encoder.wait() for encoder in encoders]
    for code, log, name in zip(codes, logs, names):
        if code != 0:
            tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
            raise StageFailure("ffmpeg_failed", f"clip {clip_id}: encoding the {name} crop "
                               f"failed: {tail or f'exit code {code}'}")
        log.unlink(missing_ok=True)
