"""Fixtures of tests/eval: a tiny corpus with real 16 kHz speaker/listener WAVs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from responsenet.testing.corpus import clip_id_for, make_tiny_corpus, refresh_checksums
from responsenet.wavio import write_wav

N_CLIPS, N_FRAMES = 9, 50  # test split: clips 2, 5, 8


def speaker_wave(clip_index: int, n_samples: int) -> np.ndarray:
    """The speaker audio written for clip ``clip_index``: a ramp that encodes the sample index."""
    return (((np.arange(n_samples) + 97 * clip_index) % 2000) / 2000 - 0.5).astype(np.float32)


@pytest.fixture(scope="session")
def eval_corpus(tmp_path_factory) -> Path:
    root = make_tiny_corpus(tmp_path_factory.mktemp("eval") / "corpus", N_CLIPS, N_FRAMES)
    for i in range(N_CLIPS):
        media = root / "media" / clip_id_for(i)
        write_wav(media / "speaker.wav", speaker_wave(i, N_FRAMES * 640), 16000)
        write_wav(media / "listener.wav", np.zeros(N_FRAMES * 640, np.float32), 16000)
    refresh_checksums(root)
    return root
