"""Export a corpus in the public ResponseNet folder layout, with Croissant metadata.

Layout (the released ResponseNet on the Hugging Face Hub has ``{split}/{audio,text,vector,video}/
{listener,speaker}/`` with one file per clip and role; file names inside are not documented, so we
name every file by its clip id, which pairs the same clip across modalities and roles):

    OUT/{split}/video/{role}/{clip_id}.mp4     face video (copied from media/)
    OUT/{split}/audio/{role}/{clip_id}.wav     separated 16 kHz speech (copied from media/)
    OUT/{split}/text/{role}/{clip_id}.json     {"text": transcript, "words", "chrono", ...}
    OUT/{split}/vector/{role}/{clip_id}.npy    float32 [T, 64]: 52 blendshapes, then 12 pose
    OUT/metadata.csv                           one row per track: ids, fields, relative paths
    OUT/croissant.json                         Croissant 1.0 JSON-LD: files with sha256, fields

The text JSON's top-level ``"text"`` is what OmniResponse's text-metric scripts read; vector
folders hold only ``[T, C]`` ``.npy`` files, as its FD script expects; video and audio of a clip
share a file stem, as its audio-video muxing script expects. The build is written into a hidden
temporary folder beside OUT and renamed into place when complete.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from responsenet import FORMAT_VERSION
from responsenet.errors import UsageError
from responsenet.hashing import sha256_file
from responsenet.manifest import is_safe_name
from responsenet.schema import (
    BLENDSHAPE_NAMES,
    FRAME_WIDTHS,
    POSE_FIELDS,
    QUALITY_FIELDS,
    check_format_version,
)

LAYOUTS: tuple[str, ...] = ("responsenet",)
MODALITIES: tuple[str, ...] = ("video", "audio", "text", "vector")
MEDIA_MODES: tuple[str, ...] = ("copy", "hardlink")
#: metadata.csv columns before the quality fields and the file paths.
TRACK_COLUMNS: tuple[str, ...] = (
    "split", "clip_id", "role", "participant_id", "source_id", "panel", "fps", "n_frames",
    "duration_s", "topic", "language", "license", "source_url")
CSV_COLUMNS: tuple[str, ...] = (*TRACK_COLUMNS, *QUALITY_FIELDS, *MODALITIES)
_EXTENSIONS = {"video": "mp4", "audio": "wav", "text": "json", "vector": "npy"}


@dataclasses.dataclass
class ExportReport:
    """What ``export_corpus`` wrote: the folder, file counts per modality, skipped media."""

    out: Path
    tracks: int
    files: dict[str, int]
    missing_media: list[str]


def export_corpus(root: str | Path, out: str | Path, layout: str = "responsenet",
                  media: str = "copy", name: str | None = None,
                  overwrite: bool = False) -> ExportReport:
    """Write the corpus at ``root`` in ``layout`` into ``out``, plus metadata.csv/croissant.json.

    Args:
        root: corpus root (shards/, media/).
        out: destination folder; must not exist or be empty unless ``overwrite``.
        layout: ``responsenet`` (the only layout so far).
        media: ``copy`` the media files, or ``hardlink`` them (copies across file systems).
        name: dataset name in croissant.json; defaults to the corpus folder name.
        overwrite: replace a non-empty ``out``.

    Raises:
        UsageError: unknown layout or media mode, no shards, or ``out`` is not empty.
        ShardFormatError: a shard is not a format v1 tracks shard.
    """
    root, out = Path(root), Path(out)
    _check_args(root, out, layout, media, overwrite)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent))
    try:
        rows, missing = [], []
        for path in _shard_paths(root):
            parquet = pq.ParquetFile(path)
            check_format_version(parquet.schema_arrow, where=path.relative_to(root).as_posix())
            for group in range(parquet.num_row_groups):
                table = parquet.read_row_group(group)
                for i in range(table.num_rows):
                    rows.append(_export_track(root, tmp, table, i, media, missing))
        rows.sort(key=lambda r: (r["split"], r["clip_id"], r["role"]))
        _write_csv(tmp / "metadata.csv", rows)
        card = croissant_metadata(tmp, name or root.resolve().name, rows, _dataset(root))
        (tmp / "croissant.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
        _move_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    files = Counter(m for r in rows for m in MODALITIES if r[m])
    return ExportReport(out, len(rows), {m: files[m] for m in MODALITIES}, missing)


def _check_args(root: Path, out: Path, layout: str, media: str, overwrite: bool) -> None:
    if layout not in LAYOUTS:
        raise UsageError(f"unknown layout {layout!r}; available: {', '.join(LAYOUTS)}")
    if media not in MEDIA_MODES:
        raise UsageError(f"--media must be one of {', '.join(MEDIA_MODES)}, got {media!r}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise UsageError(f"{out} exists and is not empty; choose a new --out folder or pass "
                         "--overwrite to replace it")
    if out.resolve() == root.resolve() or root.resolve() in out.resolve().parents:
        raise UsageError(f"--out {out} is inside the corpus {root}; export to another folder")
    if not _shard_paths(root):
        raise UsageError(f"{root}: no shards; expected shards/{{split}}/tracks-00000.parquet "
                         "(a corpus built by 'responsenet build')")
    out.parent.mkdir(parents=True, exist_ok=True)


def _shard_paths(root: Path) -> list[Path]:
    return sorted(p for p in (root / "shards").rglob("*.parquet")
                  if not any(part.startswith(".") for part in p.relative_to(root).parts))


def _dataset(root: Path) -> dict[str, Any]:
    try:
        card = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return card if isinstance(card, dict) else {}


def track_vector(table: pa.Table, i: int) -> np.ndarray:
    """Row ``i``'s face features: float32 [T, 64] = blendshapes [T, 52] then pose [T, 12]."""
    parts = []
    for name, width in FRAME_WIDTHS.items():
        cell = table.column(name)[i].values  # the row's frames: fixed_size_list<float32, width>
        flat = cell.flatten().to_numpy(zero_copy_only=False)
        parts.append(np.asarray(flat, dtype=np.float32).reshape(-1, width))
    return np.concatenate(parts, axis=1)


def _export_track(root: Path, tmp: Path, table: pa.Table, i: int, media: str,
                  missing: list[str]) -> dict[str, Any]:
    """Write one track's four files; return its metadata.csv row (paths relative to OUT)."""
    row = {name: table.column(name)[i].as_py() for name in
           (*TRACK_COLUMNS, "quality", "video_path", "audio_path", "words", "chrono", "turns")}
    record = {name: row[name] for name in TRACK_COLUMNS}
    quality = row["quality"] or {}
    record.update({name: _f32(quality.get(name)) for name in QUALITY_FIELDS})
    split, role, clip_id = row["split"], row["role"], row["clip_id"]
    unsafe = [f"{name} {value!r}" for name, value in (("split", split), ("role", role),
                                                     ("clip_id", clip_id))
              if not is_safe_name(value)]
    if unsafe:
        raise UsageError(f"{root}: a row has {', '.join(unsafe)}, not a safe file name; the "
                         "export would write outside --out. Run `responsenet validate` on it")

    def rel(modality: str) -> str:
        return f"{split}/{modality}/{role}/{clip_id}.{_EXTENSIONS[modality]}"

    for modality in ("video", "audio"):
        source = row[f"{modality}_path"]
        if source is None or not (root / source).is_file():
            missing.append(f"clip {clip_id} role {role}: {modality} "
                           + ("has no path" if source is None else f"{source} does not exist"))
            record[modality] = ""
            continue
        record[modality] = rel(modality)
        _place(root / source, tmp / record[modality], media)
    record["text"], record["vector"] = rel("text"), rel("vector")
    text = {"text": " ".join(w["text"] for w in row["words"] or []),
            **{k: row[k] for k in ("clip_id", "role", "split", "fps", "n_frames", "duration_s")},
            "words": [{**w, "prob": _f32(w["prob"])} for w in row["words"] or []],
            "chrono": row["chrono"] or [],
            "turns": row["turns"] or []}
    _write(tmp / record["text"], (json.dumps(text, indent=1) + "\n").encode())
    (tmp / record["vector"]).parent.mkdir(parents=True, exist_ok=True)
    np.save(tmp / record["vector"], track_vector(table, i))
    return record


def _f32(value: float | None) -> float | None:
    """A stored float32 as the shortest decimal that reads back as it (0.9, not 0.8999999761)."""
    return None if value is None else float(str(np.float32(value)))


def _place(source: Path, dest: Path, media: str) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if media == "hardlink":
        try:
            os.link(source, dest)
            return
        except OSError:
            pass  # another file system, or links not supported: copy instead
    shutil.copyfile(source, dest)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: ("" if row[k] is None else row[k]) for k in CSV_COLUMNS}
                         for row in rows)


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished ``tmp`` to ``out``, replacing what ``out`` held (atomic swap)."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


#: The JSON-LD context of Croissant 1.0 (mlcommons.org/croissant/1.0).
CROISSANT_CONTEXT: dict[str, Any] = {
    "@language": "en", "@vocab": "https://schema.org/", "citeAs": "cr:citeAs",
    "column": "cr:column", "conformsTo": "dct:conformsTo", "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/", "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"}, "dct": "http://purl.org/dc/terms/",
    "equivalentProperty": "cr:equivalentProperty", "examples": {"@id": "cr:examples", "@type": "@json"}, "extract": "cr:extract",
    "field": "cr:field", "fileProperty": "cr:fileProperty", "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet", "format": "cr:format", "includes": "cr:includes",
    "isLiveDataset": "cr:isLiveDataset", "jsonPath": "cr:jsonPath", "key": "cr:key",
    "md5": "cr:md5", "parentField": "cr:parentField", "path": "cr:path",
    "recordSet": "cr:recordSet", "references": "cr:references", "regex": "cr:regex",
    "repeated": "cr:repeated", "replace": "cr:replace", "samplingRate": "cr:samplingRate",
    "sc": "https://schema.org/",
    "separator": "cr:separator", "source": "cr:source", "subField": "cr:subField",
    "transform": "cr:transform",
}
_MIME = {"csv": "text/csv", "mp4": "video/mp4", "wav": "audio/wav", "json": "application/json",
         "npy": "application/x-npy"}
_FLOATS = {"fps", "duration_s", *QUALITY_FIELDS}
_FIELD_DOCS = {
    "split": "split name (train, val, test)", "clip_id": "stable clip id {source_id}_{index:03d}",
    "role": "speaker or listener", "participant_id": "identity of the person (splits are "
    "disjoint by it); empty when unknown", "source_id": "manifest entry the clip was cut from",
    "panel": "where the participant sits in the source frame", "fps": "frames per second",
    "n_frames": "T, frames of the clip", "duration_s": "clip length in seconds",
    "topic": "conversation topic", "language": "ISO 639-1 language code",
    "license": "licence of the source", "source_url": "where the source came from",
    "video": "relative path of the face video (.mp4, constant fps)",
    "audio": "relative path of the separated speech (.wav, 16 kHz mono)",
    "text": "relative path of a JSON file: text (transcript), words [{text, start, end, prob}], "
            "chrono (Chrono-Text token per frame), turns",
    "vector": "relative path of a .npy float32 [T, 64]: 52 MediaPipe blendshapes ("
              + ", ".join(BLENDSHAPE_NAMES[:3]) + ", ...), then 12 pose values ("
              + " ".join(POSE_FIELDS) + ", the top 3 rows of the facial transformation matrix)",
}


def croissant_metadata(out: Path, name: str, rows: list[dict[str, Any]],
                       dataset: dict[str, Any]) -> dict[str, Any]:
    """Croissant 1.0 JSON-LD for an export folder: every file with its sha256, and a ``tracks``
    record set read from metadata.csv (one record per track)."""
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    licenses = sorted({r["license"] for r in rows if r["license"]})
    return {
        "@context": CROISSANT_CONTEXT, "@type": "sc:Dataset", "name": name,
        "description": (f"Dyadic conversation corpus exported by responsenet in the ResponseNet "
                        f"layout: {len(rows)} tracks of {len({r['clip_id'] for r in rows})} "
                        f"clips (speaker and listener), format v{FORMAT_VERSION}, built by "
                        f"responsenet {dataset.get('pipeline_version', '?')}."),
        "conformsTo": "http://mlcommons.org/croissant/1.0",
        "license": licenses[0] if len(licenses) == 1 else licenses or "unknown",
        "isLiveDataset": False,
        "distribution": [_file_object(out, rel) for rel in files],
        "recordSet": [{
            "@type": "cr:RecordSet", "@id": "tracks", "name": "tracks",
            "description": "One record per track (clip_id, role), as metadata.csv.",
            "key": [{"@id": "tracks/clip_id"}, {"@id": "tracks/role"}],
            "field": [_field(column) for column in CSV_COLUMNS],
        }],
    }


def _file_object(out: Path, rel: str) -> dict[str, Any]:
    path = out / rel
    return {"@type": "cr:FileObject", "@id": rel, "name": rel, "contentUrl": rel,
            "contentSize": f"{path.stat().st_size} B",
            "encodingFormat": _MIME.get(path.suffix.lstrip("."), "application/octet-stream"),
            "sha256": sha256_file(path)}


def _field(column: str) -> dict[str, Any]:
    data_type = ("sc:Float" if column in _FLOATS else
                 "sc:Integer" if column == "n_frames" else "sc:Text")
    description = _FIELD_DOCS.get(column, f"quality measure {column} of the track")
    return {"@type": "cr:Field", "@id": f"tracks/{column}", "name": column,
            "description": description, "dataType": data_type,
            "source": {"fileObject": {"@id": "metadata.csv"}, "extract": {"column": column}}}
