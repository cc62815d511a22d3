"""Face animation: head-motion plans, the pose convention, and MediaPipe reading the warps back.

MediaPipe's jawOpen blendshape must follow ``jaw_open`` and its facial transformation matrix must
recover the applied yaw, pitch and roll (relative to the unwarped photo) with the right signs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from responsenet.synth.animate import (
    LIMITS,
    animate_face,
    plan_head_motion,
    pose_from_matrix,
    rig_for,
    rotation_matrix,
)

cv2 = pytest.importorskip("cv2", reason="opencv is needed to warp faces")
mp = pytest.importorskip("mediapipe", reason="MediaPipe (extra 'face') checks the animation")

from responsenet.synth.faces import face_landmarker, load_face

FACES = Path(__file__).resolve().parents[2] / ".." / "shared" / "realmedia" / "faces"
PHOTOS = ["astronaut", "fr_obama.jpg", "fr_biden.jpg"]
FPS = 25


def photo_of(name: str):
    if name == "astronaut":
        return load_face(name)
    if not (FACES / name).is_file():
        pytest.skip(f"{FACES / name} not found: real face photos come from ../shared/realmedia")
    return load_face(str(FACES / name))


@pytest.fixture(scope="module")
def measure():
    """``measure(rgb) -> (jawOpen, (yaw, pitch, roll))`` by MediaPipe FaceLandmarker."""
    with face_landmarker(1, blendshapes=True) as landmarker:
        def run(rgb: np.ndarray) -> tuple[float, np.ndarray]:
            result = landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB,
                                                data=np.ascontiguousarray(rgb)))
            assert len(result.face_landmarks) == 1, "MediaPipe lost the face"
            scores = {c.category_name: c.score for c in result.face_blendshapes[0]}
            return scores["jawOpen"], np.array(pose_from_matrix(
                result.facial_transformation_matrixes[0]))
        yield run


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ranks = [np.argsort(np.argsort(np.asarray(v))).astype(float) for v in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1])


@pytest.mark.parametrize("seed", range(5))
def test_pose_from_matrix_inverts_rotation_matrix(seed):
    angles = np.random.default_rng(seed).uniform([-80, -170, -170], [80, 170, 170])
    matrix = np.eye(4)
    matrix[:3, :3] = 1.7 * rotation_matrix(*angles)  # scale must not matter
    assert np.allclose(pose_from_matrix(matrix), angles, atol=1e-9)


def speaking_halves(n_frames: int) -> np.ndarray:
    return np.arange(n_frames) < n_frames // 2


def test_head_motion_is_bounded_smooth_and_deterministic():
    n_frames = 20 * FPS
    plans = [plan_head_motion(np.random.default_rng(s), n_frames, FPS, speaking_halves(n_frames))
             for s in (0, 0, 1)]
    for axis, limit in LIMITS.items():
        track = plans[0][axis]
        assert track.shape == (n_frames,) and track.dtype == np.float32
        assert np.abs(track).max() <= limit
        assert np.abs(np.diff(track)).max() < 3.0, f"{axis} jumps between frames"
        assert np.array_equal(track, plans[1][axis]) and not np.array_equal(track, plans[2][axis])


def test_listeners_nod_and_speakers_turn():
    n_frames, half = 20 * FPS, 10 * FPS
    nod_power, turn_std = [], []
    for seed in range(8):
        plan = plan_head_motion(np.random.default_rng(seed), n_frames, FPS,
                                speaking_halves(n_frames))
        band = []
        for part in (slice(0, half), slice(half, n_frames)):
            spectrum = np.abs(np.fft.rfft(plan["pitch"][part] - plan["pitch"][part].mean()))
            freqs = np.fft.rfftfreq(half, 1 / FPS)
            band.append(spectrum[(freqs > 1.4) & (freqs < 2.6)].sum())
        nod_power.append(band[1] / band[0])
        turn_std.append(plan["yaw"][:half].std() / plan["yaw"][half:].std())
        assert np.ptp(plan["pitch"][half:]) >= 4.0, "listening should contain nods of 4-8 deg"
    assert np.median(nod_power) > 3, f"2 Hz pitch power listening/speaking: {nod_power}"
    assert np.median(turn_std) > 1, f"yaw std speaking/listening: {turn_std}"


def test_speaking_mask_must_match_frames():
    with pytest.raises(ValueError, match=r"speaking must be bool \[10\]"):
        plan_head_motion(np.random.default_rng(0), 10, FPS, np.zeros(9, bool))


def test_neutral_frame_is_the_photo_and_frames_are_reused():
    photo = load_face("astronaut")
    frame = animate_face(photo, 0.0, 0.0, 0.0, 0.0)
    assert frame.shape == photo.image.shape and np.array_equal(frame, photo.image)
    rig = rig_for(photo)
    assert rig.render(0.5, 3.0, 1.0, 2.0) is rig.render(0.5, 3.0, 1.0, 2.0)


def test_roll_is_an_in_plane_rotation_about_the_face_centre():
    photo = load_face("astronaut")
    x, y, w, h = photo.box
    turn = cv2.getRotationMatrix2D((x + w / 2, y + h / 2), 10.0, 1.0)  # counter-clockwise
    expected = cv2.warpAffine(np.ascontiguousarray(photo.image), turn, photo.image.shape[1::-1])
    got = animate_face(photo, 0.0, 0.0, 0.0, 10.0)
    inner = (slice(64, -64), slice(64, -64))
    assert np.abs(got[inner].astype(int) - expected[inner]).mean() < 1.5


def test_jaw_moves_only_the_lower_face_and_darkens_the_mouth():
    photo = load_face("astronaut")
    opened = animate_face(photo, 1.0, 0.0, 0.0, 0.0).astype(int)
    changed = np.argwhere(np.abs(opened - photo.image).sum(axis=2) > 30)
    upper_inner_lip = photo.landmarks[[78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308], 1]
    lip_y, chin_y = photo.landmarks[13, 1], photo.landmarks[152, 1]
    assert changed[:, 0].min() >= upper_inner_lip.min() - 3
    assert changed[:, 0].max() <= chin_y + 0.4 * photo.box[3]
    mouth = opened[int(lip_y) + 2:int(lip_y) + 12, int(photo.landmarks[13, 0]) - 3:
                   int(photo.landmarks[13, 0]) + 4]
    assert mouth.mean() < 80, "the opened mouth should be dark"


@pytest.mark.parametrize("name", PHOTOS)
def test_mediapipe_jaw_open_follows_jaw_open(measure, name):
    photo = photo_of(name)
    levels = np.linspace(0.0, 1.0, 11)
    scores = np.array([measure(animate_face(photo, j, 0.0, 0.0, 0.0))[0] for j in levels])
    table = ", ".join(f"{j:.1f}: {s:.3f}" for j, s in zip(levels, scores))
    assert spearman(levels, scores) > 0.8, f"jawOpen by jaw_open: {table}"
    assert np.corrcoef(levels, scores)[0, 1] > 0.8, table
    assert scores[-1] - scores[0] > 0.15, f"jawOpen at 1.0 not clearly above 0.0: {table}"


@pytest.mark.parametrize("name", PHOTOS)
def test_mediapipe_recovers_applied_pose(measure, name):
    photo = photo_of(name)
    neutral = measure(photo.image)[1]
    errors = []
    for axis in range(3):
        for angle in (10.0, -10.0):
            applied = np.zeros(3)
            applied[axis] = angle
            found = measure(animate_face(photo, 0.0, *applied))[1] - neutral
            report = f"applied (yaw, pitch, roll) {applied}, MediaPipe moved {found.round(2)}"
            assert np.sign(found[axis]) == np.sign(angle), report
            assert abs(found[axis] - angle) < 3.5, report
            assert np.abs(np.delete(found, axis)).max() < 4.5, report
            errors.append(abs(found[axis] - angle))
    assert np.mean(errors) < 2.0, f"mean absolute error {np.mean(errors):.2f} deg"
