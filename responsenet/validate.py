"""Check a built corpus against format v1: dataset.json, shards, media, checksums and splits.

``validate_root`` returns readable problems, each naming the file, clip, role and field, e.g.
``shards/train/tracks-00000.parquet: clip abc_000 role listener: blendshapes has 99 frames,
n_frames is 100``; an empty list means the corpus is valid. Split files are optional:
``splits/{split}.txt``, one clip id per line (blank lines and lines starting with ``#`` are
ignored). When they exist they must agree with the shards, and splits must then also be
disjoint by participant_id.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from responsenet import FORMAT_VERSION
from responsenet.hashing import sha256_file
from responsenet.manifest import is_safe_name
from responsenet.schema import (
    FRAME_FIELDS,
    MEDIA_KINDS,
    PANELS,
    ROLES,
    format_version_of,
    frame_length_problems,
    tracks_schema,
)

#: Keys every dataset.json has (``build_report`` is recommended, not required).
DATASET_KEYS = ("format_version", "pipeline_version", "config", "checksums")
#: Tolerance on times, seconds.
EPS_S = 1e-6
_REQUIRED = ("clip_id", "role", "split", "source_id", "fps", "n_frames", "duration_s")
_ROW_COLUMNS = (*_REQUIRED, "panel", "participant_id", "words",
                *[f"{kind}_{part}" for kind in MEDIA_KINDS for part in ("path", "sha256")])


@dataclass(frozen=True)
class _Row:
    """What the cross-shard checks need of one row."""

    shard: str
    row_group: int
    clip_id: str | None
    role: str | None
    split: str | None
    participant_id: str | None
    n_frames: int | None


class _Hashes:
    """SHA-256 of files under the root, each file hashed once (media and checksums share them)."""

    def __init__(self, root: Path):
        self.root, self._cache = root, {}

    def of(self, rel: str) -> str | None:
        """Hex SHA-256 of ``root/rel``, or None when it does not exist."""
        path = self.root / rel
        if rel not in self._cache:
            self._cache[rel] = sha256_file(path) if path.is_file() else None
        return self._cache[rel]


def validate_root(root: str | Path) -> list[str]:
    """Return the problems of the corpus at ``root``; empty when it follows format v1.

    Checks dataset.json (keys, format version, checksums), every ``shards/**/*.parquet``
    (schema, per-frame lengths, word times, media existence and sha256, split folder), each
    clip (one speaker and one listener row, (clip_id, role) unique, one split, one row group)
    and the splits (``splits/*.txt`` agree with the shards; disjoint by participant).
    """
    root = Path(root)
    hashes = _Hashes(root)
    problems = _dataset_json_problems(root, hashes)
    shard_paths = sorted(p for p in (root / "shards").rglob("*.parquet")
                         if not p.name.startswith("."))
    if not shard_paths:
        problems.append("shards/: no Parquet shards; expected shards/{split}/tracks-00000.parquet")
    rows: list[_Row] = []
    for path in shard_paths:
        problems += _shard_problems(root, path, hashes, rows)
    problems += _clip_problems(rows)
    problems += _split_file_problems(root, rows)
    return problems


def schema_problems(schema: pa.Schema) -> list[str]:
    """Differences between ``schema`` and ``tracks_schema()``: missing, extra, retyped fields."""
    expected = tracks_schema()
    actual = {field.name: field.type for field in schema}
    problems = [f"field {name} is missing" for name in expected.names if name not in actual]
    problems += [f"field {name} is not a format v{FORMAT_VERSION} field"
                 for name in actual if name not in expected.names]
    for field in expected:
        if field.name in actual and _plain(actual[field.name]) != _plain(field.type):
            problems.append(f"field {field.name} has type {actual[field.name]}, "
                            f"expected {field.type}")
    version = format_version_of(schema)
    if version != FORMAT_VERSION:
        problems.append(f"schema metadata format version is {version}, expected {FORMAT_VERSION}")
    return problems


def word_time_problems(words: list[dict[str, Any]], duration_s: float) -> list[str]:
    """Words whose times are not ``0 <= start <= end <= duration_s`` (seconds)."""
    problems = []
    for i, word in enumerate(words):
        label, start, end = f"words[{i}] {word['text']!r}", word["start"], word["end"]
        if start is None or end is None:
            problems.append(f"{label} has no start or end time")
        elif start > end + EPS_S:
            problems.append(f"{label} starts at {start:.3f} s, after its end {end:.3f} s")
        elif start < -EPS_S:
            problems.append(f"{label} starts at {start:.3f} s, before the clip start 0 s")
        elif end > duration_s + EPS_S:
            problems.append(f"{label} ends at {end:.3f} s, after duration_s {duration_s:.3f}")
    return problems


def _dataset_json_problems(root: Path, hashes: _Hashes) -> list[str]:
    path = root / "dataset.json"
    if not path.is_file():
        return ["dataset.json: missing; a built corpus has {root}/dataset.json (shard stage)"]
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        return [f"dataset.json: not valid JSON ({e})"]
    if not isinstance(card, dict):
        return [f"dataset.json: expected a JSON object, found {type(card).__name__}"]
    problems = [f"dataset.json: missing key '{key}'" for key in DATASET_KEYS if key not in card]
    version = card.get("format_version", FORMAT_VERSION)
    if type(version) is not int or version != FORMAT_VERSION:
        problems.append(f"dataset.json: format_version is {version!r}, expected {FORMAT_VERSION}")
    checksums = card.get("checksums", {})
    if not isinstance(checksums, dict):
        return [*problems, "dataset.json: checksums must map relative paths to sha256 hex"]
    for rel, recorded in sorted(checksums.items()):
        problem = _file_problem(rel, recorded, hashes)
        if problem:
            problems.append(f"dataset.json: checksums: {problem}")
    return problems


def _file_problem(rel: Any, recorded: Any, hashes: _Hashes) -> str | None:
    """Why ``rel`` (relative to the root) does not exist or not match ``recorded``, or None."""
    if not isinstance(rel, str) or not _inside_root(rel):
        return f"{rel!r} is not a relative path inside the corpus root"
    actual = hashes.of(rel)
    if actual is None:
        return f"{rel} does not exist"
    if actual != recorded:
        return f"{rel} has sha256 {actual[:12]}..., recorded {str(recorded)[:12]}..."
    return None


def _inside_root(rel: str) -> bool:
    path = PurePosixPath(rel)
    return bool(rel) and not path.is_absolute() and ".." not in path.parts and "\\" not in rel


def _shard_problems(root: Path, path: Path, hashes: _Hashes, rows: list[_Row]) -> list[str]:
    rel = path.relative_to(root).as_posix()
    parts = PurePosixPath(rel).parts
    folder = parts[1] if len(parts) >= 3 else None
    problems = [] if folder else [
        f"{rel}: not in a split folder; shards live in shards/{{split}}/"]
    try:
        parquet = pq.ParquetFile(path)
        schema = [f"{rel}: {p}" for p in schema_problems(parquet.schema_arrow)]
        problems[:0] = schema
        for group in range(parquet.num_row_groups):
            table = parquet.read_row_group(group, columns=None if not schema else [
                name for name in _ROW_COLUMNS if name in parquet.schema_arrow.names])
            problems += _group_problems(rel, group, table, not schema, hashes, folder, rows)
    except (pa.ArrowException, OSError) as e:
        problems.append(f"{rel}: not a readable Parquet file ({e})")
    return problems


def _group_problems(rel: str, group: int, table: pa.Table, complete: bool, hashes: _Hashes,
                    folder: str | None, rows: list[_Row]) -> list[str]:
    """Record one row group's rows in ``rows``; check them fully when the schema matched."""
    values = {name: table.column(name).to_pylist()
              for name in _ROW_COLUMNS if name in table.column_names}
    lengths = {name: pc.list_value_length(table.column(name)).to_pylist()
               for name in FRAME_FIELDS} if complete else {}
    problems = []
    for i in range(table.num_rows):
        row = {name: column[i] for name, column in values.items()}
        rows.append(_Row(rel, group, row.get("clip_id"), row.get("role"), row.get("split"),
                         row.get("participant_id"), row.get("n_frames")))
        if complete:
            frame_lengths = {name: lengths[name][i] for name in FRAME_FIELDS}
            problems += _row_problems(rel, row, frame_lengths, hashes, folder)
    return problems


def _row_problems(rel: str, row: dict[str, Any], lengths: dict[str, int | None],
                  hashes: _Hashes, folder: str | None) -> list[str]:
    where = f"{rel}: clip {row['clip_id']} role {row['role']}"
    nulls = [f"{where}: {name} is null" for name in _REQUIRED if row[name] is None]
    if nulls:
        return nulls
    problems = [f"{where}: {name} {row[name]!r} is not a safe file name (1-128 ASCII letters, "
                "digits, '.', '_', '-'; no '/' or '..'): paths are made of it"
                for name in ("clip_id", "split") if not is_safe_name(row[name])]
    if row["role"] not in ROLES:
        problems.append(f"{where}: role must be one of {', '.join(ROLES)}")
    if row["panel"] is not None and row["panel"] not in PANELS:
        problems.append(f"{where}: panel {row['panel']!r} is not one of {', '.join(PANELS)}")
    if folder is not None and row["split"] != folder:
        problems.append(f"{where}: split is {row['split']!r} but the shard is in shards/{folder}/")
    problems += [f"{where}: {p}" for p in frame_length_problems(row["n_frames"], lengths)]
    problems += [f"{where}: {p}" for p in _timing_problems(row)]
    problems += [f"{where}: {p}" for p in word_time_problems(row["words"] or [], row["duration_s"])]
    for kind in MEDIA_KINDS:
        media, recorded = row[f"{kind}_path"], row[f"{kind}_sha256"]
        problem = None if media is None else _file_problem(media, recorded, hashes)
        if problem:
            problems.append(f"{where}: {kind}_path {problem}")
    return problems


def _timing_problems(row: dict[str, Any]) -> list[str]:
    fps, n_frames, duration = row["fps"], row["n_frames"], row["duration_s"]
    if fps <= 0 or n_frames < 0:
        return [f"fps is {fps} and n_frames {n_frames}; expected fps > 0 and n_frames >= 0"]
    if abs(duration - n_frames / fps) <= 1 / fps + EPS_S:
        return []
    return [f"duration_s is {duration:.3f}, n_frames / fps is {n_frames / fps:.3f} (> 1 frame off)"]


def _clip_problems(rows: list[_Row]) -> list[str]:
    by_clip: dict[str, list[_Row]] = defaultdict(list)
    for row in rows:
        if row.clip_id is not None:
            by_clip[row.clip_id].append(row)
    problems = []
    for clip_id, clip_rows in sorted(by_clip.items()):
        by_role: dict[str | None, list[_Row]] = defaultdict(list)
        for row in clip_rows:
            by_role[row.role].append(row)
        for role, same in sorted(by_role.items(), key=lambda item: str(item[0])):
            if len(same) > 1:
                shards = ", ".join(row.shard for row in same)
                problems.append(f"clip {clip_id} role {role}: {len(same)} rows ({shards}); "
                                "(clip_id, role) must be unique")
        problems += [f"clip {clip_id}: no {role} row; a clip has one speaker and one listener row"
                     for role in ROLES if role not in by_role]
        problems += _clip_consistency(clip_id, clip_rows)
    return problems


def _clip_consistency(clip_id: str, rows: list[_Row]) -> list[str]:
    problems = []
    splits = sorted({row.split for row in rows if row.split is not None})
    if len(splits) > 1:
        problems.append(f"clip {clip_id}: in splits {' and '.join(splits)}; "
                        "a clip belongs to one split")
    if len({row.n_frames for row in rows}) > 1:
        counts = ", ".join(f"{row.role} {row.n_frames}" for row in rows)
        problems.append(f"clip {clip_id}: tracks disagree on n_frames ({counts})")
    places = {(row.shard, row.row_group) for row in rows}
    if len({shard for shard, _ in places}) < len(places):
        problems.append(f"clip {clip_id}: spread over several row groups of one shard; "
                        "write shards with responsenet.shards.write_tracks")
    return problems


def _split_file_problems(root: Path, rows: list[_Row]) -> list[str]:
    files = sorted((root / "splits").glob("*.txt"))
    if not files:
        return []
    problems, listed = [], {}
    for path in files:
        for clip_id in _read_ids(path):
            if clip_id in listed:
                problems.append(f"clip {clip_id}: listed in splits/{listed[clip_id]}.txt "
                                f"and splits/{path.stem}.txt")
            else:
                listed[clip_id] = path.stem
    shard_splits: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        if row.clip_id is not None and row.split is not None:
            shard_splits[row.clip_id].add(row.split)
    for clip_id, split in sorted(listed.items()):
        if clip_id not in shard_splits:
            problems.append(f"splits/{split}.txt: clip {clip_id} has no rows in shards/")
        elif shard_splits[clip_id] != {split}:
            problems.append(f"clip {clip_id}: listed in splits/{split}.txt but its rows are in "
                            f"split {', '.join(sorted(shard_splits[clip_id]))}")
    problems += [f"clip {clip_id}: in shards but in no splits/*.txt file"
                 for clip_id in sorted(set(shard_splits) - set(listed))]
    return problems + _participant_problems(rows)


def _participant_problems(rows: list[_Row]) -> list[str]:
    clips: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for row in rows:
        if row.participant_id is not None and row.split is not None:
            clips[row.participant_id][row.split].add(str(row.clip_id))
    problems = []
    for participant, by_split in sorted(clips.items()):
        if len(by_split) > 1:
            where = " and ".join(f"{split} ({', '.join(sorted(ids))})"
                                 for split, ids in sorted(by_split.items()))
            problems.append(f"participant {participant}: in splits {where}; "
                            "splits must be disjoint by participant")
    return problems


def _read_ids(path: Path) -> list[str]:
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _plain(type_: pa.DataType) -> pa.DataType:
    """``type_`` with nested field names and nullability dropped, for comparing schemas."""
    if pa.types.is_fixed_size_list(type_):
        return pa.list_(_plain(type_.value_type), type_.list_size)
    if pa.types.is_list(type_):
        return pa.list_(_plain(type_.value_type))
    if pa.types.is_struct(type_):
        return pa.struct([(type_.field(i).name, _plain(type_.field(i).type))
                          for i in range(type_.num_fields)])
    return type_
