"""Stage crop: layout, tracking with identity, crops against synthetic and real-media truth."""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from responsenet import facetrack as ft
from responsenet.build.stages.crop import CropConfig, crop_clip
from responsenet.errors import StageFailure

pytest.importorskip("cv2", reason="the synth extra (opencv) is needed")
pytest.importorskip("mediapipe", reason="MediaPipe runs the face detector")
for _tool in ("ffmpeg", "ffprobe", "espeak-ng"):
    if shutil.which(_tool) is None:
        pytest.skip(f"{_tool} not on PATH (make system-deps)", allow_module_level=True)

from responsenet.synth.generate import SynthSpec, conversation_id, synthesize
from responsenet.synth.truth import read_truth
from responsenet.testing import realmedia as rm
from responsenet.testing.video import decode_rgb

SIZE = (480, 270)
CFG = CropConfig(size=192, preset="ultrafast")


def write_video(path: Path, frames: np.ndarray, fps: int = 25) -> Path:
    height, width = frames.shape[1:3]
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
           "-s", f"{width}x{height}", "-r", str(fps), "-i", "pipe:0", "-c:v", "libx264",
           "-preset", "ultrafast", "-crf", "18", "-pix_fmt", "yuv420p", str(path)]
    subprocess.run(cmd, input=np.ascontiguousarray(frames).tobytes(), check=True)
    return path


@pytest.fixture(scope="module")
def synth_clips(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """One 8-second synthetic conversation per layout (lr, tb at 480x270, pip)."""
    out = tmp_path_factory.mktemp("crop-synth")
    clips = {}
    for layout in ("lr", "tb", "pip"):
        spec = SynthSpec(n=1, seed=21, layout=layout, duration=8.0, size=SIZE)
        synthesize(out / layout, spec, progress=False)
        conv = conversation_id(21, 0)
        clips[layout] = (out / layout / f"{conv}.mp4",
                         read_truth(out / layout / f"{conv}.truth.json"))
    return clips


def run_crop(video: Path, out: Path, cfg: CropConfig = CFG, layout: str = "auto") -> dict:
    out.mkdir(parents=True, exist_ok=True)
    n_frames = len(decode_rgb(video, _size(video)))
    return crop_clip(video, out, cfg, fps=25.0, n_frames=n_frames, layout=layout)


def _size(video: Path) -> tuple[int, int]:
    from responsenet.media import probe

    info = probe(video)
    return info.width, info.height


def failure(video: Path, out: Path, cfg: CropConfig = CFG, layout: str = "auto") -> str:
    with pytest.raises(StageFailure) as caught:
        run_crop(video, out, cfg, layout)
    assert not list(out.glob("*.mp4")) or caught.value.reason == "ffmpeg_failed"
    return caught.value.reason


# --- pure functions ---------------------------------------------------------------------------
def det(x, y, side, score=0.9):
    return ft.Detection(x, y, side, side, score)


def test_distinct_faces_merges_half_frame_parts_and_keeps_small_faces():
    big, part, small = det(200, 100, 160), det(210, 180, 120), det(500, 260, 40)
    faces = ft.FrameFaces([big], {"left": [], "right": [small], "top": [big], "bottom": [part]})
    assert ft.distinct_faces(faces) == [big, small]


def test_decide_layout_by_majority_and_reasons():
    lr = ft.FrameFaces([det(60, 80, 120), det(380, 80, 120)], {})
    tb = ft.FrameFaces([det(200, 10, 100), det(200, 150, 100)], {})
    pip = ft.FrameFaces([det(200, 60, 180), det(520, 280, 40)], {})
    one = ft.FrameFaces([det(60, 80, 120)], {})
    three = ft.FrameFaces([det(10, 80, 90), det(200, 80, 90), det(400, 80, 90)], {})
    none = ft.FrameFaces([], {})
    decide = lambda frames: ft.decide_layout(frames, 640, 360)  # noqa: E731
    assert decide([lr] * 10 + [one] * 2).layout == "lr"
    assert decide([tb] * 12).layout == "tb"
    assert decide([pip] * 9 + [one] * 3).layout == "pip"
    assert decide([none] * 12).reason == "no_face"
    assert decide([one] * 12).reason == "one_face"
    assert decide([three] * 12).reason == "too_many_faces"
    assert decide([lr] * 6 + [tb] * 6).reason == "layout_unstable"


def test_crop_boxes_bridge_gaps_smooth_and_respect_swaps():
    n = 100
    faces = np.zeros((n, 4), np.float32)
    faces[:, :] = [100, 50, 40, 40]
    faces[50:, 0] = 400  # the track moves to the other panel at frame 50 (a swap)
    faces[20:30] = np.nan
    boxes = ft.crop_boxes(faces, [50], fps=25, scale=2.0, smooth_center_s=0.2, smooth_size_s=1)
    assert np.allclose(boxes[:50, 0], 120) and np.allclose(boxes[50:, 0], 420)
    assert np.allclose(boxes[:, 2], 80)


def test_crop_frame_is_black_outside_its_panel():
    rgb = np.full((100, 200, 3), 255, np.uint8)
    crop = ft.crop_frame(rgb, np.array([90, 50, 40]), (0, 0, 100, 100), 40)
    assert crop.shape == (40, 40, 3)
    assert crop[:, :28].min() == 255 and crop[:, 32:].max() == 0  # panel ends at x = 100


# --- synthetic clips against truth ------------------------------------------------------------
@pytest.mark.parametrize("layout", ["lr", "tb", "pip"])
def test_synthetic_layout_and_each_track_shows_its_participant(synth_clips, tmp_path, layout):
    video, truth = synth_clips[layout]
    # the pip inset face is about 36 px on this small canvas
    meta = run_crop(video, tmp_path, CFG.model_copy(update={"min_face_px": 24}))
    assert meta["layout"] == layout and meta["layout_source"] == "detected"
    assert meta["swaps"] == []
    for track, person in zip(meta["tracks"], truth["participants"]):
        assert track["track"] == person["panel"]
        frames = decode_rgb(tmp_path / track["video"], (CFG.size, CFG.size))
        assert len(frames) == truth["n_frames"]
        boxes = np.load(tmp_path / track["boxes"])
        x, y, w, h = person["box"]
        cx, cy = x + w / 2, y + h / 2  # the truth face centre at neutral pose
        inside = (np.abs(boxes[:, 0] - cx) < boxes[:, 2] / 4) & \
                 (np.abs(boxes[:, 1] - cy) < boxes[:, 2] / 4)
        assert inside.mean() >= 0.99, (layout, person["panel"], inside.mean())
        assert track["presence"] >= 0.99


def test_manifest_layout_overrides_detection(synth_clips, tmp_path):
    video, _ = synth_clips["lr"]
    meta = run_crop(video, tmp_path, layout="rl")
    assert (meta["layout"], meta["layout_source"]) == ("lr", "manifest")
    assert [t["panel_rect"] for t in meta["tracks"]] == [[0, 0, 240, 270], [240, 0, 240, 270]]


# --- bad inputs -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lr_frames(synth_clips) -> np.ndarray:
    return decode_rgb(synth_clips["lr"][0], SIZE)[:100].copy()


def test_black_video(tmp_path):
    video = write_video(tmp_path / "black.mp4", np.zeros((50, 270, 480, 3), np.uint8))
    assert failure(video, tmp_path / "out") == "black_frames"


def test_one_face(tmp_path, lr_frames):
    frames = lr_frames.copy()
    frames[:, :, 240:] = 30
    assert failure(write_video(tmp_path / "one.mp4", frames), tmp_path / "out") == "one_face"


def test_face_leaving_the_frame(tmp_path, lr_frames):
    frames = lr_frames.copy()
    frames[30:, :, 240:] = 30  # the right participant leaves after 1.2 s
    assert failure(write_video(tmp_path / "leave.mp4", frames), tmp_path / "out") == "one_face"


def test_three_faces(tmp_path, lr_frames):
    import cv2

    frames = lr_frames.copy()
    for frame in frames:
        half = cv2.resize(frame[:, :240], (120, 135), interpolation=cv2.INTER_AREA)
        frame[:, :240] = 20
        frame[60:195, :120] = half
        frame[60:195, 120:240] = half
    assert failure(write_video(tmp_path / "three.mp4", frames),
                   tmp_path / "out") == "too_many_faces"


def test_face_too_small(synth_clips, tmp_path):
    cfg = CFG.model_copy(update={"min_face_px": 400})
    assert failure(synth_clips["lr"][0], tmp_path / "out", cfg) == "face_too_small"


def test_layout_change_inside_a_clip(synth_clips, tmp_path, lr_frames):
    tb = decode_rgb(synth_clips["tb"][0], SIZE)[:100]
    video = write_video(tmp_path / "change.mp4", np.concatenate([lr_frames, tb]))
    assert failure(video, tmp_path / "out") == "layout_unstable"


def test_missing_model_file_is_named(synth_clips, tmp_path):
    cfg = CFG.model_copy(update={"model_path": str(tmp_path / "nope.task")})
    with pytest.raises(StageFailure, match="face_landmarker.task") as caught:
        run_crop(synth_clips["lr"][0], tmp_path / "out", cfg)
    assert caught.value.reason == "weights_missing"


# --- real media -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_cases(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    rm.require_realmedia()
    out = tmp_path_factory.mktemp("crop-real")
    rm.standard_cases(out, panel_size=320)
    return {case: (out / f"{case}.mp4", read_truth(out / f"{case}.truth.json"))
            for case in ("rm_lr_sadtalker", "rm_tb_videoretalking")}


@pytest.mark.parametrize("case", ["rm_lr_sadtalker", "rm_tb_videoretalking"])
def test_real_faces_are_tracked_without_swaps(real_cases, tmp_path, case):
    video, truth = real_cases[case]
    meta = run_crop(video, tmp_path)
    assert meta["layout"] == truth["layout"] and meta["swaps"] == []
    assert [t["track"] for t in meta["tracks"]] == [p["panel"] for p in truth["participants"]]
    for track in meta["tracks"]:
        assert track["presence"] >= 0.95, (case, track)
        assert track["frames_in_other_panel"] == 0
        faces = np.load(tmp_path / track["faces"])
        x, y, w, h = track["panel_rect"]
        centres = faces[:, :2] + faces[:, 2:] / 2
        found = ~np.isnan(centres[:, 0])
        assert np.all((centres[found, 0] >= x) & (centres[found, 0] < x + w))
        assert np.all((centres[found, 1] >= y) & (centres[found, 1] < y + h))


def test_panel_swap_keeps_each_person_in_their_track(real_cases, tmp_path):
    video, _ = real_cases["rm_lr_sadtalker"]
    frames = decode_rgb(video, (640, 320))
    swapped = frames.copy()
    at = len(frames) // 2
    swapped[at:, :, :320], swapped[at:, :, 320:] = frames[at:, :, 320:], frames[at:, :, :320]
    meta = run_crop(write_video(tmp_path / "swap.mp4", swapped), tmp_path / "out")
    assert len(meta["swaps"]) == 1 and abs(meta["swaps"][0] - at) <= 2, meta["swaps"]
    left, right = meta["tracks"]
    assert math.isclose(left["frames_in_other_panel"], len(frames) - at, abs_tol=2)
    assert math.isclose(right["frames_in_other_panel"], len(frames) - at, abs_tol=2)


# --- through the runner -----------------------------------------------------------------------
def test_build_crop_then_face_recovers_jaw_and_head_pose(synth_clips, tmp_path):
    """Through the runner: synthetic clip -> segment -> crop -> face, against the synth truth."""
    from responsenet.build.pipeline import build
    from responsenet.build.workspace import Workspace
    from responsenet.synth.animate import pose_from_matrix
    from responsenet.synth.audio import frame_envelope
    from responsenet.wavio import read_wav

    video, truth = synth_clips["lr"]
    manifest = video.parent / "manifest.yaml"
    stages = "download,segment,crop,face"
    overrides = ["crop.size=256", "crop.preset=ultrafast"]
    report = build(manifest, tmp_path, stages, overrides=overrides, progress=False)
    assert report.stages["face"].done == 1 and not report.failures
    ws, clip_id = Workspace(tmp_path), f"{conversation_id(21, 0)}_000"
    assert ws.read_result("clip", clip_id, "crop")["meta"]["layout"] == "lr"
    face = ws.read_result("clip", clip_id, "face")["meta"]
    jaw_index = face["blendshape_names"].index("jawOpen")
    for track, person in zip(face["tracks"], truth["participants"]):
        assert track["track"] == person["panel"]
        arrays = np.load(ws.output_dir("clip", clip_id, "face") / track["file"])
        assert arrays["present"].mean() >= 0.99
        audio, rate = read_wav(video.parent / person["audio"])
        r = np.corrcoef(frame_envelope(audio, 25, rate), arrays["blendshapes"][:, jaw_index])
        assert r[0, 1] > 0.6, (person["panel"], r[0, 1])
        rows = arrays["pose"].reshape(-1, 3, 4)
        got = np.array([pose_from_matrix(m)[:2] for m in rows])  # yaw, pitch
        want = np.stack([person["head_pose"]["yaw"], person["head_pose"]["pitch"]], axis=1)
        error = got - want
        error -= np.median(error, axis=0)  # the photo's own pose is an offset
        mae = np.abs(error).mean(axis=0)
        print(f"{person['panel']}: jawOpen r {r[0, 1]:.2f}, yaw MAE {mae[0]:.2f}, "
              f"pitch MAE {mae[1]:.2f} degrees")
        assert mae.max() < 3.0, mae
    again = build(manifest, tmp_path, stages, overrides=overrides, progress=False)
    assert again.stages["crop"].skipped == 1 and again.stages["face"].skipped == 1


@pytest.mark.timeout(120)
def test_an_encoder_that_dies_fails_the_clip_with_its_error_and_does_not_hang(
        synth_clips, tmp_path, monkeypatch):
    """The crop threads keep taking frames after a dead encoder, so the decoder never blocks."""
    import responsenet.build.stages.crop as crop_module

    real = crop_module._encoder
    calls = []

    def dying(path, size, fps, cfg, log):
        calls.append(path.name)
        if len(calls) == 1:  # the first track's encoder: a codec that does not exist
            cmd = ["ffmpeg", "-nostdin", "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
                   "-s", f"{size}x{size}", "-i", "pipe:0", "-c:v", "no_such_codec", str(path)]
            return subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=log.open("wb"))
        return real(path, size, fps, cfg, log)

    monkeypatch.setattr(crop_module, "_encoder", dying)
    video, _ = synth_clips["lr"]
    with pytest.raises(StageFailure) as caught:
        run_crop(video, tmp_path / "out")
    assert caught.value.reason == "ffmpeg_failed"
    assert "no_such_codec" in str(caught.value) or "Unknown encoder" in str(caught.value)
    assert calls == ["left.mp4", "right.mp4"]


def test_crop_reads_a_clip_that_segment_did_not_encode_from_its_source(synth_clips, tmp_path):
    """segment.reencode=when_cut: one clip, no clip video; crop decodes the source through the
    clip's recipe and finds the same faces as from the encoded clip."""
    import json

    from responsenet.build.pipeline import build

    video, _ = synth_clips["lr"]
    (tmp_path / "m.yaml").write_text(f"- {{id: conv, path: '{video}'}}\n")
    metas, boxes = {}, {}
    for mode in ("always", "when_cut"):
        out = tmp_path / mode
        report = build(tmp_path / "m.yaml", out, "download,segment,crop", progress=False,
                       overrides=[f"segment.reencode={mode}", "crop.size=128",
                                  "crop.preset=ultrafast"])
        assert report.items == {"conv": "ok"}, report.failures
        clip_dir = out / "work" / "clips" / "conv_000" / "crop"
        metas[mode] = json.loads((clip_dir / "_result.json").read_text())["meta"]
        boxes[mode] = [np.load(clip_dir / f"{t['track']}.boxes.npy")
                       for t in metas[mode]["tracks"]]
        segment_dir = out / "work" / "sources" / "conv" / "segment"
        assert len(list(segment_dir.glob("*.mp4"))) == (1 if mode == "always" else 0)
    assert metas["when_cut"]["layout"] == metas["always"]["layout"] == "lr"
    assert metas["when_cut"]["n_frames"] == metas["always"]["n_frames"] == 200
    for lean, encoded in zip(boxes["when_cut"], boxes["always"], strict=True):
        assert np.abs(lean - encoded).max() < 2.0  # px: the faces are found in the same places
