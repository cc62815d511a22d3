"""Test helpers that look at rendered videos: decode frames, find faces, read jawOpen.

They need ffmpeg and the ``synth`` extra (MediaPipe, OpenCV) and the MediaPipe FaceLandmarker
asset; tests skip when those are missing.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from responsenet.media import require_tool

Rect = tuple[int, int, int, int]


def decode_rgb(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """Every frame of ``path`` as uint8 RGB ``[n_frames, H, W, 3]``, decoded by ffmpeg."""
    raw = subprocess.run([require_tool("ffmpeg"), "-nostdin", "-v", "error", "-i", str(path),
                          "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, size[1], size[0], 3)


def faces_per_panel(frames: np.ndarray, rects: dict[str, Rect]) -> dict[str, list[list[np.ndarray]]]:
    """Per panel and frame, the landmarks (float32 [478, 2], canvas pixels) of every face that
    MediaPipe finds inside that panel alone."""
    from responsenet.synth.faces import detect_landmarks, face_landmarker

    found: dict[str, list[list[np.ndarray]]] = {name: [] for name in rects}
    with face_landmarker(2) as landmarker:
        for frame in frames:
            for name, (x, y, w, h) in rects.items():
                faces = detect_landmarks(landmarker, frame[y:y + h, x:x + w])
                found[name].append([f + np.float32([x, y]) for f in faces])
    return found


def jaw_open_series(frames: np.ndarray, rect: Rect, fps: float) -> np.ndarray:
    """MediaPipe's jawOpen score per frame for the face inside ``rect`` (0 where none is found),
    from a fresh FaceLandmarker in VIDEO mode."""
    import mediapipe as mp

    from responsenet.synth.faces import face_landmarker

    x, y, w, h = rect
    scores = np.zeros(len(frames), dtype=np.float32)
    with face_landmarker(1, blendshapes=True, video=True) as landmarker:
        for index, frame in enumerate(frames):
            crop = mp.Image(image_format=mp.ImageFormat.SRGB,
                            data=np.ascontiguousarray(frame[y:y + h, x:x + w]))
            result = landmarker.detect_for_video(crop, round(index * 1000 / fps))
            for category in (result.face_blendshapes[0] if result.face_blendshapes else []):
                if category.category_name == "jawOpen":
                    scores[index] = category.score
    return scores
