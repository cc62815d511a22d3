"""Assemble the corpus root from the shard stage's per-clip outputs (docs/stages/shard.md).

After the stage loop of a build that ran ``shard``, :func:`assemble` turns the build folder into
a format v1 corpus (docs/format.md)::

    {root}/dataset.json                      format and pipeline versions, config, report, checksums
    {root}/shards/{split}/tracks-00000.parquet   one row group per clip, rows sorted by (clip, role)
    {root}/media/{clip_id}/{role}.mp4|.wav, mix.wav

Clips whose shard output is missing or older than their inputs are left out and listed under
``excluded`` in dataset.json with the stage and reason that stopped them. Rows go to the split of
``splits/{split}.txt`` when such files exist, else to ``unsplit``. ``history`` is filled here,
from the turns of the earlier clips of the same source in the corpus. New ``shards/`` and
``media/`` trees are written beside the old ones, flushed to disk (fsync) and renamed into place,
``media/`` first (so a row never points at media that are not there yet), dataset.json last, so
no reader sees a partial file; the same inputs give the same bytes, and an unchanged corpus is
left untouched. A kill at any moment leaves the old corpus or the new one (or, between the
renames, the new media beside the old shards); the next build removes the temporary trees. A
write error of the machine (disk full, read-only, not writable) raises
:class:`~responsenet.build.workspace.OutputWriteError` and leaves the old corpus as it was.

Clip ids, media names and split names become paths under the root: a clip with an unsafe id
or media name is left out, and an unsafe split file name is refused, so nothing is written
outside the root.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from responsenet import FORMAT_VERSION, __version__, chrono
from responsenet.build.stages import available_stages, stages
from responsenet.build.stages.shard import (
    TRACKS_FILE,
    UNSPLIT,
    ShardConfig,
    link_or_copy,
)
from responsenet.build.workspace import (
    OutputWriteError,
    Workspace,
    fsync_dir,
    fsync_tree,
    read_json,
    safe_name_problem,
    stage_json,
    write_error,
)
from responsenet.errors import UsageError
from responsenet.hashing import checksum_tree, sha256_file
from responsenet.manifest import SourceEntry
from responsenet.schema import tracks_schema
from responsenet.shards import read_tracks, string_columns

_STALE = re.compile(r"^\.(shards|media|dataset\.json)\.(tmp|trash)-[0-9a-f]{12}$")


@dataclass
class ClipShard:
    """One clip's finished shard output: where it is and what history needs of it."""

    clip_id: str
    source_id: str
    index: int
    start_s: float | None
    panels: dict[str, str]
    dir: Path
    media: dict[str, str]
    duration_s: float


@dataclass
class AssemblyResult:
    """What :func:`assemble` did. ``changed`` is False when the corpus was already up to date."""

    root: Path
    clips: int
    rows: int
    shards: list[str]
    excluded: list[dict[str, Any]]
    changed: bool
    seconds: float
    shard_bytes: int = 0
    notes: list[str] = field(default_factory=list)


def assemble(root: str | Path, entries: list[SourceEntry], config: Mapping[str, Any],
             settings: ShardConfig | None = None) -> AssemblyResult:
    """Write (or refresh) the corpus of the build folder ``root`` for the manifest ``entries``.

    Args:
        root: the build folder (``--out``); it becomes the corpus root.
        entries: the manifest entries of the build, in manifest order.
        config: the resolved pipeline config, stored in dataset.json.
        settings: the ``shard`` section (clips per shard, history length, linking).

    Returns:
        Counts, written shard paths (root-relative), the excluded clips and timing.

    Raises:
        OutputWriteError: the disk is full, read-only or not writable; the old corpus is kept.
        UsageError: a ``splits/*.txt`` file name is not a safe split name.
    """
    try:
        return _assemble(Path(root), entries, config, settings or ShardConfig())
    except OutputWriteError:
        raise
    except OSError as e:
        raise (write_error(e, root, "corpus assembly: ") or e) from e


def _assemble(root: Path, entries: list[SourceEntry], config: Mapping[str, Any],
              settings: ShardConfig) -> AssemblyResult:
    started = time.perf_counter()
    ws = Workspace(root)
    _remove_stale(root)
    clips, excluded = collect(ws, entries)
    split_of = read_split_files(root)
    turns = {c.clip_id: _first(read_tracks(c.dir / TRACKS_FILE, columns=["turns"]), "turns")
             for c in clips}
    history = history_turns(clips, turns, settings.max_history_turns)
    groups: dict[str, list[ClipShard]] = {}
    for clip in clips:
        groups.setdefault(split_of.get(clip.clip_id, UNSPLIT), []).append(clip)
    token = uuid.uuid4().hex[:12]
    new_shards, new_media = root / f".shards.tmp-{token}", root / f".media.tmp-{token}"
    try:
        written = write_split_shards(new_shards, {
            split: _clip_tables(members, split, history) for split, members in groups.items()},
            settings.clips_per_shard)
        _link_media_tree(new_media, clips, settings.link_media)
        checksums = _checksums(root, new_shards, clips)
        report = _report(ws, entries, clips, excluded, groups)
        card = dataset_card(config, report, excluded, checksums)
        changed = not _unchanged(root, card, new_shards)
        if changed:
            fsync_tree(new_media)
            fsync_tree(new_shards)
            _publish(root, {"media": new_media, "shards": new_shards}, card)
    finally:
        for tmp in (new_shards, new_media):
            shutil.rmtree(tmp, ignore_errors=True)
    shards = sorted(f"shards/{p.relative_to(new_shards).as_posix()}" for p in written)
    notes = _split_notes(split_of, clips)
    size = sum((root / s).stat().st_size for s in shards if (root / s).is_file())
    return AssemblyResult(root, len(clips), 2 * len(clips), shards, excluded, changed,
                          time.perf_counter() - started, size, notes)


def collect(ws: Workspace, entries: list[SourceEntry]) -> tuple[list[ClipShard],
                                                                  list[dict[str, Any]]]:
    """The clips with a fresh shard output, in clip id order, and why each other one is out.

    A clip is in when no stage has a failure recorded for it (or its source) and its shard
    output was made from the current result of every input stage. A failed stage keeps the
    output of its last success, so the failure records are checked, not only the results.
    """
    clips, excluded = [], []
    for entry in entries:
        segment = ws.read_result("source", entry.id, "segment")
        if segment is None or _first_failure(ws, entry.id, None):
            excluded.append({"source_id": entry.id, "clip_id": None,
                             **_why_missing(ws, entry.id, None)})
            continue
        for clip in segment["meta"].get("clips", []):
            clip_id = clip.get("clip_id")
            shard = None if safe_name_problem(clip_id) else ws.read_result("clip", clip_id,
                                                                            "shard")
            unsafe = _unsafe_names(clip_id, shard)
            if unsafe is not None:
                excluded.append({"source_id": entry.id, "clip_id": str(clip_id), **unsafe})
            elif (shard is not None and not _first_failure(ws, entry.id, clip_id)
                    and _fresh(ws, entry.id, clip_id, shard["meta"])):
                meta = shard["meta"]
                clips.append(ClipShard(clip_id, entry.id, int(meta["index"]),
                                       meta.get("clip_start_s"), meta["panels"],
                                       ws.output_dir("clip", clip_id, "shard"), meta["media"],
                                       meta["n_frames"] / meta["fps"]))
            else:
                excluded.append({"source_id": entry.id, "clip_id": clip_id,
                                 **_why_missing(ws, entry.id, clip_id)})
    return sorted(clips, key=lambda c: c.clip_id), excluded


def _unsafe_names(clip_id: Any, shard: dict[str, Any] | None) -> dict[str, str] | None:
    """Why the clip's id or a media name of its shard output cannot name a path, or None."""
    if (why := safe_name_problem(clip_id)) is not None:
        return {"stage": "segment", "reason": "bad_input",
                "message": f"clip id {why}; run segment again (--force segment)"}
    for name in (shard or {}).get("meta", {}).get("media", {}):
        if (why := safe_name_problem(name)) is not None:
            return {"stage": "shard", "reason": "bad_input",
                    "message": f"clip {clip_id}: media name {why}; run shard again "
                               "(--force shard)"}
    return None


def _fresh(ws: Workspace, source_id: str, clip_id: str, meta: dict[str, Any]) -> bool:
    """True when every input the shard output was made from is still the current result."""
    for name, fingerprint in (meta.get("inputs") or {}).items():
        unit = stages.get(name).unit
        current = ws.read_result(unit, source_id if unit == "source" else clip_id, name)
        if current is None or current.get("fingerprint") != fingerprint:
            return False
    return bool(meta.get("inputs"))


def _first_failure(ws: Workspace, source_id: str, clip_id: str | None) -> dict[str, str] | None:
    """The first failure recorded for a source (``clip_id`` None: its source stages only) or a
    clip, in pipeline order, as ``{stage, reason, message}``."""
    for name in available_stages():
        unit = stages.get(name).unit
        if unit == "clip" and clip_id is None:
            break
        failure = read_json(ws.failure_file(unit, source_id if unit == "source" else clip_id,
                                            name))
        if failure:
            return {"stage": name, "reason": failure.get("reason", "unknown"),
                    "message": failure.get("message", "")}
    return None


def _why_missing(ws: Workspace, source_id: str, clip_id: str | None) -> dict[str, str]:
    """The first recorded failure of the item in pipeline order, or why it has no output."""
    failure = _first_failure(ws, source_id, clip_id)
    if failure:
        return failure
    item = f"clip {clip_id}" if clip_id else f"source {source_id}"
    return {"stage": "shard", "reason": "not_built",
            "message": f"{item} has no current shard output; run the build with --stage all"}


def history_turns(clips: list[ClipShard], turns: Mapping[str, list[dict[str, Any]]],
                  max_turns: int | None = None) -> dict[str, list[dict[str, Any]]]:
    """Each clip's ``history``: the turns of the earlier clips of its source, in its own time.

    A turn of an earlier clip ``e`` at clip time ``t`` lies at ``t + start(e) - start(c)`` for
    clip ``c`` (negative: before it). Its role is the one that the same panel has in ``c`` (the
    person who listened then may speak now); a panel that ``c`` does not have keeps the role.
    Clips with an unknown start get no history and give none.

    Args:
        clips: the corpus's clips.
        turns: clip id -> its ``turns`` (dicts with role, start, end, text; clip time).
        max_turns: keep only the most recent turns (None: all).
    """
    by_source: dict[str, list[ClipShard]] = {}
    for clip in clips:
        by_source.setdefault(clip.source_id, []).append(clip)
    out: dict[str, list[dict[str, Any]]] = {}
    for group in by_source.values():
        group.sort(key=lambda c: c.index)
        for k, clip in enumerate(group):
            if clip.start_s is None:
                out[clip.clip_id] = []
                continue
            earlier = []
            for other in group[:k]:
                if other.start_s is None:
                    continue
                role_of = _role_map(other.panels, clip.panels)
                offset = other.start_s - clip.start_s
                earlier += [chrono.Turn(role_of.get(t["role"], t["role"]), t["start"] + offset,
                                        t["end"] + offset, t["text"]) for t in turns[other.clip_id]]
            kept = chrono.history(earlier, 0.0, max_turns=max_turns)
            out[clip.clip_id] = [{"role": t.role, "start": round(t.start, 6),
                                  "end": round(t.end, 6), "text": t.text} for t in kept]
    return out


def _role_map(then: Mapping[str, str], now: Mapping[str, str]) -> dict[str, str]:
    """Role in the earlier clip -> role of the same panel now (``then``/``now``: role -> panel)."""
    role_now = {panel: role for role, panel in now.items()}
    return {role: role_now[panel] for role, panel in then.items() if panel in role_now}


def _first(table: pa.Table, column: str) -> Any:
    return [] if table.num_rows == 0 else table.column(column)[0].as_py()


def _clip_table(clip: ClipShard, split: str, history: list[dict[str, Any]]) -> pa.Table:
    """The clip's two rows (read from its shard output) with ``split`` and ``history`` set."""
    schema = tracks_schema()
    table = read_tracks(clip.dir / TRACKS_FILE)
    n = table.num_rows
    table = _set(table, "split", pa.array([split] * n, schema.field("split").type))
    return _set(table, "history", pa.array([history] * n, schema.field("history").type))


def _clip_tables(clips: list[ClipShard], split: str,
                 history: Mapping[str, list[dict[str, Any]]]) -> Iterator[pa.Table]:
    for clip in clips:
        yield _clip_table(clip, split, history[clip.clip_id])


def _set(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), table.schema.field(name), values)


def write_split_shards(folder: Path, tables: Mapping[str, Iterable[pa.Table]],
                       clips_per_shard: int) -> list[Path]:
    """Write ``folder/{split}/tracks-{i:05d}.parquet``, each clip one row group.

    Args:
        folder: the shards folder to fill (created).
        tables: split -> one table per clip (its rows sorted by role), in clip id order; an
            iterator is read one clip at a time, so memory holds one clip.
        clips_per_shard: clips per file; the last file of a split holds the rest.

    Returns:
        The written files.
    """
    schema = tracks_schema()
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for split, clip_tables in sorted(tables.items()):
        writer = None
        for k, table in enumerate(clip_tables):
            if k % clips_per_shard == 0:
                if writer is not None:
                    writer.close()
                written.append(folder / split / f"tracks-{k // clips_per_shard:05d}.parquet")
                written[-1].parent.mkdir(parents=True, exist_ok=True)
                writer = pq.ParquetWriter(written[-1], schema, compression="zstd",
                                          use_dictionary=string_columns(schema))
            writer.write_table(table.cast(schema), row_group_size=table.num_rows)
        if writer is not None:
            writer.close()
    return written


def _link_media_tree(folder: Path, clips: list[ClipShard], link: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for clip in clips:
        (folder / clip.clip_id).mkdir()
        for name in sorted(clip.media):
            link_or_copy(clip.dir / name, folder / clip.clip_id / name, link)


def _checksums(root: Path, new_shards: Path, clips: list[ClipShard]) -> dict[str, str]:
    """dataset.json's checksums: new shards (hashed), media (hashed by the stage), splits/."""
    sums = {f"shards/{rel}": digest for rel, digest in checksum_tree(new_shards).items()}
    for clip in clips:
        sums.update({f"media/{clip.clip_id}/{name}": digest
                     for name, digest in clip.media.items()})
    if (root / "splits").is_dir():
        sums.update({f"splits/{rel}": d for rel, d in checksum_tree(root / "splits").items()})
    return dict(sorted(sums.items()))


def dataset_card(config: Mapping[str, Any], report: dict[str, Any],
                 excluded: list[dict[str, Any]], checksums: dict[str, str]) -> dict[str, Any]:
    """The dataset.json object (docs/format.md "dataset.json"); a function of its arguments."""
    return {"format_version": FORMAT_VERSION, "pipeline_version": __version__,
            "config": dict(config), "build_report": report, "excluded": excluded,
            "checksums": checksums}


def _report(ws: Workspace, entries: list[SourceEntry], clips: list[ClipShard],
            excluded: list[dict[str, Any]], groups: Mapping[str, list[ClipShard]]) -> dict:
    """What the build folder holds for this manifest: per-stage counts, reasons, totals.

    Made from the work folder, not from one run, so it is the same for the same outputs (run
    timings are in reports/build-*.json).
    """
    clip_ids = [c["clip_id"] for e in entries
                for c in (ws.read_result("source", e.id, "segment") or {"meta": {}})["meta"]
                .get("clips", [])]
    counts, reasons = {}, Counter()
    for name in available_stages():
        unit = stages.get(name).unit
        items = [e.id for e in entries] if unit == "source" else clip_ids
        done = sum(ws.read_result(unit, i, name) is not None for i in items)
        failures = [f for i in items if (f := read_json(ws.failure_file(unit, i, name)))]
        reasons.update(f.get("reason", "unknown") for f in failures)
        counts[name] = {"done": done, "failed": len(failures)}
    seconds = sum(c.duration_s for c in clips)
    return {"sources": len(entries), "clips": len(clip_ids), "clips_in_corpus": len(clips),
            "clips_excluded": sum(x["clip_id"] is not None for x in excluded),
            "sources_excluded": sum(x["clip_id"] is None for x in excluded),
            "hours": round(seconds / 3600, 6),
            "splits": {split: len(members) for split, members in sorted(groups.items())},
            "stages": counts, "failures_by_reason": dict(sorted(reasons.items()))}


def _unchanged(root: Path, card: dict[str, Any], new_shards: Path) -> bool:
    """True when dataset.json already says ``card`` and shards/ and media/ hold those files."""
    old = read_json(root / "dataset.json")
    if old != card:
        return False
    listed = {rel for rel in card["checksums"] if rel.startswith(("shards/", "media/"))}
    present = {f"{top}/{rel}" for top in ("shards", "media")
               for rel in _files(root / top)}
    if listed != present:
        return False
    return all(sha256_file(root / "shards" / rel) == sha256_file(new_shards / rel)
               for rel in _files(new_shards))


def _files(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]


def _publish(root: Path, trees: Mapping[str, Path], card: dict[str, Any]) -> None:
    """Rename each new tree into place in the order given, then dataset.json (prepared first,
    so a full disk cannot stop it half-way); on an error every rename done is undone."""
    staged = stage_json(root / "dataset.json", card)
    done: list[tuple[Path, Path]] = []  # renames made, (from, to)
    try:
        for name, tmp in trees.items():
            final = root / name
            if final.exists():
                old = root / f".{name}.trash-{uuid.uuid4().hex[:12]}"
                final.rename(old)
                done.append((final, old))
            tmp.rename(final)
            done.append((tmp, final))
        os.replace(staged, root / "dataset.json")
        fsync_dir(root)
    except BaseException:
        for src, dst in reversed(done):
            with contextlib.suppress(OSError):
                dst.rename(src)
        with contextlib.suppress(OSError):
            staged.unlink(missing_ok=True)
        raise
    for _, dst in done:
        if ".trash-" in dst.name:
            shutil.rmtree(dst, ignore_errors=True)


def _remove_stale(root: Path) -> None:
    """Remove temporary trees left at the root by an assembly that was killed."""
    if not root.is_dir():
        return
    for path in root.iterdir():
        if _STALE.match(path.name):
            shutil.rmtree(path, ignore_errors=True)


def read_split_files(root: str | Path) -> dict[str, str]:
    """``splits/{split}.txt`` as clip id -> split (empty without split files).

    Raises:
        UsageError: a file's name is not a safe split name (it names a folder in shards/).
    """
    out = {}
    for path in sorted((Path(root) / "splits").glob("*.txt")):
        if (why := safe_name_problem(path.stem)) is not None:
            raise UsageError(f"{path}: split name {why}; rename the file")
        for line in path.read_text(encoding="utf-8").splitlines():
            clip_id = line.strip()
            if clip_id and not clip_id.startswith("#"):
                out.setdefault(clip_id, path.stem)
    return out


def _split_notes(split_of: Mapping[str, str], clips: Iterable[ClipShard]) -> list[str]:
    if not split_of:
        return []
    ids = {c.clip_id for c in clips}
    new, gone = sorted(ids - set(split_of)), sorted(set(split_of) - ids)
    notes = []
    if new:
        notes.append(f"{len(new)} clip(s) are in no splits/*.txt file and went to "
                     f"shards/{UNSPLIT}/; run `responsenet split` again")
    if gone:
        notes.append(f"splits/ lists {len(gone)} clip(s) that are not in the corpus; "
                     "run `responsenet split` again")
    return notes
