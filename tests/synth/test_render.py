"""Rendering split-screen videos: panel geometry, frame count, audio, faces per panel, cuts."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from responsenet.errors import UsageError
from responsenet.synth.render import (
    cut_frames,
    panel_rects,
    panel_views,
    render_frames,
    render_video,
)

cv2 = pytest.importorskip("cv2", reason="opencv is needed to render faces")
pytest.importorskip("mediapipe", reason="MediaPipe (extra 'face') checks the rendered faces")
if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
    pytest.skip("ffmpeg/ffprobe not on PATH (apt-get install ffmpeg)", allow_module_level=True)

from responsenet.synth.animate import plan_head_motion
from responsenet.synth.faces import load_face
from responsenet.testing.video import decode_rgb as decode
from responsenet.testing.video import faces_per_panel, jaw_open_series

FACES = Path(__file__).resolve().parents[2] / ".." / "shared" / "realmedia" / "faces"
FPS, SECONDS, RATE = 25, 3.0, 16000
N_FRAMES = int(FPS * SECONDS)
CUT_FRAME = 40


def tracks(seed: int = 0) -> tuple[list[np.ndarray], list[dict]]:
    """Jaw (syllable-like bursts) and head motion of two panels; panel 0 speaks first."""
    rng, times = np.random.default_rng(seed), np.arange(N_FRAMES) / FPS
    speaking = [times < 1.5, times >= 1.5]
    jaw = [np.abs(np.sin(2 * np.pi * 2.5 * times)) * s for s in speaking]
    return jaw, [plan_head_motion(rng, N_FRAMES, FPS, s) for s in speaking]


def render(tmp: Path, layout: str, photos=None, size=(640, 360), cuts=()) -> tuple[Path, dict]:
    jaw, poses = tracks()
    photos = photos or [load_face("astronaut")] * 2
    tone = 0.1 * np.sin(2 * np.pi * 220 * np.arange(int(SECONDS * RATE)) / RATE)
    path = tmp / f"{layout}.mp4"
    boxes = render_video(path, photos, layout, size, FPS, jaw, poses, list(cuts),
                         tone.astype(np.float32), RATE)
    return path, boxes


def video_frames_and_audio(path: Path) -> tuple[int, bool]:
    """(video frames counted by ffprobe, whether an AAC audio stream is present)."""
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_entries",
                          "stream=codec_type,codec_name,pix_fmt,nb_read_frames", "-of", "json",
                          str(path)], capture_output=True, check=True, text=True).stdout
    info = {s["codec_type"]: s for s in json.loads(out)["streams"]}
    assert info["video"]["codec_name"] == "h264" and info["video"]["pix_fmt"] == "yuv420p"
    return int(info["video"]["nb_read_frames"]), info.get("audio", {}).get("codec_name") == "aac"


def iou(a, b) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def box_of(marks: np.ndarray) -> tuple[float, ...]:
    low, high = marks.min(axis=0), marks.max(axis=0)
    return (*low, *(high - low))


@pytest.fixture(scope="module")
def lr_clip(tmp_path_factory):
    """A 3 s lr clip with a camera cut at frame CUT_FRAME, decoded."""
    path, boxes = render(tmp_path_factory.mktemp("lr"), "lr", cuts=[CUT_FRAME / FPS])
    return path, boxes, decode(path, (640, 360))


def test_panel_rects_split_the_canvas():
    assert panel_rects("lr", (640, 360)) == {"left": (0, 0, 320, 360),
                                             "right": (320, 0, 320, 360)}
    assert panel_rects("tb", (640, 360)) == {"top": (0, 0, 640, 180),
                                             "bottom": (0, 180, 640, 180)}
    pip = panel_rects("pip", (640, 360))
    x, y, w, h = pip["inset"]
    assert pip["main"] == (0, 0, 640, 360) and w / 640 == pytest.approx(0.28, abs=0.01)
    assert 0 < 640 - (x + w) == 360 - (y + h) < 40 and w / h == pytest.approx(640 / 360, 0.02)
    with pytest.raises(UsageError, match="unknown layout 'grid'"):
        panel_rects("grid", (640, 360))


def test_cut_times_map_to_the_first_frame_at_or_after_them():
    assert cut_frames([1.6, 0.4, 1.61, 2.0 - 1e-9], 25) == [10, 40, 41, 50]


def test_bad_inputs_are_refused(tmp_path):
    jaw, poses = tracks()
    photos, tone = [load_face("astronaut")] * 2, np.zeros(RATE, np.float32)
    with pytest.raises(ValueError, match="same non-zero length"):
        render_video(tmp_path / "x.mp4", photos, "lr", (640, 360), FPS, [jaw[0][:10], jaw[1]],
                     poses, [], tone, RATE)
    with pytest.raises(UsageError, match="even"):
        render_video(tmp_path / "x.mp4", photos, "lr", (641, 360), FPS, jaw, poses, [], tone, RATE)
    assert not (tmp_path / "x.mp4").exists()


def test_frames_are_deterministic():
    jaw, poses = tracks()
    rects = panel_rects("lr", (320, 180))
    frames = [render_frames(panel_views([load_face("astronaut")] * 2, rects), rects, jaw, poses,
                            [], 30, np.zeros((180, 320, 3), np.uint8)) for _ in range(2)]
    assert np.array_equal(*frames) and frames[0].std() > 10


def test_lr_clip_has_every_frame_audio_and_one_face_per_panel(lr_clip):
    path, boxes, frames = lr_clip
    assert video_frames_and_audio(path) == (N_FRAMES, True) and len(frames) == N_FRAMES
    found = faces_per_panel(frames, panel_rects("lr", (640, 360)))
    for panel, per_frame in found.items():
        share = np.mean([len(faces) == 1 for faces in per_frame])
        assert share >= 0.95, f"{panel}: one face in only {share:.0%} of frames"
        assert iou(boxes[panel], box_of(per_frame[0][0])) > 0.5, (panel, boxes[panel])


def test_mediapipe_jaw_open_follows_each_panels_jaw(lr_clip):
    jaw = tracks()[0]
    for track, rect in zip(jaw, panel_rects("lr", (640, 360)).values()):
        scores = jaw_open_series(lr_clip[2], rect, FPS)
        assert np.corrcoef(track, scores)[0, 1] > 0.7, (rect, np.round(scores, 2))


def test_cut_makes_one_large_frame_difference(lr_clip):
    frames = lr_clip[2].astype(np.int16)
    change = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))  # change[i]: frame i -> i + 1
    others = np.delete(change, CUT_FRAME - 1)
    assert int(np.argmax(change)) == CUT_FRAME - 1
    assert change[CUT_FRAME - 1] > 4 * others.max(), (change[CUT_FRAME - 1], others.max())


def test_tb_clip_has_one_face_per_panel(tmp_path):
    path, boxes = render(tmp_path, "tb")
    assert video_frames_and_audio(path) == (N_FRAMES, True)
    found = faces_per_panel(decode(path, (640, 360)), panel_rects("tb", (640, 360)))
    for panel, per_frame in found.items():
        assert np.mean([len(faces) == 1 for faces in per_frame]) >= 0.95, panel
        assert iou(boxes[panel], box_of(per_frame[0][0])) > 0.5, (panel, boxes[panel])


def test_pip_clip_has_a_main_face_and_one_in_the_inset(tmp_path):
    path, boxes = render(tmp_path, "pip")
    rects = panel_rects("pip", (640, 360))
    found = faces_per_panel(decode(path, (640, 360)), rects)
    x, y, w, h = rects["inset"]

    def in_inset(marks: np.ndarray) -> bool:
        cx, cy = marks.mean(axis=0)
        return x <= cx < x + w and y <= cy < y + h
    ok = [any(not in_inset(f) for f in main) and len(inset) == 1 and in_inset(inset[0])
          for main, inset in zip(found["main"], found["inset"])]
    assert np.mean(ok) >= 0.95, f"two faces (main + inset) in only {np.mean(ok):.0%} of frames"
    assert iou(boxes["inset"], box_of(found["inset"][0][0])) > 0.5, boxes


def test_real_photos_render_with_one_face_per_panel(tmp_path):
    paths = [FACES / "fr_obama.jpg", FACES / "fr_biden.jpg"]
    if not all(p.is_file() for p in paths):
        pytest.skip(f"{FACES} not found: real face photos come from ../shared/realmedia/faces")
    path, _ = render(tmp_path, "lr", photos=[load_face(str(p)) for p in paths])
    found = faces_per_panel(decode(path, (640, 360)), panel_rects("lr", (640, 360)))
    for panel, per_frame in found.items():
        assert np.mean([len(faces) == 1 for faces in per_frame]) >= 0.95, panel
