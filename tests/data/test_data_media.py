"""Audio and video windows: sample- and frame-exact against a full decode of the file."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from responsenet.data import ResponseNetDataset
from responsenet.data.media import read_audio_window, read_video_window
from responsenet.media import decode_frames
from responsenet.testing.corpus import clip_id_for
from responsenet.testing.media import make_video
from responsenet.wavio import read_wav, write_wav

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None,
                                  reason="ffmpeg not on PATH (apt-get install ffmpeg)")


@pytest.mark.parametrize(("start", "n"), [(0, 10), (1000, 3000), (-5, 10), (49_995, 10),
                                          (60_000, 4)])
def test_audio_window_is_the_slice_of_read_wav(tmp_path, start, n):
    audio = np.random.default_rng(0).uniform(-1.1, 1.1, 50_000).astype(np.float32)
    write_wav(tmp_path / "a.wav", audio, 16000)
    full, _ = read_wav(tmp_path / "a.wav")
    padded = np.concatenate([np.zeros(10, np.float32), full, np.zeros(20_000, np.float32)])
    assert np.array_equal(read_audio_window(tmp_path / "a.wav", start, n),
                          padded[start + 10:start + 10 + n])


@pytest.fixture(scope="module")
def video_corpus(corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("video") / "corpus"
    shutil.copytree(corpus, root)
    for i in (0, 3):  # the train clips
        for role in ("speaker", "listener"):
            make_video(root / "media" / clip_id_for(i) / f"{role}.mp4", duration=4.0, fps=25,
                       size=(64, 48), audio=False, tone_hz=440)
    return root


@needs_ffmpeg
def test_video_window_frames_are_the_files_frames(video_corpus):
    path = video_corpus / "media" / clip_id_for(3) / "listener.mp4"
    full = np.stack(list(decode_frames(path)))
    assert full.shape == (100, 48, 64, 3)
    ds = ResponseNetDataset(video_corpus, "train", 32, 24, modalities=("video",))
    for index in range(len(ds)):
        item = ds[index]
        if item["clip_id"] != clip_id_for(3):
            continue
        start, n = item["start_frame"], item["n_frames"]
        assert item["listener_video"].dtype == torch.uint8
        assert np.array_equal(item["listener_video"].numpy(), full[start:start + n])


@needs_ffmpeg
def test_video_size_and_frames_past_the_end(video_corpus):
    path = video_corpus / "media" / clip_id_for(0) / "speaker.mp4"
    assert read_video_window(path, 10, 3, 25.0, size=(32, 24)).shape == (3, 24, 32, 3)
    tail = read_video_window(path, 98, 5, 25.0)
    assert tail.shape == (5, 48, 64, 3)
    assert tail[:2].any() and not tail[2:].any()
