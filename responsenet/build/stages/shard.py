"""Stage 9, shard: one clip's outputs -> its two format v1 rows and its media files.

Inputs: every earlier per-clip stage (``segment``, ``crop``, ``face``, ``separate``,
``transcribe``, ``chrono``). Steps: roles from chrono; per track the face arrays (face npz), the
speech mask (separate), the Chrono-Text stream (chrono) and the words (transcribe, kept as the
stream holds them); quality measures; media linked under their corpus names (``{role}.mp4``,
``{role}.wav``, ``mix.wav``); the two rows written as a one-clip ``tracks.parquet``. The corpus
itself (shards, media tree, dataset.json, history) is put together after the stage loop by
:func:`responsenet.corpus.assemble`. See docs/stages/shard.md.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow.parquet as pq
from pydantic import Field

from responsenet import chrono
from responsenet.build.stages.base import Stage, StageConfig, StageContext, StageResult
from responsenet.errors import StageFailure
from responsenet.hashing import sha256_file
from responsenet.schema import BLENDSHAPE_NAMES, ROLES, ShardFormatError, TrackRecord
from responsenet.shards import string_columns, tracks_table
from responsenet.wavio import read_wav, resample, write_wav

#: Split name of rows before ``responsenet split`` has assigned them (``shards/unsplit/``).
UNSPLIT = "unsplit"
#: Sample rate of the separated speech files in a corpus (docs/format.md).
SPEECH_RATE = 16000
#: File holding the clip's two rows inside the stage output.
TRACKS_FILE = "tracks.parquet"


class ShardConfig(StageConfig):
    """Settings of the shard stage and of the corpus assembly that follows it."""

    clips_per_shard: int = Field(256, ge=1, description="clips per tracks-*.parquet file")
    max_history_turns: int | None = Field(None, ge=0, description="most recent earlier turns "
                                          "kept as a clip's history (None: all)")
    link_media: bool = Field(True, description="hard-link media files instead of copying them")


class ShardStage(Stage):
    """The clip's speaker and listener rows (format v1) and its media under corpus names."""

    name = "shard"
    version = "1"
    unit = "clip"
    requires = ("segment", "crop", "face", "separate", "transcribe", "chrono")
    resources: ClassVar[dict[str, float]] = {"CPU": 1}
    Config = ShardConfig

    def run(self, ctx: StageContext) -> dict[str, Any]:
        cfg: ShardConfig = ctx.config
        clip = _clip_entry(ctx)
        fps, n_frames = float(ctx.inputs["segment"].meta["fps"]), int(clip["n_frames"])
        roles = _roles(ctx)
        tracks = {role: _track_inputs(ctx, track) for track, role in roles.items()}
        turns = _turns(ctx)
        media = _link_media(ctx, clip, tracks, cfg.link_media)
        records = [_record(ctx, clip, fps, n_frames, role, tracks[role], media, turns)
                   for role in ROLES]
        try:
            table = tracks_table(records)
        except ShardFormatError as e:
            raise StageFailure("bad_input", f"clip {ctx.item_id}: {e}; run the stage that made "
                               "the array again (--force face, separate or chrono)") from e
        pq.write_table(table, ctx.out_dir / TRACKS_FILE, row_group_size=table.num_rows,
                       compression="zstd", use_dictionary=string_columns(table.schema))
        return {
            "clip_id": ctx.item_id, "source_id": ctx.source.id, "index": int(clip["index"]),
            "clip_start_s": clip.get("start"), "fps": fps, "n_frames": n_frames,
            "panels": {role: tracks[role]["panel"] for role in ROLES},
            "tracks": TRACKS_FILE, "media": media,
            "inputs": {name: result.fingerprint for name, result in ctx.inputs.items()},
            "n_words": {role: len(r.words) for role, r in zip(ROLES, records, strict=True)},
        }


def _clip_entry(ctx: StageContext) -> dict[str, Any]:
    clips = ctx.inputs["segment"].meta.get("clips") or []
    clip = next((c for c in clips if c.get("clip_id") == ctx.item_id), None)
    if clip is None:
        raise StageFailure("bad_input", f"clip {ctx.item_id}: the segment result of source "
                           f"{ctx.source.id} has no entry for it; run segment again "
                           "(--force segment)")
    return clip


def _roles(ctx: StageContext) -> dict[str, str]:
    """chrono's ``{track: role}``, checked to give each role to exactly one track."""
    roles = ctx.inputs["chrono"].meta.get("roles") or {}
    if sorted(roles.values()) != sorted(ROLES):
        raise StageFailure("bad_input", f"clip {ctx.item_id}: chrono gives roles {roles}, "
                           "expected one speaker and one listener track; run chrono again "
                           "(--force chrono)")
    return dict(roles)


def _turns(ctx: StageContext) -> list[dict[str, Any]]:
    """chrono's ``turns.json`` as shard ``turns`` structs (its ``track`` field dropped)."""
    result = ctx.inputs["chrono"]
    try:
        turns = json.loads((result.dir / result.meta["turns"]).read_text(encoding="utf-8"))
        return [{k: t[k] for k in ("role", "start", "end", "text")} for t in turns]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise StageFailure("bad_input", f"clip {ctx.item_id}: cannot read chrono's turns ({e}); "
                           "run chrono again (--force chrono)") from e


def _by_track(result: StageResult, stage: str, track: str, where: str) -> dict[str, Any]:
    entry = next((t for t in result.meta.get("tracks") or [] if t.get("track") == track), None)
    if entry is None:
        raise StageFailure("bad_input", f"{where}: the {stage} result has no track {track!r}; "
                           f"run {stage} again (--force {stage})")
    return entry


def _track_inputs(ctx: StageContext, track: str) -> dict[str, Any]:
    """What the row of ``track`` needs from each input stage: entries, arrays, words, tokens."""
    where = f"clip {ctx.item_id} track {track}"
    entries = {name: _by_track(ctx.inputs[name], name, track, where)
               for name in ("crop", "face", "separate", "transcribe", "chrono")}
    face = ctx.inputs["face"]
    names = face.meta.get("blendshape_names")
    if list(names or []) != list(BLENDSHAPE_NAMES):
        raise StageFailure("bad_input", f"{where}: face gives blendshapes {names!r:.80}, "
                           "expected MediaPipe's 52 names (responsenet.schema.BLENDSHAPE_NAMES); "
                           "run face again with the catalog model (--force face)")
    try:
        arrays = dict(np.load(face.dir / entries["face"]["file"]))
        vad = np.load(ctx.inputs["separate"].dir / entries["separate"]["vad"]).astype(bool)
        tokens = json.loads((ctx.inputs["chrono"].dir / entries["chrono"]["chrono"])
                            .read_text(encoding="utf-8"))
        raw = json.loads((ctx.inputs["transcribe"].dir / entries["transcribe"]["words"])
                         .read_text(encoding="utf-8"))
        words = [chrono.Word.from_dict(w) for w in raw]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise StageFailure("bad_input", f"{where}: cannot read an input file ({e}); run the "
                           "stage that wrote it again (--force)") from e
    panel = entries["crop"].get("panel") or track
    return {"track": track, "panel": panel, "entries": entries, "arrays": arrays, "vad": vad,
            "tokens": [str(t) for t in tokens], "words": words}


def stream_words(words: list[chrono.Word], tokens: list[str], fps: float,
                 where: str) -> list[chrono.Word]:
    """The transcript words the Chrono-Text stream holds (normalised, clamped to the clip).

    chrono keeps or strips punctuation by its own config, which this stage does not see; the
    mode whose words give exactly the stream's word tokens is the one chrono used.

    Raises:
        StageFailure: ``bad_input`` when no mode matches (chrono ran on other words).
    """
    n_frames = len(tokens)
    wanted = [w.text for w in chrono.decode(tokens, fps)]
    for mode in ("keep", "strip"):
        try:
            kept = chrono.clip_words(words, n_frames, fps, punctuation=mode)
        except ValueError as e:
            raise StageFailure("bad_input", f"{where}: {e}") from e
        if [w.text for w in kept] == wanted:
            return kept
    raise StageFailure("bad_input", f"{where}: the Chrono-Text stream holds {len(wanted)} "
                       f"words, the transcript {len(words)} that do not match them; run chrono "
                       "again (--force chrono)")


def link_or_copy(src: Path, dst: Path, link: bool = True) -> None:
    """Hard-link ``src`` to ``dst`` (a copy where links fail, or when ``link`` is False)."""
    if link:
        try:
            os.link(src, dst)
            return
        except OSError:
            pass  # another file system, or links not allowed: copy instead
    shutil.copyfile(src, dst)


def _link_media(ctx: StageContext, clip: dict[str, Any], tracks: dict[str, dict[str, Any]],
                link: bool) -> dict[str, str]:
    """Put the clip's media into the output under corpus names; return name -> sha256."""
    out = ctx.out_dir
    try:
        link_or_copy(ctx.inputs["segment"].dir / clip["audio"], out / "mix.wav", link)
        for role, inputs in tracks.items():
            entries = inputs["entries"]
            link_or_copy(ctx.inputs["crop"].dir / entries["crop"]["video"], out / f"{role}.mp4", link)
            speech = ctx.inputs["separate"].dir / entries["separate"]["audio"]
            audio, rate = read_wav(speech)
            if rate == SPEECH_RATE:
                link_or_copy(speech, out / f"{role}.wav", link)
            else:
                write_wav(out / f"{role}.wav", resample(audio, rate, SPEECH_RATE), SPEECH_RATE)
    except (OSError, KeyError) as e:
        raise StageFailure("bad_input", f"clip {ctx.item_id}: a media file is missing ({e}); "
                           "run the stage that wrote it again (--force)") from e
    return {name: sha256_file(out / name) for name in
            ("listener.mp4", "listener.wav", "mix.wav", "speaker.mp4", "speaker.wav")}


def _quality(ctx: StageContext, inputs: dict[str, Any], words: list[chrono.Word]) -> dict:
    entries = inputs["entries"]
    probs = [w.prob for w in words if w.prob is not None]
    confidence = (ctx.inputs["separate"].meta.get("assignment") or {}).get("confidence")
    return {"face_presence": _number(entries["crop"].get("presence")),
            "asr_confidence": float(np.mean(probs)) if probs else None,
            "separation_confidence": _number(confidence),
            "snr_db": _number(entries["separate"].get("snr_db")),
            "leakage_db": _number(entries["separate"].get("leakage_db"))}


def _number(value: Any) -> float | None:
    if value is None or not math.isfinite(float(value)):
        return None
    return float(value)


def _record(ctx: StageContext, clip: dict[str, Any], fps: float, n_frames: int, role: str,
            inputs: dict[str, Any], media: dict[str, str],
            turns: list[dict[str, Any]]) -> TrackRecord:
    where = f"clip {ctx.item_id} track {inputs['track']}"
    source, arrays = ctx.source, inputs["arrays"]
    words = stream_words(inputs["words"], inputs["tokens"], fps, where)
    base = f"media/{ctx.item_id}"
    return TrackRecord(
        clip_id=ctx.item_id, role=role, split=UNSPLIT, source_id=source.id, fps=fps,
        n_frames=n_frames, duration_s=n_frames / fps,
        blendshapes=arrays["blendshapes"], pose=arrays["pose"],
        face_present=arrays["present"], face_interpolated=arrays["interpolated"],
        vad=inputs["vad"], chrono=inputs["tokens"],
        panel=inputs["panel"], participant_id=(source.participants or {}).get(inputs["panel"]),
        source_start_s=clip.get("start"), source_end_s=clip.get("end"), topic=source.topic,
        language=source.language or ctx.inputs["transcribe"].meta.get("language"),
        license=source.license, source_url=source.url, quality=_quality(ctx, inputs, words),
        video_path=f"{base}/{role}.mp4", video_sha256=media[f"{role}.mp4"],
        audio_path=f"{base}/{role}.wav", audio_sha256=media[f"{role}.wav"],
        mix_path=f"{base}/mix.wav", mix_sha256=media["mix.wav"],
        words=[w.to_dict() for w in words],
        turns=turns)
