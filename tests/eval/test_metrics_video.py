"""FVD: the distance, frame resizing, the released script's sampling, and the metric with a
stand-in I3D.

The real ``i3d_torchscript.pt`` is not available offline: the end-to-end tests use a small
TorchScript module with the same call signature, saved by the test and loaded by the production
path. Its values are not FVD; only shapes, determinism and the protocol's bookkeeping are checked.
"""

from __future__ import annotations

import random
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from responsenet.errors import StageFailure, UsageError
from responsenet.eval.metrics import MetricContext, MetricSkipped, ScoredClip
from responsenet.eval.metrics import video as video_module
from responsenet.eval.metrics.face import frechet_distance as pytorch_fid_distance
from responsenet.eval.metrics.video import (
    BASE_SEED,
    N_FRAMES,
    N_SEEDS,
    NUM_VIDEOS,
    count_frames,
    feature_stats,
    frechet_distance,
    fvd,
    load_detector,
    read_window,
    resize_area,
    resize_bilinear,
    sample_windows,
    video_features,
)
from responsenet.media import decode_frames, run_ffmpeg

N_CLIP_FRAMES = 40
SOURCES = ("testsrc2", "testsrc", "rgbtestsrc", "smptebars")


class StandInI3D(torch.nn.Module):
    """Same call as StyleGAN-V's I3D TorchScript: uint8 [B, 3, N, H, W] with rescale/resize."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv3d(3, 8, kernel_size=3, stride=2)
        self.head = torch.nn.Linear(8, 5)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        if rescale:
            x = x.float() / 127.5 - 1
        if resize:
            x = F.interpolate(x, size=[x.shape[2], 32, 32], mode="trilinear", align_corners=False)
        features = torch.relu(self.conv(x)).mean(dim=[2, 3, 4])
        if return_features:
            return features
        return torch.softmax(self.head(features), dim=1)


@pytest.fixture(scope="module")
def i3d_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("i3d")
    with warnings.catch_warnings():  # TorchScript is deprecated from torch 2.13 on
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(StandInI3D()).save(str(folder / "i3d_torchscript.pt"))
    return folder


def _video(path, source: str, vf: str | None = None):
    args = ["-f", "lavfi", "-i", f"{source}=size=64x64:rate=25:duration={N_CLIP_FRAMES / 25}"]
    args += ["-vf", vf] if vf else []
    run_ffmpeg([*args, "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
                str(path)], what="make test video")
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Per source: the clean video, and mildly and strongly corrupted copies of it."""
    folder = tmp_path_factory.mktemp("fvd_media")
    out = {}
    for source in SOURCES:
        out[source] = {
            "clean": _video(folder / f"{source}.mp4", source),
            "mild": _video(folder / f"{source}_mild.mp4", source, "noise=alls=12:allf=t"),
            "strong": _video(folder / f"{source}_strong.mp4", source, "noise=alls=60:allf=t,negate"),
        }
    return out


def _clips(videos, gen: str = "clean") -> list[ScoredClip]:
    return [ScoredClip(f"c{i}", 25.0, 16000, N_CLIP_FRAMES, gen_video=v[gen],
                       ref_video=v["clean"]) for i, v in enumerate(videos.values())]


def _ctx(folder, **params) -> MetricContext:
    params = {"n_frames": 16, "num_videos": 3, "n_seeds": 2, **params}
    return MetricContext(seed=7, asset_paths={"i3d_fvd": folder}, params={"fvd": params})


# --- distance and statistics ----------------------------------------------------------------------

def test_frechet_distance_adds_eps_to_both_diagonals():
    """The released script adds 1e-6 to both covariance diagonals before the square root, even
    when nothing is singular; pytorch-fid's guard (face.frechet_distance) does not."""
    mu = np.zeros(2)
    s1, s2 = np.diag([1.0, 0.0]), np.diag([0.0, 1.0])
    e = 1e-6
    want = 2 + 4 * e - 4 * np.sqrt(e * (1 + e))  # tr(S1' + S2') - 2 tr sqrt(S1' S2')
    assert frechet_distance(mu, s1, mu, s2) == pytest.approx(want, rel=1e-12)
    assert want == pytest.approx(1.996, abs=1e-5)
    assert pytorch_fid_distance(mu, s1, mu, s2) == pytest.approx(2.0)
    # means count as |mu1 - mu2|^2; eps 0 gives the plain formula
    assert frechet_distance(np.array([1.0, 2.0]), np.diag([1.0, 4.0]), np.zeros(2),
                            np.diag([4.0, 1.0]), eps=0.0) == pytest.approx(5 + 2 * (5 - 2 * 2))


def test_frechet_distance_refuses_a_large_imaginary_root():
    with pytest.raises(StageFailure) as err:
        frechet_distance(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))
    assert err.value.reason == "fvd_unstable"


def test_feature_stats_are_mean_and_biased_covariance():
    x = np.random.default_rng(5).standard_normal((30, 4))
    mu, sigma = feature_stats(x)
    np.testing.assert_allclose(mu, x.mean(0))
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False, bias=True), atol=1e-12)


# --- frames --------------------------------------------------------------------------------------

def test_resize_area_hand_values():
    """3 -> 2 pixels: output 0 covers inputs 0 and half of 1, weights 2/3 and 1/3."""
    columns = np.array([0, 90, 180], np.uint8)
    frame = np.broadcast_to(columns[None, :, None], (3, 3, 3))[None]
    out = resize_area(frame, size=2)
    assert out.shape == (1, 2, 2, 3)
    assert out[0, :, :, 0].tolist() == [[30, 150], [30, 150]]
    same = np.arange(224 * 224 * 3, dtype=np.uint32).astype(np.uint8).reshape(1, 224, 224, 3)
    np.testing.assert_array_equal(resize_area(same), same)


@pytest.mark.parametrize("shape", [(448, 448), (512, 512), (300, 400), (720, 1280), (160, 200)])
def test_resize_area_matches_cv2(shape):
    cv2 = pytest.importorskip("cv2")
    frames = np.random.default_rng(1).integers(0, 256, (2, *shape, 3), dtype=np.uint8)
    want = np.stack([cv2.resize(f, (224, 224), interpolation=cv2.INTER_AREA) for f in frames])
    diff = np.abs(resize_area(frames).astype(int) - want)
    assert diff.max() <= 1
    if min(shape) >= 224:  # shrinking: OpenCV's float path, nearly exact
        assert (diff == 0).mean() > 0.999


def test_resize_bilinear_is_the_scripts_own_resize():
    frames = np.random.default_rng(2).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    np.testing.assert_array_equal(resize_bilinear(frames), frames)  # a no-op at 224
    small = np.array([[0, 100], [100, 200]], np.uint8)[None, :, :, None].repeat(3, axis=3)
    out = resize_bilinear(small, size=4)[0, :, :, 0]
    # half-pixel centres: output pixel 1 sits at input 0.25 -> 0.75 * 0 + 0.25 * 100 = 25
    assert out[0].tolist() == [0, 25, 75, 100]


def test_fvd_refuses_an_unknown_resize(i3d_folder, videos):
    with pytest.raises(UsageError, match="resize"):
        fvd(_clips(videos), _ctx(i3d_folder, resize="lanczos"))


def test_read_window_and_count_frames(videos):
    path = videos["testsrc2"]["clean"]
    frames = np.stack(list(decode_frames(path)))
    assert count_frames(path) == len(frames) == N_CLIP_FRAMES
    np.testing.assert_array_equal(read_window(path, 20, 16), frames[20:36])
    assert read_window(path, 30, 16) is None  # frames 30..45 of 40


# --- sampling ------------------------------------------------------------------------------------

LENGTHS = {"a.mp4": 300, "b.mp4": 100, "c.mp4": 256, "d.mp4": 400, "e.mp4": 260}


def test_sample_windows_reproduces_the_released_draws():
    """Sorted names shuffled by random.Random(42): d b c e a; b is too short for 256 frames.
    Starts from random.Random(7): d 82, c 0, e 3, a 41 (every usable video of the loading batch
    draws, although only the first two are kept)."""
    starts = random.Random(7)
    got = sample_windows(list(LENGTHS), LENGTHS.get, 256, 2, random.Random(42), starts)
    assert got == [("d.mp4", 82), ("c.mp4", 0)]
    replay = random.Random(7)
    for n in ("d.mp4", "c.mp4", "e.mp4", "a.mp4"):
        replay.randint(0, LENGTHS[n] - 256)
    assert starts.getstate() == replay.getstate()
    # loading batches of 2: the first batch (d, c) fills the quota, e and a never draw
    starts = random.Random(7)
    assert sample_windows(list(LENGTHS), LENGTHS.get, 256, 2, random.Random(42), starts,
                          loading_batch=2) == [("d.mp4", 82), ("c.mp4", 0)]
    replay = random.Random(7)
    for n in ("d.mp4", "c.mp4"):
        replay.randint(0, LENGTHS[n] - 256)
    assert starts.getstate() == replay.getstate()
    # fewer usable videos than asked: all of them
    assert len(sample_windows(list(LENGTHS), LENGTHS.get, 256, 10, random.Random(42),
                              random.Random(7))) == 4


# --- detector and metric -------------------------------------------------------------------------

def test_video_features_call_the_detector_for_features(i3d_folder, videos):
    detector = load_detector(i3d_folder / "i3d_torchscript.pt")
    windows = [resize_area(read_window(videos["testsrc"]["clean"], s, 16)) for s in (0, 3, 9)]
    feats = video_features(detector, windows, batch_size=2)
    assert feats.shape == (3, 8) and feats.dtype == np.float64  # features, not the 5 classes
    np.testing.assert_allclose(video_features(detector, windows[1:2])[0], feats[1], rtol=1e-5)


def test_fvd_defaults_are_the_released_protocol():
    assert (N_FRAMES, NUM_VIDEOS, N_SEEDS, BASE_SEED) == (256, 140, 5, 42)


def test_fvd_feeds_the_detector_224_frames_without_its_resize(i3d_folder, videos, monkeypatch):
    """64x64 videos reach the detector area-resized to 224x224, with the detector's own resize
    off (the released script resizes outside the detector, once)."""
    calls = []

    def detector(x, **kwargs):
        calls.append((tuple(x.shape), x.dtype, kwargs))
        return x.float().mean(dim=(2, 3, 4))  # [B, 3]

    monkeypatch.setattr(video_module, "load_detector", lambda *args: detector)
    ctx = MetricContext(asset_paths={"i3d_fvd": i3d_folder},
                        params={"fvd": {"n_frames": 16, "num_videos": 3, "n_seeds": 1}})
    fvd(_clips(videos), ctx)
    shape, dtype, kwargs = calls[0]
    assert shape[1:] == (3, 16, 224, 224) and dtype == torch.uint8
    assert kwargs == {"rescale": True, "resize": False, "return_features": True}
    assert ctx.notes["fvd"]["seeds"] == [42]


def test_fvd_with_a_stand_in_detector(i3d_folder, videos):
    ctx = _ctx(i3d_folder)
    mild = fvd(_clips(videos, "mild"), ctx)
    assert ctx.used_assets["i3d_fvd"] == i3d_folder
    assert ctx.notes["fvd"]["seeds"] == [42 + 7, 43 + 7]
    assert ctx.notes["fvd"]["videos_per_side"] == 3
    assert mild == pytest.approx(np.mean(ctx.notes["fvd"]["per_seed"]))
    strong = fvd(_clips(videos, "strong"), ctx)
    assert strong > 10 * mild > 0
    assert fvd(_clips(videos, "mild"), _ctx(i3d_folder)) == mild  # deterministic


def test_fvd_sides_are_sampled_apart_as_in_the_released_script(i3d_folder, videos):
    """Each side shuffles its own directory and draws its own starts: the same videos on both
    sides do not give 0 (they did when windows were paired)."""
    same = fvd(_clips(videos), _ctx(i3d_folder))
    assert same > 1e-6
    # every video in, one window each at start 0 only when a clip is exactly n_frames long
    exact = fvd(_clips(videos), _ctx(i3d_folder, n_frames=N_CLIP_FRAMES, num_videos=0))
    assert exact == pytest.approx(0.0, abs=1e-6)


def test_fvd_is_rebuilt_from_its_parts(i3d_folder, videos):
    """The metric's value for one seed, recomputed from sample_windows and the detector:
    generated side first with the shared start stream, real side shuffled with seed + 999."""
    clips = _clips(videos, "mild")
    ctx = _ctx(i3d_folder, n_seeds=1)
    got = fvd(clips, ctx)
    detector = load_detector(i3d_folder / "i3d_torchscript.pt")
    gen = {f"{c.clip_id}.mp4": c.gen_video for c in clips}
    real = {f"{c.clip_id}.mp4": c.ref_video for c in clips}
    starts, seed = random.Random(49), 49
    stats = []
    for side, shuffle in ((gen, seed), (real, seed + 999)):
        windows = sample_windows(list(side), lambda n, side=side: count_frames(side[n]), 16, 3,
                                 random.Random(shuffle), starts)
        frames = [resize_area(read_window(side[n], s, 16)) for n, s in windows]
        stats.append(feature_stats(video_features(detector, frames)))
    assert got == pytest.approx(frechet_distance(*stats[0], *stats[1]), rel=1e-9)


def test_fvd_skips_without_weights_or_enough_videos(tmp_path, i3d_folder, videos):
    with pytest.raises(MetricSkipped) as err:
        fvd(_clips(videos), _ctx(tmp_path))
    assert err.value.wanted == "i3d_fvd/i3d_torchscript.pt"
    with pytest.raises(MetricSkipped, match="needs 140 generated videos of at least 256 frames"):
        fvd(_clips(videos), MetricContext(asset_paths={"i3d_fvd": i3d_folder}))
    with pytest.raises(MetricSkipped, match="found 0"):
        fvd(_clips(videos), _ctx(i3d_folder, n_frames=48))
    with pytest.raises(MetricSkipped, match="no clip has ref_video"):
        fvd([ScoredClip("c", 25.0, 16000, 40, gen_video=videos["testsrc"]["clean"])],
            _ctx(i3d_folder))
