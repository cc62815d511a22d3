"""Fixtures of tests/data: a tiny corpus with real 16 kHz WAV files."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_fixtures import N_CLIPS, N_FRAMES, write_ramp_wavs

from responsenet.testing.corpus import make_tiny_corpus


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """6 clips x 100 frames (train: 0, 3; val: 1, 4; test: 2, 5) with ramp WAVs."""
    root = make_tiny_corpus(tmp_path_factory.mktemp("data") / "corpus", N_CLIPS, N_FRAMES)
    write_ramp_wavs(root, N_CLIPS, N_FRAMES)
    return root
