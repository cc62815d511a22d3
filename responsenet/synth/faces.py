"""Face photos for synthetic conversations: load, find the face once, crop a square around it.

A :class:`FacePhoto` is a square RGB image (``PHOTO_SIZE`` pixels a side) whose face (the box of
MediaPipe's 478 landmarks) is centred and ``FACE_FRACTION`` of the image height tall, with the
landmarks measured on that square. Photos are cached per resolved path and modification time, so
MediaPipe runs once per photo and process.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from responsenet.errors import UsageError

#: Faces that need no file: ``astronaut`` is scikit-image's ``data.astronaut()`` (public domain).
BUILTIN_FACES = ("astronaut",)
#: Side in pixels of the square a photo is cropped and resized to.
PHOTO_SIZE = 512
#: Height of the landmark box as a fraction of the square's side.
FACE_FRACTION = 0.5
_IMAGE_SUFFIXES = (".png", ".jpg")
#: Files in ../shared/realmedia/faces that duplicate a built-in face.
_DUPLICATES_OF_BUILTINS = ("skimage_astronaut_eileen_collins",)


@dataclass(eq=False)
class FacePhoto:
    """One face photo, ready to animate.

    Attributes:
        name: ``astronaut`` or the image file's stem.
        image: uint8 RGB [H, W, 3] (read-only when it comes from :func:`load_face`).
        landmarks: float32 [478, 2], MediaPipe face-mesh landmarks in pixels (x, y) of ``image``.
        box: ``(x, y, w, h)`` in pixels, the landmarks' bounding box.
    """

    name: str
    image: np.ndarray
    landmarks: np.ndarray
    box: tuple[int, int, int, int]


def landmark_box(landmarks: np.ndarray) -> tuple[int, int, int, int]:
    """``(x, y, w, h)`` in pixels of the bounding box of float [N, 2] landmarks."""
    low, high = landmarks.min(axis=0), landmarks.max(axis=0)
    x, y = int(np.floor(low[0])), int(np.floor(low[1]))
    return x, y, int(np.ceil(high[0])) - x, int(np.ceil(high[1])) - y


def load_face(spec: str) -> FacePhoto:
    """Load a face photo: ``"astronaut"`` or the path of a PNG/JPEG with exactly one face.

    Raises:
        UsageError: the file is missing or unreadable, or MediaPipe finds no face or several.
    """
    if spec in BUILTIN_FACES:
        return _load_cached(spec, 0.0)
    path = Path(spec).expanduser().resolve()
    if not path.is_file():
        raise UsageError(f"face photo {spec!r} not found; expected 'astronaut' or the path of a "
                         "PNG/JPEG image with one face")
    return _load_cached(str(path), path.stat().st_mtime)


def shared_faces(shared_dir: str | Path) -> list[str]:
    """Paths of the face photos in ``shared_dir/realmedia/faces`` (sorted; [] when absent).

    The copy of scikit-image's astronaut there is left out: it is the built-in ``astronaut``.
    """
    folder = Path(shared_dir) / "realmedia" / "faces"
    if not folder.is_dir():
        return []
    return [str(p) for p in sorted(folder.iterdir())
            if p.suffix.lower() in _IMAGE_SUFFIXES and p.stem not in _DUPLICATES_OF_BUILTINS]


@lru_cache(maxsize=32)
def _load_cached(key: str, mtime: float) -> FacePhoto:
    """Read, detect, crop, detect again; ``mtime`` only keys the cache."""
    image = _read_rgb(key)
    name = key if key in BUILTIN_FACES else Path(key).stem
    with face_landmarker(num_faces=2) as landmarker:
        square = crop_square(image, detect_one_face(landmarker, image, key))
        landmarks = detect_one_face(landmarker, square, key)
    square.flags.writeable = False
    landmarks.flags.writeable = False
    return FacePhoto(name, square, landmarks, landmark_box(landmarks))


def _read_rgb(key: str) -> np.ndarray:
    if key == "astronaut":
        from skimage import data

        return np.ascontiguousarray(data.astronaut()[..., :3])
    import cv2

    bgr = cv2.imread(key, cv2.IMREAD_COLOR)
    if bgr is None:
        raise UsageError(f"face photo {key} is not a readable image; expected a PNG or JPEG file")
    return np.ascontiguousarray(bgr[..., ::-1])


def crop_square(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Crop a square centred on the face so that it is ``FACE_FRACTION`` of the height.

    Args:
        image: uint8 RGB [H, W, 3].
        landmarks: float [478, 2] pixel landmarks of the one face in ``image``.

    Returns:
        uint8 RGB [PHOTO_SIZE, PHOTO_SIZE, 3]; parts beyond the photo repeat its edge pixels.
    """
    import cv2

    x, y, w, h = landmark_box(landmarks)
    side = round(max(h, w) / FACE_FRACTION)
    left, top = round(x + w / 2 - side / 2), round(y + h / 2 - side / 2)
    pads = (max(0, -top), max(0, top + side - image.shape[0]),
            max(0, -left), max(0, left + side - image.shape[1]))
    padded = cv2.copyMakeBorder(image, *pads, cv2.BORDER_REPLICATE) if any(pads) else image
    crop = padded[top + pads[0]:top + pads[0] + side, left + pads[2]:left + pads[2] + side]
    shrink = side > PHOTO_SIZE
    return cv2.resize(crop, (PHOTO_SIZE, PHOTO_SIZE),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


@contextmanager
def face_landmarker(num_faces: int = 1, *, blendshapes: bool = False,
                    video: bool = False) -> Iterator[object]:
    """A MediaPipe FaceLandmarker (the ``mediapipe_face_landmarker`` asset), IMAGE or VIDEO mode.

    With ``blendshapes`` it also outputs the 52 blendshape scores and the facial transformation
    matrix (see :func:`responsenet.synth.animate.pose_from_matrix`).
    """
    from mediapipe.tasks.python import BaseOptions, vision

    from responsenet.assets import resolve

    model = resolve("mediapipe_face_landmarker") / "face_landmarker.task"
    mode = vision.RunningMode.VIDEO if video else vision.RunningMode.IMAGE
    options = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(model)), running_mode=mode,
        num_faces=num_faces, output_face_blendshapes=blendshapes,
        output_facial_transformation_matrixes=blendshapes)
    with vision.FaceLandmarker.create_from_options(options) as landmarker:
        yield landmarker


def detect_landmarks(landmarker, image: np.ndarray) -> list[np.ndarray]:
    """Every face MediaPipe finds in uint8 RGB [H, W, 3]: float32 [478, 2] pixel landmarks each."""
    import mediapipe as mp

    frame = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image))
    result = landmarker.detect(frame)
    height, width = image.shape[:2]
    return [np.array([[m.x * width, m.y * height] for m in marks], dtype=np.float32)
            for marks in result.face_landmarks]


def detect_one_face(landmarker, image: np.ndarray, source: str) -> np.ndarray:
    """The landmarks of the single face in ``image``; UsageError naming ``source`` otherwise."""
    faces = detect_landmarks(landmarker, image)
    if len(faces) != 1:
        found = "no face" if not faces else f"{len(faces)} faces"
        raise UsageError(f"face photo {source}: MediaPipe found {found}; expected exactly one "
                         "clearly visible face (use a portrait photo with one person)")
    return faces[0]
