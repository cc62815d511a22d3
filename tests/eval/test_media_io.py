"""Video in (speaker frames for models that ask) and out (rendered listener), broken media."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from plugins import Watcher

from responsenet.eval.run import EvalOptions, evaluate
from responsenet.eval.rundir import encode_video
from responsenet.media import decode_frames
from responsenet.testing.corpus import clip_id_for, make_tiny_corpus, refresh_checksums
from responsenet.wavio import write_wav

N = 20


@pytest.fixture(scope="module")
def av_corpus(tmp_path_factory):
    """Clips 2 and 5 in the test split, with real speaker WAVs and MP4s (frame t is grey 8t)."""
    root = make_tiny_corpus(tmp_path_factory.mktemp("av") / "corpus", 6, N)
    grey = np.stack([np.full((48, 64, 3), 8 * t, np.uint8) for t in range(N)])
    for i in range(6):
        media = root / "media" / clip_id_for(i)
        write_wav(media / "speaker.wav", np.zeros(N * 640, np.float32), 16000)
        encode_video(media / "speaker.mp4", grey, 25.0)
    refresh_checksums(root)
    return root


def test_a_model_that_asks_for_video_gets_the_speakers_frames_in_order(av_corpus, tmp_path):
    Watcher.seen.clear()
    evaluate(EvalOptions(model="plugins:Watcher", data=av_corpus, out=tmp_path / "r",
                         metrics=["fd"], progress=False))
    assert sorted(Watcher.seen) == [clip_id_for(2), clip_id_for(5)]
    for means in Watcher.seen.values():
        np.testing.assert_allclose(means, 8 * np.arange(N), atol=2.5)


def test_rendered_listener_video_is_written_and_decodes(av_corpus, tmp_path):
    out = tmp_path / "r"
    evaluate(EvalOptions(model="plugins:Watcher", data=av_corpus, out=out, metrics=["fd"],
                         progress=False))
    frames = list(decode_frames(out / "clips" / clip_id_for(2) / "video.mp4"))
    assert len(frames) == N and frames[0].shape == (24, 32, 3)
    np.testing.assert_allclose([f.mean() for f in frames], 10 * np.arange(N), atol=2.5)


def test_broken_speaker_media_fails_that_clip_only(av_corpus, tmp_path):
    root = tmp_path / "corpus"
    shutil.copytree(av_corpus, root)
    (root / "media" / clip_id_for(5) / "speaker.wav").write_bytes(b"RIFF not a wav")
    results = evaluate(EvalOptions(model="plugins:Recorder", data=root, out=tmp_path / "r",
                                   metrics=["fd"], progress=False))
    [failure] = results["failures"]
    assert failure["clip_id"] == clip_id_for(5) and failure["reason"] == "input_error"
    assert "cannot read the speaker's media" in failure["error"]
    assert results["data"]["n_scored"] == 1
    status = json.loads((tmp_path / "r" / "clips" / clip_id_for(2) / "status.json").read_text())
    assert status["status"] == "ok"
