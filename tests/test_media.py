"""Frames decoded ahead of their consumer: same frames, errors in order, early stops clean up."""

from __future__ import annotations

import shutil
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from responsenet.errors import StageFailure
from responsenet.media import decode_frames, read_ahead


def _read_ahead_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "read-ahead"]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(), max_size=30), st.integers(1, 6))
def test_read_ahead_yields_every_item_in_order(items, depth):
    assert list(read_ahead(iter(items), depth)) == items


def test_an_error_of_the_producer_comes_after_the_items_before_it():
    def produce():
        yield from (1, 2, 3)
        raise ValueError("frame 3 is broken")

    seen = []
    with pytest.raises(ValueError, match="frame 3 is broken"):
        for item in read_ahead(produce(), 2):
            seen.append(item)
    assert seen == [1, 2, 3]


def test_stopping_early_stops_the_producer_thread():
    made = []

    def produce():
        for i in range(1000):
            made.append(i)
            yield i

    consumer = read_ahead(produce(), 3)
    assert [next(consumer) for _ in range(5)] == [0, 1, 2, 3, 4]
    consumer.close()
    assert _read_ahead_threads() == []
    assert len(made) <= 5 + 3 + 2  # what was taken, the queue, and at most one more each way
    time.sleep(0.05)
    assert len(made) <= 10  # and nothing more after the close


@pytest.fixture(scope="module")
def numbered_video(tmp_path_factory):
    """40 frames at 64x48, frame t a flat grey of 6t."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not on PATH (make system-deps)")
    from responsenet.eval.rundir import encode_video

    path = tmp_path_factory.mktemp("media") / "grey.mp4"
    encode_video(path, np.stack([np.full((48, 64, 3), 6 * t, np.uint8) for t in range(40)]), 25)
    return path


@pytest.mark.parametrize("ahead", [1, 4])
def test_decoding_ahead_gives_the_same_frames(numbered_video, ahead):
    plain = np.stack(list(decode_frames(numbered_video)))
    early = np.stack(list(decode_frames(numbered_video, ahead=ahead)))
    assert plain.shape == (40, 48, 64, 3)
    np.testing.assert_array_equal(early, plain)
    np.testing.assert_allclose(plain.reshape(40, -1).mean(axis=1), 6 * np.arange(40), atol=2)


def test_breaking_out_of_a_decode_ahead_stops_ffmpeg_and_the_thread(numbered_video):
    frames = decode_frames(numbered_video, ahead=4)
    first = [next(frames) for _ in range(3)]
    frames.close()
    assert len(first) == 3
    assert _read_ahead_threads() == []


def test_a_broken_video_still_fails_with_its_reason_when_decoded_ahead(numbered_video, tmp_path):
    broken = tmp_path / "broken.mp4"
    data = numbered_video.read_bytes()
    broken.write_bytes(data[: len(data) // 3])
    with pytest.raises(StageFailure) as caught:
        list(decode_frames(broken, ahead=4))
    assert caught.value.reason == "corrupt_media"
