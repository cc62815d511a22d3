"""Faults during ``responsenet build --stage all``: SIGKILL at random moments, and write errors.

SIGKILL: a small synthetic conversation is built once without interruption (the reference, timed),
then each trial builds it into a fresh folder, kills the whole process group after a delay drawn
from a seeded RNG and stratified over the reference's duration (so early, middle and late kills
are all drawn), checks that nothing partial is visible, and builds again to completion. The
result must equal the reference: the same rows and the same checksums in dataset.json. Slow
trials also kill inside the corpus assembly (it lasts tens of milliseconds), of a fresh corpus
and of one that replaces an older corpus.

Write errors: the reference build is copied, and a build that redoes the shard stage and the
corpus (``shard.link_media=false``) runs in this process while :class:`FaultyDisk` makes its
n-th write under the build folder raise ENOSPC, EROFS or EACCES. The build must stop with an
error naming the path and the errno, the earlier corpus must still be valid, and a build without
the fault must complete. Small runner tests with made-up stages pin which errors stop a build
(a full disk, also in ffmpeg's words or in a worker process) and which fail one item.
"""

from __future__ import annotations

import builtins
import errno
import functools
import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from pydantic import BaseModel
from rich.console import Console
from typer.testing import CliRunner

from responsenet.build.executors import LocalExecutor, SerialExecutor
from responsenet.build.report import BuildReport, StageCounts
from responsenet.build.runner import Runner
from responsenet.build.stages.base import Stage
from responsenet.build.stages.download import DownloadConfig
from responsenet.build.workspace import OutputWriteError, Workspace, write_error
from responsenet.cli import app
from responsenet.errors import StageFailure, UsageError
from responsenet.manifest import SourceEntry
from responsenet.validate import validate_root

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "pipelines" / "cpu-small.yaml"
OVERRIDES = ["crop.size=128"]
BUILD_ARGS = ["--stage", "all", "--config", str(CONFIG), "--quiet",
              *[a for o in OVERRIDES for a in ("--set", o)]]
#: Names that must never be visible in shards/ or media/ (temporary and half-written files).
PARTIAL_MARKS = (".tmp", ".trash", ".part", ".partial")


# --- sources and the reference build ---------------------------------------------------------

def synth_manifest(folder: Path, cut: bool) -> Path:
    """One 8 s synthetic conversation (two clips with ``cut``), as a manifest of absolute paths."""
    pytest.importorskip("mediapipe", reason="the face stages need MediaPipe (extra 'face')")
    pytest.importorskip("faster_whisper", reason="transcribe needs faster-whisper (extra 'asr')")
    from responsenet.synth.generate import SynthSpec, synthesize

    manifest = synthesize(folder / "synth", SynthSpec(n=1, seed=7, duration=8, size=(320, 180),
                                                      cut=cut), progress=False)
    rows = yaml.safe_load(manifest.read_text())["sources"]
    for row in rows:
        row["path"] = str(folder / "synth" / row["path"])
    (folder / "m.yaml").write_text(yaml.safe_dump(rows))
    return folder / "m.yaml"


def build_cmd(manifest: Path, out: Path, extra: tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, "-m", "responsenet", "build", "--manifest", str(manifest),
            "--out", str(out), *BUILD_ARGS, *extra]


@dataclass
class Reference:
    manifest: Path
    out: Path
    seconds: float
    corpus: dict


def make_reference(folder: Path, cut: bool) -> Reference:
    manifest = synth_manifest(folder, cut)
    out = folder / "reference"
    started = time.monotonic()
    done = subprocess.run(build_cmd(manifest, out), capture_output=True, text=True, timeout=600)
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-4000:]
    card = json.loads((out / "dataset.json").read_text())
    if card["excluded"]:
        pytest.skip(f"the reference build left clips out: {card['excluded']}")
    assert validate_root(out) == []
    return Reference(manifest, out, seconds, snapshot(out))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Reference:
    """One conversation without a cut (one clip): the default suite's reference."""
    return make_reference(tmp_path_factory.mktemp("faults"), cut=False)


@pytest.fixture(scope="module")
def reference_cut(tmp_path_factory) -> Reference:
    """One conversation with a camera cut (two clips, the second with history): slow trials."""
    return make_reference(tmp_path_factory.mktemp("faults-cut"), cut=True)


def snapshot(out: Path) -> dict:
    """What two builds of the same manifest must share: the rows (sorted by clip_id, role;
    rows hold no build timestamps), and dataset.json's checksums and excluded clips."""
    tables = [pq.read_table(p) for p in sorted((out / "shards").rglob("*.parquet"))]
    rows = pa.concat_tables(tables).sort_by([("clip_id", "ascending"), ("role", "ascending")])
    card = json.loads((out / "dataset.json").read_text())
    return {"rows": rows.to_pylist(), "checksums": card["checksums"],
            "excluded": card["excluded"]}


# --- what a killed build may leave --------------------------------------------------------------

def visible_problems(out: Path) -> list[str]:
    """Partial files a reader could see after a kill; empty when there are none.

    shards/ and media/ hold no temporary names, every Parquet file in shards/ is whole and valid
    (its rows' media exist with their checksums), a dataset.json present describes a valid
    corpus, and every stage folder in work/ holds its _result.json.
    """
    problems = []
    for top in ("shards", "media"):
        for path in (out / top).rglob("*") if (out / top).is_dir() else []:
            if path.name.startswith(".") or any(m in path.name for m in PARTIAL_MARKS):
                problems.append(f"partial name visible: {path.relative_to(out)}")
    for path in sorted((out / "shards").rglob("*.parquet")):
        try:
            pq.read_table(path)
        except (pa.ArrowException, OSError) as e:
            problems.append(f"{path.relative_to(out)} does not open: {e}")
    if (out / "shards").is_dir():
        problems += [p for p in validate_root(out) if p.startswith("shards/")]
    if (out / "dataset.json").exists():
        problems += [f"dataset.json present but: {p}" for p in validate_root(out)]
    for kind in ("sources", "clips"):
        for stage_dir in (out / "work" / kind).glob("*/*") if (out / "work").is_dir() else []:
            if (stage_dir.is_dir() and not stage_dir.name.startswith(".")
                    and not (stage_dir / "_result.json").is_file()):
                problems.append(f"stage folder without _result.json: {stage_dir.relative_to(out)}")
    return sorted(set(problems))


def progress(out: Path) -> str:
    """How far a build got: finished (item, stage) outputs per stage, and the corpus state."""
    done: dict[str, int] = {}
    for result in (out / "work").rglob("_result.json") if (out / "work").is_dir() else []:
        done[result.parent.name] = done.get(result.parent.name, 0) + 1
    state = ("dataset.json" if (out / "dataset.json").exists()
             else "shards/" if (out / "shards").exists() else "no corpus")
    assembling = sorted(p.name.split(".tmp-")[0] + ".tmp" for p in out.glob(".*.tmp-*"))
    return (", ".join(f"{k} {v}" for k, v in sorted(done.items())) + f"; {state}"
            + (f" (assembling: {', '.join(assembling)})" if assembling else ""))


def kill_points(n: int, seconds: float, seed: int) -> list[float]:
    """``n`` delays, one drawn uniformly in each of ``n`` equal slices of ``[0, 0.9 seconds)``
    (a build is often a little faster than the reference, which loaded files cold)."""
    rng = np.random.default_rng(seed)
    width = 0.9 * seconds / n
    return [float(i * width + rng.uniform(0, width)) for i in range(n)]


def start_build(ref: Reference, out: Path, extra: tuple[str, ...] = ()) -> subprocess.Popen:
    return subprocess.Popen(build_cmd(ref.manifest, out, extra), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def kill(proc: subprocess.Popen) -> bool:
    """SIGKILL the build and every process it started (ffmpeg); False if it had finished."""
    if proc.poll() is not None:
        return False
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


def wait_for_assembly(proc: subprocess.Popen, out: Path, timeout: float) -> None:
    """Return once the corpus assembly has begun (its temporary trees appear at the root), or
    the build has ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        names = os.listdir(out) if out.is_dir() else []
        if any(n.startswith((".shards.tmp-", ".media.tmp-")) for n in names):
            return
        time.sleep(0.001)


def kill_trial(ref: Reference, out: Path, *, delay: float | None = None,
               in_assembly: float | None = None, extra: tuple[str, ...] = ()
               ) -> tuple[str, list[str]]:
    """Kill a build of ``ref`` after ``delay`` s (or ``in_assembly`` s after its corpus assembly
    began), check what is visible, build again to completion and compare with ``ref``.
    ``extra`` arguments go to both builds.

    Returns:
        ``(where the kill landed, problems)``; ``problems`` is empty when everything held.
    """
    proc = start_build(ref, out, extra)
    try:
        if in_assembly is None:
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                pass
        else:
            wait_for_assembly(proc, out, timeout=4 * ref.seconds + 60)
            time.sleep(in_assembly)
        killed = kill(proc)
    finally:
        if proc.poll() is None:
            kill(proc)
    landed = progress(out) if killed else "finished before the kill"
    problems = [f"visible after the kill: {p}" for p in visible_problems(out)]
    done = subprocess.run(build_cmd(ref.manifest, out, extra), capture_output=True, text=True,
                          timeout=600)
    if done.returncode != 0:
        return landed, [*problems, f"re-run exited {done.returncode}:\n{done.stderr[-4000:]}"]
    if snapshot(out) != ref.corpus:
        problems.append("the corpus differs from the uninterrupted build's")
    problems += [f"invalid after the re-run: {p}" for p in validate_root(out)]
    problems += [f"left over: {p.relative_to(out)}" for p in out.rglob("*")
                 if any(m in p.name for m in (".tmp-", ".trash-", ".part"))]
    return landed, problems


def test_kill_anywhere_then_resume_gives_the_same_corpus(reference, tmp_path):
    """3 kills: one drawn in each third of an uninterrupted build's duration."""
    delays = kill_points(3, reference.seconds, seed=20250101)
    trials = {d: kill_trial(reference, tmp_path / f"k{i}", delay=d) for i, d in enumerate(delays)}
    print(f"reference build {reference.seconds:.1f} s; kills:\n"
          + "\n".join(f"{d:5.2f} s: {landed}" for d, (landed, _) in trials.items()))
    assert {d: problems for d, (_, problems) in trials.items()} == {d: [] for d in delays}


#: Slow trials: 20 timed kills in 4 chunks (each chunk one test, under the per-test timeout),
#: each chunk spread over the whole build, plus one kill inside the corpus assembly per chunk
#: (it lasts tens of milliseconds, which timed kills hardly ever hit).
SLOW_TRIALS, SLOW_CHUNKS = 20, 4


@pytest.mark.slow
@pytest.mark.parametrize("chunk", range(SLOW_CHUNKS))
def test_many_kills_then_resume_give_the_same_corpus(reference_cut, tmp_path, chunk):
    delays = kill_points(SLOW_TRIALS, reference_cut.seconds, seed=7)[chunk::SLOW_CHUNKS]
    trials = {f"{d:5.2f} s": kill_trial(reference_cut, tmp_path / f"k{i}", delay=d)
              for i, d in enumerate(delays)}
    after = float(np.random.default_rng([7, chunk]).uniform(0, 0.03))
    trials[f"assembly start + {after:.3f} s"] = kill_trial(
        reference_cut, tmp_path / "assembly", in_assembly=after)
    print(f"reference build {reference_cut.seconds:.1f} s; kills:\n"
          + "\n".join(f"{when}: {landed}" for when, (landed, _) in trials.items()))
    assert {when: problems for when, (_, problems) in trials.items()} == {w: [] for w in trials}


@pytest.mark.slow
def test_kills_while_a_corpus_is_replaced(reference_cut, tmp_path):
    """A config change rebuilds the corpus over the old one; 8 kills inside that assembly."""
    trials = {}
    for i, after in enumerate(np.linspace(0.0, 0.035, 8)):
        out = copy_build(reference_cut, tmp_path / f"r{i}")
        trials[f"assembly start + {after:.3f} s"] = kill_trial(
            reference_cut, out, in_assembly=float(after), extra=("--set", "shard.link_media=false"))
    print("\n".join(f"{when}: {landed}" for when, (landed, _) in trials.items()))
    assert {when: problems for when, (_, problems) in trials.items()} == {w: [] for w in trials}


# --- write errors -------------------------------------------------------------------------------

#: Call kinds that create data; with ``sticky`` (a full disk) they keep failing after the n-th.
DATA_KINDS = ("open", "mkdir", "link", "parquet")


class FaultyDisk:
    """Make the ``nth`` write-like call under ``root`` raise ``OSError(code)`` (1-based).

    Counts opening a file for writing (``open``, ``io.open``, ``os.open``), ``os.mkdir``,
    ``os.link``, ``os.rename`` / ``os.replace`` (by destination) and Parquet writers; ``nth``
    None only counts. With ``sticky`` every later data write fails too (a full disk), while
    renames still work.
    """

    def __init__(self, root: Path, code: int, nth: int | None = None, sticky: bool = False):
        self.root, self.code, self.nth, self.sticky = os.path.abspath(root), code, nth, sticky
        self.calls: list[tuple[str, str]] = []
        self.failed: tuple[str, str] | None = None  # the first fault raised
        self.raised: list[str] = []  # paths of every fault raised

    def check(self, kind: str, path) -> None:
        try:
            path = os.path.abspath(os.fspath(path))
        except TypeError:
            return  # a file descriptor or a buffer: not a path
        if path != self.root and not path.startswith(self.root + os.sep):
            return
        self.calls.append((kind, path))
        n = len(self.calls)
        if self.nth is not None and (n == self.nth or (
                self.sticky and n > self.nth and kind in DATA_KINDS)):
            self.failed = self.failed or (kind, path)
            self.raised.append(path)
            raise OSError(self.code, os.strerror(self.code), path)

    def install(self, monkeypatch) -> FaultyDisk:
        real_open, real_os_open = builtins.open, os.open

        def open_(file, mode="r", *args, **kwargs):
            if isinstance(mode, str) and any(c in mode for c in "wax+"):
                self.check("open", file)
            return real_open(file, mode, *args, **kwargs)

        def os_open(path, flags, *args, **kwargs):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                self.check("open", path)
            return real_os_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", open_)
        monkeypatch.setattr(io, "open", open_)
        monkeypatch.setattr(os, "open", os_open)
        for name, kind, where in (("mkdir", "mkdir", 0), ("link", "link", 1),
                                  ("rename", "rename", 1), ("replace", "rename", 1)):
            monkeypatch.setattr(os, name, self._wrap(getattr(os, name), kind, where))
        monkeypatch.setattr(pq.ParquetWriter, "__init__",
                            self._wrap(pq.ParquetWriter.__init__, "parquet", 1))
        return self

    def _wrap(self, fn, kind: str, where: int):
        def wrapped(*args, **kwargs):
            if not (kind == "mkdir" and os.path.isdir(args[where])):  # EEXIST comes first
                self.check(kind, args[where])
            return fn(*args, **kwargs)
        return wrapped


def copy_build(ref: Reference, out: Path) -> Path:
    shutil.copytree(ref.out, out, symlinks=True)
    return out


def rebuild(ref: Reference, out: Path):
    """Redo the shard stage and the corpus (config change: media copied, not linked)."""
    from responsenet.build.pipeline import build

    return build(ref.manifest, out, "all", config_path=CONFIG,
                 overrides=[*OVERRIDES, "shard.link_media=false"], progress=False)


@pytest.fixture(scope="module")
def write_count(reference, tmp_path_factory) -> int:
    """How many write-like calls the faulted build makes under its build folder."""
    out = copy_build(reference, tmp_path_factory.mktemp("count") / "out")
    with pytest.MonkeyPatch.context() as mp:
        disk = FaultyDisk(out, errno.ENOSPC).install(mp)
        rebuild(reference, out)
    kinds = {kind for kind, _ in disk.calls}
    assert {"open", "mkdir", "rename", "parquet"} <= kinds, kinds
    return len(disk.calls)


def fault_case(ref: Reference, out: Path, code: int, nth: int, sticky: bool) -> list[str]:
    """One faulted rebuild of a copy of ``ref``: the error, the old corpus, then a clean run.

    Returns:
        What did not hold (empty when the fault was handled as it should be).
    """
    copy_build(ref, out)
    before = (out / "dataset.json").read_bytes()
    with pytest.MonkeyPatch.context() as mp:
        disk = FaultyDisk(out, code, nth, sticky).install(mp)
        try:
            rebuild(ref, out)
        except OutputWriteError as e:
            error = e
        else:
            return [f"fault {errno.errorcode[code]} at write {nth}: the build did not stop"]
    text = str(error)
    checks = {
        "is a UsageError": isinstance(error, UsageError),
        "carries the errno": error.errno == code,
        "names the errno": os.strerror(code) in text and errno.errorcode[code] in text,
        "names a path the fault was raised for": error.filename in disk.raised
        and str(error.filename) in text,
        "says to run again": "run the same command again" in text,
        "old corpus still valid": validate_root(out) == [],
        "old corpus unchanged": snapshot(out) == ref.corpus,
    }
    after = (out / "dataset.json").read_bytes()
    report = rebuild(ref, out)  # the disk is fine again
    checks.update({
        "re-run succeeds": report.succeeded == len(report.items),
        "re-run corpus valid": validate_root(out) == [],
        "re-run corpus equal": snapshot(out) == ref.corpus,
        "dataset.json old or new, never a third": after in (before,
                                                             (out / "dataset.json").read_bytes()),
        "no temporary leftovers": not [p for p in out.rglob("*")
                                       if ".tmp-" in p.name or ".trash-" in p.name],
    })
    where = f"fault {errno.errorcode[code]} at write {nth}/{disk.failed}"
    return [f"{where}: {name}" for name, ok in checks.items() if not ok]


@pytest.mark.parametrize("code, sticky", [(errno.ENOSPC, True), (errno.EROFS, False),
                                          (errno.EACCES, False)])
def test_write_error_stops_the_build_keeps_the_corpus_and_a_rerun_completes(
        reference, write_count, tmp_path, code, sticky):
    """The first write (the lock file), one in the middle and the last one."""
    problems = [p for nth in sorted({1, write_count // 2, write_count})
                for p in fault_case(reference, tmp_path / f"w{nth}", code, nth, sticky)]
    assert problems == []


@pytest.mark.slow
@pytest.mark.parametrize("code, sticky", [(errno.ENOSPC, True), (errno.ENOSPC, False),
                                          (errno.EROFS, False), (errno.EACCES, False)])
def test_write_error_at_every_write(reference, write_count, tmp_path, code, sticky):
    problems = [p for nth in range(1, write_count + 1)
                for p in fault_case(reference, tmp_path / f"w{nth}", code, nth, sticky)]
    assert problems == []


def test_cli_names_the_path_and_the_errno_without_a_traceback(reference, write_count,
                                                               tmp_path, monkeypatch):
    out = copy_build(reference, tmp_path / "out")
    disk = FaultyDisk(out, errno.ENOSPC, write_count // 2, sticky=True).install(monkeypatch)
    result = CliRunner().invoke(app, ["build", "--manifest", str(reference.manifest),
                                      "--out", str(out), *BUILD_ARGS,
                                      "--set", "shard.link_media=false"])
    monkeypatch.undo()
    text = " ".join(result.output.split())
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # no traceback
    assert "Traceback" not in result.output
    assert "No space left on device (ENOSPC)" in text, result.output
    assert disk.raised
    assert any(p in "".join(result.output.split()) for p in disk.raised), result.output
    assert validate_root(out) == []


def test_read_only_build_folder(reference, tmp_path):
    """A real read-only folder (chmod); as root, chmod does not stop writes, so this is skipped
    and the injected EROFS/EACCES above cover it."""
    out = copy_build(reference, tmp_path / "out")
    before = snapshot(out)
    folders = [out, *(p for p in out.rglob("*") if p.is_dir())]
    for folder in folders:
        folder.chmod(0o555)
    try:
        probe = out / "work" / "probe"
        try:
            probe.mkdir()
        except PermissionError:
            pass
        else:
            probe.rmdir()
            pytest.skip("running as root: chmod does not stop writes (injected faults cover it)")
        with pytest.raises(OutputWriteError) as caught:
            rebuild(reference, out)
        assert caught.value.errno in (errno.EACCES, errno.EPERM)
        assert "Permission denied" in str(caught.value)
    finally:
        for folder in folders:
            folder.chmod(0o755)
    assert validate_root(out) == [] and snapshot(out) == before
    rebuild(reference, out)
    assert validate_root(out) == []


# --- how the runner tells the machine's write errors from an item's failure -------------------

class FaultStage(Stage):
    """A source stage failing as its item id says: ``enospc*`` (an OSError while writing),
    ``ffmpeg*`` (ffmpeg's words in a StageFailure), ``input*`` (EACCES reading a file outside
    the build folder); any other id succeeds."""

    name, unit = "download", "source"

    def run(self, ctx):
        if ctx.item_id.startswith("enospc"):
            try:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(ctx.out_dir / "a.wav"))
            except OSError as e:
                raise StageFailure("bad_input", f"cannot write ({e})") from e
        if ctx.item_id.startswith("ffmpeg"):
            raise StageFailure("ffmpeg_failed", "ffmpeg failed to encode: av_interleaved_write_"
                               "frame(): No space left on device | Error writing trailer")
        if ctx.item_id.startswith("input"):
            raise PermissionError(errno.EACCES, "Permission denied", "/srv/videos/x.mp4")
        return {}


class NoSections(BaseModel):
    pass


def run_fault_stage(out: Path, ids: list[str], executor=None) -> BuildReport:
    entries = [SourceEntry(id=i, path=f"/nowhere/{i}.mp4") for i in ids]
    runner = Runner(Workspace(out), entries, ["download"], NoSections(),
                    executor or SerialExecutor(), progress=False,
                    lookup={"download": FaultStage}.__getitem__)
    return runner.run(BuildReport("m.yaml", str(out), ["download"], {}))


@pytest.mark.parametrize("first", ["enospc1", "ffmpeg1"])
def test_a_full_disk_stops_the_build_and_is_retried_next_time(tmp_path, first):
    with pytest.raises(OutputWriteError) as caught:
        run_fault_stage(tmp_path, ["ok1", first, "ok2"])
    error = caught.value
    assert error.errno == errno.ENOSPC and error.reason == "disk_full"
    assert str(error).startswith(f"source {first}, stage download: cannot write ")
    assert "No space left on device (ENOSPC)" in str(error)
    assert not (tmp_path / "work/sources/ok2").exists()  # stopped: later items were not run
    record = json.loads((tmp_path / f"work/sources/{first}/download.failed.json").read_text())
    assert record["reason"] == "disk_full" and record["transient"]


def test_a_full_disk_in_a_worker_process_stops_the_build(tmp_path):
    pool = LocalExecutor(2)
    try:
        with pytest.raises(OutputWriteError, match="No space left on device"):
            run_fault_stage(tmp_path, ["ok1", "enospc1"], executor=pool)
    finally:
        pool.close()


def test_an_unreadable_input_fails_only_its_item(tmp_path):
    report = run_fault_stage(tmp_path, ["ok1", "input1", "ok2"])
    assert report.items == {"ok1": "ok", "input1": "failed", "ok2": "ok"}
    assert [f["reason"] for f in report.failures] == ["internal_error"]


def test_write_error_of_an_error_chain():
    inside = OSError(errno.EACCES, "Permission denied", "/out/work/x")
    assert write_error(inside, "/out").reason == "permission_denied"
    assert write_error(OSError(errno.EACCES, "Permission denied", "/in/x.mp4"), "/out") is None
    assert write_error(OSError(errno.EIO, "I/O error", "/out/x"), "/out") is None
    assert write_error(ValueError("no"), "/out") is None
    error = write_error(OSError(errno.EROFS, "Read-only file system", "/out/x"), "/out", "clip c: ")
    assert error.filename == "/out/x" and str(error).startswith("clip c: cannot write /out/x: ")
    assert pickle.loads(pickle.dumps(error)).message == error.message


class KilledWorkerStage(Stage):
    """A source stage whose item ``die`` SIGKILLs its own process (as the OOM killer would)."""

    name, unit = "download", "source"

    def run(self, ctx):
        if ctx.item_id == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        return {}


def test_a_killed_worker_fails_only_its_item(tmp_path):
    """A worker killed mid-task breaks the process pool: the pool restarts, the killer is
    recorded as worker_crashed, the other items finish."""
    pool = LocalExecutor(2)
    entries = [SourceEntry(id=i, path=f"/nowhere/{i}.mp4") for i in ("a", "die", "b")]
    try:
        runner = Runner(Workspace(tmp_path), entries, ["download"], NoSections(), pool,
                        progress=False, lookup={"download": KilledWorkerStage}.__getitem__)
        report = runner.run(BuildReport("m.yaml", str(tmp_path), ["download"], {}))
    finally:
        pool.close()
    assert report.items == {"a": "ok", "die": "failed", "b": "ok"}
    [failure] = report.failures
    assert (failure["item"], failure["reason"]) == ("die", "worker_crashed")


# --- the download archive: appends from several workers, a torn last line ----------------------

APPEND_IDS = """
import sys
from pathlib import Path
from responsenet.build.stages.download import record_archive
path, worker, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for i in range(n):
    record_archive(path, f"youtube w{worker}-{i:04d}-" + "x" * 200)
"""


def test_archive_appends_from_several_processes_are_whole_lines(tmp_path):
    archive, workers, n = tmp_path / "archive.txt", 4, 150
    procs = [subprocess.Popen([sys.executable, "-c", APPEND_IDS, str(archive), str(w), str(n)])
             for w in range(workers)]
    assert [p.wait(timeout=120) for p in procs] == [0] * workers
    data = archive.read_bytes()
    assert data.endswith(b"\n")
    lines = data.decode().splitlines()
    expected = {f"youtube w{w}-{i:04d}-" + "x" * 200 for w in range(workers) for i in range(n)}
    assert len(lines) == workers * n and set(lines) == expected


def test_archive_with_a_torn_last_line(tmp_path, caplog):
    from responsenet.build.stages.download import read_archive, record_archive

    archive = tmp_path / "archive.txt"
    archive.write_bytes(b"youtube aaa\ngeneric bbb\nyoutube cc")  # a writer killed mid-line
    with caplog.at_level("WARNING"):
        assert read_archive(archive) == {"youtube aaa", "generic bbb"}
    [warning] = [r.getMessage() for r in caplog.records]
    assert warning == (f"download archive {archive}: its last line 'youtube cc' has no newline "
                       "(a write was cut short); ignored it. If it is a whole id, end the file "
                       "with a newline")
    record_archive(archive, "youtube ddd")  # the new id gets a line of its own
    assert archive.read_bytes() == b"youtube aaa\ngeneric bbb\nyoutube cc\nyoutube ddd\n"
    caplog.clear()
    assert read_archive(archive) == {"youtube aaa", "generic bbb", "youtube cc", "youtube ddd"}
    assert caplog.records == []
    assert read_archive(tmp_path / "none.txt") == set() and read_archive(None) is None
    with pytest.raises(ValueError, match="must be one non-empty line"):
        record_archive(archive, "youtube a\nyoutube b")


# --- what a build reports when a write error stops it, or its corpus cannot be written ---------

class PipelineFaultStage(FaultStage):
    """FaultStage under the real config (the download section), for ``build()``."""

    Config = DownloadConfig


class AfterStage(Stage):
    """A second source stage that only succeeds."""

    name, unit, requires = "segment", "source", ("download",)

    def run(self, ctx):
        return {"clips": []}


class DoneRunner:
    """Stands in for the Runner: every source went through every stage."""

    def __init__(self, ws, entries, names, *args, **kwargs):
        self.entries, self.names = entries, names

    def run(self, report: BuildReport) -> BuildReport:
        report.items = {e.id: "ok" for e in self.entries}
        report.stages = {name: StageCounts(done=len(self.entries)) for name in self.names}
        return report


def fault_manifest(folder: Path, ids: list[str]) -> Path:
    path = folder / "m.jsonl"
    path.write_text("".join(json.dumps({"id": i, "path": f"/nowhere/{i}.mp4"}) + "\n"
                            for i in ids))
    return path


def invoke_build(manifest: Path, out: Path, stage: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["build", "--manifest", str(manifest), "--out", str(out),
                                      "--stage", stage, "--quiet"])
    assert isinstance(result.exception, SystemExit), result.exception  # no traceback
    return result.exit_code, result.output


@pytest.mark.parametrize("stages, first", [("download", "ok"), ("download,segment", "stopped")])
def test_a_stopped_build_writes_its_report(tmp_path, monkeypatch, stages, first):
    from responsenet.build import pipeline

    lookup = {"download": PipelineFaultStage, "segment": AfterStage}.__getitem__
    monkeypatch.setattr(pipeline, "Runner", functools.partial(Runner, lookup=lookup))
    out = tmp_path / "out"
    code, output = invoke_build(fault_manifest(tmp_path, ["ok1", "enospc1", "ok2"]), out, stages)
    assert code == 2, output
    flat = "".join(output.split())
    assert "note:thebuildstopped;whatfinishedisin" in flat and "(ENOSPC)" in flat, output
    report = json.loads((out / "reports" / "build-latest.json").read_text())
    stopped = report["stopped"]
    assert (stopped["reason"], stopped["errno"]) == ("disk_full", "ENOSPC")
    assert stopped["path"].startswith(str(out / "work/sources/enospc1/.download.tmp-"))
    assert stopped["message"].startswith("source enospc1, stage download: cannot write ")
    assert report["items"] == {"ok1": first, "enospc1": "failed", "ok2": "stopped"}
    counts = report["stages"]["download"]
    assert (counts["done"], counts["skipped"], counts["failed"]) == (1, 0, 1)
    assert [(f["item"], f["source"], f["reason"]) for f in report["failures"]] == [
        ("enospc1", "enospc1", "disk_full")]
    assert report["finished"] is not None and report["corpus"] is None


def test_when_the_report_cannot_be_written_either_the_write_error_is_kept(tmp_path, monkeypatch):
    from responsenet.build import pipeline

    monkeypatch.setattr(pipeline, "Runner", functools.partial(
        Runner, lookup={"download": PipelineFaultStage}.__getitem__))

    def full(self, reports_dir):
        raise OutputWriteError(errno.ENOSPC, reports_dir, f"cannot write {reports_dir}: full")

    monkeypatch.setattr(BuildReport, "write", full)
    out, text = tmp_path / "out", io.StringIO()
    with pytest.raises(OutputWriteError) as caught:
        pipeline.build(fault_manifest(tmp_path, ["enospc1"]), out, "download", progress=False,
                       console=Console(file=text, width=400))
    assert str(caught.value).startswith("source enospc1, stage download: cannot write ")
    assert text.getvalue().strip() == (
        f"note: the build stopped and its report could not be written into {out / 'reports'} "
        f"either (cannot write {out / 'reports'}: full)")


def test_a_corpus_that_cannot_be_written_fails_the_build(tmp_path, monkeypatch):
    from responsenet import corpus
    from responsenet.build import pipeline

    def broken(root, *args, **kwargs):
        raise OSError(errno.EIO, "Input/output error", str(root / "shards"))

    monkeypatch.setattr(pipeline, "Runner", DoneRunner)
    monkeypatch.setattr(corpus, "assemble", broken)
    out = tmp_path / "out"
    code, output = invoke_build(fault_manifest(tmp_path, ["a", "b"]), out, "shard")
    assert code == 1, output
    assert "the corpus was not assembled" in " ".join(output.split())
    report = json.loads((out / "reports" / "build-latest.json").read_text())
    assert report["corpus"] == "failed" and report["stopped"] is None
    assert report["items"] == {"a": "ok", "b": "ok"}
    [failure] = report["failures"]
    assert (failure["item"], failure["source"], failure["stage"], failure["reason"]) == (
        "corpus", None, "shard", "assembly_failed")
    assert failure["message"] == (
        f"could not write the corpus into {out}: [Errno 5] Input/output error: "
        f"'{out / 'shards'}'. The corpus there was left as it was (stage outputs are kept); "
        "fix the cause and run the same command again")


def test_a_full_disk_while_writing_the_corpus_stops_the_build(tmp_path, monkeypatch):
    from responsenet import corpus
    from responsenet.build import pipeline

    def full(root, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(root / "shards"))

    monkeypatch.setattr(pipeline, "Runner", DoneRunner)
    monkeypatch.setattr(corpus, "assemble", full)
    out = tmp_path / "out"
    code, output = invoke_build(fault_manifest(tmp_path, ["a"]), out, "shard")
    assert code == 2, output
    assert "corpusassembly:cannotwrite" in "".join(output.split()), output
    report = json.loads((out / "reports" / "build-latest.json").read_text())
    assert report["corpus"] == "failed" and report["failures"] == []
    assert (report["stopped"]["reason"], report["stopped"]["path"]) == (
        "disk_full", str(out / "shards"))
