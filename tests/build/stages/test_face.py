"""Stage 6, face: blendshapes, head pose and the present mask, checked against rendered truth.

The crop stage is not needed: each test writes square face videos (the astronaut photo animated
with a known jaw opening and head pose, some frames blacked out) and a crop-style meta, and runs
:class:`FaceStage` on them directly. Gap filling is checked on hand-made arrays as well.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from responsenet.build.stages.base import StageContext, StageResult
from responsenet.build.stages.face import (
    FaceConfig,
    FaceStage,
    detect_faces,
    landmarker_for,
    model_file,
)
from responsenet.build.tasks import Task, execute_task
from responsenet.errors import AssetMissing, StageFailure
from responsenet.facefeatures import fill_gaps, gap_runs, interior_gaps
from responsenet.manifest import SourceEntry
from responsenet.media import decode_frames
from responsenet.schema import BLENDSHAPE_NAMES

FPS, SIZE, N_FRAMES = 25.0, 256, 80
NEUTRAL_FRAMES = 5  # the head is still and the jaw closed before this frame
SHORT_GAP, LONG_GAP = range(30, 33), range(50, 62)  # black frames in the "right" track
SOURCE = SourceEntry(id="src", path="/dev/null")
#: MediaPipe FaceLandmarker's blendshape order (its model card): _neutral, then 51 ARKit names.
MEDIAPIPE_NAMES = list(BLENDSHAPE_NAMES)


# --- gap filling (pure functions, no MediaPipe) ---------------------------------------------

def test_gap_runs_are_half_open_spans_of_missing_frames():
    detected = np.array([0, 1, 0, 0, 1, 1, 0], dtype=bool)
    assert gap_runs(detected) == [(0, 1), (2, 4), (6, 7)]
    assert gap_runs(np.ones(3, bool)) == [] and gap_runs(np.zeros(2, bool)) == [(0, 2)]


def test_only_interior_gaps_up_to_the_limit_are_filled():
    detected = np.array([0, 1, 0, 0, 1, 0, 0, 0, 1, 0], dtype=bool)
    assert interior_gaps(detected, 2).tolist() == [0, 0, 1, 1, 0, 0, 0, 0, 0, 0]
    assert interior_gaps(detected, 3).tolist() == [0, 0, 1, 1, 0, 1, 1, 1, 0, 0]
    assert not interior_gaps(detected, 0).any()


def test_fill_gaps_interpolates_linearly_and_zeros_the_rest():
    values = np.array([[9, 9], [0, 10], [7, 7], [7, 7], [3, 40], [5, 5]], dtype=np.float32)
    detected = np.array([0, 1, 0, 0, 1, 0], dtype=bool)
    filled, interpolated = fill_gaps(values, detected, max_gap_frames=2)
    expected = [[0, 0], [0, 10], [1, 20], [2, 30], [3, 40], [0, 0]]
    assert filled.dtype == np.float32 and np.allclose(filled, expected)
    assert interpolated.tolist() == [False, False, True, True, False, False]
    with pytest.raises(ValueError, match="T = len"):
        fill_gaps(values[:3], detected, 2)


# --- the stage on rendered videos -----------------------------------------------------------

@pytest.fixture(scope="module")
def deps() -> Path:
    """Skip unless OpenCV, MediaPipe, ffmpeg and the FaceLandmarker model are all here; return
    the model file."""
    pytest.importorskip("cv2", reason="opencv is needed to render faces")
    pytest.importorskip("mediapipe", reason="MediaPipe (extra 'face') runs the face stage")
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        pytest.skip("ffmpeg/ffprobe not on PATH (apt-get install ffmpeg)")
    try:
        return model_file(None)
    except AssetMissing as e:
        pytest.skip(f"FaceLandmarker model not installed: {e.message}")


def truth(n_frames: int = N_FRAMES) -> dict[str, np.ndarray]:
    """The applied jaw opening (0..1) and head pose (degrees) per frame, still at the start."""
    times = np.arange(n_frames) / FPS
    ramp = np.clip((times - NEUTRAL_FRAMES / FPS) / 0.4, 0.0, 1.0)
    return {"jaw": 0.5 * (1 - np.cos(2 * np.pi * 1.3 * times)) * ramp,
            "yaw": 12.0 * np.sin(2 * np.pi * 0.45 * times) * ramp,
            "pitch": 8.0 * np.sin(2 * np.pi * 0.7 * times + 1.0) * ramp}


def render(motion: dict[str, np.ndarray], black=()) -> list[np.ndarray]:
    """uint8 RGB [SIZE, SIZE, 3] frames of the animated astronaut; ``black`` frames all zero."""
    import cv2

    from responsenet.synth.animate import animate_face
    from responsenet.synth.faces import load_face

    photo = load_face("astronaut")
    frames = [cv2.resize(animate_face(photo, j, y, p, 0.0), (SIZE, SIZE),
                         interpolation=cv2.INTER_AREA)
              for j, y, p in zip(motion["jaw"], motion["yaw"], motion["pitch"])]
    for index in black:
        frames[index] = np.zeros_like(frames[index])
    return frames


def encode(path: Path, frames: list[np.ndarray]) -> None:
    """H.264 yuv420p at FPS, no audio, from raw RGB on a pipe (as the crop stage writes)."""
    height, width = frames[0].shape[:2]
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
           "-s", f"{width}x{height}", "-r", f"{FPS}", "-i", "pipe:0", "-c:v", "libx264",
           "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p", str(path)]
    subprocess.run(cmd, input=b"".join(f.tobytes() for f in frames), check=True)


def crop_result(folder: Path, tracks: list[str], n_frames: int = N_FRAMES) -> StageResult:
    """A crop-stage result for the videos ``{track}.mp4`` in ``folder``."""
    meta = {"layout": "lr", "fps": FPS, "n_frames": n_frames, "crop_size": SIZE,
            "tracks": [{"track": t, "panel": t, "video": f"{t}.mp4", "presence": 1.0}
                       for t in tracks]}
    return StageResult(folder, meta, "crop-fp")


def run_stage(tmp: Path, crop: StageResult, **config) -> tuple[dict, Path]:
    out = tmp / "face"
    out.mkdir(parents=True)
    ctx = StageContext(item_id="src_000", source=SOURCE, config=FaceConfig(**config),
                       out_dir=out, inputs={"crop": crop})
    return FaceStage().run(ctx), out


@pytest.fixture(scope="module")
def crops(deps, tmp_path_factory) -> Path:
    """``left.mp4``: the animated face; ``right.mp4``: the same with SHORT_GAP and LONG_GAP
    black; ``blank.mp4``: 12 grey frames, no face."""
    folder = tmp_path_factory.mktemp("crop")
    encode(folder / "left.mp4", render(truth()))
    encode(folder / "right.mp4", render(truth(), black=[*SHORT_GAP, *LONG_GAP]))
    encode(folder / "blank.mp4", [np.full((SIZE, SIZE, 3), 128, np.uint8)] * 12)
    return folder


@pytest.fixture(scope="module")
def built(crops, tmp_path_factory):
    """The stage run once on the two-track clip (left, right)."""
    meta, out = run_stage(tmp_path_factory.mktemp("built"), crop_result(crops, ["left", "right"]))
    return meta, {t: dict(np.load(out / f"{t}.face.npz")) for t in ("left", "right")}


def test_outputs_have_mediapipe_names_and_exact_shapes(built):
    meta, arrays = built
    assert meta["blendshape_names"] == MEDIAPIPE_NAMES
    assert meta["fps"] == FPS and meta["n_frames"] == N_FRAMES
    assert [t["track"] for t in meta["tracks"]] == ["left", "right"]
    assert [t["file"] for t in meta["tracks"]] == ["left.face.npz", "right.face.npz"]
    for data in arrays.values():
        assert data["blendshapes"].shape == (N_FRAMES, 52)
        assert data["blendshapes"].dtype == np.float32
        assert data["pose"].shape == (N_FRAMES, 12) and data["pose"].dtype == np.float32
        for key in ("present", "detected", "interpolated"):
            assert data[key].shape == (N_FRAMES,) and data[key].dtype == bool
    left = meta["tracks"][0]
    assert left["detected_rate"] == left["present_rate"] == 1.0 and left["ms_per_frame"] > 0


def test_jaw_open_follows_the_applied_jaw(built):
    _, arrays = built
    jaw_open = arrays["left"]["blendshapes"][:, MEDIAPIPE_NAMES.index("jawOpen")]
    r = float(np.corrcoef(jaw_open, truth()["jaw"])[0, 1])
    print(f"jawOpen vs applied jaw opening: r = {r:.3f}")
    assert r > 0.7, f"jawOpen correlates with the applied jaw opening at r = {r:.3f}"


def angles(pose: np.ndarray) -> np.ndarray:
    """float [T, 3] (yaw, pitch, roll) in degrees from float [T, 12] stored poses."""
    from responsenet.synth.animate import pose_from_matrix

    return np.array([pose_from_matrix(row.reshape(3, 4)[:, :3]) for row in pose])


def test_stored_pose_is_a_rotation_with_translation_in_the_last_column(built):
    pose = built[1]["left"]["pose"].astype(np.float64).reshape(-1, 3, 4)
    rot = pose[:, :, :3] / np.linalg.norm(pose[:, :, :3], axis=1, keepdims=True)
    gram = np.einsum("tji,tjk->tik", rot, rot)
    assert np.allclose(gram, np.eye(3), atol=1e-3), "top-left 3x3 of each row is not a rotation"
    assert (pose[:, 2, 3] < 0).all(), "the face must sit in front of the camera (z < 0)"


def test_yaw_and_pitch_are_recovered_within_three_degrees(built):
    found = angles(built[1]["left"]["pose"])
    found -= found[:NEUTRAL_FRAMES].mean(axis=0)  # the photo's own pose is not frontal
    applied = truth()
    mae = {axis: float(np.abs(found[:, i] - applied[axis]).mean())
           for i, axis in enumerate(("yaw", "pitch"))}
    print(f"pose MAE over {N_FRAMES} frames: yaw {mae['yaw']:.2f} deg, "
          f"pitch {mae['pitch']:.2f} deg; |roll| max {np.abs(found[:, 2]).max():.2f} deg")
    assert mae["yaw"] < 3.0 and mae["pitch"] < 3.0, mae
    assert np.abs(found[:, 2]).max() < 5.0, "no roll was applied"
    assert np.corrcoef(found[:, 0], applied["yaw"])[0, 1] > 0.95


def test_short_gap_is_interpolated_and_long_gap_is_masked(built):
    meta, arrays = built
    right = arrays["right"]
    black = np.zeros(N_FRAMES, bool)
    black[[*SHORT_GAP, *LONG_GAP]] = True
    seen = "".join("1" if d else "." for d in right["detected"])
    assert (right["detected"] == ~black).all(), f"detected per frame: {seen}"
    assert np.flatnonzero(right["interpolated"]).tolist() == list(SHORT_GAP)
    assert (right["present"] == (right["detected"] | right["interpolated"])).all()
    assert not right["present"][list(LONG_GAP)].any()
    for key in ("blendshapes", "pose"):
        values = right[key]
        before, after = values[SHORT_GAP.start - 1], values[SHORT_GAP.stop]
        for step, frame in enumerate(SHORT_GAP, start=1):
            expected = before + step / (len(SHORT_GAP) + 1) * (after - before)
            assert np.allclose(values[frame], expected, atol=1e-6), (key, frame)
        assert not values[list(LONG_GAP)].any(), f"{key} of the long gap must stay zero"
    entry = meta["tracks"][1]
    assert entry["interpolated_frames"] == len(SHORT_GAP)
    assert entry["longest_gap_frames"] == len(LONG_GAP)
    assert entry["detected_rate"] == round(1 - black.mean(), 4)
    assert entry["present_rate"] == round(1 - len(LONG_GAP) / N_FRAMES, 4)


def test_each_track_gets_a_fresh_landmarker(built, crops, tmp_path):
    _, out = run_stage(tmp_path, crop_result(crops, ["right"]))
    alone = np.load(out / "right.face.npz")
    for key, value in built[1]["right"].items():
        assert np.array_equal(alone[key], value), f"{key} depends on the track before it"
    # what a fresh landmarker per track avoids: timestamps restarting at 0 on a used one
    with landmarker_for(model_file(None), FaceConfig()) as landmarker:
        detect_faces(landmarker, decode_frames(crops / "blank.mp4"), FPS)
        with pytest.raises(ValueError, match="monotonically increasing"):
            detect_faces(landmarker, decode_frames(crops / "blank.mp4"), FPS)


def test_video_without_a_face_fails_with_no_face(crops, tmp_path):
    with pytest.raises(StageFailure) as info:
        run_stage(tmp_path, crop_result(crops, ["blank"], n_frames=12))
    assert info.value.reason == "no_face"
    assert "track blank" in info.value.message and "no face in any of 12 frames" in info.value.message
    assert not list((tmp_path / "face").iterdir())


def test_too_few_face_frames_fail_with_no_face(crops, tmp_path):
    with pytest.raises(StageFailure) as info:
        run_stage(tmp_path, crop_result(crops, ["right"]), min_face_rate=0.9)
    assert info.value.reason == "no_face" and "81% of 80 frames" in info.value.message


def test_frame_count_mismatch_is_its_own_reason(crops, tmp_path):
    with pytest.raises(StageFailure) as info:
        run_stage(tmp_path, crop_result(crops, ["blank"], n_frames=10))
    assert info.value.reason == "frame_count_mismatch"
    assert "expected 10 frames" in info.value.message and "decoded 12" in info.value.message


@pytest.fixture
def no_models(monkeypatch, tmp_path):
    """An environment where the FaceLandmarker model cannot be found anywhere."""
    from responsenet.assets import Carrier

    for var, name in (("RESPONSENET_MODELS", "models"), ("XDG_CACHE_HOME", "cache"),
                      ("HOME", "home")):
        (tmp_path / name).mkdir()
        monkeypatch.setenv(var, str(tmp_path / name))
    monkeypatch.setattr(Carrier, "folder", lambda self: None)


def test_explicit_model_path_is_used(deps, crops, no_models, tmp_path):
    with pytest.raises(AssetMissing):
        model_file(None)
    assert model_file(str(deps)) == deps and model_file(str(deps.parent)) == deps
    with pytest.raises(StageFailure) as info:  # past the model: the blank video has no face
        run_stage(tmp_path, crop_result(crops, ["blank"], n_frames=12), model_path=str(deps))
    assert info.value.reason == "no_face"


def test_missing_model_is_a_clear_per_clip_failure(crops, no_models, tmp_path):
    task = Task(FaceStage, "clip", "src_000", SOURCE, {}, {"crop": crop_result(crops, ["left"])},
                "face-fp", tmp_path / "build")
    outcome = execute_task(task)
    assert outcome.status == "failed" and outcome.reason == "weights_missing"
    assert "mediapipe_face_landmarker" in outcome.message
    assert "face_landmarker.task" in outcome.message and "RESPONSENET_MODELS" in outcome.message
    clip_dir = tmp_path / "build" / "work" / "clips" / "src_000"
    assert (clip_dir / "face.failed.json").is_file() and not (clip_dir / "face").exists()
