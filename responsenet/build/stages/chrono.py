"""Stage 7, chrono: per-track Chrono-Text streams, the clip's turns and its speaker/listener roles.

Inputs: ``segment`` (the clip's ``n_frames`` and the ``fps``), ``separate`` (per track its speech
seconds, or a speech mask ``{track}.vad.npy``) and ``transcribe`` (per track ``{track}.words.json``:
words in clip time). Steps: roles from the manifest or by rule (less speech -> listener);
per track, ``responsenet.chrono.encode`` -> ``{track}.chrono.json``; all tracks' words ->
``turns.json``. The rules live in responsenet/chrono.py; see docs/stages/chrono.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from responsenet import chrono
from responsenet.build.stages.base import Stage, StageConfig, StageContext
from responsenet.errors import StageFailure


class ChronoConfig(StageConfig):
    """Settings of the chrono stage."""

    turn_merge_gap_s: float = Field(0.5, ge=0, description="a silence shorter than this inside "
                                    "one track's speech does not end its turn, s")
    punctuation: Literal["keep", "strip"] = Field(
        "keep", description="keep punctuation attached to words, or strip it from both ends")


class ChronoStage(Stage):
    """Chrono-Text per track, turns of the clip, and roles (manifest hints or the speech rule)."""

    name = "chrono"
    version = "1"
    unit = "clip"
    requires = ("segment", "separate", "transcribe")
    resources: ClassVar[dict[str, float]] = {"CPU": 1}
    Config = ChronoConfig

    def run(self, ctx: StageContext) -> dict[str, Any]:
        cfg: ChronoConfig = ctx.config
        where = f"clip {ctx.item_id}"
        fps, n_frames, clip_start = _clip_frames(ctx, where)
        separated = _tracks(ctx, "separate", where)
        transcribed = _tracks(ctx, "transcribe", where)
        if sorted(separated) != sorted(transcribed):
            raise StageFailure("bad_input", f"{where}: separate has tracks {sorted(separated)} "
                               f"but transcribe has {sorted(transcribed)}; run transcribe again "
                               "(--force transcribe)")
        speech = {t: _speech_seconds(ctx, e, n_frames, fps, where) for t, e in separated.items()}
        try:
            roles, roles_source = chrono.assign_roles(speech, ctx.source.roles)
        except ValueError as e:
            raise StageFailure("bad_roles", f"{where}: {e}; fix the manifest's roles for "
                               f"source {ctx.source.id}") from e
        words = {}
        entries = []
        for track in separated:
            raw = _read_words(ctx, transcribed[track], where)
            try:
                placements = chrono.place(raw, n_frames, fps, punctuation=cfg.punctuation)
            except ValueError as e:
                raise StageFailure("bad_input", f"{where} track {track}: {e}; check "
                                   f"{transcribed[track]['words']} of transcribe") from e
            words[track] = chrono.clip_words(raw, n_frames, fps, punctuation=cfg.punctuation)
            name = f"{track}.chrono.json"
            tokens = chrono.encode(raw, n_frames, fps, punctuation=cfg.punctuation)
            (ctx.out_dir / name).write_text(json.dumps(tokens, ensure_ascii=False),
                                            encoding="utf-8")
            entries.append({
                "track": track, "chrono": name, "role": roles[track], "n_words": len(placements),
                "speech_seconds": round(speech[track], 6),
                "shifted_onsets": sum(p.shift != 0 for p in placements),
                "max_shift_frames": max((abs(p.shift) for p in placements), default=0)})
        dialogue = chrono.turns(words, cfg.turn_merge_gap_s, roles=roles)
        (ctx.out_dir / "turns.json").write_text(
            json.dumps([t.to_dict() for t in dialogue], ensure_ascii=False, indent=1),
            encoding="utf-8")
        return {"fps": fps, "n_frames": n_frames, "clip_start_s": clip_start, "roles": roles,
                "roles_source": roles_source, "tracks": entries, "turns": "turns.json",
                "n_turns": len(dialogue)}


def _clip_frames(ctx: StageContext, where: str) -> tuple[float, int, float | None]:
    """``(fps, n_frames, start)`` of the clip from the segment result."""
    meta = ctx.inputs["segment"].meta
    clip = next((c for c in meta.get("clips") or [] if c.get("clip_id") == ctx.item_id), None)
    try:
        fps, n_frames = float(meta["fps"]), int(clip["n_frames"])  # type: ignore[index]
    except (KeyError, TypeError, ValueError) as e:
        raise StageFailure("bad_input", f"{where}: the segment result has no fps or no clip "
                           f"entry with n_frames for this clip; run segment again "
                           "(--force segment)") from e
    if fps <= 0 or n_frames < 0:
        raise StageFailure("bad_input", f"{where}: segment gives fps {fps} and n_frames "
                           f"{n_frames}; expected fps > 0 and n_frames >= 0")
    start = clip.get("start")  # type: ignore[union-attr]
    return fps, n_frames, None if start is None else float(start)


def _tracks(ctx: StageContext, stage: str, where: str) -> dict[str, dict[str, Any]]:
    """``meta["tracks"]`` of an input stage, by track name, in its order."""
    entries = ctx.inputs[stage].meta.get("tracks")
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "track" in e
                                                for e in entries):
        raise StageFailure("bad_input", f"{where}: the {stage} result has no list of tracks "
                           f"(meta['tracks'] with a 'track' name each), got {entries!r}; "
                           f"run {stage} again (--force {stage})")
    by_name = {str(e["track"]): e for e in entries}
    if len(by_name) != 2:
        raise StageFailure("bad_input", f"{where}: the {stage} result has tracks "
                           f"{sorted(by_name)}; a clip needs exactly two")
    return by_name


def _speech_seconds(ctx: StageContext, entry: dict[str, Any], n_frames: int, fps: float,
                    where: str) -> float:
    """The track's speech time: ``speech_seconds`` of separate, else its VAD mask's."""
    if (seconds := entry.get("speech_seconds")) is not None:
        if isinstance(seconds, (int, float)) and seconds >= 0:
            return float(seconds)
        raise StageFailure("bad_input", f"{where} track {entry['track']}: separate gives "
                           f"speech_seconds {seconds!r}; expected a number >= 0")
    path = ctx.inputs["separate"].dir / str(entry.get("vad"))
    try:
        vad = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise StageFailure("bad_input", f"{where} track {entry['track']}: separate gives no "
                           f"speech_seconds and its VAD mask {path} cannot be read ({e}); run "
                           "separate again (--force separate)") from e
    if vad.shape != (n_frames,):
        raise StageFailure("bad_input", f"{where} track {entry['track']}: VAD mask {path.name} "
                           f"has shape {vad.shape}, expected ({n_frames},) (one per frame)")
    return float(np.count_nonzero(vad)) / fps


def _read_words(ctx: StageContext, entry: dict[str, Any], where: str) -> list[chrono.Word]:
    """The track's words from transcribe's ``{track}.words.json``."""
    path = Path(ctx.inputs["transcribe"].dir) / str(entry.get("words"))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, list):
            raise ValueError(f"expected a JSON list of words, got {type(data).__name__}")
        return [chrono.Word.from_dict(item) for item in data]
    except (OSError, ValueError, TypeError) as e:
        raise StageFailure("bad_input", f"{where} track {entry['track']}: cannot read words "
                           f"from {path} ({e}); expected a JSON list of {{text, start, end, "
                           "prob}} in clip seconds; run transcribe again "
                           "(--force transcribe)") from e
