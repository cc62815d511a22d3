"""Which clips a corpus split holds, where each one lives in the shards, and its windows.

Reads only the small clip columns (``clip_id``, ``role``, ``n_frames``, ``fps``) of each shard;
the per-frame arrays are read later, one clip (one row group) at a time, by ``clips.ClipStore``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from responsenet.errors import UsageError
from responsenet.schema import ROLES, ShardFormatError, check_format_version

_INDEX_COLUMNS = ["clip_id", "role", "n_frames", "fps"]


@dataclass(frozen=True)
class ClipRef:
    """Where one clip's two rows live.

    Attributes:
        clip_id: the clip id.
        split: the split folder its shard lives in.
        shard: path of its ``tracks-*.parquet`` file.
        row_groups: indices of the row groups holding its rows (one in a format v1 corpus).
        n_frames: T, frames of both tracks.
        fps: frames per second.
    """

    clip_id: str
    split: str
    shard: Path
    row_groups: tuple[int, ...]
    n_frames: int
    fps: float


def split_names(root: str | Path) -> list[str]:
    """Split folders under ``{root}/shards`` that hold at least one shard, sorted."""
    shards = Path(root) / "shards"
    if not shards.is_dir():
        raise UsageError(f"{root}: no shards/ folder; expected a corpus built by "
                         "`responsenet build` (see docs/format.md)")
    return sorted(p.name for p in shards.iterdir() if p.is_dir() and any(p.glob("*.parquet")))


def shard_paths(root: str | Path, split: str | None = None) -> list[Path]:
    """Shard files of one split (or of every split when None), in (split, name) order.

    Raises:
        UsageError: the corpus has no shards, or no shards for ``split`` (names the splits).
    """
    names = split_names(root)
    if split is not None and split not in names:
        close = difflib.get_close_matches(split, names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UsageError(f"{root}: no shards for split {split!r}.{hint} "
                         f"Available splits: {', '.join(names) or 'none'}")
    if not names:
        raise UsageError(f"{root}/shards holds no tracks-*.parquet files; build the corpus first")
    base = Path(root) / "shards"
    return [p for name in ([split] if split else names)
            for p in sorted((base / name).glob("tracks-*.parquet"))]


def scan_clips(root: str | Path, split: str | None = None) -> list[ClipRef]:
    """Every clip of a split (all splits when None), ordered by (split, shard, row group).

    Raises:
        UsageError: see ``shard_paths``.
        ShardFormatError: a shard has another format version, or a clip lacks one of its two
            tracks or its tracks disagree on ``n_frames``/``fps``.
    """
    return [ref for path in shard_paths(root, split) for ref in _scan_shard(path)]


def _scan_shard(path: Path) -> list[ClipRef]:
    parquet = pq.ParquetFile(path)
    check_format_version(parquet.schema_arrow, where=str(path))
    rows = parquet.read(columns=_INDEX_COLUMNS).to_pydict()
    group_of_row = np.repeat(np.arange(parquet.num_row_groups),
                             [parquet.metadata.row_group(i).num_rows
                              for i in range(parquet.num_row_groups)])
    clips: dict[str, dict] = {}
    for i, clip_id in enumerate(rows["clip_id"]):
        clip = clips.setdefault(clip_id, {"roles": [], "groups": [], "frames": set(), "fps": set()})
        clip["roles"].append(rows["role"][i])
        clip["groups"].append(int(group_of_row[i]))
        clip["frames"].add(int(rows["n_frames"][i]))
        clip["fps"].add(float(rows["fps"][i]))
    refs = []
    for clip_id, clip in clips.items():
        where = f"{path}: clip {clip_id}"
        if sorted(clip["roles"]) != sorted(ROLES):
            raise ShardFormatError(f"{where} has tracks {sorted(clip['roles'])}, expected one "
                                   f"row per role {list(ROLES)}; rebuild the shard stage")
        if len(clip["frames"]) != 1 or len(clip["fps"]) != 1:
            raise ShardFormatError(f"{where}: its tracks disagree on n_frames {clip['frames']} "
                                   f"or fps {clip['fps']}; both tracks must be frame-aligned")
        refs.append(ClipRef(clip_id, path.parent.name, path, tuple(sorted(set(clip["groups"]))),
                            clip["frames"].pop(), clip["fps"].pop()))
    return sorted(refs, key=lambda r: (r.row_groups, r.clip_id))


def window_starts(n_frames: int, window_frames: int, stride_frames: int | None = None,
                  drop_last: bool = False) -> list[int]:
    """First frames of a clip's windows.

    Windows start at ``0, stride, 2 * stride, ...`` and stop at the first window that reaches
    the clip's end, so every frame is covered when ``stride <= window``. The last window may be
    shorter than ``window_frames`` (it ends at ``n_frames``); ``drop_last`` keeps only full
    windows, so a clip shorter than one window yields none.

    Args:
        n_frames: T, the clip's frames.
        window_frames: frames per window (> 0).
        stride_frames: frames between window starts (> 0); None means ``window_frames``.
        drop_last: drop windows shorter than ``window_frames``.

    Returns:
        Start frames in increasing order; window k covers ``[start_k, min(start_k + window, T))``.
    """
    stride = window_frames if stride_frames is None else stride_frames
    if window_frames <= 0 or stride <= 0:
        raise ValueError(f"window_frames and stride_frames must be > 0, got {window_frames}, "
                         f"{stride}")
    if drop_last:
        return list(range(0, n_frames - window_frames + 1, stride))
    starts: list[int] = []
    start = 0
    while start < n_frames:
        starts.append(start)
        if start + window_frames >= n_frames:
            break
        start += stride
    return starts
