"""A tiny, deterministic, valid format v1 corpus for tests: dataset.json, shards, splits, media.

The media files are small fake byte files (named .mp4/.wav): ``validate_root`` checks only that
they exist and match their SHA-256. Same arguments, same bytes.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from responsenet import FORMAT_VERSION, __version__
from responsenet.hashing import checksum_tree, sha256_file
from responsenet.schema import BLENDSHAPE_NAMES, POSE_FIELDS
from responsenet.shards import write_tracks

SPLITS = ("train", "val", "test")
_VOCAB = ("yes", "right", "okay", "really?", "hmm", "so", "well", "sure")


def clip_id_for(index: int) -> str:
    """Clip id of the ``index``-th tiny clip: ``src-tiny{index:04d}_000``."""
    return f"src-tiny{index:04d}_000"


def make_track(clip_id: str, role: str, *, n_frames: int = 10, fps: float = 25.0,
               split: str = "train", participant_id: str | None = None, seed: int = 0,
               n_words: int = 2) -> dict[str, Any]:
    """Return one valid track row (no media paths) with seeded random features.

    Args:
        clip_id: ``{source_id}_{index:03d}``; source_id is the part before the last ``_``.
        role: ``speaker`` or ``listener``.
        n_frames: T, the length of every per-frame array.
        fps: frames per second; duration_s = n_frames / fps.
        split: split name stored in the row.
        participant_id: defaults to ``{clip_id}-{role}``.
        seed: with clip_id and role, fixes every random value.
        n_words: words spread evenly over the clip, each one frame long or shorter.
    """
    rng = np.random.default_rng([seed, zlib.crc32(f"{clip_id}/{role}".encode())])
    duration = n_frames / fps
    onsets = np.linspace(0.0, duration, n_words, endpoint=False)
    words = [{"text": str(rng.choice(_VOCAB)), "start": float(t),
              "end": min(float(t) + 0.5 / fps, duration),
              "prob": float(np.float32(rng.uniform(0.5, 1.0)))} for t in onsets]
    return {
        "clip_id": clip_id, "role": role, "split": split, "source_id": clip_id.rsplit("_", 1)[0],
        "fps": fps, "n_frames": n_frames, "duration_s": duration,
        "panel": "left" if role == "speaker" else "right",
        "participant_id": participant_id or f"{clip_id}-{role}",
        "topic": "daily life", "language": "en", "license": "CC-BY-4.0",
        "quality": {"face_presence": 1.0, "asr_confidence": 0.9, "snr_db": 20.0},
        "blendshapes": rng.random((n_frames, len(BLENDSHAPE_NAMES)), dtype=np.float32),
        "pose": rng.standard_normal((n_frames, len(POSE_FIELDS))).astype(np.float32),
        "face_present": np.ones(n_frames, bool), "face_interpolated": np.zeros(n_frames, bool),
        "vad": rng.random(n_frames) < 0.5,
        "chrono": _chrono_tokens(words, n_frames, fps),
        "words": words,
        "turns": [{"role": role, "start": 0.0, "end": duration, "text": "hello there"}],
        "history": [{"role": "speaker", "start": -2.0, "end": -1.0, "text": "earlier words"}],
    }


def make_tiny_corpus(root: str | Path, n_clips: int = 2, n_frames: int = 10,
                     seed: int = 0) -> Path:
    """Write a valid corpus of ``n_clips`` clips under ``root``; clip i goes to SPLITS[i % 3].

    Each clip has two participants of its own (``p{2i:03d}`` speaker, ``p{2i+1:03d}``
    listener), so splits are disjoint by clip and by participant. Writes dataset.json with
    checksums of every other file, ``shards/{split}/tracks-00000.parquet``,
    ``media/{clip_id}/{speaker,listener}.{mp4,wav}`` and ``mix.wav``, and ``splits/{split}.txt``.

    Returns:
        ``root``.
    """
    root = Path(root)
    rows_by_split: dict[str, list[dict[str, Any]]] = {}
    for i in range(n_clips):
        clip_id, split = clip_id_for(i), SPLITS[i % len(SPLITS)]
        for k, role in enumerate(("speaker", "listener")):
            row = make_track(clip_id, role, n_frames=n_frames, split=split, seed=seed,
                             participant_id=f"p{2 * i + k:03d}")
            row.update(_write_media(root, clip_id, role, seed))
            rows_by_split.setdefault(split, []).append(row)
    for split, rows in rows_by_split.items():
        write_tracks(rows, root / "shards" / split / "tracks-00000.parquet")
        clip_ids = sorted({row["clip_id"] for row in rows})
        (root / "splits").mkdir(parents=True, exist_ok=True)
        (root / "splits" / f"{split}.txt").write_text("".join(f"{c}\n" for c in clip_ids))
    write_dataset_json(root)
    return root


def write_dataset_json(root: str | Path, **overrides: Any) -> Path:
    """Write ``{root}/dataset.json`` with checksums of all other files; ``overrides`` set keys."""
    root = Path(root)
    card = {"format_version": FORMAT_VERSION, "pipeline_version": __version__,
            "config": {"fps": 25.0}, "build_report": {"clips": "tiny test corpus"},
            "checksums": checksum_tree(root)}
    card.update(overrides)
    path = root / "dataset.json"
    path.write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    return path


def refresh_checksums(root: str | Path) -> None:
    """Recompute dataset.json's checksums after a test changed files on purpose."""
    path = Path(root) / "dataset.json"
    card = json.loads(path.read_text())
    card["checksums"] = checksum_tree(root)
    path.write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")


def _write_media(root: Path, clip_id: str, role: str, seed: int) -> dict[str, str]:
    """Write fake media bytes for one track (and the clip's mix); return the row's media fields."""
    fields = {}
    for kind, name in (("video", f"{role}.mp4"), ("audio", f"{role}.wav"), ("mix", "mix.wav")):
        rel = f"media/{clip_id}/{name}"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng([seed, zlib.crc32(rel.encode())])
        path.write_bytes(f"fake {name} of {clip_id}\n".encode() + rng.bytes(64))
        fields[f"{kind}_path"], fields[f"{kind}_sha256"] = rel, sha256_file(path)
    return fields


def _chrono_tokens(words: list[dict[str, Any]], n_frames: int, fps: float) -> list[str]:
    """Simple Chrono-Text stream: word at its onset frame, [LASTING] after, [PAUSE] elsewhere."""
    tokens = ["[PAUSE]"] * n_frames
    for word in words:
        first, last = int(word["start"] * fps), int(np.ceil(word["end"] * fps))
        for frame in range(first, min(max(last, first + 1), n_frames)):
            tokens[frame] = word["text"] if frame == first else "[LASTING]"
    return tokens
