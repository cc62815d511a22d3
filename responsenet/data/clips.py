"""One clip's per-frame arrays, read from its row group once and kept as numpy arrays.

``load_clip`` reads the two rows (speaker, listener) of one clip with only the columns the chosen
modalities need and turns the Arrow lists into flat numpy arrays; ``ClipStore`` keeps an LRU of
loaded clips (one store per process: DataLoader workers each get their own copy).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from responsenet.chrono import FRAME_EPS
from responsenet.data.index import ClipRef
from responsenet.data.vocab import ChronoVocab
from responsenet.schema import FRAME_WIDTHS, ROLES, ShardFormatError

#: Face features per frame: 52 blendshapes then 12 pose values.
FACE_DIM = FRAME_WIDTHS["blendshapes"] + FRAME_WIDTHS["pose"]


@dataclass
class Words:
    """A track's words as columns (W words, in time order).

    Attributes:
        text: str [W].
        start, end: float64 [W], seconds from the clip start.
        prob: float64 [W], NaN where the shard holds null.
        onset_frame: int64 [W], frame holding ``start`` (``floor(start * fps + FRAME_EPS)``).
    """

    text: list[str]
    start: np.ndarray
    end: np.ndarray
    prob: np.ndarray
    onset_frame: np.ndarray

    def in_window(self, start_frame: int, n_frames: int, fps: float) -> list[dict]:
        """Words whose onset frame lies in ``[start_frame, start_frame + n_frames)``, as dicts
        ``{text, start, end, prob}`` with times in seconds from the window start (``end`` may
        pass the window end; ``prob`` None where unknown)."""
        lo, hi = np.searchsorted(self.onset_frame, [start_frame, start_frame + n_frames])
        offset = start_frame / fps
        return [{"text": self.text[i], "start": float(self.start[i] - offset),
                 "end": float(self.end[i] - offset),
                 "prob": None if np.isnan(self.prob[i]) else float(self.prob[i])}
                for i in range(lo, hi)]


@dataclass
class TrackData:
    """One track's arrays (T frames); fields are None when their modality was not loaded.

    Attributes:
        vad: bool [T], the participant speaks.
        face: float32 [T, 64], blendshapes (52) then pose (12).
        face_mask: bool [T], ``face_present``.
        chrono: int64 [T], Chrono-Text token ids.
        words: the track's words.
        audio_path, video_path: absolute media paths, None when the row has none.
    """

    vad: np.ndarray
    face: np.ndarray | None = None
    face_mask: np.ndarray | None = None
    chrono: np.ndarray | None = None
    words: Words | None = None
    audio_path: Path | None = None
    video_path: Path | None = None


@dataclass
class ClipData:
    ref: ClipRef
    tracks: dict[str, TrackData]


def columns_for(modalities: frozenset[str]) -> list[str]:
    """Shard columns needed to serve ``modalities``."""
    columns = ["clip_id", "role", "vad", "audio_path", "video_path"]
    if "face" in modalities:
        columns += ["blendshapes", "pose", "face_present"]
    if "chrono" in modalities:
        columns.append("chrono")
    if "words" in modalities:
        columns.append("words")
    return columns


def load_clip(parquet: pq.ParquetFile, ref: ClipRef, root: Path, modalities: frozenset[str],
              vocab: ChronoVocab | None) -> ClipData:
    """Read one clip's two rows and convert them to numpy arrays.

    Raises:
        ShardFormatError: a per-frame array's length is not the clip's ``n_frames``.
    """
    table = parquet.read_row_groups(list(ref.row_groups), columns=columns_for(modalities),
                                    use_threads=False)
    clip_ids = table.column("clip_id").to_pylist()
    roles = table.column("role").to_pylist()
    rows = {(c, r): i for i, (c, r) in enumerate(zip(clip_ids, roles))}
    tracks = {}
    for role in ROLES:
        if (ref.clip_id, role) not in rows:
            raise ShardFormatError(f"{ref.shard}: clip {ref.clip_id} has no {role} row in row "
                                   f"groups {list(ref.row_groups)}; the shard changed since it "
                                   "was indexed, create the dataset again")
        tracks[role] = _track(table, rows[(ref.clip_id, role)], ref, root, modalities, vocab)
    return ClipData(ref, tracks)


def _track(table: pa.Table, row: int, ref: ClipRef, root: Path, modalities: frozenset[str],
           vocab: ChronoVocab | None) -> TrackData:
    where = f"{ref.shard}: clip {ref.clip_id} role {table.column('role')[row].as_py()}"
    track = TrackData(vad=_bools(table, "vad", row, ref.n_frames, where))
    for kind in ("audio", "video"):
        rel = table.column(f"{kind}_path")[row].as_py()
        setattr(track, f"{kind}_path", None if rel is None else root / rel)
    if "face" in modalities:
        track.face = np.empty((ref.n_frames, FACE_DIM), np.float32)
        width = FRAME_WIDTHS["blendshapes"]
        track.face[:, :width] = _matrix(table, "blendshapes", row, ref.n_frames, where)
        track.face[:, width:] = _matrix(table, "pose", row, ref.n_frames, where)
        track.face_mask = _bools(table, "face_present", row, ref.n_frames, where)
    if "chrono" in modalities:
        tokens = _row_values(table, "chrono", row, ref.n_frames, where)
        track.chrono = (vocab or ChronoVocab()).encode(tokens)
    if "words" in modalities:
        track.words = _words(table.column("words")[row].as_py() or [], ref.fps)
    return track


def _row_values(table: pa.Table, name: str, row: int, n_frames: int, where: str) -> pa.Array:
    """The list cell ``table[name][row]`` as an Arrow array of its values (zero-copy slice)."""
    column = table.column(name)
    column = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    offsets = column.offsets.to_numpy()
    start, stop = int(offsets[row]), int(offsets[row + 1])
    if stop - start != n_frames:
        raise ShardFormatError(f"{where}: {name} has {stop - start} frames, n_frames is "
                               f"{n_frames}; rebuild the shard stage")
    return column.values.slice(start, stop - start)


def _matrix(table: pa.Table, name: str, row: int, n_frames: int, where: str) -> np.ndarray:
    values = _row_values(table, name, row, n_frames, where)
    width = FRAME_WIDTHS[name]
    return values.flatten().to_numpy(zero_copy_only=False).reshape(n_frames, width)


def _bools(table: pa.Table, name: str, row: int, n_frames: int, where: str) -> np.ndarray:
    return _row_values(table, name, row, n_frames, where).to_numpy(zero_copy_only=False)


def _words(words: list[dict], fps: float) -> Words:
    start = np.array([w["start"] for w in words], np.float64)
    prob = [np.nan if w.get("prob") is None else w["prob"] for w in words]
    order = np.argsort(start, kind="stable")
    start = start[order]
    return Words(text=[words[i]["text"] for i in order], start=start,
                 end=np.array([w["end"] for w in words], np.float64)[order],
                 prob=np.array(prob, np.float64)[order],
                 onset_frame=np.floor(start * fps + FRAME_EPS).astype(np.int64))


class ClipStore:
    """Loads clips for one process, keeping the ``cache_clips`` most recently used ones.

    Open Parquet files and cached clips are dropped when the store is pickled (DataLoader
    workers under ``spawn``) or used in a forked child, so processes never share file handles.
    """

    def __init__(self, root: str | Path, modalities: frozenset[str],
                 vocab: ChronoVocab | None, cache_clips: int = 8):
        self.root, self.modalities, self.vocab = Path(root), modalities, vocab
        self.cache_clips = cache_clips
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._files: OrderedDict[Path, pq.ParquetFile] = OrderedDict()
        self._clips: OrderedDict[tuple[Path, str], ClipData] = OrderedDict()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        for key in ("_files", "_clips", "_pid"):
            state.pop(key)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset()

    def load(self, ref: ClipRef) -> ClipData:
        """Read ``ref`` from its shard (no caching of the clip; the file handle is kept)."""
        if self._pid != os.getpid():
            self._reset()
        parquet = self._files.pop(ref.shard, None) or pq.ParquetFile(ref.shard)
        self._files[ref.shard] = parquet
        while len(self._files) > 16:
            self._files.popitem(last=False)
        return load_clip(parquet, ref, self.root, self.modalities, self.vocab)

    def get(self, ref: ClipRef) -> ClipData:
        """``ref``'s data from the LRU cache, loading it on a miss."""
        key = (ref.shard, ref.clip_id)
        if self._pid == os.getpid() and key in self._clips:
            self._clips.move_to_end(key)
            return self._clips[key]
        clip = self.load(ref)
        if self.cache_clips > 0:
            self._clips[key] = clip
            while len(self._clips) > self.cache_clips:
                self._clips.popitem(last=False)
        return clip
