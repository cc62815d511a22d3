"""MossFormer2 backend: the real modelscope network class with random weights (a stand-in, as
MODELS.md rules), saved in the asset's layout and loaded by the production path. No number here
says anything about separation quality."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from responsenet.errors import AssetMissing, UsageError
from responsenet.separation import mossformer as M

torch = pytest.importorskip("torch", reason="torch is needed for the MossFormer2 backend")
try:
    from modelscope.models.audio.separation.m2.mossformer import MossFormer2
except ImportError as e:  # pragma: no cover - depends on the environment
    pytest.skip(f"modelscope's MossFormer2 is not importable ({e}); pip install "
                "'responsenet[separation]'", allow_module_level=True)

SR = 16000
ASSET = "mossformer2_8k_modelscope"
# the same class as the published model, smaller: 1 block of 64 channels instead of 24 of 512
SMALL = {"in_channels": 64, "out_channels": 64, "num_blocks": 1}


def write_checkpoint(folder, config: dict, seed: int = 0, state=None):
    """Save a random-weight network's state dict and its configuration as the asset lays out."""
    folder.mkdir(parents=True, exist_ok=True)
    if state is None:
        torch.manual_seed(seed)
        state = MossFormer2(None, **config).state_dict()
    torch.save(state, folder / M.STATE_FILE)
    model = {"type": "speech_mossformer2_separation_temporal_8k", **config}
    (folder / M.CONFIG_FILE).write_text(json.dumps({"framework": "pytorch", "model": model}))
    return folder


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("models") / ASSET, SMALL)


@pytest.fixture(scope="module")
def model(weights_dir):
    return M.load_mossformer2(weights_dir)


@pytest.fixture(scope="module")
def mixture():
    """1.5 s at 16 kHz: a tone until 0.9 s, noise from 0.6 s (two distinguishable 'sources')."""
    t = np.arange(round(1.5 * SR)) / SR
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) * (t < 0.9)
    noise = 0.1 * np.random.default_rng(0).standard_normal(len(t)) * (t > 0.6)
    return (tone + noise).astype(np.float32)


def test_loads_the_saved_weights_into_the_modelscope_class(model, weights_dir):
    assert type(model) is MossFormer2 and not model.training
    assert model.sample_rate == 8000 and model.num_spks == 2
    saved = torch.load(weights_dir / M.STATE_FILE, weights_only=True)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, saved[name]), name
    by_file = M.load_mossformer2(weights_dir / M.STATE_FILE)  # the file itself
    assert torch.equal(by_file.enc.conv1d.weight, model.enc.conv1d.weight)


def test_output_shape_rate_and_determinism(model, mixture):
    first = M.separate_mossformer2(model, mixture, SR)
    assert first.shape == (2, len(mixture)) and first.dtype == np.float32
    assert np.isfinite(first).all() and np.abs(first).max() > 0
    np.testing.assert_array_equal(first, M.separate_mossformer2(model, mixture, SR))
    at_8k = M.separate_mossformer2(model, mixture[::2].copy(), 8000)
    assert at_8k.shape == (2, len(mixture) // 2)


def test_chunked_and_whole_agree_in_shape_and_source_order(model, mixture):
    whole = M.separate_mossformer2(model, mixture, SR, chunk_s=4.0)
    chunked = M.separate_mossformer2(model, mixture, SR, chunk_s=0.8, overlap_s=0.4)
    assert chunked.shape == whole.shape
    similarity = np.corrcoef(whole, chunked)[:2, 2:]
    assert similarity[0, 0] > similarity[0, 1] and similarity[1, 1] > similarity[1, 0], similarity


def test_very_short_input(model):
    out = M.separate_mossformer2(model, np.zeros(10, np.float32), SR)
    assert out.shape == (2, 10)
    with pytest.raises(ValueError, match="overlap_s"):
        M.separate_mossformer2(model, np.zeros(10, np.float32), SR, chunk_s=1.0, overlap_s=1.0)
    with pytest.raises(ValueError, match="mono"):
        M.separate_mossformer2(model, np.zeros((2, 10), np.float32), SR)


def test_overlap_add_restores_order_and_scale_across_chunks():
    rng = np.random.default_rng(3)
    sources = np.stack([np.sin(np.linspace(0, 300, 4000)), rng.standard_normal(4000)])
    mix = sources.sum(axis=0)
    starts = M.chunk_starts(len(mix), 1000, 600)
    assert starts == [0, 600, 1200, 1800, 2400, 3000]
    estimates = []
    for k, s in enumerate(starts):
        piece = sources[:, s : s + 1000] * (0.5 + k)  # the network's scale varies per chunk
        estimates.append(piece[::-1] if k % 2 else piece)  # and so does its order
    joined = M.overlap_add(mix, starts, estimates, ramp=400)
    np.testing.assert_allclose(joined, sources, atol=1e-9)


def test_order_and_gain_helpers():
    a, b = np.sin(np.arange(100.0)), np.cos(np.arange(100.0) * 0.3)
    assert M.best_order(np.stack([a, b]), np.stack([b, a])) == [1, 0]
    assert M.best_order(np.zeros((2, 100)), np.stack([a, b])) == [0, 1]  # no information
    assert M.common_gain(2 * (a + b), np.stack([a, b])) == pytest.approx(2.0)
    assert M.common_gain(-(a + b), np.stack([a, b])) == 1.0
    assert M.chunk_starts(500, 1000, 600) == [0]


def test_missing_weights_name_the_asset(tmp_path, monkeypatch):
    with pytest.raises(AssetMissing) as info:
        M.load_mossformer2(tmp_path)
    assert info.value.reason == "weights_missing"
    assert ASSET in str(info.value) and f"$RESPONSENET_MODELS/{ASSET}/" in str(info.value)
    monkeypatch.setenv("RESPONSENET_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(AssetMissing) as info:
        M.load_mossformer2()
    assert info.value.reason == "weights_missing" and "simple_model.bin" in str(info.value)


def test_checkpoint_of_another_network_is_refused(tmp_path):
    other = MossFormer2(None, in_channels=32, out_channels=32, num_blocks=1).state_dict()
    with pytest.raises(AssetMissing, match="does not fit the network") as info:
        M.load_mossformer2(write_checkpoint(tmp_path / "size", SMALL, state=other))
    assert info.value.reason == "weights_mismatch"
    with pytest.raises(AssetMissing, match="lacks") as info:
        M.load_mossformer2(write_checkpoint(tmp_path / "keys", SMALL,
                                            state={"layer.weight": torch.zeros(3)}))
    assert info.value.reason == "weights_mismatch"


class _NotATensor:
    pass


def test_unreadable_or_unsafe_files_are_refused(tmp_path):
    folder = write_checkpoint(tmp_path / "pickle", SMALL, state={"x": _NotATensor()})
    with pytest.raises(AssetMissing) as info:  # weights_only=True never unpickles objects
        M.load_mossformer2(folder)
    assert info.value.reason == "weights_corrupt"
    (folder / M.STATE_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(AssetMissing, match="cannot read"):
        M.load_mossformer2(folder)


def test_unknown_variant_and_missing_modelscope(weights_dir, monkeypatch):
    with pytest.raises(UsageError, match="available: modelscope_8k"):
        M.load_mossformer2(weights_dir, variant="clearvoice")
    monkeypatch.setitem(sys.modules, "modelscope.models.audio.separation.m2.mossformer", None)
    with pytest.raises(UsageError, match=r"responsenet\[separation\]"):
        M.load_mossformer2(weights_dir)
