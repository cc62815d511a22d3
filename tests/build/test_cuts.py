"""Cut detection, clip spans and per-frame measures, on synthetic arrays with known answers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from responsenet.build import cuts
from responsenet.build.cuts import (
    clip_spans,
    detect_cuts,
    frame_distances,
    frame_luma,
    frame_rms_dbfs,
    rms_dbfs,
    sample_bounds,
    split_span,
)


def shots(*levels_and_lengths, size=(6, 8)) -> np.ndarray:
    """uint8 [T, H, W, 3]: constant frames, ``length`` frames at grey ``level`` per pair."""
    frames = [np.full((n, *size, 3), level, np.uint8) for level, n in levels_and_lengths]
    return np.concatenate(frames)


def test_frame_distances_step_and_static():
    frames = shots((0, 3), (255, 2), (51, 2))
    expected = np.array([0, 0, 0, 1.0, 0, 0.8, 0], np.float32)
    np.testing.assert_allclose(frame_distances(frames), expected, atol=1e-6)


def test_frame_distances_takes_the_strongest_half():
    # Only the right half changes (a cut in one panel of a split screen): the whole-frame MAD
    # is 0.5 but the right half's is 1.0.
    frames = np.zeros((2, 4, 8, 3), np.uint8)
    frames[1, :, 4:] = 255
    assert frame_distances(frames)[1] == pytest.approx(1.0)


def test_frame_distances_grey_frames_and_chunks(monkeypatch):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(23, 4, 6), dtype=np.uint8)
    whole = frame_distances(frames)
    monkeypatch.setattr(cuts, "CHUNK_FRAMES", 5)
    np.testing.assert_allclose(frame_distances(frames), whole, rtol=1e-6)
    naive = np.abs(np.diff(frames.astype(float), axis=0))
    halves = [naive, naive[:, :, :3], naive[:, :, 3:], naive[:, :2], naive[:, 2:]]
    reference = np.max([h.mean(axis=(1, 2)) for h in halves], axis=0) / 255
    np.testing.assert_allclose(whole[1:], reference, rtol=1e-5)


def test_frame_luma_known_colours():
    frames = np.zeros((3, 2, 2, 3), np.uint8)
    frames[1] = 255
    frames[2, ..., 0] = 255  # pure red
    np.testing.assert_allclose(frame_luma(frames), [0, 255, 0.299 * 255], rtol=1e-5)


def test_detect_cuts_threshold_is_strict_and_frame_zero_ignored():
    d = np.array([0.9, 0.0, 0.5, 0.0, 0.51, 0.0])
    assert detect_cuts(d, threshold=0.5, min_gap_frames=1) == [4]


def test_detect_cuts_keeps_strongest_within_gap():
    d = np.zeros(40)
    d[[10, 11, 13, 30]] = [0.3, 0.8, 0.4, 0.2]
    assert detect_cuts(d, threshold=0.1, min_gap_frames=5) == [11, 30]
    assert detect_cuts(d, threshold=0.1, min_gap_frames=1) == [10, 11, 13, 30]
    assert detect_cuts(d, threshold=0.9, min_gap_frames=1) == []


def test_clip_spans_drop_and_split():
    kept, dropped = clip_spans(100, [30, 40], min_frames=20)
    assert kept == [(0, 30), (40, 100)]
    assert dropped == [(30, 40)]
    kept, dropped = clip_spans(100, [30, 40], min_frames=10, max_frames=25)
    assert kept == [(0, 15), (15, 30), (30, 40), (40, 60), (60, 80), (80, 100)]
    assert dropped == []


def test_clip_spans_ignores_cuts_outside_and_duplicates():
    assert clip_spans(50, [0, 50, 70, 20, 20], min_frames=1) == ([(0, 20), (20, 50)], [])
    assert clip_spans(0, [], min_frames=1) == ([], [])


def test_clip_spans_rejects_max_below_twice_min():
    with pytest.raises(ValueError, match="at least 2"):
        clip_spans(100, [], min_frames=10, max_frames=19)


def test_split_span_near_equal():
    assert split_span((10, 21), 4) == [(10, 14), (14, 18), (18, 21)]  # 11 frames: 4 + 4 + 3
    assert split_span((0, 13), 4) == [(0, 4), (4, 7), (7, 10), (10, 13)]
    assert split_span((0, 8), 8) == [(0, 8)]


@settings(max_examples=300, deadline=None)
@given(n_frames=st.integers(0, 500),
       cut_list=st.lists(st.integers(-10, 520), max_size=30),
       min_frames=st.integers(1, 60),
       max_factor=st.one_of(st.none(), st.floats(2.0, 6.0)))
def test_clip_spans_properties(n_frames, cut_list, min_frames, max_factor):
    max_frames = None if max_factor is None else int(np.ceil(min_frames * max_factor))
    kept, dropped = clip_spans(n_frames, cut_list, min_frames, max_frames)
    for spans in (kept, dropped):
        assert spans == sorted(spans)
        assert all(0 <= a < b <= n_frames for a, b in spans)
    assert all(b - a >= min_frames for a, b in kept)
    assert all(b - a < min_frames for a, b in dropped)
    if max_frames is not None:
        assert all(b - a <= max_frames for a, b in kept)
    tiles = sorted(kept + dropped)
    assert all(prev[1] == nxt[0] for prev, nxt in itertools.pairwise(tiles))  # disjoint, no gaps
    assert sum(b - a for a, b in tiles) == n_frames
    if tiles:
        assert tiles[0][0] == 0 and tiles[-1][1] == n_frames
    # every in-range cut is a span boundary
    assert {c for c in cut_list if 0 < c < n_frames} <= {a for a, _ in tiles}


def test_sample_bounds_exact_at_25_and_30_fps():
    np.testing.assert_array_equal(sample_bounds(3, 4, 25, 16000), [0, 640, 1280, 1920, 2560])
    bounds = sample_bounds(0, 30, 30, 16000)
    assert bounds[-1] == 16000 and set(np.diff(bounds)) == {533, 534}
    assert sample_bounds(1, 3, 30, 16000)[-1] == round(4 * 16000 / 30) - round(16000 / 30)


def test_frame_rms_dbfs_known_levels():
    sine = (0.5 * 32768 * np.sin(np.arange(3200) * 2 * np.pi / 32)).astype(np.int16)
    samples = np.concatenate([sine, np.zeros(640, np.int16), np.full(640, -32768, np.int16)])
    db = frame_rms_dbfs(samples, np.arange(0, 4481, 640))
    expected_sine = 20 * np.log10(0.5 / np.sqrt(2))  # -9.03 dB
    np.testing.assert_allclose(db, [expected_sine] * 5 + [-120, 0], atol=0.01)
    assert rms_dbfs(np.zeros(10, np.int16)) == -120.0
    assert rms_dbfs(np.array([], np.int16)) == -120.0
    assert rms_dbfs(sine) == pytest.approx(expected_sine, abs=0.01)
