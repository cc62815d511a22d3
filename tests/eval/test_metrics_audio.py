"""Audio metrics: DNSMOS P.835 against speechmos's own code, UTMOSv2 with stand-in weights."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest

from responsenet.errors import UsageError
from responsenet.eval.metrics import METRICS, MetricContext, MetricSkipped, ScoredClip, compute
from responsenet.eval.metrics import audio as A
from responsenet.wavio import read_wav

try:  # UTMOSv2 needs torch and transformers (extra "eval"); DNSMOS needs neither
    import torch
    import transformers  # noqa: F401

    from responsenet.eval.metrics.utmosv2_model import (
        EfficientNetV2,
        MelSpec,
        UTMOSv2Arch,
        UTMOSv2Net,
        load_fold,
    )
except ImportError as e:
    torch, _MISSING = None, str(e)
else:
    _MISSING = ""

needs_torch = pytest.mark.skipif(torch is None, reason=f"UTMOSv2 needs torch and transformers "
                                 f"({_MISSING}); pip install -e '.[eval]' transformers")
SR = 16000


def _dnsmos_asset_found() -> bool:
    from responsenet.assets import resolve
    from responsenet.errors import AssetMissing

    try:
        resolve("dnsmos")
    except AssetMissing:
        return False
    return True


needs_dnsmos = pytest.mark.skipif(not _dnsmos_asset_found(), reason="DNSMOS weights not found: "
                                  "pip install --no-deps speechmos==0.0.1.1 (their carrier)")


def _clip(audio: np.ndarray | None, clip_id: str = "c", sample_rate: int = SR) -> ScoredClip:
    return ScoredClip(clip_id, 25.0, sample_rate, 10, gen_audio=audio)


@pytest.fixture(scope="module")
def speech() -> dict[str, np.ndarray]:
    from responsenet.testing.realmedia import require_realmedia

    folder = require_realmedia() / "speech"
    out = {}
    for name, file in [("jfk", "jfk_16k_mono.wav"), ("libri", "librispeech_1995-1837-0001.wav"),
                       ("conversation", "pyannote_sample_2spk_conversation.wav")]:
        audio, rate = read_wav(folder / file)
        assert rate == SR
        out[name] = audio
    return out


def _noisy(audio: np.ndarray, snr_db: float = 0.0, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(len(audio)).astype(np.float32)
    noise *= np.sqrt(np.mean(audio ** 2) / np.mean(noise ** 2) / 10 ** (snr_db / 10))
    return np.clip(audio + noise, -1.0, 1.0).astype(np.float32)


def _voiced(seconds: float, f0: float, seed: int) -> np.ndarray:
    """A speech-like test signal: harmonics of ``f0`` with a syllable-rate envelope and noise."""
    t = np.arange(int(seconds * SR)) / SR
    tone = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 8))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
    noise = np.random.default_rng(seed).standard_normal(t.size)
    return (0.2 * envelope * tone + 0.01 * noise).astype(np.float32)


# ------------------------------------------------------------------------------------ DNSMOS

@pytest.mark.parametrize(("seconds", "expected", "last_start"),
                         [(1, 7, 6), (5, 1, 0), (10, 1, 0), (20, 7, 6), (40, 14, 30)])
def test_dnsmos_windows_tile_short_audio_and_skip_short_rounded_windows(seconds, expected,
                                                                        last_start):
    audio = np.arange(seconds * SR, dtype=np.float32)
    windows = A.dnsmos_windows(audio)
    assert windows.shape == (expected, 144160)
    tiled = np.tile(audio, 16 // seconds) if seconds < 9 else audio
    assert np.array_equal(windows[-1], tiled[last_start * SR:last_start * SR + 144160])


def test_p835_fits_hand_values():
    scores = A.p835_scores(np.array([[3.0, 3.0, 3.0]]))
    assert scores["sig"][0] == pytest.approx(-0.08397278 * 9 + 1.22083953 * 3 + 0.0052439)
    assert scores["bak"][0] == pytest.approx(-0.13166888 * 9 + 1.60915514 * 3 - 0.39604546)
    assert scores["ovrl"][0] == pytest.approx(-0.06766283 * 9 + 1.11546468 * 3 + 0.04602535)


@pytest.mark.parametrize("signal", ["jfk", "libri", "two_seconds", "conversation", "noisy"])
@needs_dnsmos
def test_dnsmos_matches_speechmos(speech, signal):
    pytest.importorskip("librosa")
    from speechmos import dnsmos as reference

    audio = {"two_seconds": speech["jfk"][SR:3 * SR], "noisy": _noisy(speech["jfk"])}.get(
        signal, speech.get(signal))
    ours = A.dnsmos([_clip(audio)], MetricContext())
    theirs = reference.run(audio, SR)
    for key in ("sig", "bak", "ovrl"):
        assert ours[key] == pytest.approx(float(theirs[f"{key}_mos"]), abs=1e-4)


@needs_dnsmos
def test_dnsmos_clean_speech_beats_noisy_speech(speech):
    ctx = MetricContext()
    clean = A.dnsmos([_clip(speech["jfk"])], ctx)
    noisy = A.dnsmos([_clip(_noisy(speech["jfk"], snr_db=0.0))], ctx)
    assert clean["ovrl"] > noisy["ovrl"] + 0.5
    assert clean["bak"] > noisy["bak"] + 1.0


@needs_dnsmos
def test_dnsmos_means_over_clips_and_ignores_silence(speech):
    ctx = MetricContext()
    a, b = speech["jfk"], speech["libri"]
    both = A.dnsmos([_clip(a, "a"), _clip(np.zeros(SR, np.float32), "s"), _clip(None, "n"),
                     _clip(b, "b")], ctx)
    one, two = A.dnsmos([_clip(a)], ctx), A.dnsmos([_clip(b)], ctx)
    for key in ("sig", "bak", "ovrl"):
        assert both[key] == pytest.approx((one[key] + two[key]) / 2, abs=1e-12)


@needs_dnsmos
def test_dnsmos_resamples_other_rates(speech):
    from responsenet.wavio import resample

    at_8k = resample(speech["jfk"], SR, 8000)
    ours = A.dnsmos([_clip(at_8k, sample_rate=8000)], MetricContext())
    direct = A.dnsmos([_clip(resample(at_8k, 8000, SR))], MetricContext())
    assert ours == direct


def test_dnsmos_all_silent_is_skipped_with_reason():
    clips = [_clip(np.zeros(3 * SR, np.float32)), _clip(np.zeros(0, np.float32), "e")]
    with pytest.raises(MetricSkipped, match="no speech") as info:
        A.dnsmos(clips, MetricContext())
    assert "2 clips" in info.value.reason


def test_dnsmos_without_generated_audio_is_skipped():
    with pytest.raises(MetricSkipped, match="gen_audio"):
        A.dnsmos([_clip(None)], MetricContext())


def test_dnsmos_missing_weights_skip_names_the_file(tmp_path):
    ctx = MetricContext(asset_paths={"dnsmos": tmp_path})
    with pytest.raises(MetricSkipped) as info:
        A.dnsmos([_clip(np.ones(SR, np.float32) * 0.1)], ctx)
    assert info.value.wanted == "dnsmos/sig_bak_ovr.onnx"


@needs_dnsmos
def test_dnsmos_through_the_registry(speech):
    values, details = compute(["dnsmos"], [_clip(speech["jfk"])], MetricContext())
    assert set(values) == {"dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl"}
    assert 1.0 < values["dnsmos_ovrl"] < 5.0
    assert details["dnsmos"]["paper"] is False and not METRICS["dnsmos"].paper


# ----------------------------------------------------------------------- UTMOSv2 preprocessing

def test_remove_silent_section_drops_long_quiet_runs_only():
    loud, quiet = np.full(100, 0.5, np.float32), np.zeros(5000, np.float32)
    audio = np.concatenate([loud, quiet, loud, quiet[:4800], loud, quiet[:4801]])
    out = A.remove_silent_section(audio)  # runs of more than 4800 samples go
    assert np.array_equal(out, np.concatenate([loud, loud, quiet[:4800], loud]))
    negative = np.concatenate([loud, np.full(5000, -0.5, np.float32), loud])
    assert len(A.remove_silent_section(negative)) == 200  # signed, as the official code
    assert len(A.remove_silent_section(quiet)) == 5000  # all quiet: kept, not emptied


@needs_torch
def test_mel_filters_and_spectrogram_match_librosa():
    librosa = pytest.importorskip("librosa")
    assert np.abs(A.mel_filters(SR, 4096, 512)
                  - librosa.filters.mel(sr=SR, n_fft=4096, n_mels=512)).max() < 1e-6
    crop = _voiced(1.4, 150.0, 2)
    for win in (4096, 512):
        ours = A.mel_db(crop, MelSpec(4096, 32, win, 512)).numpy()
        power = librosa.feature.melspectrogram(y=crop, sr=SR, n_fft=4096, hop_length=32,
                                               n_mels=512, win_length=win)
        theirs = (librosa.power_to_db(power, ref=np.max) + 80) / 80
        assert ours.shape == theirs.shape == (512, 701)
        assert np.abs(ours - theirs).max() < 1e-4


@needs_torch
def test_official_inputs_have_the_official_shapes():
    audio = (0.3 * np.sin(np.arange(SR // 2) / 7.0)).astype(np.float32)  # 0.5 s, tiled
    wave, specs = A.utmosv2_inputs(audio, UTMOSv2Arch(), np.random.default_rng(0))
    assert wave.shape == (48000,) and wave.dtype == np.float32
    assert tuple(specs.shape) == (8, 3, 512, 512)
    assert float(specs.min()) >= 0.0 and float(specs.max()) <= 1.0 + 1e-6
    assert torch.equal(specs[:, 0], specs[:, 2])


# ------------------------------------------------------------------------ UTMOSv2 network

#: A stand-in: the same architecture with tiny sizes (never the official network).
TINY = dict(
    ssl=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
             conv_dim=(32, 32), conv_stride=(16, 20), conv_kernel=(16, 20),
             num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, conv_bias=False,
             feat_extract_norm="group", mask_time_prob=0.05),
    stem=8, stages=(("cn", 1, 1, 1, 8, 0.0), ("er", 1, 2, 2, 16, 0.0), ("ir", 2, 2, 2, 16, 0.25)),
    num_features=16, spec_shape=(32, 32),
    specs=[dict(n_fft=512, hop_length=128, win_length=w, n_mels=32) for w in (512, 256)])
FOLDS = [f"fold{i}_s42_best_model.pth" for i in range(5)]


@pytest.fixture(scope="module")
def tiny_folds(tmp_path_factory):
    """Five stand-in fold checkpoints, saved as the official ones (a plain state_dict)."""
    folder = tmp_path_factory.mktemp("utmosv2_standin")
    arch = UTMOSv2Arch.from_dict(TINY)
    for i, name in enumerate(FOLDS):
        torch.manual_seed(100 + i)
        net = UTMOSv2Net(arch)
        with torch.no_grad():
            net.fc.bias.fill_(3.0 + 0.1 * i)  # distinct folds
        torch.save(net.state_dict(), folder / name)
    return folder


@pytest.fixture(autouse=True)
def standin_checksums(request, monkeypatch):
    """The catalog pins the official folds' sha256, so a stand-in is refused (and can never be
    reported as utmosv2); tests of the loading path pin the stand-in's sums instead."""
    if "tiny_folds" not in request.fixturenames:
        return
    from responsenet.assets import sha256_of
    from responsenet.assets_catalog import ASSETS

    folder = request.getfixturevalue("tiny_folds")
    for name in FOLDS:
        monkeypatch.setitem(ASSETS.get("utmosv2").sha256, name, sha256_of(folder / name))


@needs_torch
def test_official_checksums_refuse_a_standin(tmp_path):
    """Without pinning, the same stand-in files are refused as not the official weights."""
    arch = UTMOSv2Arch.from_dict(TINY)
    for name in FOLDS:
        torch.save(UTMOSv2Net(arch).state_dict(), tmp_path / name)
    with pytest.raises(MetricSkipped, match="fold0_s42_best_model.pth has sha256"):
        A.utmosv2([_clip(_voiced(1.0, 120.0, 0), "a")], _ctx(tmp_path))


def _ctx(folder, seed=0, **params) -> MetricContext:
    return MetricContext(seed=seed, asset_paths={"utmosv2": folder},
                         params={"utmosv2": {"arch": TINY, "num_repetitions": 2, **params}})


@pytest.fixture(scope="module")
def two_clips():
    return [_clip(_voiced(4.0, 120.0, 0), "a"), _clip(_voiced(0.5, 210.0, 1), "b")]


@needs_torch
def test_standin_loads_and_scores_deterministically(tiny_folds, two_clips):
    first = A.utmosv2(two_clips, _ctx(tiny_folds, seed=3))
    assert isinstance(first, float) and np.isfinite(first)
    assert A.utmosv2(two_clips, _ctx(tiny_folds, seed=3)) == first
    assert A.utmosv2(two_clips, _ctx(tiny_folds, seed=4)) != first  # crops and mixup differ


@needs_torch
def test_fold_scores_average_to_the_metric(tiny_folds, two_clips, tmp_path, monkeypatch):
    from responsenet.assets import sha256_of
    from responsenet.assets_catalog import ASSETS

    per_fold = []
    for i, name in enumerate(FOLDS):
        single = tmp_path / f"only{i}"
        single.mkdir()
        for target in FOLDS:  # every fold file is fold i: the metric is fold i's score
            shutil.copy(tiny_folds / name, single / target)
            monkeypatch.setitem(ASSETS.get("utmosv2").sha256, target, sha256_of(single / target))
        per_fold.append(A.utmosv2(two_clips, _ctx(single)))
    assert len(set(per_fold)) == 5
    for name in FOLDS:
        monkeypatch.setitem(ASSETS.get("utmosv2").sha256, name, sha256_of(tiny_folds / name))
    assert A.utmosv2(two_clips, _ctx(tiny_folds)) == pytest.approx(np.mean(per_fold), abs=1e-6)


@needs_torch
def test_fold_scores_shape_and_domain(tiny_folds, two_clips):
    arch = UTMOSv2Arch.from_dict(TINY)
    audios = A.speech_audio(two_clips)
    files = [tiny_folds / f for f in FOLDS]
    sarulab = A.utmosv2_fold_scores(audios, files, arch, seed=0, repetitions=1, domain="sarulab")
    somos = A.utmosv2_fold_scores(audios, files, arch, seed=0, repetitions=1, domain="somos")
    assert sarulab.shape == (5, 2) and not np.allclose(sarulab, somos)
    with pytest.raises(UsageError, match="data domain"):
        A.utmosv2_fold_scores(audios, files, arch, seed=0, repetitions=1, domain="vctk")


@needs_torch
def test_network_output_shape(tiny_folds):
    net = load_fold(tiny_folds / FOLDS[0], UTMOSv2Arch.from_dict(TINY))
    domain = torch.zeros(3, 10)
    domain[:, 1] = 1
    with torch.no_grad():
        out = net(torch.randn(3, 48000), torch.rand(3, 4, 3, 32, 32), domain)
    assert out.shape == (3,)


@needs_torch
def test_legacy_weight_norm_names_load(tiny_folds, tmp_path):
    arch = UTMOSv2Arch.from_dict(TINY)
    state = torch.load(tiny_folds / FOLDS[0], weights_only=True)
    legacy = {k.replace("parametrizations.weight.original0", "weight_g")
               .replace("parametrizations.weight.original1", "weight_v"): v
              for k, v in state.items()}
    assert legacy.keys() != state.keys()
    torch.save(legacy, tmp_path / "legacy.pth")
    loaded = load_fold(tmp_path / "legacy.pth", arch).state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in state)


@needs_torch
def test_load_fold_rejects_other_checkpoints(tiny_folds, tmp_path):
    arch = UTMOSv2Arch.from_dict(TINY)
    state = torch.load(tiny_folds / FOLDS[0], weights_only=True)
    del state["spec_long.weights"]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"missing \['spec_long.weights'\]"):
        load_fold(tmp_path / "partial.pth", arch)
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="state_dict"):
        load_fold(tmp_path / "list.pth", arch)


def test_utmosv2_missing_weights_skip_names_the_file(tmp_path):
    ctx = MetricContext(asset_paths={"utmosv2": tmp_path})
    with pytest.raises(MetricSkipped) as info:
        A.utmosv2([_clip(np.full(SR, 0.2, np.float32))], ctx)
    assert info.value.wanted == "utmosv2/fold0_s42_best_model.pth"


#: sha256 of "key:shape" lines of timm 1.0.31 tf_efficientnetv2_s(num_classes=0).state_dict().
TIMM_EFFNETV2_S_LAYOUT = "7a05b6c27e5c868efddced288a944065d5902c18e3bfc126ad59f308a717ee72"


@needs_torch
def test_backbone_has_timm_tf_efficientnetv2_s_layout():
    with torch.device("meta"):
        net = EfficientNetV2(UTMOSv2Arch())
    listing = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in net.state_dict().items())
    assert hashlib.sha256(listing.encode()).hexdigest() == TIMM_EFFNETV2_S_LAYOUT
    assert sum(p.numel() for p in net.parameters()) == 20_177_488


@needs_torch
def test_full_network_layout():
    with torch.device("meta"):
        net = UTMOSv2Net()
    state = net.state_dict()
    assert len(state) == 3343
    assert sum(v.numel() for v in state.values()) == 204_291_304
    assert state["fc.weight"].shape == (1, 6686)
    assert state["ssl.weights"].shape == (13,) and state["spec_long.weights"].shape == (4,)
    assert "ssl.encoder.model.masked_spec_embed" in state
