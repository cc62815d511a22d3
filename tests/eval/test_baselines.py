"""Built-in baselines: exact outputs against the rows make_tiny_corpus wrote, the lock-step path,
causality, and the LSTM's training, checkpoint and batching."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from responsenet.chrono import LASTING, PAUSE
from responsenet.errors import UsageError
from responsenet.eval.baselines import BASELINES, load_baseline, train_baseline
from responsenet.eval.baselines.common import neutral_face
from responsenet.eval.protocol import ClipContext, SpeakerChunk, check_model, check_output
from responsenet.testing.corpus import (
    SPLITS,
    clip_id_for,
    make_tiny_corpus,
    make_track,
    refresh_checksums,
)
from responsenet.wavio import write_wav

N_CLIPS, N_FRAMES = 6, 60
SIMPLE = ("silent", "mirror", "random_train", "nearest")


def _row(i: int, role: str) -> dict:
    """The row make_tiny_corpus wrote for clip i's ``role`` track."""
    return make_track(clip_id_for(i), role, n_frames=N_FRAMES, split=SPLITS[i % 3],
                      participant_id=f"p{2 * i + (role == 'listener'):03d}")


def _face(row: dict) -> np.ndarray:
    return np.concatenate([row["blendshapes"], row["pose"]], axis=1)


TRAIN = [i for i in range(N_CLIPS) if SPLITS[i % 3] == "train"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Tiny corpus whose speaker WAVs are real 16 kHz audio (a 440 Hz tone, 2 Hz bursts)."""
    root = make_tiny_corpus(tmp_path_factory.mktemp("bl") / "corpus", N_CLIPS, N_FRAMES)
    t = np.arange(N_FRAMES * 640) / 16000
    for i in range(N_CLIPS):
        tone = 0.3 * np.sin(2 * np.pi * 440 * t) * (np.sin(2 * np.pi * (2 + i) * t) > 0)
        write_wav(root / "media" / clip_id_for(i) / "speaker.wav", tone, 16000)
    refresh_checksums(root)
    return root


def _chunks(seed: int, n: int = 20, face: np.ndarray | None = None) -> list[SpeakerChunk]:
    rng = np.random.default_rng(seed)
    face = rng.random((n, 64), dtype=np.float32) if face is None else face
    words = ["yes", "hmm", PAUSE, LASTING]
    return [SpeakerChunk(t, 1, rng.uniform(-0.5, 0.5, 640).astype(np.float32),
                         face[t:t + 1].astype(np.float32), np.array([t % 7 != 3]),
                         [words[rng.integers(4)]]) for t in range(len(face))]


def _context(clip_id: str = "clip-a", n: int = 20) -> ClipContext:
    return ClipContext(clip_id, 25.0, 16000, n)


def _run(model, chunks, clip_id="clip-a"):
    model.reset(_context(clip_id, len(chunks)))
    outs = []
    for obs in chunks:
        out = model.step(obs)
        assert check_output(out, model, obs, clip_id) == []
        outs.append(out)
    return outs


@pytest.fixture(scope="module")
def lstm_ckpt(corpus):
    """The LSTM trained on the corpus (30 epochs, hidden 32), one torch thread meanwhile: on a
    loaded 2-core machine, OpenMP threads make these tiny ops 40x slower."""
    torch = pytest.importorskip("torch", reason="the LSTM baseline needs PyTorch (extra 'eval')")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield train_baseline("lstm", corpus, epochs=30, hidden=32, seed=0, progress=False)
    torch.set_num_threads(threads)


@pytest.fixture(params=[*SIMPLE, "lstm"])
def model(request, corpus):
    if request.param == "lstm":
        request.getfixturevalue("lstm_ckpt")
    return load_baseline(request.param, corpus=corpus, seed=3)


def test_registry_names_and_did_you_mean():
    assert BASELINES.names() == [*SIMPLE, "lstm"]
    with pytest.raises(UsageError, match="Did you mean 'nearest'"):
        load_baseline("nearst")


def test_every_baseline_is_a_valid_one_frame_model(model):
    check_model(model)
    assert model.chunk_frames == 1 and {"face", "text"} <= model.outputs
    _run(model, _chunks(0))


def test_chrono_streams_are_valid(model):
    tokens = [out.chrono[0] for out in _run(model, _chunks(0, 40))]
    assert all(isinstance(t, str) and t.strip() and t not in ("[PAD]", "[UNK]") for t in tokens)
    assert all(b != LASTING for a, b in zip([None, *tokens], tokens) if a in (None, PAUSE))


def test_step_batch_equals_step_per_clip(model):
    streams = [_chunks(1, 12), _chunks(2, 20), _chunks(3, 5)]
    clip_ids = ["a", "b", "c"]
    single = [_run(model, s, c) for s, c in zip(streams, clip_ids)]
    model.reset_batch([_context(c, len(s)) for s, c in zip(streams, clip_ids)])
    for t in range(20):
        running = [k for k, s in enumerate(streams) if t < len(s)]  # finished clips left out
        answers = model.step_batch([dataclasses.replace(streams[k][t], clip_id=clip_ids[k])
                                    for k in running])
        assert len(answers) == len(running)
        for k, answer in zip(running, answers):
            np.testing.assert_allclose(answer.face, single[k][t].face, rtol=1e-5, atol=1e-6)
            assert answer.chrono == single[k][t].chrono


def test_different_futures_leave_the_past_unchanged(model):
    first, second = _chunks(4), _chunks(5)
    mixed = first[:10] + second[10:]
    a, b = _run(model, first), _run(model, mixed)
    for t in range(10):
        np.testing.assert_array_equal(a[t].face, b[t].face)
        assert a[t].chrono == b[t].chrono


def test_step_without_reset_batch_of_that_size_is_refused(model):
    model.reset_batch([_context("a"), _context("b")])
    with pytest.raises(UsageError, match="reset"):
        model.step(_chunks(0, 1)[0])


def test_silent_gives_pause_silence_and_the_exact_train_mean_face(corpus):
    expected = np.concatenate([_face(_row(i, "listener")) for i in TRAIN]).mean(axis=0)
    outs = _run(load_baseline("silent", corpus=corpus), _chunks(0, 5))
    for out in outs:
        assert out.chrono == [PAUSE]
        np.testing.assert_array_equal(out.audio, np.zeros(640, np.float32))
        np.testing.assert_allclose(out.face[0], expected, rtol=1e-6, atol=1e-7)
    bare = _run(load_baseline("silent"), _chunks(0, 2))
    np.testing.assert_array_equal(bare[0].face[0], neutral_face())
    np.testing.assert_array_equal(neutral_face()[52:], [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0])


@pytest.mark.parametrize("delay", [0, 1, 8])
def test_mirror_copies_the_speaker_face_delay_frames_late(corpus, delay):
    face = np.random.default_rng(7).random((20, 64), dtype=np.float32)
    outs = _run(load_baseline("mirror", corpus=corpus, delay_frames=delay), _chunks(0, face=face))
    mean = load_baseline("silent", corpus=corpus).face
    for t, out in enumerate(outs):
        np.testing.assert_array_equal(out.face[0], face[t - delay] if t >= delay else mean)
        assert out.chrono == [PAUSE]
    with pytest.raises(UsageError, match="delay_frames must be >= 0"):
        load_baseline("mirror", delay_frames=-1)


def test_random_train_replays_a_train_listener_deterministically(corpus):
    def replay(seed, clip_id):
        return np.concatenate([o.face for o in _run(load_baseline(
            "random_train", corpus=corpus, seed=seed), _chunks(0, 70), clip_id)])

    model = load_baseline("random_train", corpus=corpus, seed=5)
    index, start = model.pick("clip-x")
    source = _face(_row(TRAIN[index], "listener"))
    np.testing.assert_array_equal(replay(5, "clip-x"), source[(start + np.arange(70)) % 60])
    np.testing.assert_array_equal(replay(5, "clip-x"), replay(5, "clip-x"))
    assert not np.array_equal(replay(5, "clip-x"), replay(6, "clip-x"))
    assert not np.array_equal(replay(5, "clip-x"), replay(5, "clip-y"))
    with pytest.raises(UsageError, match="needs a corpus"):
        load_baseline("random_train")


def test_nearest_returns_the_listener_frame_of_an_identical_train_window(corpus):
    i = TRAIN[1]
    speaker, listener = _row(i, "speaker"), _row(i, "listener")
    outs = _run(load_baseline("nearest", corpus=corpus, window_frames=3), _chunks(0, face=_face(
        speaker)))
    np.testing.assert_array_equal(np.concatenate([o.face for o in outs]), _face(listener))
    expected = [PAUSE if tok == LASTING and prev in (None, PAUSE) else tok
                for prev, tok in zip([None, *listener["chrono"][:-1]], listener["chrono"])]
    assert [o.chrono[0] for o in outs] == expected


def test_nearest_subsamples_the_train_set_and_keeps_the_pairs(corpus):
    model = load_baseline("nearest", corpus=corpus, seed=4, max_train_frames=50)
    assert model.keys.shape == (50, 5 * 64) and model.faces.shape == (50, 64)
    kept = np.sort(np.random.default_rng(4).choice(2 * N_FRAMES, 50, replace=False))
    kept = kept[kept >= N_FRAMES] - N_FRAMES  # frames of the second train clip
    speaker, listener = _row(TRAIN[1], "speaker"), _row(TRAIN[1], "listener")
    outs = _run(model, _chunks(0, face=_face(speaker)))
    np.testing.assert_array_equal(np.concatenate([outs[t].face for t in kept]),
                                  _face(listener)[kept])


def test_lstm_training_lowers_the_loss_and_is_deterministic(corpus, lstm_ckpt, tmp_path):
    assert lstm_ckpt.audio_missing_clips == 0 and lstm_ckpt.n_clips == len(TRAIN)
    assert lstm_ckpt.losses[-1] < lstm_ckpt.losses[0] / 2.5, lstm_ckpt.losses
    assert lstm_ckpt.face_losses[-1] < lstm_ckpt.face_losses[0], lstm_ckpt.face_losses
    again = train_baseline("lstm", corpus, tmp_path / "again.pt", epochs=30, hidden=32, seed=0,
                           progress=False)
    assert again.losses == lstm_ckpt.losses


def test_lstm_checkpoint_round_trip_gives_identical_outputs(corpus, lstm_ckpt, tmp_path):
    from responsenet.eval.baselines.lstm import LSTMListener, load_checkpoint, save_checkpoint

    first = load_baseline("lstm", corpus=corpus)
    data = load_checkpoint(lstm_ckpt.path)
    copy = save_checkpoint(tmp_path / "copy.pt", first.model, first.vocab, first.config,
                           first.norm, data["train"])
    second = LSTMListener.from_args(checkpoint=copy)
    for a, b in zip(_run(first, _chunks(9)), _run(second, _chunks(9))):
        np.testing.assert_array_equal(a.face, b.face)
        assert a.chrono == b.chrono


def test_lstm_decoding_never_emits_pad_unk_or_lasting_after_pause(corpus, lstm_ckpt):
    import torch

    model = load_baseline("lstm", corpus=corpus)
    word = model.vocab.id_to_token(4)
    with torch.no_grad():  # favourites: [PAD] = [UNK] > [LASTING] > the first word > the rest
        bias = model.model.token_head.bias
        bias[[model.vocab.pad_id, model.vocab.unk_id]] += 300
        bias[model.vocab.lasting_id] += 200
        bias[4] += 100
    tokens = [out.chrono[0] for out in _run(model, _chunks(0))]
    assert tokens == [word] + [LASTING] * 19


def test_lstm_errors_name_the_fix(corpus, lstm_ckpt, tmp_path):
    with pytest.raises(UsageError, match="responsenet train-baseline lstm --data DIR"):
        load_baseline("lstm", corpus=tmp_path)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UsageError, match="cannot read the LSTM checkpoint"):
        load_baseline("lstm", checkpoint=tmp_path / "junk.pt")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="no CUDA GPU"):
            load_baseline("lstm", corpus=corpus, device="cuda")


def test_train_baseline_refuses_what_cannot_be_trained(corpus):
    with pytest.raises(UsageError, match="nothing to train"):
        train_baseline("silent", corpus)
    with pytest.raises(UsageError, match="Unknown trainable baseline 'lstn'"):
        train_baseline("lstn", corpus)
    with pytest.raises(UsageError, match="cannot train 'lstm'"):
        train_baseline("lstm", corpus, epochz=3)


def test_audio_features_are_chunk_local_and_put_a_tone_in_its_band():
    torch = pytest.importorskip("torch", reason="lstm.py imports PyTorch")
    del torch
    from responsenet.eval.baselines.lstm import _band_starts, audio_features

    t = np.arange(10 * 640) / 16000
    tone = 0.5 * np.sin(2 * np.pi * 1000 * t)
    whole = audio_features(tone, 10, 16000, 25.0, 16)
    parts = [audio_features(tone[k * 640:(k + 1) * 640], 1, 16000, 25.0, 16) for k in range(10)]
    np.testing.assert_allclose(np.concatenate(parts), whole, rtol=1e-6)
    starts = _band_starts(16, 321, 16000)
    band = np.searchsorted(starts, 1000 / 25, side="right") - 1  # 25 Hz per bin
    assert np.all(np.argmax(whole[:, 1:], axis=1) == band)
    np.testing.assert_allclose(whole[:, 0], np.log(0.125 + 1e-8), atol=1e-3)  # mean square
    assert audio_features(tone, 10, 16000, 25.0, 0).shape == (10, 0)
