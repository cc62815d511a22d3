"""Publishing a split's new shards/ and splits/ into a corpus, safe against a kill at any moment.

``publish`` swaps complete new trees in through a journal, so that dataset.json never lists a
file that is not there; ``recover`` completes (or undoes) a swap that a kill or a failure
interrupted, and removes what such a split left at the corpus root.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from responsenet.build.workspace import fsync_dir, read_json
from responsenet.errors import UsageError
from responsenet.hashing import sha256_bytes, sha256_file

#: The trees a split replaces, and its hidden working names at the corpus root.
TREES = ("shards", "splits")
NEW, OLD, _JOURNAL = ".split-new-", ".split-old-", ".split-journal.json"
_SPLIT_DIR = re.compile(r"^\.split-(new|old)-[0-9a-f]{12}$")
#: What a killed split can leave at the root (older versions: mkdtemp names, a fixed .tmp).
_LEFTOVER = re.compile(r"^\.split-(new|old)-[A-Za-z0-9_]+$|^\.split-journal\.json"
                       r"(\.tmp-[0-9a-f]{12})?$|^\.\.split-journal\.json\.tmp-[0-9a-f]{12}$"
                       r"|^\.dataset\.json\.tmp(-[0-9a-f]{12})?$")


@contextmanager
def corpus_lock(root: Path) -> Iterator[None]:
    """Hold the corpus folder's ``.lock`` (the one a build holds) for the block.

    A build and a split of the same folder would otherwise rewrite shards/ and dataset.json
    under each other. A missing folder is not locked (the caller reports it).

    Raises:
        UsageError: a build or another split holds the lock.
    """
    if not root.is_dir():
        yield
        return
    with open(root / ".lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            raise UsageError(f"a build or another split is running on {root}; wait for it to "
                             "end, then split") from e
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def journal_exists(root: Path) -> bool:
    """True while an interrupted split's journal is at ``root``."""
    return (root / _JOURNAL).exists()


def publish(root: Path, new: Path, old: Path, sums: Mapping[str, str]) -> None:
    """Swap ``new/{shards,splits}`` into ``root`` and update dataset.json, safe against a kill.

    Order: (1) a journal names the complete new trees and the dataset.json texts before, during
    and after; (2) dataset.json drops its shards/ and splits/ checksums, so it never lists a file
    that the swap moves away; (3) each tree: the old one into ``old``, the new one into place;
    (4) dataset.json with the new checksums; (5) the journal is removed. A failure or a kill
    after (1) leaves the journal: the next ``split_corpus`` completes the swap first
    (:func:`recover`).

    Raises:
        UsageError: dataset.json is not valid JSON (nothing is changed then).
        OSError: a rename or write failed after (1); the message says to run split again.
    """
    path = root / "dataset.json"
    before = path.read_bytes()
    try:
        card = json.loads(before)
    except (ValueError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: not valid JSON ({e}); rebuild the shard stage") from e
    kept = {rel: sha for rel, sha in card.get("checksums", {}).items()
            if not rel.startswith(tuple(f"{name}/" for name in TREES))}
    during = _card_bytes({**card, "checksums": kept})
    after = _card_bytes({**card, "checksums": dict(sorted({**kept, **sums}.items()))})
    _write_atomic(root / _JOURNAL, _card_bytes({
        "new": new.name, "old": old.name, "trees": list(TREES), "final": after.decode(),
        "dataset_json_sha256": {"before": sha256_bytes(before), "during": sha256_bytes(during),
                                "after": sha256_bytes(after)}}))
    try:
        _write_atomic(path, during)
        _move_trees(root, new, old)
        _write_atomic(path, after)
        (root / _JOURNAL).unlink()
        fsync_dir(root)
    except OSError as e:
        e.add_note(f"The split of {root} was interrupted while swapping in the new shards; "
                   "dataset.json lists only files that are there. Run responsenet split again: "
                   "it completes the interrupted split first.")
        raise


def _move_trees(root: Path, new: Path, old: Path) -> None:
    """Move each ``new/name`` into ``root/name`` (the current one into ``old/name`` first).

    Resumable: a tree already moved is skipped, so a second call after a kill finishes the job.
    """
    old.mkdir(exist_ok=True)
    for name in TREES:
        if not (new / name).exists():
            continue  # moved by an earlier call
        if (root / name).exists():
            if (old / name).exists():
                shutil.rmtree(old / name)
            os.replace(root / name, old / name)
            fsync_dir(root)
        os.replace(new / name, root / name)
        fsync_dir(root)


def recover(root: str | Path) -> list[str]:
    """Complete or undo a split that was killed or failed half-way; remove its leftovers.

    With a journal (``.split-journal.json``) and dataset.json as the split left it, the swap is
    completed (the new trees are complete before the journal is written). When dataset.json is
    still the one from before, nothing was moved: the new trees are deleted. When dataset.json
    is neither (the corpus was rebuilt since), the leftovers are deleted and the corpus is left
    as it is. Every ``.split-new-*`` / ``.split-old-*`` folder and temporary file is removed.

    Returns:
        Notes saying what was done (empty when there was nothing to do).
    """
    root = Path(root)
    notes = []
    journal = read_json(root / _JOURNAL)
    if isinstance(journal, dict) and _journal_ok(journal):
        current = sha256_file(root / "dataset.json") if (root / "dataset.json").is_file() \
            else None
        shas = journal["dataset_json_sha256"]
        if current in (shas["during"], shas["after"]):
            _move_trees(root, root / journal["new"], root / journal["old"])
            if _listed_present(root, journal["final"]):
                _write_atomic(root / "dataset.json", journal["final"].encode())
                notes.append(f"completed a split of {root} that was interrupted before it ended")
            else:  # the new trees were deleted by hand: dataset.json keeps listing no shards
                notes.append(f"could not complete an interrupted split of {root}: its new "
                             "shards are gone; dataset.json lists no shards until a split ends")
        elif current == shas["before"]:
            notes.append(f"removed the leftovers of a split of {root} that was interrupted "
                         "before it changed anything")
        else:
            notes.append(f"removed the leftovers of an interrupted split of {root}: dataset.json "
                         "changed since (a rebuild?), so the corpus was left as it is")
    leftovers = [p for p in root.iterdir() if _LEFTOVER.match(p.name)] if root.is_dir() else []
    for path in leftovers:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.name != _JOURNAL:
            path.unlink()
    if (root / _JOURNAL).exists():  # last: the trees it names are gone now
        (root / _JOURNAL).unlink()
    if leftovers:
        fsync_dir(root)
    if leftovers and not notes:
        notes.append(f"removed {len(leftovers)} leftover(s) of an interrupted split of {root}")
    return notes


def _listed_present(root: Path, card_text: str) -> bool:
    """Every shards/ and splits/ file that the dataset.json text lists exists under ``root``."""
    try:
        checksums = json.loads(card_text).get("checksums", {})
    except (ValueError, AttributeError):
        return False
    return all((root / rel).is_file() for rel in checksums
               if isinstance(rel, str) and rel.startswith(tuple(f"{n}/" for n in TREES)))


def _journal_ok(journal: dict[str, Any]) -> bool:
    """The journal names hidden split folders of the root (never another path) and its texts."""
    shas = journal.get("dataset_json_sha256")
    return (isinstance(journal.get("new"), str) and _SPLIT_DIR.match(journal["new"]) is not None
            and isinstance(journal.get("old"), str) and _SPLIT_DIR.match(journal["old"])
            is not None and isinstance(journal.get("final"), str) and isinstance(shas, dict)
            and all(isinstance(shas.get(k), str) for k in ("before", "during", "after")))


def _card_bytes(data: Mapping[str, Any]) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a flushed temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
