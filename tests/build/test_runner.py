"""The runner contract, with small stages whose behaviour the tests control."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from pydantic import BaseModel
from rich.console import Console

from responsenet.build.executors import LocalExecutor, SerialExecutor
from responsenet.build.report import BuildReport
from responsenet.build.runner import Runner
from responsenet.build.stages.base import Stage, StageConfig
from responsenet.build.workspace import Workspace
from responsenet.errors import StageFailure
from responsenet.manifest import SourceEntry


class EchoConfig(StageConfig):
    suffix: str = "!"


def log_run(root: Path, stage: str, item: str) -> None:
    with (root / "runs.log").open("a") as f:
        f.write(f"{stage} {item}\n")


class EchoStage(Stage):
    """Source stage: writes the id; 'bad*' ids fail with a reason, 'crash*' ids raise."""

    name, unit, Config = "download", "source", EchoConfig

    def run(self, ctx):
        log_run(ctx.root, self.name, ctx.item_id)
        (ctx.out_dir / "partial.txt").write_text("half")
        if ctx.item_id.startswith("bad"):
            raise StageFailure("not_found", f"{ctx.item_id} is bad")
        if ctx.item_id.startswith("flaky"):
            raise StageFailure("network", "connection reset")
        if ctx.item_id.startswith("crash"):
            raise RuntimeError("boom")
        (ctx.out_dir / "echo.txt").write_text(ctx.item_id + ctx.config.suffix)
        return {"file": "echo.txt"}


class TwoClipStage(Stage):
    """Source stage making two clips, like segment."""

    name, unit, requires = "segment", "source", ("download",)

    def run(self, ctx):
        log_run(ctx.root, self.name, ctx.item_id)
        text = (ctx.inputs["download"].dir / ctx.inputs["download"].meta["file"]).read_text()
        clips = [{"clip_id": f"{ctx.item_id}_{i:03d}", "text": text} for i in range(2)]
        return {"clips": clips}


class ClipStage(Stage):
    """Clip stage; the second clip of 'half*' sources fails."""

    name, unit, requires = "crop", "clip", ("segment",)

    def run(self, ctx):
        log_run(ctx.root, self.name, ctx.item_id)
        if ctx.source.id.startswith("half") and ctx.item_id.endswith("1"):
            raise StageFailure("no_face", "nobody there")
        return {"clip": ctx.item_id}


STAGES = {"download": EchoStage, "segment": TwoClipStage, "crop": ClipStage}


class NoSections(BaseModel):
    pass


def run(tmp_path, ids, names=("download", "segment", "crop"), *, executor=None, **kwargs):
    entries = [SourceEntry(id=i, path=f"/nowhere/{i}.mp4") for i in ids]
    runner = Runner(Workspace(tmp_path), entries, list(names), kwargs.pop("config", NoSections()),
                    executor or SerialExecutor(), progress=False, lookup=STAGES.__getitem__,
                    **kwargs)
    return runner.run(BuildReport("m.yaml", str(tmp_path), list(names), {}))


def runs(tmp_path) -> list[str]:
    path = tmp_path / "runs.log"
    lines = path.read_text().splitlines() if path.exists() else []
    path.unlink(missing_ok=True)
    return lines


def counts(report, stage):
    c = report.stages[stage]
    return c.done, c.skipped, c.failed


def test_failures_are_recorded_and_others_go_on(tmp_path):
    report = run(tmp_path, ["a", "bad1", "crash1", "half1"])
    assert counts(report, "download") == (2, 0, 2)
    assert counts(report, "segment") == (2, 0, 0)
    assert counts(report, "crop") == (3, 0, 1)
    reasons = {(f["item"], f["stage"]): f["reason"] for f in report.failures}
    assert reasons == {("bad1", "download"): "not_found", ("crash1", "download"): "internal_error",
                       ("half1_001", "crop"): "no_face"}
    assert report.items == {"a": "ok", "bad1": "failed", "crash1": "failed", "half1": "partial"}
    record = json.loads((tmp_path / "work/sources/crash1/download.failed.json").read_text())
    assert record["reason"] == "internal_error" and "RuntimeError: boom" in record["traceback"]
    assert not (tmp_path / "work/sources/bad1/download").exists()
    assert (tmp_path / "work/clips/a_001/crop/_result.json").exists()


def test_second_run_skips_everything_including_remembered_failures(tmp_path):
    run(tmp_path, ["a", "bad1", "flaky1"])
    runs(tmp_path)
    report = run(tmp_path, ["a", "bad1", "flaky1"])
    assert runs(tmp_path) == ["download flaky1"]  # transient failures are retried
    assert counts(report, "download") == (0, 2, 1)
    assert counts(report, "crop") == (0, 2, 0)
    cached = [f for f in report.failures if f["cached"]]
    assert [(f["item"], f["reason"]) for f in cached] == [("bad1", "not_found")]
    run(tmp_path, ["a", "bad1"], retry_failed=True)
    assert runs(tmp_path) == ["download bad1"]


def test_config_change_redoes_the_stage_and_its_dependents(tmp_path):
    class Config(BaseModel):
        download: EchoConfig = EchoConfig()

    run(tmp_path, ["a"], config=Config())
    runs(tmp_path)
    run(tmp_path, ["a"], config=Config(download=EchoConfig(suffix="?")))
    assert runs(tmp_path) == ["download a", "segment a", "crop a_000", "crop a_001"]
    clip_meta = json.loads((tmp_path / "work/sources/a/segment/_result.json").read_text())
    assert clip_meta["meta"]["clips"][0]["text"] == "a?"


def test_force_redoes_one_stage_and_what_depends_on_it(tmp_path):
    run(tmp_path, ["a"])
    runs(tmp_path)
    run(tmp_path, ["a"], force={"segment", "crop"})
    assert runs(tmp_path) == ["segment a", "crop a_000", "crop a_001"]


def test_missing_upstream_output_is_a_failure_with_a_hint(tmp_path):
    report = run(tmp_path, ["a"], names=("segment",))
    (failure,) = report.failures
    assert failure["reason"] == "missing_input" and "--stage download,segment" in failure["message"]


def test_stale_partial_outputs_are_cleaned_and_never_read(tmp_path):
    ws = Workspace(tmp_path)
    tmp = ws.new_tmp_dir("source", "a", "download")
    (tmp / "half.mp4").write_text("x")
    half = ws.output_dir("source", "a", "segment")
    half.mkdir(parents=True)  # a folder without _result.json is not a result
    assert ws.clean_stale() == 1 and not tmp.exists()
    report = run(tmp_path, ["a"])
    assert counts(report, "segment") == (1, 0, 0)


def test_process_pool_gives_the_same_outputs(tmp_path):
    serial = run(tmp_path / "s", ["a", "b", "bad1", "half1"])
    pool = LocalExecutor(2)
    try:
        pooled = run(tmp_path / "p", ["a", "b", "bad1", "half1"], executor=pool)
    finally:
        pool.close()
    assert serial.items == pooled.items
    for stage in STAGES:
        assert counts(serial, stage) == counts(pooled, stage)
    for path in (tmp_path / "s/work").rglob("echo.txt"):
        twin = tmp_path / "p/work" / path.relative_to(tmp_path / "s/work")
        assert twin.read_text() == path.read_text()


def test_lock_refuses_a_second_build_on_the_same_folder(tmp_path):
    from responsenet.errors import UsageError

    first, second = Workspace(tmp_path), Workspace(tmp_path)
    first.lock()
    try:
        with pytest.raises(UsageError, match=r"another build \(or a split\) is running"):
            second.lock()
    finally:
        first.unlock()
    second.lock()
    second.unlock()


def test_failures_name_the_source_of_their_item(tmp_path):
    report = run(tmp_path, ["a", "bad1", "half1"])
    assert [(f["item"], f["source"], f["stage"]) for f in report.failures] == [
        ("bad1", "bad1", "download"), ("half1_001", "half1", "crop")]
    record = json.loads((tmp_path / "work/clips/half1_001/crop.failed.json").read_text())
    assert (record["item"], record["source"], record["reason"]) == ("half1_001", "half1", "no_face")
    record = json.loads((tmp_path / "work/sources/bad1/download.failed.json").read_text())
    assert (record["item"], record["source"]) == ("bad1", "bad1")
    data = report.to_dict()
    assert data["failures_by_source"] == {"bad1": 1, "half1": 1}
    assert data["failures"][1]["source"] == "half1"
    out = io.StringIO()
    report.render(Console(file=out, width=200))
    lines = out.getvalue().splitlines()
    assert "failed bad1 in download: not_found: bad1 is bad" in lines
    assert "failed half1_001 (source half1) in crop: no_face: nobody there" in lines
    again = run(tmp_path, ["a", "bad1", "half1"])  # remembered failures keep their source
    assert [(f["item"], f["source"], f["cached"]) for f in again.failures] == [
        ("bad1", "bad1", True), ("half1_001", "half1", True)]


def test_a_clip_failure_in_a_worker_process_names_its_source(tmp_path):
    pool = LocalExecutor(2)
    try:
        run(tmp_path, ["half1"], executor=pool)
    finally:
        pool.close()
    record = json.loads((tmp_path / "work/clips/half1_001/crop.failed.json").read_text())
    assert record["source"] == "half1"
