"""Arrow schema of format v1 "tracks" shards: one Parquet row per track (clip_id, role).

A clip is two rows (its speaker and its listener) holding frame-aligned arrays, so a training
window is a slice of both rows. Field meanings, shapes and units are listed on ``TrackRecord``
and in docs/format.md. Writing and reading shards (``write_tracks``, ``read_tracks``) lives in
``responsenet.shards``; both names are also importable from here.

Dimension legend: T = n_frames (video frames at ``fps``), W = words, N = turns.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from responsenet import FORMAT_VERSION
from responsenet.errors import ResponseNetError

#: Schema metadata key holding the format version (ASCII digits), e.g. ``b"1"``.
FORMAT_VERSION_KEY = b"responsenet.format_version"

#: The 52 blendshape scores of MediaPipe FaceLandmarker in output order (``kBlendshapeNames`` of
#: mediapipe/tasks/cc/vision/face_landmarker/face_blendshapes_graph.cc): ``_neutral`` then 51 ARKit
#: names in alphabetical order. ARKit's ``tongueOut`` is not produced by MediaPipe.
BLENDSHAPE_NAMES: tuple[str, ...] = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft",
    "browOuterUpRight", "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft",
    "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight",
    "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight", "eyeSquintLeft",
    "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen",
    "jawRight", "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft",
    "mouthFrownRight", "mouthFunnel", "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight",
    "mouthPressLeft", "mouthPressRight", "mouthPucker", "mouthRight", "mouthRollLower",
    "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight",
    "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "noseSneerLeft", "noseSneerRight",
)

#: The top 3 rows of MediaPipe's 4x4 facial transformation matrix, row-major (``m[:3].ravel()``):
#: ``mRC`` is row R, column C; columns 0-2 are rotation (times scale), column 3 the translation.
POSE_FIELDS: tuple[str, ...] = tuple(f"m{r}{c}" for r in range(3) for c in range(4))

ROLES: tuple[str, ...] = ("speaker", "listener")
PANELS: tuple[str, ...] = ("left", "right", "top", "bottom", "main", "inset")

#: Per-track quality measures (the ``quality`` struct); each is a nullable float32.
QUALITY_FIELDS: tuple[str, ...] = (
    "face_presence", "asr_confidence", "separation_confidence", "snr_db", "leakage_db",
)

#: Media kinds; each has ``{kind}_path`` (relative to the corpus root) and ``{kind}_sha256``.
MEDIA_KINDS: tuple[str, ...] = ("video", "audio", "mix")

#: Per-frame arrays (length n_frames) and, for matrices, their row width.
FRAME_FIELDS: tuple[str, ...] = (
    "blendshapes", "pose", "face_present", "face_interpolated", "vad", "chrono",
)
FRAME_WIDTHS: dict[str, int] = {"blendshapes": len(BLENDSHAPE_NAMES), "pose": len(POSE_FIELDS)}


def _span_type() -> pa.DataType:
    return pa.struct([("role", pa.string()), ("start", pa.float64()),
                      ("end", pa.float64()), ("text", pa.string())])


def _word_type() -> pa.DataType:
    return pa.struct([("text", pa.string()), ("start", pa.float64()),
                      ("end", pa.float64()), ("prob", pa.float32())])


def tracks_schema() -> pa.Schema:
    """Return the Arrow schema of a format v1 tracks shard (field docs: ``TrackRecord``).

    The schema metadata holds ``FORMAT_VERSION_KEY`` -> the format version.
    """
    s, f64, f32 = pa.string(), pa.float64(), pa.float32()
    frames = {name: pa.list_(pa.list_(f32, width)) for name, width in FRAME_WIDTHS.items()}
    fields = [
        pa.field("clip_id", s, nullable=False), pa.field("role", s, nullable=False),
        pa.field("panel", s), pa.field("participant_id", s),
        pa.field("source_id", s, nullable=False), pa.field("split", s, nullable=False),
        pa.field("fps", f64, nullable=False), pa.field("n_frames", pa.int32(), nullable=False),
        pa.field("duration_s", f64, nullable=False),
        pa.field("source_start_s", f64), pa.field("source_end_s", f64),
        pa.field("topic", s), pa.field("language", s), pa.field("license", s),
        pa.field("source_url", s),
        pa.field("quality", pa.struct([(name, f32) for name in QUALITY_FIELDS])),
        *[pa.field(f"{kind}_{part}", s) for kind in MEDIA_KINDS for part in ("path", "sha256")],
        pa.field("blendshapes", frames["blendshapes"]), pa.field("pose", frames["pose"]),
        pa.field("face_present", pa.list_(pa.bool_())),
        pa.field("face_interpolated", pa.list_(pa.bool_())),
        pa.field("vad", pa.list_(pa.bool_())), pa.field("chrono", pa.list_(s)),
        pa.field("words", pa.list_(_word_type())),
        pa.field("turns", pa.list_(_span_type())), pa.field("history", pa.list_(_span_type())),
    ]
    return pa.schema(fields, metadata={FORMAT_VERSION_KEY: str(FORMAT_VERSION).encode()})


def frame_length_problems(n_frames: int, lengths: Mapping[str, int | None]) -> list[str]:
    """Describe per-frame arrays whose length is not ``n_frames``.

    Args:
        n_frames: the row's frame count T.
        lengths: per-frame field name -> its length (None when the array is null).

    Returns:
        One message per bad field, e.g. ``"blendshapes has 99 frames, n_frames is 100"``.
    """
    problems = []
    for name in FRAME_FIELDS:
        length = lengths.get(name)
        if length is None:
            problems.append(f"{name} is missing, expected {n_frames} frames")
        elif length != n_frames:
            problems.append(f"{name} has {length} frames, n_frames is {n_frames}")
    return problems


@dataclasses.dataclass(eq=False, kw_only=True)
class TrackRecord:
    """One track (clip_id, role): one row of a tracks shard.

    Times are seconds from the clip's first frame; frame ``i`` covers ``[i / fps, (i + 1) / fps)``.

    Attributes:
        clip_id: stable clip id ``{source_id}_{index:03d}``.
        role: ``speaker`` or ``listener`` (see ``ROLES``).
        panel: where this participant sits in the source frame: one of ``PANELS`` or None.
        participant_id: identity of the person, stable across clips (splits are disjoint by it);
            None when unknown.
        source_id: id of the manifest entry the clip was cut from.
        split: split name (``train``, ``val``, ``test``, ...); equals the shard's folder.
        fps: frame rate of all per-frame arrays and of the face video, frames/s.
        n_frames: T, the length of every per-frame array; the same on both tracks of a clip.
        duration_s: clip length in seconds (T / fps, within one frame).
        source_start_s: clip start within the source, seconds; None when unknown.
        source_end_s: clip end within the source, seconds; None when unknown.
        topic: conversation topic label or None.
        language: spoken language, ISO 639-1 code (``en``) or None.
        license: licence of the source (SPDX id or free text) or None.
        source_url: where the source came from or None.
        quality: ``QUALITY_FIELDS`` -> float or None: face_presence (fraction of frames with a
            face, 0..1), asr_confidence (mean word probability, 0..1), separation_confidence
            (confidence of the source-to-track assignment, 0..1), snr_db and leakage_db
            (estimated SNR / cross-talk leakage of the separated channel, dB).
        video_path: face video ``media/{clip_id}/{role}.mp4``, relative to the corpus root.
        video_sha256: SHA-256 (hex) of the face video.
        audio_path: separated 16 kHz mono speech ``media/{clip_id}/{role}.wav``.
        audio_sha256: SHA-256 (hex) of the separated speech.
        mix_path: the clip's original mixture ``media/{clip_id}/mix.wav`` (same on both tracks).
        mix_sha256: SHA-256 (hex) of the mixture.
        blendshapes: float32 [T, 52], MediaPipe blendshape scores 0..1 in ``BLENDSHAPE_NAMES``
            order; rows where no face was found hold zeros.
        pose: float32 [T, 12], top 3 rows of MediaPipe's facial transformation matrix, row-major
            (``POSE_FIELDS``); rotation unitless, translation in MediaPipe's metric face space (cm).
        face_present: bool [T], a face was detected in the frame.
        face_interpolated: bool [T], the frame's blendshapes/pose were interpolated over a short
            detection gap (implies face_present).
        vad: bool [T], this track's participant is speaking in the frame.
        chrono: str [T], Chrono-Text tokens, one per frame: the word starting in the frame,
            ``[LASTING]`` while it continues, ``[PAUSE]`` when silent (see responsenet.chrono).
        words: [W] dicts ``{text: str, start: s, end: s, prob: float32 0..1}`` of this track's
            words, in time order, ``0 <= start <= end <= duration_s``.
        turns: [N] dicts ``{role, start: s, end: s, text}``: the clip's turns of both tracks in
            time order (identical on both rows, so either row alone carries the dialogue).
        history: [N] dicts like ``turns`` for conversation before the clip (from the same source),
            in time order; start/end are relative to the clip start, so negative.
    """

    clip_id: str
    role: str
    split: str
    source_id: str
    fps: float
    n_frames: int
    duration_s: float
    blendshapes: np.ndarray
    pose: np.ndarray
    face_present: np.ndarray
    face_interpolated: np.ndarray
    vad: np.ndarray
    chrono: list[str]
    panel: str | None = None
    participant_id: str | None = None
    source_start_s: float | None = None
    source_end_s: float | None = None
    topic: str | None = None
    language: str | None = None
    license: str | None = None
    source_url: str | None = None
    quality: dict[str, float | None] = dataclasses.field(default_factory=dict)
    video_path: str | None = None
    video_sha256: str | None = None
    audio_path: str | None = None
    audio_sha256: str | None = None
    mix_path: str | None = None
    mix_sha256: str | None = None
    words: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    turns: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        for name, width in FRAME_WIDTHS.items():
            matrix = np.asarray(getattr(self, name), dtype=np.float32)
            setattr(self, name, matrix.reshape(0, width) if matrix.size == 0 else matrix)
        for name in ("face_present", "face_interpolated", "vad"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=bool))
        self.chrono = [str(token) for token in self.chrono]
        quality = self.quality or {}
        self.quality = {name: _opt_float(quality.get(name)) for name in QUALITY_FIELDS}
        self.words = [{"text": w["text"], "start": float(w["start"]), "end": float(w["end"]),
                       "prob": _opt_float(w.get("prob"))} for w in self.words or []]
        self.turns = [_span(t) for t in self.turns or []]
        self.history = [_span(t) for t in self.history or []]

    def to_dict(self) -> dict[str, Any]:
        """Return the row as a dict of schema field -> value (numpy arrays for matrices)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> TrackRecord:
        """Build a record from a row dict (``to_dict`` output or ``pa.Table.to_pylist`` rows).

        Raises:
            TypeError: a required field is missing or a key is not a schema field.
        """
        unknown = sorted(set(row) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise TypeError(f"unknown fields {unknown}; the fields are those of tracks_schema()")
        return cls(**row)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TrackRecord):
            return NotImplemented
        mine, theirs = self.to_dict(), other.to_dict()
        return all(_equal(mine[key], theirs[key]) for key in mine)


def _opt_float(value: Any) -> float | None:
    """float32-rounded float (as stored), or None."""
    return None if value is None else float(np.float32(value))


def _span(turn: Mapping[str, Any]) -> dict[str, Any]:
    return {"role": turn["role"], "start": float(turn["start"]), "end": float(turn["end"]),
            "text": turn["text"]}


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a), np.asarray(b))
    return a == b


class ShardFormatError(ResponseNetError):
    """A tracks shard or row does not follow the format; the message names file, clip and field."""


def format_version_of(schema: pa.Schema) -> int | None:
    """Return the format version stored in a schema's metadata, or None when absent/garbled."""
    raw = (schema.metadata or {}).get(FORMAT_VERSION_KEY)
    return int(raw) if raw is not None and raw.isdigit() else None


def check_format_version(schema: pa.Schema, where: str) -> None:
    """Raise ``ShardFormatError`` unless ``schema`` carries format version ``FORMAT_VERSION``."""
    version = format_version_of(schema)
    if version is None:
        raise ShardFormatError(
            f"{where}: no {FORMAT_VERSION_KEY.decode()} in the Parquet schema metadata; "
            "not a responsenet tracks shard (write shards with responsenet.schema.write_tracks)")
    if version != FORMAT_VERSION:
        raise ShardFormatError(
            f"{where}: format version {version}, this responsenet reads version {FORMAT_VERSION}; "
            "install the responsenet release for that format or rebuild the corpus")


#: Shard I/O names re-exported lazily from responsenet.shards (which imports this module).
_SHARD_IO = ("tracks_table", "write_tracks", "read_tracks", "read_track_records")


def __getattr__(name: str) -> Any:
    if name in _SHARD_IO:
        from responsenet import shards

        return getattr(shards, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
