"""Write and read format v1 tracks shards (Parquet), one clip per row group.

The schema and the row record live in ``responsenet.schema``; docs/format.md describes the format.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from responsenet.schema import (
    FRAME_FIELDS,
    FRAME_WIDTHS,
    ShardFormatError,
    TrackRecord,
    check_format_version,
    frame_length_problems,
    tracks_schema,
)


def tracks_table(rows: Iterable[Mapping[str, Any] | TrackRecord]) -> pa.Table:
    """Build a tracks table (``tracks_schema()``) from rows, sorted by (clip_id, role).

    Args:
        rows: ``TrackRecord`` objects or row dicts with ``TrackRecord``'s fields (optional fields
            may be left out); matrices as numpy arrays or nested lists.

    Raises:
        ShardFormatError: a row lacks a required field, or a per-frame array has the wrong shape.
    """
    records = sorted((_as_record(i, row) for i, row in enumerate(rows)),
                     key=lambda r: (r.clip_id, r.role))
    for record in records:
        _check_frames(record)
    schema = tracks_schema()
    columns = [_column([getattr(r, field.name) for r in records], field) for field in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def write_tracks(rows: Iterable[Mapping[str, Any] | TrackRecord], path: str | Path,
                 row_group_size: int = 2) -> Path:
    """Write a Parquet tracks shard atomically (temporary file in the same folder, fsync, then
    ``os.replace``): a reader sees the old file or the whole new one, even after a crash.

    Args:
        rows: as for ``tracks_table``.
        path: destination ``.parquet`` file; its folder is created.
        row_group_size: most rows per row group, in whole clips (a clip never spans two row
            groups). The default 2 puts each clip in its own row group, so one clip is read
            without its neighbours.

    Returns:
        ``path``.
    """
    table, path = tracks_table(rows), Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with pq.ParquetWriter(tmp, table.schema, compression="zstd",
                              use_dictionary=True) as writer:
            for start, stop in _clip_groups(table.column("clip_id").to_pylist(), row_group_size):
                writer.write_table(table.slice(start, stop - start), row_group_size=stop - start)
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _fsync(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_tracks(path: str | Path, columns: Sequence[str] | None = None,
                clip_ids: Iterable[str] | None = None) -> pa.Table:
    """Read a tracks shard, checking its format version.

    Args:
        path: a ``tracks-*.parquet`` file.
        columns: fields to read (all when None).
        clip_ids: read only these clips (row groups of other clips are skipped).

    Raises:
        ShardFormatError: the file has no format version or another one than ``FORMAT_VERSION``.
    """
    check_format_version(pq.read_schema(path), where=str(path))
    filters = None if clip_ids is None else [("clip_id", "in", sorted(clip_ids))]
    return pq.read_table(path, columns=list(columns) if columns else None, filters=filters)


def read_track_records(path: str | Path) -> list[TrackRecord]:
    """Read every row of a tracks shard as ``TrackRecord`` objects."""
    return [TrackRecord.from_dict(row) for row in read_tracks(path).to_pylist()]


def _as_record(index: int, row: Mapping[str, Any] | TrackRecord) -> TrackRecord:
    if isinstance(row, TrackRecord):
        return row
    try:
        return TrackRecord.from_dict(row)
    except (TypeError, KeyError, ValueError) as e:
        raise ShardFormatError(
            f"row {index} (clip {row.get('clip_id')} role {row.get('role')}): {e}") from e


def _check_frames(record: TrackRecord) -> None:
    where = f"clip {record.clip_id} role {record.role}"
    for name, width in FRAME_WIDTHS.items():
        shape = getattr(record, name).shape
        if len(shape) != 2 or shape[1] != width:
            raise ShardFormatError(
                f"{where}: {name} has shape {shape}, expected (n_frames, {width})")
    lengths = {name: len(getattr(record, name)) for name in FRAME_FIELDS}
    problems = frame_length_problems(record.n_frames, lengths)
    if problems:
        raise ShardFormatError(f"{where}: " + "; ".join(problems))


def _column(values: list[Any], field: pa.Field) -> pa.Array:
    """One table column; float matrices go through numpy in one copy instead of Python lists."""
    if field.name not in FRAME_WIDTHS:
        return pa.array(values, type=field.type)
    width = FRAME_WIDTHS[field.name]
    offsets = np.concatenate([[0], np.cumsum([len(v) for v in values])]).astype(np.int32)
    flat = np.concatenate([v.reshape(-1) for v in values]) if values else np.zeros(0, np.float32)
    frames = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), width)
    return pa.ListArray.from_arrays(pa.array(offsets), frames).cast(field.type)


def _clip_groups(clip_ids: list[str], row_group_size: int) -> list[tuple[int, int]]:
    """(start, stop) row ranges of whole clips, merged while a range stays <= row_group_size."""
    clips: list[list[int]] = []
    for i, clip_id in enumerate(clip_ids):
        if clips and clip_ids[clips[-1][0]] == clip_id:
            clips[-1][1] = i + 1
        else:
            clips.append([i, i + 1])
    groups: list[tuple[int, int]] = []
    for start, stop in clips:
        if groups and stop - groups[-1][0] <= row_group_size:
            groups[-1] = (groups[-1][0], stop)
        else:
            groups.append((start, stop))
    return groups


def string_columns(schema: pa.Schema) -> list[str]:
    """Parquet paths of the string leaf columns (``chrono.list.element``, ``clip_id``, ...).

    Only these are dictionary-encoded: the repeated Chrono-Text tokens and ids shrink, while
    the float arrays (blendshapes, pose), which hardly repeat, are written plainly (about 3x
    faster and a third smaller than dictionary-encoding every column).
    """
    def leaves(path: str, type_: pa.DataType) -> list[str]:
        if pa.types.is_string(type_) or pa.types.is_large_string(type_):
            return [path]
        if pa.types.is_list(type_) or pa.types.is_fixed_size_list(type_):
            return leaves(f"{path}.list.element", type_.value_type)
        if pa.types.is_struct(type_):
            return [p for i in range(type_.num_fields)
                    for p in leaves(f"{path}.{type_.field(i).name}", type_.field(i).type)]
        return []

    return [p for f in schema for p in leaves(f.name, f.type)]
