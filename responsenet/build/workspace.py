"""The build folder on disk: per-item work dirs, atomic stage outputs, result and failure records.

Layout under ``--out DIR``::

    work/sources/{source_id}/{stage}/          a finished source-level output (+ _result.json)
    work/clips/{clip_id}/{stage}/              a finished clip-level output (+ _result.json)
    work/.../{stage}.failed.json               the last failure of that stage for that item
    work/.../.{stage}.tmp-{token}/             a stage at work; renamed into place when complete
    reports/build-{timestamp}.json, build-latest.json

A folder without ``_result.json`` is never read as a result, and temporary folders left by a
killed run are removed by the next run before it starts. Every output is written under a
temporary name in its final folder (a file beside its final name, or a stage's temporary
folder), flushed to disk (fsync) and renamed into place, so a crash or a kill at any moment
leaves either the old output or the new one.

Write errors that come from the machine rather than from one item (the disk is full, the file
system is read-only, the build folder is not writable) become :class:`OutputWriteError`: it
names the path and the errno, and the build stops, since every later item would fail the same
way; finished work is kept and the next run resumes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from responsenet.errors import UsageError
from responsenet.manifest import is_safe_name

RESULT_FILE = "_result.json"
_STALE = re.compile(r"^\..+\.(tmp|trash)-[0-9a-f]{12}$")

#: errno -> reason code of write errors that stop the build (every later write would fail too).
#: EACCES and EPERM count only for paths inside the build folder: an unreadable input file is
#: that item's problem.
WRITE_ERRNOS = {errno.ENOSPC: "disk_full", errno.EDQUOT: "disk_full", errno.EROFS: "read_only",
                errno.EACCES: "permission_denied", errno.EPERM: "permission_denied"}
_FIXES = {"disk_full": "Free space on that disk (or choose another --out)",
          "read_only": "Make that file system writable (or choose another --out)",
          "permission_denied": "Make the build folder writable by this user (or choose "
                               "another --out)"}
#: Reported by tools (ffmpeg) in their own words; matched in messages that carry no errno.
_TEXT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


class OutputWriteError(UsageError):
    """Writing into the build folder failed because of the machine (disk full, read-only, denied).

    A :class:`UsageError`, so the CLI prints the message and exits non-zero without a traceback,
    and deliberately not an OSError, so that no ``except OSError`` on the way records it as one
    item's failure and goes on. Like an OSError it has ``errno``, ``strerror`` and ``filename``.

    Args:
        code: the errno (``errno.ENOSPC``, ``errno.EROFS``, ``errno.EACCES``, ...).
        path: the file or folder that could not be written.
        message: the whole message; made by :func:`write_error` with the fix.
    """

    def __init__(self, code: int, path: str | Path | None, message: str):
        super().__init__(message)
        self.errno, self.strerror = code, os.strerror(code)
        self.filename = None if path is None else str(path)
        self.reason = WRITE_ERRNOS.get(code, "write_failed")
        self.message = message

    def __reduce__(self):  # keep errno, path and message across process boundaries
        return (type(self), (self.errno, self.filename, self.message))


def write_error(error: BaseException, root: str | Path | None = None, where: str = "", *,
                resume: str = "finished work is kept and the build resumes",
                ) -> OutputWriteError | None:
    """The :class:`OutputWriteError` that ``error`` (or an error it was raised from) amounts to.

    Args:
        error: any exception; its ``__cause__`` / ``__context__`` chain is searched too, so a
            stage that wrapped the OSError in a StageFailure is still recognised, and so is
            ffmpeg's "No space left on device" in a message.
        root: the build folder; EACCES/EPERM count only for paths inside it (None: anywhere).
        where: prefix naming the item and stage (``"clip a_000, stage crop: "``).
        resume: what running the command again does, for the end of the message.

    Returns:
        None when the error is not a write error of the machine (the item's own failure).
    """
    chain = list(_chain(error))
    for err in chain:
        if isinstance(err, OutputWriteError):
            return err if not where or err.message.startswith(where) else OutputWriteError(
                err.errno, err.filename, where + err.message)
    # an errno with a path first (an OSError a stage wrapped), then words in a message (ffmpeg)
    found = [(err.errno, err.filename) for err in chain if isinstance(err, OSError)
             and err.errno in WRITE_ERRNOS and (err.errno in _TEXT_ERRNOS
                                               or _inside(err.filename, root))]
    found += [(code, None) for err in chain for code in _TEXT_ERRNOS
              if os.strerror(code) in str(err)]
    if not found:
        return None
    code, path = found[0]
    target = path or root
    what = f"cannot write {target}" if target else "cannot write"
    message = (f"{where}{what}: {os.strerror(code)} ({errno.errorcode[code]}). "
               f"{_FIXES[WRITE_ERRNOS[code]]}, then run the same command again: {resume}")
    return OutputWriteError(code, target, message)


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while error is not None and id(error) not in seen and len(seen) < 16:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _inside(path: Any, root: str | Path | None) -> bool:
    if root is None:
        return True
    if path is None:
        return False
    try:
        return Path(os.path.abspath(path)).is_relative_to(os.path.abspath(root))
    except (TypeError, ValueError):
        return False


def safe_name_problem(name: Any) -> str | None:
    """Why ``name`` (an item id) cannot be a folder name inside the build, or None when it can.

    A safe name is one path component: letters, digits, ``.``, ``_`` and ``-``, starting with a
    letter or digit, without ``..``; so ``../x``, ``a/b`` and absolute paths never are.
    """
    if not is_safe_name(name):
        return (f"{name!r} is not a safe file name (expected 1-255 letters, digits, '.', '_' "
                "or '-', starting with a letter or digit, without '/' or '..')")
    return None


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` through a temporary file, fsync and a rename: never half a file.

    Raises:
        OutputWriteError: the disk is full, read-only, or the folder is not writable.
    """
    path = Path(path)
    tmp = stage_json(path, data)
    try:
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise (write_error(e) or e) from e


def stage_json(path: Path, data: Any) -> Path:
    """Write JSON to a temporary file beside ``path``, flushed to disk; return that file.

    ``os.replace(returned, path)`` then puts it in place; a rename needs no free space, so a
    caller can prepare a file before a change and publish both together.

    Raises:
        OutputWriteError: the disk is full, read-only, or the folder is not writable.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True, default=str)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise (write_error(e) or e) from e
    return tmp


def read_json(path: Path) -> Any | None:
    """Read JSON, or None when the file is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class Workspace:
    """Paths and atomic operations of one build folder.

    Every path it gives stays inside the build folder: item ids must be safe file names
    (:func:`safe_name_problem`), so an id such as ``../x`` raises UsageError instead.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.work = self.root / "work"
        self.reports = self.root / "reports"
        self._lock_file = None

    def item_dir(self, unit: str, item_id: str) -> Path:
        if (why := safe_name_problem(item_id)) is not None:
            raise UsageError(f"{unit} id {why}; it would name a folder outside {self.work}")
        return self.work / ("sources" if unit == "source" else "clips") / item_id

    def output_dir(self, unit: str, item_id: str, stage: str) -> Path:
        return self.item_dir(unit, item_id) / _checked_stage(stage)

    def failure_file(self, unit: str, item_id: str, stage: str) -> Path:
        return self.item_dir(unit, item_id) / f"{_checked_stage(stage)}.failed.json"

    def new_tmp_dir(self, unit: str, item_id: str, stage: str) -> Path:
        tmp = self.item_dir(unit, item_id) / f".{_checked_stage(stage)}.tmp-{uuid.uuid4().hex[:12]}"
        tmp.mkdir(parents=True)
        return tmp

    def read_result(self, unit: str, item_id: str, stage: str) -> dict[str, Any] | None:
        return read_json(self.output_dir(unit, item_id, stage) / RESULT_FILE)

    def commit(self, tmp: Path, final: Path) -> None:
        """Move a completed temporary folder into place, replacing any older output.

        The folder's files are flushed to disk first, so a power cut after the rename cannot
        leave a result whose files are empty.
        """
        fsync_tree(tmp)
        trash = None
        if final.exists():
            trash = final.with_name(f".{final.name}.trash-{uuid.uuid4().hex[:12]}")
            final.rename(trash)
        try:
            tmp.rename(final)
        except OSError:
            if trash is not None:  # put the old output back: it stays the result
                trash.rename(final)
            raise
        fsync_dir(final.parent)
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
        """Delete temporary folders and files left behind by a killed run; return how many.

        Looks in ``work/`` and ``reports/``; what cannot be deleted (a read-only folder) is
        left for a later run.
        """
        stale = [p for folder in (self.work, self.reports) if folder.exists()
                 for p in folder.rglob(".*") if _STALE.match(p.name)]
        for path in stale:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)
        return len(stale)

    def lock(self) -> None:
        """Hold an exclusive lock on the build folder for this process's lifetime.

        Raises:
            UsageError: another build holds the lock.
            OutputWriteError: the build folder cannot be created or written.
        """
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._lock_file = (self.root / ".lock").open("a+")
        except OSError as e:
            raise (write_error(e) or e) from e
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            raise UsageError(f"another build (or a split) is running on {self.root}; wait for "
                             "it to end, or use another --out folder") from e

    def unlock(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None


def _checked_stage(stage: str) -> str:
    if (why := safe_name_problem(stage)) is not None:
        raise UsageError(f"stage name {why}")
    return stage


def fsync_tree(folder: Path) -> None:
    """Flush every file and folder under ``folder`` (and ``folder`` itself) to disk."""
    for path in sorted(folder.rglob("*"), reverse=True):
        if path.is_file() and not path.is_symlink():
            _fsync_path(path, os.O_RDONLY)
        elif path.is_dir():
            fsync_dir(path)
    fsync_dir(folder)


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (new names, renames) to disk."""
    _fsync_path(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))


def _fsync_path(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.EROFS):  # a file system without fsync
            raise
    finally:
        os.close(fd)
