"""Generation across a local process pool and Ray: the same outputs, metrics and run key as one
process; a group lost with its worker recorded per clip; plugins importable by the workers;
executor flag errors."""

from __future__ import annotations

import json
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import N_FRAMES
from typer.testing import CliRunner

from responsenet.build.executors import ray_options, task_resources
from responsenet.cli import app
from responsenet.eval.distribute import (
    GroupSummary,
    make_tasks,
    partition,
    record_summary,
    run_generate_task,
)
from responsenet.eval.run import EvalOptions, evaluate
from responsenet.testing.corpus import clip_id_for

TEST_IDS = [clip_id_for(i) for i in (2, 5, 8)]
METRICS = ["fd", "distinct", "rouge_l"]
OUTPUT_FILES = ("face.npy", "chrono.jsonl", "text.txt", "listener.wav")

#: A plugin written into a temporary folder that only the driver's sys.path names. ``Echo``
#: answers the speaker's face + 0.25, half its audio and its tokens; it appends its pid to
#: ``{log}/{clip_id}.pid`` at each reset, and kills its own process on clip ``crash_on`` while
#: ``{log}/armed`` exists.
PLUGIN = '''
import os
from pathlib import Path

from responsenet.eval import ListenerChunk, ResponseModel


class Echo(ResponseModel):
    outputs = frozenset({"face", "text", "audio"})

    def __init__(self, log: str, crash_on: str = ""):
        self.log, self.crash_on = Path(log), crash_on

    def reset(self, clip):
        self.clip_id = clip.clip_id
        with open(self.log / f"{clip.clip_id}.pid", "a") as f:
            f.write(f"{os.getpid()}\\n")

    def step(self, obs):
        if self.clip_id == self.crash_on and (self.log / "armed").exists():
            os._exit(3)  # a worker crash, as a segfault in native code would be
        return ListenerChunk(face=obs.face + 0.25, audio=obs.audio * 0.5,
                             chrono=list(obs.chrono))
'''


def write_plugin(tmp_path: Path, monkeypatch, name: str) -> Path:
    """Write PLUGIN as module ``name`` into a folder on the driver's sys.path only; return the
    log folder for its ``log`` argument."""
    folder = tmp_path / "plugin"
    folder.mkdir()
    (folder / f"{name}.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(folder))
    log = tmp_path / "log"
    log.mkdir()
    return log


def options(corpus: Path, out: Path, model: str, **kwargs) -> EvalOptions:
    return EvalOptions(model=model, data=corpus, out=out, progress=False,
                       **{"metrics": METRICS, **kwargs})


def outputs(run: Path) -> dict[str, bytes]:
    """The bytes of every generated output file of the run, by clip/file."""
    return {f"{clip_id}/{name}": (run / "clips" / clip_id / name).read_bytes()
            for clip_id in TEST_IDS for name in OUTPUT_FILES
            if (run / "clips" / clip_id / name).is_file()}


def run_key(run: Path) -> str:
    return json.loads((run / "run.json").read_text())["key"]


def pids(log: Path, clip_id: str) -> list[int]:
    return [int(line) for line in (log / f"{clip_id}.pid").read_text().split()]


# --- grouping and tasks (no workers) ----------------------------------------------------------
@pytest.mark.parametrize("n, workers, batch_clips, sizes", [
    (7, 2, 1, [4, 3]),
    (7, 3, 2, [4, 3]),  # 3 per worker, rounded up to whole batches of 2
    (3, 8, 1, [1, 1, 1]),
    (6, 1, 4, [6]),
    (5, 2, 4, [4, 1]),
    (0, 2, 1, []),
])
def test_partition_keeps_clip_order_in_whole_batches(n, workers, batch_clips, sizes):
    groups = partition(list(range(n)), workers, batch_clips)
    assert [len(g) for g in groups] == sizes
    assert [i for g in groups for i in g] == list(range(n))


def test_tasks_ask_for_a_gpu_only_with_cuda_and_survive_pickling(eval_corpus, tmp_path):
    from responsenet.eval.clips import eval_refs

    refs = eval_refs(eval_corpus, "test")
    cpu = make_tasks(refs, eval_corpus, options(eval_corpus, tmp_path, "mirror", workers=2))
    gpu = make_tasks(refs, eval_corpus, options(eval_corpus, tmp_path, "mirror", workers=2,
                                                device="cuda"))
    assert [t.clip_ids for t in cpu] == [TEST_IDS[:2], TEST_IDS[2:]]
    assert [(t.group, t.n_groups) for t in cpu] == [(0, 2), (1, 2)]
    assert task_resources(cpu[0]) == {"CPU": 1}
    assert task_resources(gpu[1]) == {"CPU": 1, "GPU": 1}
    assert ray_options(task_resources(gpu[1])) == {"num_cpus": 1, "num_gpus": 1}
    assert cpu[0].defaults == {"corpus": eval_corpus, "seed": 0, "device": "cpu"}
    assert cpu[0].sys_path == [os.path.abspath(p or ".") for p in sys.path]
    assert pickle.loads(pickle.dumps(cpu[0])) == cpu[0]


def test_a_worker_that_cannot_see_the_run_folder_loses_its_group(eval_corpus, tmp_path):
    from responsenet.eval.clips import eval_refs

    (task,) = make_tasks(eval_refs(eval_corpus, "test"), eval_corpus,
                         options(eval_corpus, tmp_path / "nowhere", "mirror"))
    summary = run_generate_task(task)
    assert (summary.ok, summary.failed, summary.lost[0]) == ([], {}, "usage_error")
    assert summary.lost[1].startswith(f"the run folder {tmp_path / 'nowhere'} is not visible "
                                      "on ")
    assert summary.lost[1].endswith("(no run.json there); put --out on storage that every "
                                    "node mounts at the same path (e.g. NFS)")


def test_a_lost_group_marks_only_its_clips_without_status(eval_corpus, tmp_path):
    from responsenet.eval.clips import eval_refs
    from responsenet.eval.rundir import read_status

    out = tmp_path / "run"
    evaluate(options(eval_corpus, out, "mirror", limit=1))  # clip 2 done, ok
    (task,) = make_tasks(eval_refs(eval_corpus, "test"), eval_corpus,
                         options(eval_corpus, out, "mirror"))
    lost = record_summary(task, GroupSummary(0, lost=("worker_crashed", "it died")), out, 16000)
    assert lost == TEST_IDS[1:]
    assert read_status(out, TEST_IDS[0])["status"] == "ok"
    status = read_status(out, TEST_IDS[2])
    assert (status["status"], status["reason"], status["n_frames"], status["step_seconds"]) == (
        "failed", "worker_crashed", N_FRAMES, [])
    assert status["error"] == (f"clip {TEST_IDS[2]}: group 1 of 1 (clips {TEST_IDS[0]} .. "
                               f"{TEST_IDS[2]}) stopped before this clip was written: it died")


# --- a local process pool ---------------------------------------------------------------------
def test_a_local_pool_gives_the_same_outputs_metrics_and_key(eval_corpus, tmp_path):
    one = evaluate(options(eval_corpus, tmp_path / "one", "mirror", batch_clips=2))
    pool = evaluate(options(eval_corpus, tmp_path / "pool", "mirror", batch_clips=2,
                            workers=2))
    assert outputs(tmp_path / "pool") == outputs(tmp_path / "one")
    assert sorted(outputs(tmp_path / "one")) == sorted(
        f"{c}/{n}" for c in TEST_IDS for n in ("face.npy", "chrono.jsonl", "text.txt"))
    assert pool["metrics"] == one["metrics"] and pool["metrics"]["fd"] > 0
    assert pool["failures"] == one["failures"] == []
    assert run_key(tmp_path / "pool") == run_key(tmp_path / "one")
    meta = json.loads((tmp_path / "pool" / "run.json").read_text())
    assert (meta["executor"], meta["workers"], meta["ray_address"]) == ("local", 2, None)


def test_a_plugin_on_the_drivers_path_runs_in_pool_workers(eval_corpus, tmp_path, monkeypatch):
    log = write_plugin(tmp_path, monkeypatch, "echo_pool_plugin")
    args = {"log": str(log)}
    one = evaluate(options(eval_corpus, tmp_path / "one", "echo_pool_plugin:Echo",
                           model_args=args))
    driver_pid = os.getpid()
    assert {p for c in TEST_IDS for p in pids(log, c)} == {driver_pid}
    pool = evaluate(options(eval_corpus, tmp_path / "pool", "echo_pool_plugin:Echo",
                            model_args=args, workers=2))
    workers = {c: pids(log, c)[1:] for c in TEST_IDS}
    assert all(len(w) == 1 and w[0] != driver_pid for w in workers.values())
    assert workers[TEST_IDS[0]] == workers[TEST_IDS[1]] != workers[TEST_IDS[2]]  # 2 groups
    assert outputs(tmp_path / "pool") == outputs(tmp_path / "one")
    assert len(outputs(tmp_path / "one")) == 3 * len(OUTPUT_FILES)
    assert pool["metrics"] == one["metrics"]


def test_a_worker_crash_fails_its_group_and_the_next_run_redoes_it(eval_corpus, tmp_path,
                                                                   monkeypatch):
    log = write_plugin(tmp_path, monkeypatch, "echo_crash_plugin")
    (log / "armed").touch()
    opts = options(eval_corpus, tmp_path / "run", "echo_crash_plugin:Echo", workers=2,
                   model_args={"log": str(log), "crash_on": TEST_IDS[0]})
    results = evaluate(opts)
    assert [(f["clip_id"], f["status"], f["reason"]) for f in results["failures"]] == [
        (TEST_IDS[0], "failed", "worker_crashed"), (TEST_IDS[1], "failed", "worker_crashed")]
    assert results["failures"][1]["error"] == (
        f"clip {TEST_IDS[1]}: group 1 of 2 (clips {TEST_IDS[0]} .. {TEST_IDS[1]}) stopped "
        "before this clip was written: its worker process died (killed, out of memory, or a "
        "crash in native code) twice, the second time running this task alone")
    assert results["data"]["n_scored"] == 1
    assert sorted(outputs(tmp_path / "run")) == sorted(f"{TEST_IDS[2]}/{n}"
                                                       for n in OUTPUT_FILES)
    per_clip = (tmp_path / "run" / "per_clip.csv").read_text()
    assert per_clip.count(",worker_crashed,") == 2
    (log / "armed").unlink()
    again = evaluate(opts)
    assert again["failures"] == [] and again["data"]["n_scored"] == 3
    # clip 2 crashed in the pool and alone, then ran; clip 5 never started before; clip 8 ran
    # once, or twice when the crash broke the pool while it was running
    assert [len(pids(log, c)) for c in TEST_IDS[:2]] == [3, 1]
    assert len(pids(log, TEST_IDS[2])) in (1, 2)


# --- Ray --------------------------------------------------------------------------------------
def test_ray_gives_the_same_outputs_metrics_and_key(ray_cluster, eval_corpus, tmp_path):
    one = evaluate(options(eval_corpus, tmp_path / "one", "nearest"))
    on_ray = evaluate(options(eval_corpus, tmp_path / "ray", "nearest", executor="ray",
                              workers=2))
    assert ray_cluster.is_initialized()  # a Ray it did not start is left running
    assert outputs(tmp_path / "ray") == outputs(tmp_path / "one")
    assert len(outputs(tmp_path / "one")) == 3 * 3  # face, chrono, text per clip
    assert on_ray["metrics"] == one["metrics"] and on_ray["failures"] == []
    assert run_key(tmp_path / "ray") == run_key(tmp_path / "one")
    meta = json.loads((tmp_path / "ray" / "run.json").read_text())
    assert (meta["executor"], meta["workers"]) == ("ray", 2)


def test_ray_workers_import_a_plugin_from_the_drivers_path_and_survive_a_crash(
        ray_cluster, eval_corpus, tmp_path, monkeypatch):
    # Ray's workers were started before the plugin's folder joined the driver's sys.path
    log = write_plugin(tmp_path, monkeypatch, "echo_ray_plugin")
    args = {"log": str(log), "crash_on": TEST_IDS[2]}
    evaluate(options(eval_corpus, tmp_path / "one", "echo_ray_plugin:Echo", model_args=args))
    (log / "armed").touch()
    results = evaluate(options(eval_corpus, tmp_path / "ray", "echo_ray_plugin:Echo",
                               model_args=args, executor="ray", workers=2))
    assert [(f["clip_id"], f["reason"]) for f in results["failures"]] == [
        (TEST_IDS[2], "worker_crashed")]
    assert results["failures"][0]["error"].startswith(
        f"clip {TEST_IDS[2]}: group 2 of 2 (clips {TEST_IDS[2]} .. {TEST_IDS[2]}) stopped "
        "before this clip was written: the Ray worker running it died (WorkerCrashedError")
    on_ray = [p for c in TEST_IDS[:2] for p in pids(log, c)[1:]]
    assert len(on_ray) == 2 and os.getpid() not in on_ray
    assert len(pids(log, TEST_IDS[2])) == 3  # in-process, then Ray's run and its one retry
    ok = {k: v for k, v in outputs(tmp_path / "one").items() if not k.startswith(TEST_IDS[2])}
    assert outputs(tmp_path / "ray") == ok and len(ok) == 2 * len(OUTPUT_FILES)
    face = np.load(tmp_path / "ray" / "clips" / TEST_IDS[0] / "face.npy")
    assert face.shape == (N_FRAMES, 64)


def test_gpu_tasks_on_ray_without_gpus_fail_their_clips_instead_of_waiting(
        ray_cluster, eval_corpus, tmp_path):
    results = evaluate(options(eval_corpus, tmp_path / "run", "mirror", metrics=["distinct"],
                               executor="ray", workers=2, device="cuda"))
    assert [(f["clip_id"], f["reason"]) for f in results["failures"]] == [
        (c, "usage_error") for c in TEST_IDS]
    assert results["failures"][2]["error"] == (
        f"clip {TEST_IDS[2]}: group 2 of 2 (clips {TEST_IDS[2]} .. {TEST_IDS[2]}) stopped "
        "before this clip was written: Ray cannot schedule it: it needs 1 GPU but no node of "
        "the Ray cluster has more than 0; add such a node, or run eval with --device cpu")


# --- the command line -------------------------------------------------------------------------
def invoke(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, " ".join(result.output.split())


@pytest.mark.parametrize("flags, message", [
    (["--ray-address", "auto"], "error: --ray-address is for --executor ray, but the executor "
     "is 'local'; add --executor ray or leave --ray-address out"),
    (["--workers", "0"], "error: --workers must be at least 1, got 0"),
    (["--executor", "ray", "--workers", "0"], "error: --workers must be at least 1, got 0"),
    (["--executor", "dask"], "error: --executor: Unknown executor 'dask'. Available: local, "
     "ray."),
    (["--executor", "locale", "--workers", "2"], "error: --executor: Unknown executor "
     "'locale'. Did you mean 'local'? Available: local, ray."),
])
def test_cli_executor_errors_exit_2_and_write_nothing(eval_corpus, tmp_path, flags, message):
    out = tmp_path / "run"
    code, output = invoke("eval", "--model", "mirror", "--data", eval_corpus, "--out", out,
                          *flags)
    assert code == 2, output
    assert output == message
    assert not out.exists()


def test_cli_without_ray_says_what_to_install(eval_corpus, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    out = tmp_path / "run"
    code, output = invoke("eval", "--model", "mirror", "--data", eval_corpus, "--out", out,
                          "--executor", "ray", "--ray-address", "auto")
    assert code == 2, output
    assert output == ("error: --executor ray needs Ray, which is not installed here: pip "
                      "install 'responsenet[ray]' (on every node of the cluster)")
    assert not out.exists()


def test_cli_runs_a_pool_and_lists_the_flags(eval_corpus, tmp_path):
    out = tmp_path / "run"
    code, output = invoke("eval", "--model", "mirror", "--data", eval_corpus, "--out", out,
                          "--metrics", "fd", "--workers", "2")
    assert code == 0, output
    assert sorted(p.name for p in (out / "clips").iterdir()) == TEST_IDS
    code, help_text = invoke("eval", "--help")
    assert code == 0
    for flag in ("--executor", "--workers", "--ray-address"):
        assert flag in help_text
