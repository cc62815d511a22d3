"""One unit of work: run one stage for one item, atomically, and say how it went.

``execute_task`` is a top-level function so that a process pool can pickle it. It never raises
for a per-item problem: it returns a :class:`TaskOutcome` with a reason code instead.
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
from responsenet.build.workspace import RESULT_FILE, Workspace, write_json_atomic
from responsenet.errors import StageFailure, UsageError
from responsenet.manifest import SourceEntry

#: Failures worth retrying on the next run; every other failure is remembered with its
#: fingerprint and not retried until the inputs or config change (or --retry-failed).
TRANSIENT_REASONS = frozenset({"network", "internal_error", "usage_error", "interrupted"})


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
    """What happened to one task. ``status`` is ``done`` or ``failed``."""

    stage: str
    item_id: str
    status: Literal["done", "failed"]
    seconds: float
    meta: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    message: str = ""


def _failure(task: Task, error: BaseException) -> tuple[str, str]:
    if isinstance(error, StageFailure):
        return error.reason, error.message
    if isinstance(error, UsageError):
        return "usage_error", str(error)
    return "internal_error", f"{type(error).__name__}: {error}"


def execute_task(task: Task) -> TaskOutcome:
    """Run one stage for one item into a temporary folder and move it into place on success."""
    stage = task.stage_cls()
    ws = Workspace(task.root)
    tmp = ws.new_tmp_dir(task.unit, task.item_id, stage.name)
    ctx = StageContext(item_id=task.item_id, source=task.source,
                       config=stage.Config.model_validate(task.config), out_dir=tmp,
                       inputs=task.inputs, root=task.root,
                       log=logging.getLogger(f"responsenet.stage.{stage.name}"))
    start = time.perf_counter()
    try:
        meta = stage.run(ctx) or {}
    except Exception as error:  # noqa: BLE001 - one item's failure must not stop the others
        shutil.rmtree(tmp, ignore_errors=True)
        reason, message = _failure(task, error)
        seconds = time.perf_counter() - start
        write_json_atomic(ws.failure_file(task.unit, task.item_id, stage.name), {
            "stage": stage.name, "item": task.item_id, "reason": reason, "message": message,
            "fingerprint": task.fingerprint, "transient": reason in TRANSIENT_REASONS,
            "traceback": traceback.format_exc(), "at": _now()})
        return TaskOutcome(stage.name, task.item_id, "failed", seconds, reason=reason,
                           message=message)
    seconds = time.perf_counter() - start
    write_json_atomic(tmp / RESULT_FILE, {
        "stage": stage.name, "version": stage.version, "fingerprint": task.fingerprint,
        "meta": meta, "seconds": seconds, "finished_at": _now()})
    ws.commit(tmp, ws.output_dir(task.unit, task.item_id, stage.name))
    ws.failure_file(task.unit, task.item_id, stage.name).unlink(missing_ok=True)
    return TaskOutcome(stage.name, task.item_id, "done", seconds, meta=meta)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
