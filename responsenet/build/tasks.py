"""One unit of work: run one stage for one item, atomically, and say how it went.

``execute_task`` is a top-level function so that a process pool can pickle it. It never raises
for a per-item problem: it returns a :class:`TaskOutcome` with a reason code instead. A write
error of the machine (disk full, read-only file system, build folder not writable) is not the
item's problem: its outcome carries the :class:`OutputWriteError` in ``error`` (reason
``disk_full``, ``read_only`` or ``permission_denied``, retried by the next run) and the runner
stops the build.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from responsenet.build.stages.base import StageContext, StageResult
from responsenet.build.workspace import (
    RESULT_FILE,
    OutputWriteError,
    Workspace,
    write_error,
    write_json_atomic,
)
from responsenet.errors import StageFailure, UsageError
from responsenet.manifest import SourceEntry

#: Failures worth retrying on the next run; every other failure is remembered with its
#: fingerprint and not retried until the inputs or config change (or --retry-failed).
TRANSIENT_REASONS = frozenset({"network", "internal_error", "usage_error", "interrupted",
                               "disk_full", "read_only", "permission_denied"})


def fingerprint(data: dict[str, Any]) -> str:
    """A stable hex digest of a JSON-able dict."""
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


@dataclass
class Task:
    """Run ``stage`` for one item. ``stage_cls`` is imported in the worker by its name."""

    stage_cls: type
    unit: str
    item_id: str
    source: SourceEntry
    config: dict[str, Any]
    inputs: dict[str, StageResult]
    fingerprint: str
    root: Path


@dataclass
class TaskOutcome:
    """What happened to one task. ``status`` is ``done`` or ``failed``; ``error`` is set when
    the failure was a write error of the machine, which stops the build."""

    stage: str
    item_id: str
    status: Literal["done", "failed"]
    seconds: float
    meta: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    message: str = ""
    error: OutputWriteError | None = None


def _failure(task: Task, error: BaseException) -> tuple[str, str]:
    if isinstance(error, StageFailure):
        return error.reason, error.message
    if isinstance(error, UsageError):
        return "usage_error", str(error)
    return "internal_error", f"{type(error).__name__}: {error}"


def execute_task(task: Task) -> TaskOutcome:
    """Run one stage for one item into a temporary folder and move it into place on success.

    The result record is written into the temporary folder and the item's old failure record
    is removed before the rename, so a kill at any point leaves either the old state or the
    new one, never a result beside a stale failure.
    """
    stage = task.stage_cls()
    ws = Workspace(task.root)
    start, tmp = time.perf_counter(), None
    try:
        tmp = ws.new_tmp_dir(task.unit, task.item_id, stage.name)
        ctx = StageContext(item_id=task.item_id, source=task.source,
                           config=stage.Config.model_validate(task.config), out_dir=tmp,
                           inputs=task.inputs, root=task.root,
                           log=logging.getLogger(f"responsenet.stage.{stage.name}"))
        meta = stage.run(ctx) or {}
        seconds = time.perf_counter() - start
        write_json_atomic(tmp / RESULT_FILE, {
            "stage": stage.name, "version": stage.version, "fingerprint": task.fingerprint,
            "meta": meta, "seconds": seconds, "finished_at": _now()})
        ws.failure_file(task.unit, task.item_id, stage.name).unlink(missing_ok=True)
        ws.commit(tmp, ws.output_dir(task.unit, task.item_id, stage.name))
    except Exception as error:  # noqa: BLE001 - one item's failure must not stop the others
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        return _failed(task, stage.name, error, time.perf_counter() - start)
    return TaskOutcome(stage.name, task.item_id, "done", seconds, meta=meta)


def _failed(task: Task, stage: str, error: Exception, seconds: float) -> TaskOutcome:
    """Record the failure (best effort when the disk itself failed) and make its outcome."""
    where = f"{task.unit} {task.item_id}, stage {stage}: "
    fatal = write_error(error, task.root, where)
    reason, message = (fatal.reason, str(fatal)) if fatal else _failure(task, error)
    record = failure_record(task, stage, reason, message, traceback.format_exc())
    try:
        write_json_atomic(Workspace(task.root).failure_file(task.unit, task.item_id, stage),
                          record)
    except (OSError, UsageError) as e:  # UsageError: an unsafe id, refused by the runner first
        fatal = fatal or write_error(e, task.root, where)
        message = str(fatal) if fatal else f"{message} (no failure record written: {e})"
    return TaskOutcome(stage, task.item_id, "failed", seconds, reason=fatal.reason if fatal
                       else reason, message=message, error=fatal)


def failure_record(task: Task, stage: str, reason: str, message: str,
                   trace: str = "") -> dict[str, Any]:
    """The ``{stage}.failed.json`` record of a failed task."""
    return {"stage": stage, "item": task.item_id, "source": task.source.id, "reason": reason,
            "message": message, "fingerprint": task.fingerprint,
            "transient": reason in TRANSIENT_REASONS, "traceback": trace, "at": _now()}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
