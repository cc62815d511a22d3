"""FVD: the Fréchet distance, window sampling and decoding, and the metric with a stand-in I3D.

The real ``i3d_torchscript.pt`` is not available offline: the end-to-end tests use a small
TorchScript module with the same call signature, saved by the test and loaded by the production
path. Its values are not FVD; only shapes, determinism and the distance's behaviour are checked.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from responsenet.eval.metrics import MetricContext, MetricSkipped, ScoredClip
from responsenet.eval.metrics.face import frechet_distance
from responsenet.eval.metrics.video import (
    feature_stats,
    fvd,
    load_detector,
    read_windows,
    video_features,
    window_starts,
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
    params = {"n_seeds": 2, "windows_per_clip": 4, **params}
    return MetricContext(seed=7, asset_paths={"i3d_fvd": folder}, params={"fvd": params})


def _symmetric_sqrt(a: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(a)
    return vectors @ np.diag(np.sqrt(np.clip(values, 0, None))) @ vectors.T


def test_frechet_distance_of_feature_stats_matches_the_symmetric_form():
    """FVD's distance on its (biased) statistics, against tr sqrt(S1^1/2 S2 S1^1/2)."""
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((50, 6)), rng.standard_normal((60, 6)) * 1.5 + 0.3
    (mu1, s1), (mu2, s2) = feature_stats(a), feature_stats(b)
    root = _symmetric_sqrt(s1)
    want = (np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
            - 2 * np.trace(_symmetric_sqrt(root @ s2 @ root)))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(want, rel=1e-9)


def test_feature_stats_are_mean_and_biased_covariance():
    x = np.random.default_rng(5).standard_normal((30, 4))
    mu, sigma = feature_stats(x)
    np.testing.assert_allclose(mu, x.mean(0))
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False, bias=True), atol=1e-12)


def test_window_starts_are_seeded_and_in_range():
    starts = window_starts(40, 16, 50, (7, 0, 3))
    assert starts.min() >= 0 and starts.max() <= 24
    assert window_starts(40, 16, 50, (7, 0, 3)).tolist() == starts.tolist()
    assert window_starts(40, 16, 50, (7, 1, 3)).tolist() != starts.tolist()
    assert window_starts(15, 16, 3, (0,)).size == 0


def test_read_windows_keeps_the_frames_of_each_window(videos):
    path = videos["testsrc2"]["clean"]
    frames = np.stack(list(decode_frames(path)))
    got = read_windows(path, [0, 20, 5, 30], 16)
    for start, window in zip([0, 20, 5], got):
        np.testing.assert_array_equal(window, frames[start:start + 16])
    assert got[3] is None  # frames 30..45 of 40


def test_video_features_call_the_detector_for_features(i3d_folder, videos):
    detector = load_detector(i3d_folder / "i3d_torchscript.pt")
    windows = read_windows(videos["testsrc"]["clean"], [0, 3, 9], 16)
    feats = video_features(detector, windows, batch_size=2)
    assert feats.shape == (3, 8) and feats.dtype == np.float64  # features, not the 5 classes
    np.testing.assert_allclose(video_features(detector, windows[1:2])[0], feats[1], rtol=1e-5)


def test_fvd_with_a_stand_in_detector(i3d_folder, videos):
    ctx = _ctx(i3d_folder)
    same = fvd(_clips(videos), ctx)
    assert ctx.used_assets["i3d_fvd"] == i3d_folder
    assert abs(same) < 1e-8
    mild, strong = fvd(_clips(videos, "mild"), ctx), fvd(_clips(videos, "strong"), ctx)
    assert mild > 1e-5  # about 2e-4 with this stand-in (features are spatio-temporal means)
    assert strong > 100 * mild
    assert fvd(_clips(videos, "mild"), ctx) == mild  # deterministic


def test_fvd_is_the_mean_over_seeds(i3d_folder, videos):
    clips = _clips(videos, "mild")
    singles = [fvd(clips, MetricContext(seed=s, asset_paths={"i3d_fvd": i3d_folder},
                                        params={"fvd": {"n_seeds": 1, "windows_per_clip": 4}}))
               for s in (7, 8)]
    assert singles[0] != singles[1]
    assert fvd(clips, _ctx(i3d_folder)) == pytest.approx(np.mean(singles))


def test_fvd_skips_without_weights_or_long_enough_clips(tmp_path, i3d_folder, videos):
    with pytest.raises(MetricSkipped) as err:
        fvd(_clips(videos), _ctx(tmp_path))
    assert err.value.wanted == "i3d_fvd/i3d_torchscript.pt"
    with pytest.raises(MetricSkipped, match="at least 2 windows of 48 frames"):
        fvd(_clips(videos), _ctx(i3d_folder, n_frames=48))
    with pytest.raises(MetricSkipped, match="no clip has ref_video"):
        fvd([ScoredClip("c", 25.0, 16000, 40, gen_video=videos["testsrc"]["clean"])],
            _ctx(i3d_folder))
