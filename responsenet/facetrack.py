"""Find the two faces of a split-screen clip: layout, per-frame detections, identity, crop boxes.

Used by the ``crop`` stage (docs/stages/crop.md). Detection uses the BlazeFace short-range
detector that ships inside MediaPipe's FaceLandmarker bundle (the ``mediapipe_face_landmarker``
asset), so no further weights are needed.

Coordinates are pixels of the full clip frame; a box is ``(x, y, w, h)``; a missing detection is
a row of NaN.
"""

from __future__ import annotations

import itertools
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

Rect = tuple[int, int, int, int]

#: Panel names of each layout, in track order.
PANELS = {"lr": ("left", "right"), "tb": ("top", "bottom"), "pip": ("main", "inset")}
#: Manifest layouts that share a geometry (``rl``: the same panels as ``lr``).
GEOMETRY = {"lr": "lr", "rl": "lr", "tb": "tb", "bt": "tb", "pip": "pip"}
#: In picture-in-picture, the inset face is at most this fraction of the main face's width.
PIP_SIZE_RATIO = 0.6
#: Histogram bins (hue, saturation) of the appearance descriptor.
HIST_BINS = (12, 8)


@dataclass(frozen=True)
class Detection:
    """A face found by the detector: box in frame pixels and its confidence."""

    x: float
    y: float
    w: float
    h: float
    score: float

    @property
    def center(self) -> tuple[float, float]:
        return self.x + self.w / 2, self.y + self.h / 2

    @property
    def side(self) -> float:
        return max(self.w, self.h)

    def box(self) -> np.ndarray:
        return np.array([self.x, self.y, self.w, self.h], dtype=np.float32)


def detector_model_bytes(task_file: str | Path) -> bytes:
    """The BlazeFace detector (``face_detector.tflite``) inside a FaceLandmarker ``.task`` bundle."""
    with zipfile.ZipFile(task_file) as bundle:
        return bundle.read("face_detector.tflite")


class FaceDetector:
    """MediaPipe's face detector in IMAGE mode; ``detect(rgb, rect)`` returns frame-pixel boxes."""

    def __init__(self, task_file: str | Path, min_confidence: float = 0.5):
        from mediapipe.tasks.python import BaseOptions, vision

        options = vision.FaceDetectorOptions(
            base_options=BaseOptions(model_asset_buffer=detector_model_bytes(task_file)),
            min_detection_confidence=min_confidence)
        self._detector = vision.FaceDetector.create_from_options(options)

    def close(self) -> None:
        self._detector.close()

    def detect(self, rgb: np.ndarray, rect: Rect | None = None) -> list[Detection]:
        """Faces in ``rgb`` (uint8 [H, W, 3]) or in its sub-rectangle ``rect``, best first."""
        import mediapipe as mp

        x0, y0 = (rect[0], rect[1]) if rect else (0, 0)
        region = rgb[y0:y0 + rect[3], x0:x0 + rect[2]] if rect else rgb
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(region))
        found = []
        for d in self._detector.detect(image).detections:
            b = d.bounding_box
            found.append(Detection(float(b.origin_x + x0), float(b.origin_y + y0),
                                   float(b.width), float(b.height), float(d.categories[0].score)))
        return sorted(found, key=lambda d: -d.score)


@contextmanager
def face_detector(task_file: str | Path, min_confidence: float = 0.5) -> Iterator[FaceDetector]:
    detector = FaceDetector(task_file, min_confidence)
    try:
        yield detector
    finally:
        detector.close()


def split_rects(geometry: str, width: int, height: int) -> dict[str, Rect]:
    """The two panels of an ``lr`` or ``tb`` frame (``pip`` panels come from the faces)."""
    if geometry == "lr":
        half = width // 2
        return {"left": (0, 0, half, height), "right": (half, 0, width - half, height)}
    if geometry == "tb":
        half = height // 2
        return {"top": (0, 0, width, half), "bottom": (0, half, width, height - half)}
    raise ValueError(f"split_rects takes 'lr' or 'tb', got {geometry!r}")


# --- layout -----------------------------------------------------------------------------------
@dataclass
class FrameFaces:
    """Faces found on one sampled frame: on the whole frame and in each half of each split."""

    full: list[Detection]
    halves: dict[str, list[Detection]] = field(default_factory=dict)


def look(detector: FaceDetector, rgb: np.ndarray) -> FrameFaces:
    """Detect on the whole frame and on each half (left, right, top, bottom)."""
    height, width = rgb.shape[:2]
    halves = {}
    for geometry in ("lr", "tb"):
        for name, rect in split_rects(geometry, width, height).items():
            halves[name] = detector.detect(rgb, rect)
    return FrameFaces(detector.detect(rgb), halves)


def _inside(point: tuple[float, float], d: Detection) -> bool:
    return d.x <= point[0] < d.x + d.w and d.y <= point[1] < d.y + d.h


def distinct_faces(faces: FrameFaces) -> list[Detection]:
    """The different faces on a frame: the whole-frame detections, plus half-frame detections
    whose centre is not inside a face already counted (a half that cuts a face in two often
    finds its part again; a small face is often found only in a half)."""
    kept = list(faces.full)
    for found in faces.halves.values():
        for d in found:
            if not any(_inside(d.center, k) or _inside(k.center, d) for k in kept):
                kept.append(d)
    return kept


def _is_pip(faces: FrameFaces, width: int, height: int) -> bool:
    found = distinct_faces(faces)
    if len(found) != 2:
        return False
    big, small = sorted(found, key=lambda d: -d.side)
    cx, cy = small.center
    in_corner = (abs(cx - width / 2) > width * 0.25) and (abs(cy - height / 2) > height * 0.2)
    return small.side < PIP_SIZE_RATIO * big.side and in_corner


def _fits(faces: FrameFaces, geometry: str, width: int, height: int) -> bool:
    """Two distinct faces, one centred in each half of the ``geometry`` split, further apart
    across the split than along it."""
    found = distinct_faces(faces)
    if len(found) != 2:
        return False
    axis, middle = (0, width / 2) if geometry == "lr" else (1, height / 2)
    apart = [abs(found[0].center[i] - found[1].center[i]) for i in (0, 1)]
    return (sorted(d.center[axis] < middle for d in found) == [False, True]
            and apart[axis] > apart[1 - axis])


def face_count(faces: FrameFaces) -> int:
    """Distinct faces on a frame."""
    return len(distinct_faces(faces))


@dataclass(frozen=True)
class LayoutDecision:
    """The layout of a clip, or the reason there is none.

    Attributes:
        layout: ``lr``, ``tb`` or ``pip``; None with a ``reason``.
        share: fraction of sampled frames that fit the chosen layout.
        reason: ``no_face``, ``one_face``, ``too_many_faces`` or ``layout_unstable``.
        message: a sentence for the report.
    """

    layout: str | None
    share: float
    reason: str | None = None
    message: str = ""


def decide_layout(samples: list[FrameFaces], width: int, height: int,
                  min_share: float = 0.6) -> LayoutDecision:
    """Choose the layout that most sampled frames fit, or say why none fits.

    A frame fits ``pip`` when it holds two distinct faces (:func:`distinct_faces`), one much
    smaller and off-centre; otherwise it fits ``lr`` (``tb``) when it holds two distinct faces,
    one centred in each half. The winner needs
    ``min_share`` of the frames; when the first and last thirds of the clip prefer different
    layouts, the clip is ``layout_unstable``.
    """
    n = len(samples)
    fits = {"pip": [_is_pip(s, width, height) for s in samples]}
    for geometry in ("lr", "tb"):
        fits[geometry] = [_fits(s, geometry, width, height) and not p
                          for s, p in zip(samples, fits["pip"])]
    shares = {k: float(np.mean(v)) for k, v in fits.items()}
    best = max(shares, key=lambda k: (shares[k], k == "lr"))
    counts = np.array([face_count(s) for s in samples])
    third = max(1, n // 3)
    early = {k: float(np.mean(v[:third])) for k, v in fits.items()}
    late = {k: float(np.mean(v[-third:])) for k, v in fits.items()}
    early_best, late_best = max(early, key=early.get), max(late, key=late.get)
    if (early_best != late_best and early[early_best] >= min_share
            and late[late_best] >= min_share):
        return LayoutDecision(None, shares[best], "layout_unstable",
                              f"the layout changes inside the clip ({early_best} at the start, "
                              f"{late_best} at the end); lower segment.cut_threshold so that "
                              "the change becomes a cut")
    if shares[best] >= min_share:
        return LayoutDecision(best, shares[best])
    typical = int(np.median(counts))
    if typical == 0:
        return LayoutDecision(None, shares[best], "no_face",
                              f"no face found in {np.mean(counts == 0):.0%} of sampled frames")
    if typical == 1:
        return LayoutDecision(None, shares[best], "one_face",
                              f"only one face in {np.mean(counts == 1):.0%} of sampled frames; "
                              "a dyadic clip needs two")
    if typical >= 3:
        return LayoutDecision(None, shares[best], "too_many_faces",
                              f"{typical} faces in a typical sampled frame; expected two")
    return LayoutDecision(None, shares[best], "layout_unstable",
                          f"two faces, but no layout fits {min_share:.0%} of sampled frames "
                          f"(best: {best} in {shares[best]:.0%})")


def pip_rects(samples: list[FrameFaces], width: int, height: int) -> dict[str, Rect]:
    """``main`` is the whole frame; ``inset`` a box around where the small face sits."""
    small = [min(distinct_faces(s), key=lambda d: d.side) for s in samples
             if _is_pip(s, width, height)]
    cx = float(np.median([d.center[0] for d in small]))
    cy = float(np.median([d.center[1] for d in small]))
    side = float(np.median([d.side for d in small])) * 2.6
    x0, y0 = max(0, int(cx - side / 2)), max(0, int(cy - side / 2))
    x1, y1 = min(width, int(cx + side / 2)), min(height, int(cy + side / 2))
    return {"main": (0, 0, width, height), "inset": (x0, y0, x1 - x0, y1 - y0)}


# --- tracking ---------------------------------------------------------------------------------
def panel_detections(detector: FaceDetector, rgb: np.ndarray, geometry: str,
                     rects: dict[str, Rect]) -> dict[str, list[Detection]]:
    """Faces of each panel on one frame. In ``pip`` the main panel excludes the inset's faces."""
    if geometry != "pip":
        return {name: detector.detect(rgb, rect) for name, rect in rects.items()}
    ix, iy, iw, ih = rects["inset"]
    inset = detector.detect(rgb, rects["inset"])
    main = [d for d in detector.detect(rgb)
            if not (ix <= d.center[0] < ix + iw and iy <= d.center[1] < iy + ih)]
    return {"main": main, "inset": inset}


def appearance(rgb: np.ndarray, det: Detection) -> np.ndarray:
    """A hue-saturation histogram (L1-normalised, float32 [12*8]) of the face and the area below it
    (hair, neck, clothes): cheap and good enough to tell the two people of one clip apart."""
    import cv2

    height, width = rgb.shape[:2]
    x0, x1 = int(max(0, det.x - 0.2 * det.w)), int(min(width, det.x + 1.2 * det.w))
    y0, y1 = int(max(0, det.y - 0.3 * det.h)), int(min(height, det.y + 1.8 * det.h))
    if x1 - x0 < 4 or y1 - y0 < 4:
        return np.full(HIST_BINS[0] * HIST_BINS[1], 1.0 / (HIST_BINS[0] * HIST_BINS[1]),
                       np.float32)
    hsv = cv2.cvtColor(np.ascontiguousarray(rgb[y0:y1, x0:x1]), cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1], None, list(HIST_BINS), [0, 180, 0, 256]).ravel()
    return (hist / max(hist.sum(), 1.0)).astype(np.float32)


def hist_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Hellinger distance between two L1-normalised histograms, in [0, 1]."""
    return float(np.sqrt(max(0.0, 1.0 - np.sum(np.sqrt(a * b)))))


@dataclass
class Tracks:
    """Per-frame face boxes of two tracks and the frames where their panels swapped.

    Attributes:
        faces: float32 [2, n_frames, 4] boxes, NaN where the track's face was not found.
        panel_of: int8 [2, n_frames], the panel index each track is in at each frame.
        swaps: frames where the two tracks exchanged panels.
        extra_faces: frames where a panel held more than one face.
    """

    faces: np.ndarray
    panel_of: np.ndarray
    swaps: list[int]
    extra_faces: int


class Tracker:
    """Follows the two participants frame by frame, keeping identities across a panel swap.

    Each track starts in its panel. At each frame, each panel's face nearest the track's last box
    is taken. Appearance references are built from the first ``reference_frames`` frames where
    both faces are found; when, for ``swap_min_frames`` consecutive frames, the faces match the
    references crosswise clearly better (the crossed distance below ``swap_ratio`` times the
    straight one), the tracks swap panels from the first of those frames on.
    """

    def __init__(self, n_frames: int, reference_frames: int = 25, swap_min_frames: int = 5,
                 swap_ratio: float = 0.7):
        self.faces = np.full((2, n_frames, 4), np.nan, np.float32)
        self.panel_of = np.zeros((2, n_frames), np.int8)
        self.panel_of[1] = 1
        self.mapping = [0, 1]  # track -> panel
        self.refs: list[list[np.ndarray]] = [[], []]
        self.reference_frames, self.swap_min, self.swap_ratio = (
            reference_frames, swap_min_frames, swap_ratio)
        self.crossed_run: list[int] = []
        self.swaps: list[int] = []
        self.extra_faces = 0
        self.last: list[Detection | None] = [None, None]

    def _pick(self, candidates: list[Detection], last: Detection | None) -> Detection | None:
        if not candidates:
            return None
        if last is None:
            return candidates[0]
        lx, ly = last.center
        return min(candidates, key=lambda d: (d.center[0] - lx) ** 2 + (d.center[1] - ly) ** 2)

    def skip(self, index: int) -> None:
        """Frame ``index`` is not searched (``detect_every``): its boxes stay NaN."""
        self.panel_of[:, index] = self.mapping

    def update(self, index: int, rgb: np.ndarray, by_panel: list[list[Detection]]) -> None:
        """Record frame ``index`` given the detections of panel 0 and panel 1."""
        self.extra_faces += any(len(c) > 1 for c in by_panel)
        picked = [self._pick(by_panel[self.mapping[t]], self.last[t]) for t in (0, 1)]
        if all(picked):
            self._check_swap(index, rgb, picked)
            picked = [self._pick(by_panel[self.mapping[t]], self.last[t]) for t in (0, 1)]
        for t in (0, 1):
            self.panel_of[t, index] = self.mapping[t]
            if picked[t] is not None:
                self.faces[t, index] = picked[t].box()
                self.last[t] = picked[t]

    def _check_swap(self, index: int, rgb: np.ndarray, picked: list[Detection]) -> None:
        looks = [appearance(rgb, d) for d in picked]
        if len(self.refs[0]) < self.reference_frames:
            for t in (0, 1):
                self.refs[t].append(looks[t])
            return
        refs = [np.mean(r, axis=0) for r in self.refs]
        straight = hist_distance(looks[0], refs[0]) + hist_distance(looks[1], refs[1])
        crossed = hist_distance(looks[0], refs[1]) + hist_distance(looks[1], refs[0])
        if crossed < self.swap_ratio * straight:
            self.crossed_run.append(index)
        else:
            self.crossed_run = []
        if len(self.crossed_run) >= self.swap_min:
            start = self.crossed_run[0]
            self.mapping.reverse()
            self.swaps.append(start)
            self.faces[:, start:index] = self.faces[::-1, start:index].copy()
            self.panel_of[:, start:index] = self.panel_of[::-1, start:index].copy()
            self.last = [None, None]
            self.crossed_run = []

    def result(self) -> Tracks:
        return Tracks(self.faces, self.panel_of, self.swaps, self.extra_faces)


# --- crop boxes -------------------------------------------------------------------------------
def _fill(values: np.ndarray) -> np.ndarray:
    """Linear interpolation over NaN (edges held); all-NaN stays NaN."""
    good = ~np.isnan(values)
    if not good.any():
        return values
    index = np.arange(len(values))
    return np.interp(index, index[good], values[good]).astype(np.float64)


def _gaussian(values: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0 or len(values) < 2:
        return values
    radius = int(3 * sigma) + 1
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(values, radius, mode="edge")
    return np.convolve(padded, kernel, mode="valid")


def crop_boxes(faces: np.ndarray, breaks: list[int], fps: float, scale: float,
               smooth_center_s: float, smooth_size_s: float) -> np.ndarray:
    """Smoothed square crops ``float32 [n_frames, 3]`` = (centre x, centre y, side) for one track.

    Missing faces are bridged by linear interpolation; centre and side are smoothed with
    Gaussian kernels (sigma in seconds), separately within each piece between ``breaks``
    (panel swaps), so that a crop never glides from one panel to the other.
    """
    n = len(faces)
    out = np.zeros((n, 3), np.float32)
    edges = [0, *sorted(b for b in breaks if 0 < b < n), n]
    for a, b in itertools.pairwise(edges):
        piece = faces[a:b]
        cx = _fill(piece[:, 0] + piece[:, 2] / 2)
        cy = _fill(piece[:, 1] + piece[:, 3] / 2)
        side = _fill(np.maximum(piece[:, 2], piece[:, 3]) * scale)
        out[a:b, 0] = _gaussian(cx, smooth_center_s * fps)
        out[a:b, 1] = _gaussian(cy, smooth_center_s * fps)
        out[a:b, 2] = _gaussian(side, smooth_size_s * fps)
    return out


def crop_frame(rgb: np.ndarray, box: np.ndarray, panel: Rect, size: int) -> np.ndarray:
    """The square ``box`` (cx, cy, side) of ``rgb``, limited to ``panel`` (black outside it),
    resized to ``size`` x ``size``: uint8 [size, size, 3]."""
    import cv2

    px, py, pw, ph = panel
    region = rgb[py:py + ph, px:px + pw]
    cx, cy, side = (float(v) for v in box)
    k = size / side
    matrix = np.float32([[k, 0, -k * (cx - side / 2 - px)], [0, k, -k * (cy - side / 2 - py)]])
    return cv2.warpAffine(region, matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
