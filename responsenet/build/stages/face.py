"""Stage 6, face: per-frame blendshapes, head pose and a face-present mask for each track.

Inputs: the ``crop`` result (one square face video per track, ``meta["tracks"][i]["video"]``,
exactly ``meta["n_frames"]`` frames at ``meta["fps"]``). Steps, per track: decode the video to
raw RGB through an ffmpeg pipe; run a fresh MediaPipe FaceLandmarker in VIDEO mode over the frames
(52 blendshape scores and the 4x4 facial transformation matrix per frame); fill short gaps by
linear interpolation; write ``{track}.face.npz``. See docs/stages/face.md.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from responsenet.build.stages.base import Stage, StageConfig, StageContext
from responsenet.errors import StageFailure, UsageError
from responsenet.facefeatures import fill_gaps, gap_runs
from responsenet.media import decode_frames

#: The model asset (responsenet/assets_catalog.py) the stage runs.
ASSET = "mediapipe_face_landmarker"
#: Blendshape scores per frame (MediaPipe: ``_neutral`` then 51 ARKit shapes).
N_BLENDSHAPES = 52
#: Pose values per frame: the top 3 rows of the 4x4 facial transformation matrix, row-major.
N_POSE = 12


class FaceConfig(StageConfig):
    """Settings of the face stage (MediaPipe's confidence defaults)."""

    max_gap_frames: int = Field(5, ge=0, description="interior gaps up to this are interpolated")
    min_detection_confidence: float = Field(0.5, ge=0, le=1)
    min_presence_confidence: float = Field(0.5, ge=0, le=1)
    min_tracking_confidence: float = Field(0.5, ge=0, le=1)
    min_face_rate: float = Field(0.5, ge=0, le=1,
                                 description="a track detected in fewer frames fails: no_face")
    model_path: str | None = Field(None, description="face_landmarker.task, or its folder")
    threads: int = Field(2, ge=1, le=16, description="tracks processed at once (MediaPipe "
                         "releases the GIL: 2 threads run two tracks about 1.8x faster)")


@dataclass
class Detections:
    """What the landmarker found in one track, before gap filling.

    Attributes:
        blendshapes: float32 [T, 52], scores 0..1 (zeros where no face was found).
        pose: float32 [T, 12], top 3 rows of the facial transformation matrix (translation in
            cm, MediaPipe's canonical face units; zeros where no face was found).
        detected: bool [T], True where MediaPipe found a face.
        names: the 52 blendshape names in MediaPipe's order ([] when no face was found).
        seconds: time spent inside MediaPipe, s.
    """

    blendshapes: np.ndarray
    pose: np.ndarray
    detected: np.ndarray
    names: list[str]
    seconds: float


class FaceStage(Stage):
    """MediaPipe FaceLandmarker (VIDEO mode) on each track's crop: blendshapes, pose, mask."""

    name = "face"
    version = "1"
    unit = "clip"
    requires = ("crop",)
    resources: ClassVar[dict[str, float]] = {"CPU": 1, "memory": 0.75 * 2**30}
    Config = FaceConfig

    def input_fingerprint(self, source, config: FaceConfig) -> dict[str, Any]:
        """The model's catalog checksum (``resolve`` enforces it) and MediaPipe's version."""
        from responsenet.assets_catalog import ASSETS

        try:
            version = metadata.version("mediapipe")
        except metadata.PackageNotFoundError:
            version = None
        return {"asset_sha256": ASSETS.get(ASSET).sha256, "mediapipe": version}

    def run(self, ctx: StageContext) -> dict[str, Any]:
        cfg: FaceConfig = ctx.config
        crop = ctx.inputs["crop"]
        fps, n_frames = float(crop.meta["fps"]), int(crop.meta["n_frames"])
        model = model_file(cfg.model_path)

        def one_track(entry: dict[str, Any]) -> Detections:
            frames = decode_frames(crop.dir / entry["video"], ahead=4)
            with landmarker_for(model, cfg) as landmarker, closing(frames):
                return detect_faces(landmarker, frames, fps)

        entries = crop.meta["tracks"]
        with ThreadPoolExecutor(max_workers=min(cfg.threads, len(entries))) as pool:
            results = list(pool.map(one_track, entries))  # each track its own fresh landmarker
        names: list[str] = []
        tracks = []
        for entry, found in zip(entries, results, strict=True):
            _check_found(f"clip {ctx.item_id} track {entry['track']}", found, n_frames, cfg)
            names = names or found.names
            tracks.append(_write_track(ctx.out_dir, entry["track"], found, cfg.max_gap_frames))
        return {"blendshape_names": names, "fps": fps, "n_frames": n_frames, "tracks": tracks}


def model_file(explicit: str | None) -> Path:
    """Path of ``face_landmarker.task``: ``explicit`` (a file or folder) or the resolved asset.

    Raises:
        AssetMissing: ``weights_missing`` naming the asset, where it looked and how to supply it.
    """
    from responsenet.assets import resolve

    return resolve(ASSET, explicit) / "face_landmarker.task"


@contextmanager
def landmarker_for(model: Path, cfg: FaceConfig) -> Iterator[Any]:
    """A fresh MediaPipe FaceLandmarker in VIDEO mode (one face, blendshapes and matrices)."""
    try:
        from mediapipe.tasks.python import BaseOptions, vision
    except ImportError as e:
        raise UsageError("the face stage needs MediaPipe; install it with "
                         "pip install 'responsenet[face]'") from e
    options = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(model)),
        running_mode=vision.RunningMode.VIDEO, num_faces=1,
        min_face_detection_confidence=cfg.min_detection_confidence,
        min_face_presence_confidence=cfg.min_presence_confidence,
        min_tracking_confidence=cfg.min_tracking_confidence,
        output_face_blendshapes=True, output_facial_transformation_matrixes=True)
    with vision.FaceLandmarker.create_from_options(options) as landmarker:
        yield landmarker


def detect_faces(landmarker, frames: Iterator[np.ndarray], fps: float) -> Detections:
    """Run a VIDEO-mode ``landmarker`` over ``frames`` (uint8 RGB [H, W, 3] each) at ``fps``.

    Frame ``i`` gets timestamp ``round(i * 1000 / fps)`` ms, so each video needs a fresh
    landmarker. Frames without a face get zeros.
    """
    import mediapipe as mp

    rows: list[tuple[np.ndarray, np.ndarray] | None] = []
    names: list[str] = []
    seconds = 0.0
    for index, frame in enumerate(frames):
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(frame))
        start = time.perf_counter()
        result = landmarker.detect_for_video(image, round(index * 1000 / fps))
        seconds += time.perf_counter() - start
        if not (result.face_blendshapes and result.facial_transformation_matrixes):
            rows.append(None)
            continue
        categories = result.face_blendshapes[0]
        names = names or [c.category_name for c in categories]
        matrix = np.asarray(result.facial_transformation_matrixes[0], dtype=np.float32)
        rows.append((np.array([c.score for c in categories], np.float32),
                     matrix[:3, :].reshape(N_POSE)))
    blendshapes = np.zeros((len(rows), len(names)), np.float32)
    pose = np.zeros((len(rows), N_POSE), np.float32)
    for index, row in enumerate(rows):
        if row is not None:
            blendshapes[index], pose[index] = row
    detected = np.array([row is not None for row in rows], dtype=bool)
    return Detections(blendshapes, pose, detected, names, seconds)


def _check_found(where: str, found: Detections, n_frames: int, cfg: FaceConfig) -> None:
    """Raise ``frame_count_mismatch``, ``no_face`` or ``bad_model_output`` for a bad track."""
    if len(found.detected) != n_frames:
        raise StageFailure("frame_count_mismatch", f"{where}: expected {n_frames} frames (crop "
                           f"meta n_frames), decoded {len(found.detected)}; run the crop stage "
                           "again (--force crop)")
    if not found.detected.any():
        raise StageFailure("no_face", f"{where}: MediaPipe found no face in any of {n_frames} "
                           "frames; check the crop video (is the panel's face visible?)")
    if (rate := float(found.detected.mean())) < cfg.min_face_rate:
        raise StageFailure("no_face", f"{where}: MediaPipe found a face in {rate:.0%} of "
                           f"{n_frames} frames, expected at least {cfg.min_face_rate:.0%} "
                           "(min_face_rate); check the crop video, or lower face.min_face_rate")
    if len(found.names) != N_BLENDSHAPES:
        raise StageFailure("bad_model_output", f"{where}: expected {N_BLENDSHAPES} blendshapes "
                           f"from {ASSET}, got {len(found.names)}; use the catalog's model file")


def _write_track(out_dir: Path, track: str, found: Detections, max_gap: int) -> dict[str, Any]:
    """Fill gaps, write ``{track}.face.npz`` into ``out_dir``; return the track's meta entry."""
    features = np.concatenate([found.blendshapes, found.pose], axis=1)
    filled, interpolated = fill_gaps(features, found.detected, max_gap)
    present = found.detected | interpolated
    name = f"{track}.face.npz"
    np.savez(out_dir / name, blendshapes=filled[:, :N_BLENDSHAPES],
             pose=filled[:, N_BLENDSHAPES:], present=present, detected=found.detected,
             interpolated=interpolated)
    runs = gap_runs(found.detected)
    n_frames = max(len(present), 1)
    return {"track": track, "file": name,
            "detected_rate": round(float(found.detected.sum()) / n_frames, 4),
            "present_rate": round(float(present.sum()) / n_frames, 4),
            "interpolated_frames": int(interpolated.sum()),
            "longest_gap_frames": max((b - a for a, b in runs), default=0),
            "ms_per_frame": round(1000.0 * found.seconds / n_frames, 3)}
