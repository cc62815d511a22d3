"""LSE-D / LSE-C: SyncNet's layout, its loader, the offset search and the metric end to end.

The real ``syncnet_v2.model`` is not available offline: the end-to-end tests use a stand-in, our
SyncNet with seeded random weights saved as a state dict and loaded through the production path.
Its scores are not LSE values; only shapes, determinism and bookkeeping are checked with it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from responsenet.errors import AssetMissing
from responsenet.eval.metrics import MetricContext, MetricSkipped, ScoredClip, sync
from responsenet.eval.metrics.sync import (
    MIN_FRAMES,
    clip_distances,
    face_frames,
    lse,
    mfcc_windows,
    speaking_windows,
    sync_offsets,
    sync_scores,
    to_25fps,
)
from responsenet.eval.metrics.syncnet_model import SyncNet, load_syncnet
from responsenet.testing.media import make_video

python_speech_features = pytest.importorskip("python_speech_features")

# joonson/syncnet_python SyncNetModel.S, written out from its layer list: a tuple is a Conv or
# Linear weight shape (with a bias of its first size), an int a BatchNorm's width.
REFERENCE_LAYOUT: dict[str, tuple[int, ...] | int] = {
    "netcnnaud.0": (64, 1, 3, 3), "netcnnaud.1": 64,
    "netcnnaud.4": (192, 64, 3, 3), "netcnnaud.5": 192,
    "netcnnaud.8": (384, 192, 3, 3), "netcnnaud.9": 384,
    "netcnnaud.11": (256, 384, 3, 3), "netcnnaud.12": 256,
    "netcnnaud.14": (256, 256, 3, 3), "netcnnaud.15": 256,
    "netcnnaud.18": (512, 256, 5, 4), "netcnnaud.19": 512,
    "netfcaud.0": (512, 512), "netfcaud.1": 512, "netfcaud.3": (1024, 512),
    "netfclip.0": (512, 512), "netfclip.1": 512, "netfclip.3": (1024, 512),
    "netcnnlip.0": (96, 3, 5, 7, 7), "netcnnlip.1": 96,
    "netcnnlip.4": (256, 96, 1, 5, 5), "netcnnlip.5": 256,
    "netcnnlip.8": (256, 256, 1, 3, 3), "netcnnlip.9": 256,
    "netcnnlip.11": (256, 256, 1, 3, 3), "netcnnlip.12": 256,
    "netcnnlip.14": (256, 256, 1, 3, 3), "netcnnlip.15": 256,
    "netcnnlip.18": (512, 256, 1, 6, 6), "netcnnlip.19": 512,
}


def _reference_state_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for prefix, spec in REFERENCE_LAYOUT.items():
        if isinstance(spec, tuple):
            shapes.update({f"{prefix}.weight": spec, f"{prefix}.bias": spec[:1]})
        else:
            for name in ("weight", "bias", "running_mean", "running_var"):
                shapes[f"{prefix}.{name}"] = (spec,)
            shapes[f"{prefix}.num_batches_tracked"] = ()
    return shapes


def _stand_in() -> SyncNet:
    torch.manual_seed(0)
    net = SyncNet()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so that loading them matters
        for module in net.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return net.eval()


@pytest.fixture(scope="module")
def syncnet_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("syncnet")
    torch.save(_stand_in().state_dict(), folder / "syncnet_v2.model")
    return folder


@pytest.fixture(scope="module")
def face_clips(tmp_path_factory):
    """Clips of 35 and 30 frames (30 and 25 windows): a square and a wide render, noisy 16 kHz
    audio; the listener speaks throughout the first clip and never in the second."""
    folder = tmp_path_factory.mktemp("lse_media")
    rng = np.random.default_rng(0)
    clips = []
    for i, (size, n_frames) in enumerate([((96, 96), 35), ((128, 96), 30)]):
        video = make_video(folder / f"gen{i}.mp4", duration=n_frames / 25, fps=25, size=size,
                           audio=False)
        audio = (0.1 * rng.standard_normal(n_frames * 640)).astype(np.float32)
        clips.append(ScoredClip(f"c{i}", 25.0, 16000, n_frames, gen_video=video,
                                gen_audio=audio, ref_vad=np.full(n_frames, i == 0)))
    return clips


def test_syncnet_state_dict_matches_the_reference_layout():
    got = {k: tuple(v.shape) for k, v in SyncNet().state_dict().items()}
    assert got == _reference_state_shapes()


def test_syncnet_embeds_both_modalities():
    net = _stand_in()
    with torch.no_grad():
        assert net.forward_aud(torch.randn(3, 1, 13, 20)).shape == (3, 1024)
        assert net.forward_lip(torch.rand(2, 3, 5, 224, 224) * 255).shape == (2, 1024)


@pytest.mark.parametrize("variant", ["current", "legacy_format", "no_batch_counters"])
def test_load_syncnet_restores_the_saved_network(tmp_path, variant):
    net = _stand_in()
    state = net.state_dict()
    if variant == "no_batch_counters":  # files saved before PyTorch 0.4.1
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "syncnet_v2.model"
    torch.save(state, path, _use_new_zipfile_serialization=variant != "legacy_format")
    loaded = load_syncnet(path)
    x = torch.randn(2, 1, 13, 20)
    with torch.no_grad():
        assert torch.equal(loaded.forward_aud(x), net.forward_aud(x))
    assert not loaded.training


@pytest.mark.parametrize("damage", ["renamed_key", "extra_key", "wrong_shape", "not_a_dict"])
def test_load_syncnet_refuses_other_files(tmp_path, damage):
    state = dict(_stand_in().state_dict())
    if damage == "renamed_key":
        state["netcnnaud.0.kernel"] = state.pop("netcnnaud.0.weight")
    elif damage == "extra_key":
        state["netfcaud.4.weight"] = torch.zeros(3)
    elif damage == "wrong_shape":
        state["netfclip.3.weight"] = torch.zeros(512, 512)
    path = tmp_path / "syncnet_v2.model"
    torch.save([1, 2] if damage == "not_a_dict" else state, path)
    with pytest.raises(AssetMissing) as err:
        load_syncnet(path)
    assert err.value.reason == "weights_corrupt"
    with pytest.raises(MetricSkipped) as skip:
        lse([ScoredClip("c", 25.0, 16000, 50, gen_video=path, gen_audio=np.zeros(3200))],
            MetricContext(asset_paths={"syncnet": tmp_path}))
    assert skip.value.wanted == "syncnet/syncnet_v2.model"


def test_lse_without_weights_is_skipped_naming_the_file(tmp_path, face_clips):
    with pytest.raises(MetricSkipped) as err:
        lse(face_clips, MetricContext(asset_paths={"syncnet": tmp_path}))
    assert err.value.wanted == "syncnet/syncnet_v2.model"


def _calc_pdist_reference(video: np.ndarray, audio: np.ndarray, vshift: int) -> np.ndarray:
    """syncnet_python's calc_pdist, restated with torch: one row per video window."""
    v, a = torch.from_numpy(video).float(), torch.from_numpy(audio).float()
    padded = F.pad(a, (0, 0, vshift, vshift))
    k = 2 * vshift + 1
    return np.stack([F.pairwise_distance(v[[i]].repeat(k, 1), padded[i:i + k]).numpy()
                     for i in range(len(v))])


@pytest.mark.parametrize("lag", [-7, -2, 0, 3, 15])
def test_sync_offsets_recover_a_known_audio_lag(lag):
    rng = np.random.default_rng(1)
    n, dim, vshift = 60, 16, 15
    video = rng.standard_normal((n, dim))
    audio = rng.standard_normal((n, dim))  # audio window j shows video window j - lag
    for j in range(n):
        if 0 <= j - lag < n:
            audio[j] = video[j - lag]
    dists = sync_offsets(video, audio, vshift)
    assert dists.shape == (n, 2 * vshift + 1)
    np.testing.assert_allclose(dists, _calc_pdist_reference(video, audio, vshift), rtol=1e-5)
    _, confidence, got = sync_scores(dists)
    assert got == lag
    assert confidence > 1.0


class _LoudnessNet:
    """A hand-made SyncNet: lip embedding = the 5 frames' brightness, audio embedding = the 5
    frames' MFCC log-energy (mean of 4 steps each), both standardised."""

    @staticmethod
    def _standardise(x: torch.Tensor) -> torch.Tensor:
        return (x - x.mean(1, keepdim=True)) / x.std(1, keepdim=True)

    def forward_lip(self, frames: torch.Tensor) -> torch.Tensor:  # [B, 3, 5, 224, 224]
        return self._standardise(frames.mean(dim=(1, 3, 4)))

    def forward_aud(self, mfcc: torch.Tensor) -> torch.Tensor:  # [B, 1, 13, 20]
        return self._standardise(mfcc[:, 0, 0].reshape(-1, 5, 4).mean(-1))


@pytest.mark.parametrize("lag", [-4, 0, 3])
def test_clip_distances_align_frames_with_mfcc_windows(lag):
    """Audio whose loudness follows the picture's brightness ``lag`` frames later."""
    rng = np.random.default_rng(3)
    n_frames = 60
    level = rng.uniform(0, 1, n_frames + 10)  # per 25 fps frame
    gray = (40 + 150 * level[5:5 + n_frames]).astype(np.uint8)
    frames = face_frames(np.broadcast_to(gray[:, None, None, None], (n_frames, 8, 8, 3)))
    loud = np.exp(3 * level[5 - lag:5 - lag + n_frames]).repeat(640)  # frame t shows t - lag
    audio = (0.005 * loud * rng.standard_normal(len(loud))).astype(np.float32)
    dists = clip_distances(_LoudnessNet(), frames, audio, vshift=15, batch_size=7)
    assert dists.shape == (n_frames - 5, 31)
    assert sync_scores(dists)[2] == lag


def test_sync_scores_hand_computed():
    dists = np.array([[3.0, 1.0, 2.0], [5.0, 1.0, 4.0]])  # shift means 4, 1, 3
    assert sync_scores(dists) == (1.0, 2.0, 0)
    assert sync_scores(np.array([[1.0, 2.0, 6.0]])) == (1.0, 1.0, -1)


def test_mfcc_windows_slice_the_original_mfcc():
    audio = (0.2 * np.sin(np.arange(16000) / 7.0)).astype(np.float32)
    windows = mfcc_windows(audio, n_windows=20)
    assert windows.shape == (20, 1, 13, 20) and windows.dtype == np.float32
    pcm = np.round(audio.astype(np.float64) * 32768).astype(np.int16)
    reference = python_speech_features.mfcc(pcm, 16000).T  # [13, 99]
    np.testing.assert_allclose(windows[7, 0], reference[:, 28:48], rtol=1e-5)


def test_face_frames_crop_resize_like_cv2():
    cv2 = pytest.importorskip("cv2")
    frames = np.random.default_rng(2).integers(0, 256, (2, 96, 128, 3), dtype=np.uint8)
    got = face_frames(frames)
    assert got.shape == (3, 2, 224, 224) and got.dtype == torch.uint8
    for t in range(2):
        want = cv2.resize(frames[t, :, 16:112, ::-1].copy(), (224, 224))  # BGR, INTER_LINEAR
        diff = np.abs(got[:, t].permute(1, 2, 0).numpy().astype(int) - want.astype(int))
        assert diff.max() <= 1


def test_to_25fps_and_speaking_windows():
    assert to_25fps(10, 25.0).tolist() == list(range(10))
    assert to_25fps(10, 50.0).tolist() == [0, 2, 4, 6, 8]
    assert to_25fps(6, 30.0).tolist() == [0, 1, 2, 4, 5]  # times 0, .04, .08, .12, .16 s
    vad = np.array([0, 0, 0, 1, 1, 1, 1, 0], bool)
    assert speaking_windows(vad, 25.0, 6).tolist() == [False, True, True, True, True, False]


def _short_ok(folder) -> MetricContext:
    """The fixture's clips are shorter than the released pipeline's 101 frames: keep them."""
    return MetricContext(asset_paths={"syncnet": folder}, params={"lse": {"min_frames": 0}})


def test_lse_with_a_stand_in_network(syncnet_folder, face_clips):
    ctx = _short_ok(syncnet_folder)
    both = lse(face_clips, ctx)
    assert set(both) == {"d", "c", "d_listener_speaking", "c_listener_speaking"}
    assert all(math.isfinite(v) for v in both.values())
    assert both["d"] > 0 and both["c"] >= 0
    assert ctx.used_assets["syncnet"] == syncnet_folder
    assert lse(face_clips, ctx) == both  # deterministic
    first, second = lse(face_clips[:1], ctx), lse(face_clips[1:], ctx)
    # a mean over clips (not over windows); only the first clip's listener speaks
    assert both["d"] == pytest.approx((first["d"] + second["d"]) / 2)
    assert both["c"] == pytest.approx((first["c"] + second["c"]) / 2)
    assert both["d_listener_speaking"] == pytest.approx(first["d"])
    assert both["c_listener_speaking"] == pytest.approx(first["c"])
    assert math.isnan(second["d_listener_speaking"])


def test_lse_skips_when_every_clip_is_too_short(syncnet_folder, face_clips):
    short = ScoredClip("s", 25.0, 16000, 50, gen_video=face_clips[0].gen_video,
                       gen_audio=np.zeros(3000, np.float32))  # 4 frames of audio
    with pytest.raises(MetricSkipped, match="shorter than 6 frames"):
        lse([short], _short_ok(syncnet_folder))
    with pytest.raises(MetricSkipped, match="shorter than 101 frames"):
        lse(face_clips, MetricContext(asset_paths={"syncnet": syncnet_folder}))


def test_lse_leaves_out_clips_the_released_face_tracking_drops(syncnet_folder, monkeypatch,
                                                                tmp_path):
    """syncnet_python keeps face tracks of more than 100 frames: a 100-frame video has no score
    line in the released all_scores.txt and does not enter its average; 101 frames do."""
    assert MIN_FRAMES == 101

    def fake_distances(net, frames, audio, *args):  # LSE-D = the clip's frame count
        n = frames.shape[1]
        return np.tile(np.arange(n, n + 31, dtype=float), (n - 5, 1))

    monkeypatch.setattr(sync, "clip_distances", fake_distances)
    clips = []
    for n in (100, 101, 130):
        video = make_video(tmp_path / f"v{n}.mp4", duration=n / 25, fps=25, size=(32, 32),
                           audio=False)
        clips.append(ScoredClip(f"c{n}", 25.0, 16000, n, gen_video=video,
                                gen_audio=np.zeros(n * 640, np.float32)))
    ctx = MetricContext(asset_paths={"syncnet": syncnet_folder})
    assert lse(clips, ctx)["d"] == pytest.approx((101 + 130) / 2)
    assert ctx.notes["lse"] == {"scored_clips": 2, "too_short": 1}
    assert lse(clips, _short_ok(syncnet_folder))["d"] == pytest.approx((100 + 101 + 130) / 3)
