"""The build folder on disk: per-item work dirs, atomic stage outputs, result and failure records.

Layout under ``--out DIR``::

    work/sources/{source_id}/{stage}/          a finished source-level output (+ _result.json)
    work/clips/{clip_id}/{stage}/              a finished clip-level output (+ _result.json)
    work/.../{stage}.failed.json               the last failure of that stage for that item
    work/.../.{stage}.tmp-{token}/             a stage at work; renamed into place when complete
    reports/build-{timestamp}.json, build-latest.json

A folder without ``_result.json`` is never read as a result, and temporary folders left by a
killed run are removed by the next run before it starts.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

from responsenet.errors import UsageError

RESULT_FILE = "_result.json"
_STALE = re.compile(r"^\..+\.(tmp|trash)-[0-9a-f]{12}$")


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` through a temporary file and a rename, so readers never see half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:12]}")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> Any | None:
    """Read JSON, or None when the file is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class Workspace:
    """Paths and atomic operations of one build folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.work = self.root / "work"
        self.reports = self.root / "reports"
        self._lock_file = None

    def item_dir(self, unit: str, item_id: str) -> Path:
        return self.work / ("sources" if unit == "source" else "clips") / item_id

    def output_dir(self, unit: str, item_id: str, stage: str) -> Path:
        return self.item_dir(unit, item_id) / stage

    def failure_file(self, unit: str, item_id: str, stage: str) -> Path:
        return self.item_dir(unit, item_id) / f"{stage}.failed.json"

    def new_tmp_dir(self, unit: str, item_id: str, stage: str) -> Path:
        tmp = self.item_dir(unit, item_id) / f".{stage}.tmp-{uuid.uuid4().hex[:12]}"
        tmp.mkdir(parents=True)
        return tmp

    def read_result(self, unit: str, item_id: str, stage: str) -> dict[str, Any] | None:
        return read_json(self.output_dir(unit, item_id, stage) / RESULT_FILE)

    def commit(self, tmp: Path, final: Path) -> None:
        """Move a completed temporary folder into place, replacing any older output."""
        trash = None
        if final.exists():
            trash = final.with_name(f".{final.name}.trash-{uuid.uuid4().hex[:12]}")
            final.rename(trash)
        tmp.rename(final)
        _fsync_dir(final.parent)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)

    def discard(self, unit: str, item_id: str, stage: str) -> None:
        """Remove a stage's output and failure record for one item (used by --force)."""
        final = self.output_dir(unit, item_id, stage)
        if final.exists():
            trash = final.with_name(f".{final.name}.trash-{uuid.uuid4().hex[:12]}")
            final.rename(trash)
            shutil.rmtree(trash, ignore_errors=True)
        self.failure_file(unit, item_id, stage).unlink(missing_ok=True)

    def clean_stale(self) -> int:
        """Delete temporary folders and files left behind by a killed run; return how many."""
        if not self.work.exists():
            return 0
        stale = [p for p in self.work.rglob(".*") if _STALE.match(p.name)]
        for path in stale:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        return len(stale)

    def lock(self) -> None:
        """Hold an exclusive lock on the build folder for this process's lifetime."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock_file = (self.root / ".lock").open("a+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            raise UsageError(f"another build is running on {self.root}; wait for it to end, "
                             "or use another --out folder") from e

    def unlock(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
