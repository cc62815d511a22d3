"""The streaming harness: causality, chunking, offline mode, batching, failures, timing."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import N_FRAMES, speaker_wave
from plugins import Batched, Flaky, LookAhead, Recorder

from responsenet.eval.clips import EvalClipReader, eval_refs
from responsenet.eval.harness import generate
from responsenet.eval.timing import summarize
from responsenet.testing.corpus import clip_id_for


@pytest.fixture(scope="module")
def clips(eval_corpus):
    reader = EvalClipReader(eval_corpus)
    return [reader.load(ref) for ref in eval_refs(eval_corpus, "test")]


def test_test_split_clips_in_id_order(clips):
    assert [c.clip_id for c in clips] == [clip_id_for(i) for i in (2, 5, 8)]


def test_online_hands_over_each_frame_once_in_order_and_nothing_else(clips):
    model = Recorder()
    runs = list(generate(model, clips))
    assert all(r.ok for r in runs)
    for clip, run in zip(clips, runs):
        seen = model.seen[clip.clip_id]
        assert [o.start_frame for o in seen] == list(range(N_FRAMES))
        assert all(o.n_frames == 1 and o.clip_id == clip.clip_id for o in seen)
        np.testing.assert_array_equal(np.concatenate([o.face for o in seen]), clip.speaker.face)
        assert [t for o in seen for t in o.chrono] == clip.speaker.chrono
        index = int(clip.clip_id[-8:-4])
        np.testing.assert_allclose(np.concatenate([o.audio for o in seen]),
                                   speaker_wave(index, N_FRAMES * 640), atol=1e-4)
        np.testing.assert_array_equal(run.face, clip.speaker.face)
        assert run.chrono == ["[PAUSE]"] * N_FRAMES and run.audio.shape == (N_FRAMES * 640,)


def test_contexts_carry_clip_facts_and_history(clips):
    model = Recorder()
    list(generate(model, clips[:1]))
    ctx = model.contexts[0]
    assert (ctx.clip_id, ctx.n_frames, ctx.fps, ctx.sample_rate) == (
        clips[0].clip_id, N_FRAMES, 25.0, 16000)
    assert ctx.history[0]["text"] == "earlier words"


def test_a_model_cannot_reach_future_frames_through_array_views(clips):
    runs = list(generate(LookAhead(), clips))
    assert [r.reason for r in runs] == [None] * len(clips), [r.error for r in runs]


def test_look_ahead_check_is_able_to_fail():
    from responsenet.eval import SpeakerChunk

    full = np.zeros((10, 64), np.float32)
    obs = SpeakerChunk(0, 1, np.zeros(640, np.float32), full[:1], np.ones(1, bool), ["a"])
    with pytest.raises(RuntimeError, match="face"):
        LookAhead().step(obs)


def test_chunked_mode_gives_declared_chunks_and_a_short_last_one(clips):
    model = Recorder(chunk_frames=7)
    runs = list(generate(model, clips[:1]))
    sizes = [o.n_frames for o in model.seen[clips[0].clip_id]]
    assert sizes == [7] * 7 + [1]
    np.testing.assert_array_equal(runs[0].face, clips[0].speaker.face)


def test_offline_mode_hands_over_the_whole_stream_at_once(clips):
    model = Recorder()
    runs = list(generate(model, clips, offline=True))
    assert [len(model.seen[c.clip_id]) for c in clips] == [1, 1, 1]
    assert model.seen[clips[0].clip_id][0].n_frames == N_FRAMES
    assert all(r.ok for r in runs)


def test_lock_step_batching_matches_sequential_and_uses_step_batch(clips):
    sequential = [r.face for r in generate(Recorder(chunk_frames=4), clips)]
    model = Batched(chunk_frames=4)
    runs = list(generate(model, clips, batch_clips=2))
    assert model.batch_sizes == [2] * 13 + [1] * 13  # ceil(50 / 4) steps per batch
    for a, b in zip(sequential, runs):
        np.testing.assert_array_equal(a, b.face)
    # one call serves both clips of a batch: each clip's share is half the call
    assert runs[0].share_seconds[0] == pytest.approx(runs[0].step_seconds[0] / 2)


@pytest.mark.parametrize("how, reason, fragment", [
    ("raise", "step_error", "step raised ValueError: model exploded"),
    ("length", "bad_output", "face has shape (2, 64), expected (1, 64)"),
])
def test_a_failing_clip_is_recorded_and_the_others_go_on(clips, how, reason, fragment):
    bad = clips[1].clip_id
    runs = list(generate(Flaky(bad_clip=bad, how=how), clips))
    assert [r.reason for r in runs] == [None, reason, None]
    assert f"clip {bad} frame 10" in runs[1].error and fragment in runs[1].error
    assert runs[0].face.shape == (N_FRAMES, 64) and np.all(runs[2].face == 0.5)


def test_timing_summary_counts_frames_and_calls(clips):
    runs = list(generate(Recorder(chunk_frames=5), clips))
    timing = summarize(runs, chunk_frames=5, batch_clips=1)
    assert timing["clips"] == 3 and timing["frames"] == 3 * N_FRAMES
    model_seconds = sum(sum(r.share_seconds) for r in runs)
    assert timing["model_seconds"] == pytest.approx(model_seconds, rel=1e-5)
    assert timing["real_time_factor"] == pytest.approx(model_seconds / (3 * N_FRAMES / 25),
                                                       rel=1e-3)
    assert timing["step_p50_ms"] <= timing["step_p95_ms"]
    assert len([s for r in runs for s in r.overhead_seconds]) == 3 * 10
