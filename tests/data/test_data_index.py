"""window_starts and the clip index."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from responsenet.data import window_starts
from responsenet.data.index import scan_clips, split_names
from responsenet.errors import UsageError


def test_examples():
    assert window_starts(100, 32) == [0, 32, 64, 96]
    assert window_starts(100, 32, drop_last=True) == [0, 32, 64]
    assert window_starts(96, 32) == [0, 32, 64]
    assert window_starts(10, 32) == [0]
    assert window_starts(10, 32, drop_last=True) == []
    assert window_starts(0, 32) == []
    assert window_starts(100, 32, 40) == [0, 40, 80]
    with pytest.raises(ValueError, match="must be > 0"):
        window_starts(10, 0)


@given(st.integers(0, 300), st.integers(1, 64), st.integers(1, 64), st.booleans())
def test_windows_cover_the_clip(n_frames, window, stride, drop_last):
    starts = window_starts(n_frames, window, stride, drop_last)
    assert starts == sorted(set(starts)) and all(s % stride == 0 for s in starts)
    assert all(0 <= s < n_frames for s in starts)
    if drop_last:
        assert starts == [s for s in range(0, n_frames, stride) if s + window <= n_frames]
    elif n_frames:
        # the last window reaches the end, or (stride > window) no later start fits in
        assert starts[-1] + max(window, stride) >= n_frames
        assert all(s + window < n_frames for s in starts[:-1])  # only the last one does
        if stride <= window:
            covered = {f for s in starts for f in range(s, min(s + window, n_frames))}
            assert covered == set(range(n_frames))


def test_scan_clips(corpus):
    assert split_names(corpus) == ["test", "train", "val"]
    clips = scan_clips(corpus)
    assert [c.split for c in clips] == ["test", "test", "train", "train", "val", "val"]
    assert {c.fps for c in clips} == {25.0}


def test_missing_corpus(tmp_path):
    with pytest.raises(UsageError, match="no shards/ folder"):
        scan_clips(tmp_path)
