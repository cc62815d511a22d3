"""`responsenet eval` / `responsenet score` end to end on a tiny corpus with test plugins."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import N_FRAMES
from typer.testing import CliRunner

from responsenet.cli import app
from responsenet.testing.corpus import clip_id_for

TEST_IDS = [clip_id_for(i) for i in (2, 5, 8)]


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def flat(text: str) -> str:
    """Output with the console's line wrapping undone."""
    return " ".join(text.split())


def run_eval(corpus, out, model="plugins:Recorder", *extra):
    return invoke("eval", "--model", model, "--data", corpus, "--out", out,
                  "--metrics", "rouge_l,distinct,fd", *extra)


def test_eval_writes_outputs_results_and_reports(eval_corpus, tmp_path):
    out = tmp_path / "run"
    code, output = run_eval(eval_corpus, out)
    assert code == 0, output
    results = json.loads((out / "results.json").read_text())
    assert results["mode"] == "online" and results["data"]["n_clips"] == 3
    assert results["model"]["spec"] == "plugins:Recorder"
    assert set(results["metrics"]) == {"rouge_l", "distinct_1", "distinct_2", "fd"}
    assert results["timing"]["frames"] == 3 * N_FRAMES
    assert results["metric_versions"]["fd"]["version"]
    for clip_id in TEST_IDS:
        face = np.load(out / "clips" / clip_id / "face.npy")
        assert face.shape == (N_FRAMES, 64) and face.dtype == np.float32
        assert len((out / "clips" / clip_id / "chrono.jsonl").read_text().splitlines()) == N_FRAMES
        assert (out / "clips" / clip_id / "listener.wav").is_file()
    rows = list(csv.DictReader((out / "per_clip.csv").open()))
    assert [r["clip_id"] for r in rows] == TEST_IDS and {r["status"] for r in rows} == {"ok"}
    md = (out / "results.md").read_text()
    assert "| Method | METEOR ↑ | BERTScore F1 ↑ | ROUGE-L ↑ | Distinct-2 ↑" in md
    assert "plugins:Recorder (this run)" in md and md.strip() in output


def test_recorder_echoing_the_speaker_scores_the_speaker_vs_listener_fd(eval_corpus, tmp_path):
    """FD of an echo model = FD between speaker and listener faces, computed independently."""
    from responsenet.eval.clips import EvalClipReader, eval_refs
    from responsenet.eval.metrics.face import frechet_distance

    out = tmp_path / "run"
    assert run_eval(eval_corpus, out)[0] == 0
    reader = EvalClipReader(eval_corpus)
    clips = [reader.load(r) for r in eval_refs(eval_corpus, "test")]
    spk = np.concatenate([c.speaker.face for c in clips]).astype(np.float64)
    lis = np.concatenate([c.listener.face for c in clips]).astype(np.float64)
    expected = frechet_distance(spk.mean(0), np.cov(spk, rowvar=False),
                                lis.mean(0), np.cov(lis, rowvar=False))
    results = json.loads((out / "results.json").read_text())
    assert results["metrics"]["fd"] == pytest.approx(expected, rel=1e-6)


def test_a_second_eval_reuses_the_run_and_score_recomputes(eval_corpus, tmp_path):
    from plugins import CALLS

    out = tmp_path / "run"
    assert run_eval(eval_corpus, out)[0] == 0
    before = CALLS["step"]
    assert run_eval(eval_corpus, out)[0] == 0
    assert CALLS["step"] == before  # cached: nothing generated again
    (out / "results.json").unlink()
    code, output = invoke("score", out, "--metrics", "distinct")
    assert code == 0, output
    assert set(json.loads((out / "results.json").read_text())["metrics"]) == {
        "distinct_1", "distinct_2"}
    assert CALLS["step"] == before


def test_resume_generates_only_unfinished_clips(eval_corpus, tmp_path):
    from plugins import CALLS

    out = tmp_path / "run"
    assert run_eval(eval_corpus, out)[0] == 0
    (out / "clips" / TEST_IDS[1] / "status.json").unlink()
    before = CALLS["step"]
    assert run_eval(eval_corpus, out)[0] == 0
    assert CALLS["step"] - before == N_FRAMES


def test_another_run_in_the_same_folder_is_refused_unless_forced(eval_corpus, tmp_path):
    out = tmp_path / "run"
    assert run_eval(eval_corpus, out)[0] == 0
    code, output = run_eval(eval_corpus, out, "plugins:Recorder", "--seed", "3")
    assert code == 2 and "choose another --out or pass --force" in flat(output)
    assert run_eval(eval_corpus, out, "plugins:Recorder", "--seed", "3", "--force")[0] == 0


def test_offline_runs_are_labelled_offline(eval_corpus, tmp_path):
    out = tmp_path / "run"
    code, output = run_eval(eval_corpus, out, "plugins:Recorder", "--offline")
    assert code == 0, output
    assert json.loads((out / "results.json").read_text())["mode"] == "offline"
    assert "plugins:Recorder (offline) (this run)" in (out / "results.md").read_text()


def test_a_crashing_clip_is_reported_and_exit_is_1(eval_corpus, tmp_path):
    out = tmp_path / "run"
    code, output = run_eval(eval_corpus, out, "plugins:Flaky",
                            "--model-args", f"bad_clip={TEST_IDS[0]}")
    assert code == 1, output
    results = json.loads((out / "results.json").read_text())
    assert results["data"]["n_scored"] == 2
    [failure] = results["failures"]
    assert failure["clip_id"] == TEST_IDS[0] and failure["reason"] == "step_error"
    assert "model exploded" in failure["error"]
    assert "1 clip(s) failed" in output


def test_a_metric_the_model_cannot_feed_is_skipped_with_the_reason(eval_corpus, tmp_path):
    out = tmp_path / "run"
    code, output = invoke("eval", "--model", "plugins:LookAhead", "--data", eval_corpus,
                          "--out", out, "--metrics", "rouge_l,fd")
    assert code == 0, output
    metrics = json.loads((out / "results.json").read_text())["metrics"]
    assert metrics["rouge_l"] == {"skipped": "the model does not generate text"}
    code, output = invoke("score", out, "--metrics", "rouge_l", "--strict")
    assert code == 2 and "metric rouge_l skipped (--strict)" in flat(output)


@pytest.mark.parametrize("args, fragment", [
    (("--model", "nosuch.module:X"), "cannot import 'nosuch.module'"),
    (("--model", "plugins:Nope"), "has no attribute 'Nope'"),
    (("--model", "plugins:Recorder", "--metrics", "meteorr"), "did you mean 'meteor'"),
    (("--model", "plugins:Recorder", "--split", "tset"), "tset"),
    (("--model", "plugins:Recorder", "--batch-clips", "0"), "--batch-clips must be at least 1"),
])
def test_usage_errors_name_the_problem(eval_corpus, tmp_path, args, fragment):
    code, output = invoke("eval", "--data", eval_corpus, "--out", tmp_path / "r", *args)
    assert code == 2 and fragment in flat(output), output


def test_metric_args_reach_the_metric_and_are_recorded(eval_corpus, tmp_path):
    out = tmp_path / "run"
    assert run_eval(eval_corpus, out)[0] == 0
    full = json.loads((out / "results.json").read_text())["metrics"]["fd"]
    code, output = invoke("score", out, "--metrics", "fd", "--metric-args", "fd.features=pose")
    assert code == 0, output
    results = json.loads((out / "results.json").read_text())
    assert results["metric_params"] == {"fd": {"features": "pose"}}
    assert results["metrics"]["fd"] != full
    code, output = invoke("score", out, "--metric-args", "fdd.features=pose")
    assert code == 2 and "unknown metric(s) fdd" in flat(output)
    code, output = invoke("score", out, "--metric-args", "features=pose")
    assert code == 2 and "metric.key=value" in flat(output)
