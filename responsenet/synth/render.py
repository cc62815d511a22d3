"""Render a split-screen conversation: two animated faces, one per panel, encoded with its audio.

Each panel shows one :class:`~responsenet.synth.faces.FacePhoto` on a soft background made from
the photo's own colours, the face centred and about half the panel's height tall. The panel is
animated on a *stage* a little larger than the panel (so that a turning head never pulls in
smeared edge pixels) and cropped. Frames go to ffmpeg as raw RGB on a pipe (H.264 yuv420p + AAC).
"""

from __future__ import annotations

import math
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from responsenet.errors import StageFailure, UsageError
from responsenet.media import require_tool, x264_threads
from responsenet.synth.animate import FaceRig
from responsenet.synth.faces import FACE_FRACTION, FacePhoto, landmark_box
from responsenet.wavio import write_wav

Rect = tuple[int, int, int, int]

#: Panel names of each layout, in the order of ``photos``.
LAYOUTS = {"lr": ("left", "right"), "tb": ("top", "bottom"), "pip": ("main", "inset")}
#: Inset width as a fraction of the canvas width (pip layout); its margin to the canvas edges.
INSET_FRACTION, INSET_MARGIN = 0.28, 0.03
#: Framing after an odd number of cuts: zoom factor and face shift (fraction of panel w, h).
CUT_ZOOM, CUT_SHIFT = 1.3, (0.05, 0.03)
_STAGE_MARGIN = 0.12  # stage margin around a panel, fraction of the panel's larger side
_FEATHER = 0.06  # soft edge of the photo over its background, fraction of the photo side


def panel_rects(layout: str, size: tuple[int, int]) -> dict[str, Rect]:
    """``{panel: (x, y, w, h)}`` in canvas pixels for a canvas of ``size = (W, H)``.

    ``lr``: left and right halves; ``tb``: top and bottom halves; ``pip``: ``main`` is the whole
    canvas and ``inset`` a box ``INSET_FRACTION`` of the width (canvas aspect ratio) in the
    bottom-right corner, ``INSET_MARGIN`` of the width from the edges.
    """
    width, height = size
    if layout == "lr":
        return {"left": (0, 0, width // 2, height),
                "right": (width // 2, 0, width - width // 2, height)}
    if layout == "tb":
        return {"top": (0, 0, width, height // 2),
                "bottom": (0, height // 2, width, height - height // 2)}
    if layout == "pip":
        inset_w = 2 * round(INSET_FRACTION * width / 2)
        inset_h = 2 * round(inset_w * height / width / 2)
        margin = round(INSET_MARGIN * width)
        return {"main": (0, 0, width, height),
                "inset": (width - margin - inset_w, height - margin - inset_h, inset_w, inset_h)}
    raise UsageError(f"unknown layout {layout!r}; expected one of: {', '.join(LAYOUTS)}")


@dataclass
class PanelView:
    """One framing of one panel.

    Attributes:
        photo: the staged photo (panel plus ``margin`` pixels on every side).
        rig: its animation rig.
        margin: stage margin in pixels.
        size: the panel's ``(w, h)`` in pixels.
    """

    photo: FacePhoto
    rig: FaceRig
    margin: int
    size: tuple[int, int]

    def frame(self, jaw_open: float, yaw: float, pitch: float, roll: float) -> np.ndarray:
        """The panel's pixels, uint8 RGB [h, w, 3] (a view into the rig's cached frame)."""
        stage = self.rig.render(jaw_open, yaw, pitch, roll)
        (width, height), margin = self.size, self.margin
        return stage[margin:margin + height, margin:margin + width]


def stage_photo(photo: FacePhoto, size: tuple[int, int], margin: int, zoom: float = 1.0,
                shift: tuple[float, float] = (0.0, 0.0)) -> FacePhoto:
    """``photo`` framed for a panel of ``size = (w, h)``, on a stage ``margin`` pixels larger.

    The face is centred in the panel (plus ``shift`` x the panel size) and ``zoom`` x about half
    the panel's height tall; the rest is a blur of the photo's colours.
    """
    import cv2

    panel_w, panel_h = size
    x, y, w, h = photo.box
    scale = zoom * FACE_FRACTION * min(panel_h, 1.1 * panel_w) / h
    centre = (margin + panel_w * (0.5 + shift[0]), margin + panel_h * (0.5 + shift[1]))
    affine = np.array([[scale, 0, centre[0] - scale * (x + w / 2)],
                       [0, scale, centre[1] - scale * (y + h / 2)]], dtype=np.float64)
    stage_size = (panel_w + 2 * margin, panel_h + 2 * margin)
    flags = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    face = cv2.warpAffine(np.ascontiguousarray(photo.image), affine, stage_size, flags=flags,
                          borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
    alpha = cv2.warpAffine(_feather_mask(photo.image.shape[0]), affine, stage_size,
                           flags=cv2.INTER_LINEAR)[..., None]
    tiny = cv2.resize(np.ascontiguousarray(photo.image), (3, 3), interpolation=cv2.INTER_AREA)
    background = cv2.resize(tiny, stage_size, interpolation=cv2.INTER_CUBIC).astype(np.float32)
    image = np.clip(face * alpha + 0.7 * background * (1 - alpha) + 0.5, 0, 255).astype(np.uint8)
    marks = (photo.landmarks * scale + affine[:, 2]).astype(np.float32)
    return FacePhoto(photo.name, image, marks, landmark_box(marks))


def _feather_mask(side: int) -> np.ndarray:
    """float32 [side, side] 1 inside, falling to 0 over ``_FEATHER`` x side at the edges."""
    ramp = np.clip((np.arange(side, dtype=np.float32) + 0.5) / (_FEATHER * side), 0, 1)
    ramp = np.minimum(ramp, ramp[::-1])
    return np.outer(ramp, ramp)


def panel_views(photos: list[FacePhoto], rects: dict[str, Rect],
                cuts: bool = False) -> list[list[PanelView]]:
    """Per panel (in ``rects`` order), its framings: ``[neutral]``, or with ``cuts`` ``[neutral,
    after an odd number of cuts]`` (``CUT_ZOOM`` x larger, shifted by ``CUT_SHIFT``)."""
    views = []
    for photo, (_, _, w, h) in zip(photos, rects.values()):
        margin = math.ceil(_STAGE_MARGIN * max(w, h))
        framings = [(1.0, (0.0, 0.0))] + ([(CUT_ZOOM, CUT_SHIFT)] if cuts else [])
        staged = [stage_photo(photo, (w, h), margin, zoom, shift) for zoom, shift in framings]
        views.append([PanelView(s, FaceRig(s), margin, (w, h)) for s in staged])
    return views


def cut_frames(cuts: list[float], fps: float) -> list[int]:
    """First frame index shown in the new framing for each cut time (seconds), sorted."""
    return sorted(math.ceil(t * fps - 1e-6) for t in cuts)


def render_frames(views: list[list[PanelView]], rects: dict[str, Rect],
                  jaw_open: list[np.ndarray], poses: list[dict], cuts: list[int], index: int,
                  canvas: np.ndarray) -> np.ndarray:
    """Draw frame ``index`` into ``canvas`` and return it.

    Args:
        views: per panel, its framings (:func:`panel_views`).
        rects: the panels' ``(x, y, w, h)`` (:func:`panel_rects`).
        jaw_open, poses: per panel, tracks as in :func:`render_video`.
        cuts: first frame of each cut (:func:`cut_frames`).
        index: the frame to draw.
        canvas: uint8 RGB [H, W, 3], overwritten.
    """
    framing = sum(1 for c in cuts if c <= index) % 2
    for panel, (x, y, w, h), jaw, pose in zip(views, rects.values(), jaw_open, poses):
        canvas[y:y + h, x:x + w] = panel[framing % len(panel)].frame(
            jaw[index], pose["yaw"][index], pose["pitch"][index], pose["roll"][index])
    if "inset" in rects:
        x, y, w, h = rects["inset"]
        canvas[y:y + h, [x, x + w - 1]] = 235
        canvas[[y, y + h - 1], x:x + w] = 235
    return canvas


def render_video(path: str | Path, photos: list[FacePhoto], layout: str, size: tuple[int, int],
                 fps: float, jaw_open: list[np.ndarray], poses: list[dict[str, np.ndarray]],
                 cuts: list[float], audio: np.ndarray, sample_rate: int) -> dict[str, Rect]:
    """Render and encode a two-panel conversation video with its audio track.

    Args:
        path: the .mp4 to write (H.264 yuv420p, CRF 20, + AAC).
        photos: two faces, in panel order (``LAYOUTS[layout]``).
        layout: ``lr``, ``tb`` or ``pip``.
        size: canvas ``(W, H)`` in pixels, both even.
        fps: frames per second.
        jaw_open: per panel, float [n_frames] in 0..1.
        poses: per panel, ``{"yaw", "pitch", "roll"}`` float [n_frames] in degrees.
        cuts: camera-cut times in seconds; each toggles the framing from its frame on (times at
            or before 0 s or past the last frame are ignored).
        audio: float32 [n_samples] mono in [-1, 1].
        sample_rate: audio rate in Hz.

    Returns:
        ``{panel: (x, y, w, h)}``: each face's landmark box in canvas pixels at neutral pose in
        the first framing (clipped to its panel).
    """
    n_frames = _check_inputs(photos, layout, size, jaw_open, poses)
    rects = panel_rects(layout, size)
    cut_at = [c for c in cut_frames(cuts, fps) if 0 < c < n_frames]
    views = panel_views(photos, rects, cuts=bool(cut_at))
    with tempfile.TemporaryDirectory(prefix="responsenet-render-") as tmp:
        wav = Path(tmp) / "audio.wav"
        write_wav(wav, np.asarray(audio, dtype=np.float32), sample_rate)
        canvas = np.zeros((size[1], size[0], 3), dtype=np.uint8)
        frames = (render_frames(views, rects, jaw_open, poses, cut_at, i, canvas).tobytes()
                  for i in range(n_frames))
        encode(path, frames, size, fps, wav, Path(tmp) / "ffmpeg.log")
    return {name: _canvas_box(view[0], rect) for view, (name, rect) in zip(views, rects.items())}


def _check_inputs(photos: list[FacePhoto], layout: str, size: tuple[int, int],
                  jaw_open: list[np.ndarray], poses: list[dict]) -> int:
    """Raise ValueError/UsageError for inconsistent inputs; return the number of frames."""
    if layout not in LAYOUTS:
        raise UsageError(f"unknown layout {layout!r}; expected one of: {', '.join(LAYOUTS)}")
    width, height = size
    if width % 2 or height % 2 or width < 32 or height < 32:
        raise UsageError(f"video size must be even and at least 32x32 pixels, got {width}x{height}")
    if not len(photos) == len(jaw_open) == len(poses) == 2:
        raise ValueError(f"expected 2 photos, jaw tracks and poses (one per panel), got "
                         f"{len(photos)}, {len(jaw_open)}, {len(poses)}")
    missing = [sorted({"yaw", "pitch", "roll"} - set(p)) for p in poses]
    if any(missing):
        raise ValueError(f"each pose needs yaw, pitch and roll tracks; missing {missing}")
    n_frames = len(jaw_open[0])
    lengths = {len(a) for a in jaw_open} | {len(p[k]) for p in poses for k in ("yaw", "pitch")}
    lengths |= {len(p["roll"]) for p in poses}
    if lengths != {n_frames} or n_frames == 0:
        raise ValueError(f"jaw_open and pose tracks must all have the same non-zero length "
                         f"(n_frames); got lengths {sorted(lengths)}")
    return n_frames


def _canvas_box(view: PanelView, rect: Rect) -> Rect:
    """The staged face box moved into canvas pixels and clipped to the panel ``rect``."""
    x, y, w, h = view.photo.box
    x0, y0 = x - view.margin + rect[0], y - view.margin + rect[1]
    x1, y1 = min(x0 + w, rect[0] + rect[2]), min(y0 + h, rect[1] + rect[3])
    x0, y0 = max(x0, rect[0]), max(y0, rect[1])
    return (int(x0), int(y0), int(x1 - x0), int(y1 - y0))


def encode(path: str | Path, frames, size: tuple[int, int], fps: float, wav: Path,
           log: Path) -> None:
    """Pipe raw RGB frames (bytes, W x H x 3 each) into ffmpeg, muxed with ``wav`` as AAC.

    Raises:
        StageFailure: ``ffmpeg_failed`` with ffmpeg's last error lines.
    """
    cmd = [require_tool("ffmpeg"), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{size[0]}x{size[1]}", "-r", f"{fps}",
           "-i", "pipe:0", "-i", str(wav), "-map", "0:v:0", "-map", "1:a:0",
           "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", *x264_threads(2),
           "-pix_fmt", "yuv420p",
           "-c:a", "aac", "-b:a", "128k", "-movflags", "+faststart", str(path)]
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=err)
        try:
            _feed(proc, frames)
        except BaseException:
            proc.kill()
            proc.wait()
            Path(path).unlink(missing_ok=True)
            raise
        code = proc.wait()
    if code != 0:
        tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
        raise StageFailure("ffmpeg_failed", f"ffmpeg failed to encode {path}: "
                                            f"{tail or f'exit code {code}'}")


def _feed(proc: subprocess.Popen, frames) -> None:
    """Write every frame to ffmpeg's stdin, then close it; stop quietly if ffmpeg quit."""
    try:
        for frame in frames:
            proc.stdin.write(frame)
    except BrokenPipeError:
        pass  # ffmpeg stopped early: its exit code and log say why
    finally:
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
