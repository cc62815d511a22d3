"""Face photos: loading, the one-face rule, the square crop around the face, shared photos."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from responsenet.errors import UsageError
from responsenet.synth.faces import (
    BUILTIN_FACES,
    FACE_FRACTION,
    PHOTO_SIZE,
    FacePhoto,
    crop_square,
    landmark_box,
    load_face,
    shared_faces,
)

cv2 = pytest.importorskip("cv2", reason="opencv is needed to read and crop face photos")
pytest.importorskip("mediapipe", reason="MediaPipe (extra 'face') finds the face landmarks")

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
FACES = SHARED / "realmedia" / "faces"


def shared_photo(name: str) -> str:
    path = FACES / name
    if not path.is_file():
        pytest.skip(f"{path} not found: real face photos come from ../shared/realmedia/faces")
    return str(path)


def write_png(path: Path, rgb: np.ndarray) -> str:
    cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]))
    return str(path)


def assert_framed(photo: FacePhoto) -> None:
    """Square PHOTO_SIZE image, 478 landmarks, face ~FACE_FRACTION tall and centred."""
    assert photo.image.shape == (PHOTO_SIZE, PHOTO_SIZE, 3) and photo.image.dtype == np.uint8
    assert photo.landmarks.shape == (478, 2) and photo.landmarks.dtype == np.float32
    x, y, w, h = photo.box
    assert 0.45 <= h / PHOTO_SIZE <= 0.6, photo.box
    centre = np.array([x + w / 2, y + h / 2]) / PHOTO_SIZE
    assert np.all(np.abs(centre - 0.5) < 0.05), photo.box
    assert photo.box == landmark_box(photo.landmarks)


def test_astronaut_is_builtin_and_framed():
    photo = load_face("astronaut")
    assert BUILTIN_FACES == ("astronaut",) and photo.name == "astronaut"
    assert_framed(photo)
    assert not photo.image.flags.writeable, "the cached photo must be read-only"


def test_load_face_is_cached():
    assert load_face("astronaut") is load_face("astronaut")


def test_cache_follows_file_changes(tmp_path):
    path = tmp_path / "face.png"
    write_png(path, load_face("astronaut").image)
    first = load_face(str(path))
    assert load_face(str(path)) is first and first.name == "face"
    write_png(path, load_face("astronaut").image[:, ::-1])
    os.utime(path, (1e9, 1e9))
    second = load_face(str(path))
    assert second is not first
    assert second.landmarks[1, 0] == pytest.approx(PHOTO_SIZE - first.landmarks[1, 0], abs=8)


def test_photo_without_face_raises_naming_file(tmp_path):
    ramp = np.linspace(0, 255, 256 * 256 * 3).reshape(256, 256, 3).astype(np.uint8)
    path = write_png(tmp_path / "wall.png", ramp)
    with pytest.raises(UsageError, match=r"wall\.png.*no face"):
        load_face(path)


def test_photo_with_two_faces_raises(tmp_path):
    face = load_face("astronaut").image
    path = write_png(tmp_path / "pair.png", np.hstack([face, face]))
    with pytest.raises(UsageError, match=r"pair\.png.*2 faces"):
        load_face(path)


@pytest.mark.parametrize("content", [None, b"not an image"])
def test_missing_or_unreadable_file_raises(tmp_path, content):
    path = tmp_path / "x.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UsageError, match="x.png"):
        load_face(str(path))


def test_crop_square_centres_face_and_pads_edges():
    image = np.zeros((300, 100, 3), np.uint8)
    image[10:30, 40:60] = 255  # the "face": a white square at the top
    landmarks = np.array([[40, 10], [60, 30]], np.float32)
    out = crop_square(image, landmarks)
    assert out.shape == (PHOTO_SIZE, PHOTO_SIZE, 3)
    white = np.argwhere(out[..., 0] > 128)
    centre = white.mean(axis=0) / PHOTO_SIZE
    height = (white[:, 0].max() - white[:, 0].min() + 1) / PHOTO_SIZE
    assert np.allclose(centre, 0.5, atol=0.02) and height == pytest.approx(FACE_FRACTION, abs=0.03)


def test_shared_faces_lists_photos_and_skips_astronaut_copy(tmp_path):
    folder = tmp_path / "realmedia" / "faces"
    folder.mkdir(parents=True)
    for name in ("b.jpg", "a.png", "skimage_astronaut_eileen_collins.png", "notes.txt"):
        (folder / name).write_bytes(b"")
    assert shared_faces(tmp_path) == [str(folder / "a.png"), str(folder / "b.jpg")]
    assert shared_faces(tmp_path / "absent") == []


@pytest.mark.parametrize("name", ["fr_obama.jpg", "fr_biden.jpg"])
def test_real_photos_are_cropped_around_the_face(name):
    photo = load_face(shared_photo(name))
    assert photo.name == Path(name).stem
    assert_framed(photo)
    assert str(FACES / name) in [str(Path(p)) for p in shared_faces(SHARED)]
