"""The Ray executor: resource requests, outcomes as they finish, failures and crashes as failed
outcomes, the missing-Ray message, and the same build outputs as the local executor."""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path
from typing import ClassVar

import pytest
from typer.testing import CliRunner

from responsenet.build.executors import (
    RayExecutor,
    _start_ray,
    fit_to_nodes,
    make_executor,
    ray_options,
    task_resources,
)
from responsenet.build.stages import available_stages, stages
from responsenet.build.stages.base import Stage
from responsenet.build.tasks import Task, execute_task
from responsenet.build.workspace import Workspace, read_json
from responsenet.cli import app
from responsenet.errors import UsageError
from responsenet.manifest import SourceEntry

GiB = 2**30


# --- resource requests (no Ray needed) --------------------------------------------------------
class _Gpu(Stage):
    name = "gpu"
    resources: ClassVar[dict[str, float]] = {"CPU": 2, "GPU": 0, "memory": 4 * GiB}


def _task(stage_cls: type, config: dict | None = None, root: Path = Path("/nowhere"),
          item_id: str = "a") -> Task:
    source = SourceEntry(id="src", path="/dev/null")
    return Task(stage_cls, "clip", item_id, source, config or {}, {}, "fp", root)


@pytest.mark.parametrize("config, expected", [
    ({}, {"CPU": 2, "memory": 4 * GiB}),
    ({"device": "cpu"}, {"CPU": 2, "memory": 4 * GiB}),
    ({"device": "auto"}, {"CPU": 2, "memory": 4 * GiB}),
    ({"device": "cuda"}, {"CPU": 2, "GPU": 1, "memory": 4 * GiB}),
    ({"threads": 6}, {"CPU": 6, "memory": 4 * GiB}),
    ({"threads": 1}, {"CPU": 2, "memory": 4 * GiB}),
])
def test_task_resources_follow_the_stage_and_its_config(config, expected):
    assert task_resources(_task(_Gpu, config)) == expected


def test_a_task_without_a_stage_asks_for_one_cpu():
    assert task_resources(3) == {"CPU": 1}
    assert ray_options(task_resources(3)) == {"num_cpus": 1}


def test_ray_options_name_ray_s_keywords():
    request = {"CPU": 2, "GPU": 1, "memory": 1.5 * GiB, "accelerator_type:A100": 1}
    assert ray_options(request) == {"num_cpus": 2, "num_gpus": 1, "memory": int(1.5 * GiB),
                                    "resources": {"accelerator_type:A100": 1}}


def test_cpu_and_memory_are_lowered_to_the_largest_node_but_a_missing_gpu_is_refused():
    node = {"CPU": 1.0, "memory": 2.0 * GiB}
    assert fit_to_nodes({"CPU": 2, "memory": 4 * GiB}, node) == node
    refusal = fit_to_nodes({"CPU": 1, "GPU": 1}, node)
    assert refusal == ("it needs 1 GPU but no node of the Ray cluster has more than 0; add such "
                       "a node, or change the stage's config (e.g. device=cpu)")


def test_every_stage_declares_at_least_one_cpu():
    for name in available_stages():
        declared = stages.get(name).resources
        assert declared.get("CPU", 0) >= 1, name
        assert set(declared) <= {"CPU", "GPU", "memory"}, name


# --- usage errors (no Ray needed) -------------------------------------------------------------
def test_missing_ray_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    with pytest.raises(UsageError) as caught:
        make_executor("ray", 2)
    assert str(caught.value) == ("--executor ray needs Ray, which is not installed here: "
                                 "pip install 'responsenet[ray]' (on every node of the cluster)")


def test_cli_without_ray_exits_2_and_writes_nothing(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)
    manifest = tmp_path / "m.yaml"
    manifest.write_text("- {id: a, path: a.mp4}\n")
    result = CliRunner().invoke(app, ["build", "--manifest", str(manifest), "--out",
                                      str(tmp_path / "out"), "--executor", "ray"])
    assert result.exit_code == 2, result.output
    # the CLI prints errors as rich markup, which drops "[ray]" until cli._usage_exit escapes it
    assert "--executor ray needs Ray, which is not installed here: pip install 'responsenet" in (
        " ".join(result.output.split()))
    assert not (tmp_path / "out").exists()


def test_ray_address_needs_the_ray_executor():
    with pytest.raises(UsageError, match=r"^--ray-address is for --executor ray, but the "
                       r"executor is 'local'; add --executor ray or leave --ray-address out$"):
        make_executor("local", 2, ray_address="auto")


def test_an_unreachable_cluster_is_a_usage_error():
    class FakeRay:
        @staticmethod
        def init(**kwargs):
            raise ConnectionError("Could not find any running Ray instance.")

    with pytest.raises(UsageError) as caught:
        _start_ray(FakeRay, 1, "auto")
    assert str(caught.value) == (
        "could not join the Ray cluster at 'auto': Could not find any running Ray instance.; "
        "start one with `ray start --head` (see docs/scale-out.md), or leave --ray-address out "
        "for a local Ray")


# --- the same build, local and on Ray ---------------------------------------------------------
E2E_STAGES = "download,segment,crop,face"
E2E_SET = ["segment.preset=ultrafast", "crop.size=128", "crop.preset=ultrafast"]
TIMINGS = {"seconds", "ms_per_frame"}  # meta keys that measure speed, not outputs


def _timeless(value):
    if isinstance(value, dict):
        return {k: _timeless(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [_timeless(v) for v in value]
    return value


def _outputs(out: Path) -> dict[str, object]:
    """Every file of the work folder: its bytes, or for records what does not depend on when."""
    files: dict[str, object] = {}
    for path in sorted((out / "work").rglob("*")):
        if not path.is_file():
            continue
        name = path.relative_to(out).as_posix()
        if path.name == "_result.json":
            record = read_json(path)
            files[name] = _timeless({k: record[k] for k in ("stage", "version", "fingerprint",
                                                             "meta")})
        elif path.name.endswith(".failed.json"):
            record = read_json(path)
            files[name] = {k: record[k] for k in ("reason", "message", "fingerprint")}
        else:
            files[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


@pytest.mark.slow
def test_ray_builds_the_same_outputs_as_the_local_executor(tmp_path):
    """One 8 s synthetic conversation and a truncated file, built by ``--workers 1`` and by
    ``--executor ray --workers 2`` (a local Ray the executor starts and stops)."""
    ray = pytest.importorskip("ray", reason="Ray is the optional 'ray' extra")
    pytest.importorskip("mediapipe", reason="crop and face need MediaPipe (extra 'face')")
    import yaml

    from responsenet.build.pipeline import build
    from responsenet.synth.generate import SynthSpec, synthesize
    from responsenet.testing.media import make_video, truncate

    manifest = synthesize(tmp_path / "synth", SynthSpec(n=1, seed=5, duration=8,
                                                        size=(320, 180)), progress=False)
    rows = yaml.safe_load(manifest.read_text())["sources"]
    rows[0]["path"] = str(tmp_path / "synth" / rows[0]["path"])
    truncate(make_video(tmp_path / "whole.mp4"), tmp_path / "broken.mp4")
    rows.append({"id": "broken", "path": str(tmp_path / "broken.mp4")})
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(rows))
    owned = not ray.is_initialized()  # else the executor uses the Ray already running
    reports, seconds = {}, {}
    for executor, workers in (("local", 1), ("ray", 2)):
        start = time.perf_counter()
        reports[executor] = build(tmp_path / "m.yaml", tmp_path / executor, E2E_STAGES,
                                  overrides=E2E_SET, workers=workers, executor=executor,
                                  progress=False)
        seconds[executor] = time.perf_counter() - start
    assert ray.is_initialized() != owned  # a Ray it started is stopped again
    local, on_ray = reports["local"], reports["ray"]
    assert local.items == on_ray.items == {rows[0]["id"]: "ok", "broken": "failed"}
    assert [(f["item"], f["stage"], f["reason"]) for f in local.failures] == [
        ("broken", "download", "corrupt_media")]
    assert on_ray.failures == [{**f, "message": f["message"].replace(
        str(tmp_path / "local"), str(tmp_path / "ray"))} for f in local.failures]
    for stage in E2E_STAGES.split(","):
        assert (local.stages[stage].done, local.stages[stage].failed) == (
            on_ray.stages[stage].done, on_ray.stages[stage].failed), stage
    assert local.stages["face"].done == 1
    assert _outputs(tmp_path / "ray") == _outputs(tmp_path / "local")
    print(f"build {E2E_STAGES}: local --workers 1 {seconds['local']:.1f} s, "
          f"ray --workers 2 {seconds['ray']:.1f} s (Ray start included)")


# --- on a local Ray ---------------------------------------------------------------------------
def _nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def _raise(x: int) -> int:
    raise ValueError(f"bad input {x}")


def _lost(task, reason: str, message: str) -> tuple:
    return task, reason, message


def test_outcomes_come_back_as_they_finish(ray_cluster):
    executor = RayExecutor(2, on_lost=_lost)
    assert list(executor.map_unordered(_nap, [1.5, 0.0])) == [0.0, 1.5]
    assert sorted(executor.map_unordered(_nap, [0.0] * 5)) == [0.0] * 5
    assert list(executor.map_unordered(_nap, [])) == []
    executor.close()
    assert ray_cluster.is_initialized()  # a Ray it did not start is left running


def test_a_task_that_raises_comes_back_as_a_failure(ray_cluster):
    executor = RayExecutor(2, on_lost=_lost)
    assert list(executor.map_unordered(_raise, [7])) == [
        (7, "internal_error", "the task raised on a Ray worker: ValueError: bad input 7")]


class _Crash(Stage):
    name = "crash"
    unit = "clip"

    def run(self, ctx):
        if ctx.item_id == "dies":
            os._exit(3)  # a worker crash, as a segfault in native code would be
        (ctx.out_dir / "ok.txt").write_text("fine")
        return {"ok": True}


@pytest.fixture
def locked(tmp_path):
    ws = Workspace(tmp_path / "out")
    ws.lock()  # what build() holds while it runs
    yield ws
    ws.unlock()


def test_a_worker_crash_is_a_failed_outcome_recorded_like_any_failure(ray_cluster, locked):
    executor = RayExecutor(2, max_retries=0)
    tasks = [_task(_Crash, root=locked.root, item_id=i) for i in ("lives", "dies")]
    outcomes = {o.item_id: o for o in executor.map_unordered(execute_task, tasks)}
    assert outcomes["lives"].status == "done" and outcomes["lives"].meta == {"ok": True}
    dead = outcomes["dies"]
    assert (dead.status, dead.reason) == ("failed", "worker_crashed")
    assert dead.message.startswith("clip dies, stage crash: the Ray worker running it died "
                                   "(WorkerCrashedError: ")
    record = read_json(locked.failure_file("clip", "dies", "crash"))
    assert (record["reason"], record["fingerprint"], record["transient"]) == (
        "worker_crashed", "fp", False)
    assert (locked.output_dir("clip", "lives", "crash") / "ok.txt").read_text() == "fine"


def test_a_build_folder_the_workers_cannot_see_fails_each_task(ray_cluster, tmp_path):
    executor = RayExecutor(2)
    (outcome,) = executor.map_unordered(execute_task, [_task(_Crash, root=tmp_path / "o")])
    assert (outcome.status, outcome.reason) == ("failed", "usage_error")
    assert f"the build folder {tmp_path / 'o'} is not visible on Ray node" in outcome.message
    assert outcome.message.endswith("put --out on storage that every node mounts at the same "
                                    "path (e.g. NFS)")


def test_a_gpu_task_on_a_cluster_without_gpus_fails_instead_of_waiting(ray_cluster, locked):
    executor = RayExecutor(2)
    task = _task(_Crash, {"device": "cuda"}, root=locked.root)
    (outcome,) = executor.map_unordered(lambda t: pytest.fail("must not run"), [task])
    assert (outcome.status, outcome.reason) == ("failed", "usage_error")
    assert outcome.message == (
        "clip a, stage crash: Ray cannot schedule it: it needs 1 GPU but no node of the Ray "
        "cluster has more than 0; add such a node, or change the stage's config (e.g. "
        "device=cpu)")


def test_download_and_segment_give_the_same_outputs_on_ray(ray_cluster, tmp_path):
    """Two short videos and a truncated one: the quick check of the slow test above."""
    from responsenet.build.pipeline import build
    from responsenet.testing.media import make_video, truncate

    make_video(tmp_path / "a.mp4", duration=3.0, size=(160, 90))
    make_video(tmp_path / "b.mp4", duration=4.0, size=(160, 90), fps=30)
    truncate(tmp_path / "a.mp4", tmp_path / "broken.mp4")
    (tmp_path / "m.yaml").write_text("- {id: a, path: a.mp4}\n- {id: b, path: b.mp4}\n"
                                     "- {id: broken, path: broken.mp4}\n")
    reports = {executor: build(tmp_path / "m.yaml", tmp_path / executor, "download,segment",
                               overrides=["download.min_duration=1"], executor=executor,
                               workers=2 if executor == "ray" else 1, progress=False)
               for executor in ("local", "ray")}
    assert reports["local"].items == reports["ray"].items == {"a": "ok", "b": "ok",
                                                              "broken": "failed"}
    assert reports["ray"].stages["segment"].done == 2
    assert _outputs(tmp_path / "ray") == _outputs(tmp_path / "local")
