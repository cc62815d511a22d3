"""Stage 9, shard, and the corpus assembly (responsenet.corpus) after it.

Most tests write the earlier stages' outputs by hand (small arrays, fake video bytes, real WAVs)
into a build folder, so they run in milliseconds and pin every field. The last test builds a
synthetic corpus end to end with every real stage (MediaPipe, Silero, Whisper tiny.en) and checks
the corpus against the synthetic truth.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from responsenet import chrono
from responsenet.asr_score import word_errors
from responsenet.build.stages.base import StageResult
from responsenet.build.stages.shard import ShardConfig, ShardStage, stream_words
from responsenet.build.tasks import Task, execute_task
from responsenet.build.workspace import Workspace, write_json_atomic
from responsenet.corpus import ClipShard, assemble, history_turns
from responsenet.errors import StageFailure
from responsenet.hashing import sha256_file
from responsenet.manifest import SourceEntry
from responsenet.schema import BLENDSHAPE_NAMES
from responsenet.shards import read_track_records
from responsenet.validate import validate_root
from responsenet.wavio import read_wav, write_wav

FPS, SR = 25.0, 16000
N = 50  # frames per fake clip (2 s)
CONFIG = {"shard": {"clips_per_shard": 256}}


def source(source_id: str = "src", **extra) -> SourceEntry:
    return SourceEntry(id=source_id, path="/dev/null", topic="travel", license="CC-BY-4.0",
                       participants={"left": f"{source_id}-L", "right": f"{source_id}-R"},
                       **extra)


def _result(ws: Workspace, unit: str, item: str, stage: str, meta: dict) -> StageResult:
    folder = ws.output_dir(unit, item, stage)
    folder.mkdir(parents=True, exist_ok=True)
    fp = f"{stage}-{item}-fp"
    write_json_atomic(folder / "_result.json", {"stage": stage, "meta": meta, "fingerprint": fp})
    return StageResult(folder, meta, fp)


def fake_segment(ws: Workspace, source_id: str, n_clips: int) -> StageResult:
    """A segment result with ``n_clips`` clips of N frames, one after the other, and mix WAVs."""
    folder = ws.output_dir("source", source_id, "segment")
    folder.mkdir(parents=True, exist_ok=True)
    clips = []
    for index in range(n_clips):
        clip_id = f"{source_id}_{index:03d}"
        write_wav(folder / f"{clip_id}.wav", np.full(N * 640, 0.01 * (index + 1)), SR)
        start = index * (N / FPS + 1.0)
        clips.append({"clip_id": clip_id, "index": index, "start": start,
                      "end": start + N / FPS, "n_frames": N, "video": f"{clip_id}.mp4",
                      "audio": f"{clip_id}.wav"})
    return _result(ws, "source", source_id, "segment", {"fps": FPS, "clips": clips})


def fake_clip(ws: Workspace, clip_id: str, *, roles=None, words=None, rate: int = SR,
              n_face: int = N, punctuation: str = "keep") -> dict[str, StageResult]:
    """crop, face, separate, transcribe and chrono results of one clip (tracks left, right)."""
    rng = np.random.default_rng(zlib.crc32(clip_id.encode()))
    roles = roles or {"left": "speaker", "right": "listener"}
    words = words or {"left": [{"text": "hello,", "start": 0.1, "end": 0.5, "prob": 0.9},
                               {"text": "there", "start": 0.6, "end": 1.0, "prob": 0.7}],
                      "right": [{"text": "yes", "start": 1.2, "end": 1.4, "prob": 0.5}]}
    out, folders = {}, {}
    for stage in ("crop", "face", "separate", "transcribe", "chrono"):
        folders[stage] = ws.output_dir("clip", clip_id, stage)
        folders[stage].mkdir(parents=True, exist_ok=True)
    entries = {stage: [] for stage in folders}
    for track in ("left", "right"):
        (folders["crop"] / f"{track}.mp4").write_bytes(f"video {clip_id} {track}".encode())
        entries["crop"].append({"track": track, "panel": track, "video": f"{track}.mp4",
                                "presence": 0.96})
        present = np.ones(n_face, bool)
        present[:2] = False
        interpolated = np.zeros(n_face, bool)
        interpolated[10] = True
        np.savez(folders["face"] / f"{track}.face.npz",
                 blendshapes=rng.random((n_face, 52), dtype=np.float32),
                 pose=rng.standard_normal((n_face, 12)).astype(np.float32),
                 present=present, detected=present & ~interpolated, interpolated=interpolated)
        entries["face"].append({"track": track, "file": f"{track}.face.npz"})
        write_wav(folders["separate"] / f"{track}.wav", 0.1 * rng.standard_normal(N * rate // 25),
                  rate)
        np.save(folders["separate"] / f"{track}.vad.npy", rng.random(N) < 0.5)
        entries["separate"].append({"track": track, "audio": f"{track}.wav",
                                    "vad": f"{track}.vad.npy", "snr_db": 20.5,
                                    "leakage_db": None if track == "right" else -12.0})
        (folders["transcribe"] / f"{track}.words.json").write_text(json.dumps(words[track]))
        entries["transcribe"].append({"track": track, "words": f"{track}.words.json"})
        tokens = chrono.encode([chrono.Word.from_dict(w) for w in words[track]], N, FPS,
                               punctuation=punctuation)
        (folders["chrono"] / f"{track}.chrono.json").write_text(json.dumps(tokens))
        entries["chrono"].append({"track": track, "chrono": f"{track}.chrono.json",
                                  "role": roles[track]})
    tracks = {t: [chrono.Word.from_dict(w) for w in ws_] for t, ws_ in words.items()}
    turns = [t.to_dict() for t in chrono.turns(tracks, 0.5, roles=roles)]
    (folders["chrono"] / "turns.json").write_text(json.dumps(turns))
    metas = {
        "crop": {"fps": FPS, "n_frames": N, "tracks": entries["crop"]},
        "face": {"fps": FPS, "n_frames": N, "tracks": entries["face"],
                 "blendshape_names": list(BLENDSHAPE_NAMES)},
        "separate": {"fps": FPS, "n_frames": N, "sample_rate": rate, "tracks":
                     entries["separate"], "assignment": {"confidence": 0.42}},
        "transcribe": {"language": "en", "tracks": entries["transcribe"]},
        "chrono": {"fps": FPS, "n_frames": N, "roles": roles, "tracks": entries["chrono"],
                   "turns": "turns.json"},
    }
    for stage, meta in metas.items():
        out[stage] = _result(ws, "clip", clip_id, stage, meta)
    return out


def run_shard(ws: Workspace, entry: SourceEntry, clip_id: str, segment: StageResult,
              inputs: dict[str, StageResult], **config):
    task = Task(ShardStage, "clip", clip_id, entry, ShardConfig(**config).model_dump(),
                {"segment": segment, **inputs}, f"shard-{clip_id}", ws.root)
    return execute_task(task)


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return Workspace(tmp_path / "build")


def one_clip(ws: Workspace, **kwargs) -> tuple[SourceEntry, StageResult, dict[str, StageResult]]:
    entry = source()
    return entry, fake_segment(ws, "src", 1), fake_clip(ws, "src_000", **kwargs)


def test_rows_hold_every_input(ws):
    entry, segment, inputs = one_clip(ws)
    outcome = run_shard(ws, entry, "src_000", segment, inputs)
    assert outcome.status == "done", outcome.message
    out = ws.output_dir("clip", "src_000", "shard")
    rows = {r.role: r for r in read_track_records(out / "tracks.parquet")}
    speaker, listener = rows["speaker"], rows["listener"]
    assert (speaker.panel, listener.panel) == ("left", "right")
    assert (speaker.participant_id, listener.participant_id) == ("src-L", "src-R")
    face = np.load(inputs["face"].dir / "left.face.npz")
    np.testing.assert_array_equal(speaker.blendshapes, face["blendshapes"])
    np.testing.assert_array_equal(speaker.pose, face["pose"])
    np.testing.assert_array_equal(speaker.face_present, face["present"])
    np.testing.assert_array_equal(speaker.face_interpolated, face["interpolated"])
    np.testing.assert_array_equal(listener.vad, np.load(inputs["separate"].dir / "right.vad.npy"))
    assert speaker.chrono == json.loads((inputs["chrono"].dir / "left.chrono.json").read_text())
    assert [w["text"] for w in speaker.words] == ["hello,", "there"]
    assert speaker.words[0]["prob"] == pytest.approx(0.9)
    assert speaker.turns == listener.turns
    assert [t["role"] for t in speaker.turns] == ["speaker", "listener"]
    assert speaker.quality == pytest.approx({
        "face_presence": 0.96, "asr_confidence": 0.8, "separation_confidence": 0.42,
        "snr_db": 20.5, "leakage_db": -12.0})
    assert listener.quality["leakage_db"] is None
    assert (speaker.split, speaker.source_id, speaker.topic, speaker.language) == (
        "unsplit", "src", "travel", "en")
    assert (speaker.n_frames, speaker.duration_s, speaker.source_start_s) == (N, 2.0, 0.0)
    assert speaker.video_path == "media/src_000/speaker.mp4"
    for name, digest in ((f"{r.role}.{ext}", getattr(r, f"{kind}_sha256")) for r in rows.values()
                         for kind, ext in (("video", "mp4"), ("audio", "wav"))):
        assert sha256_file(out / name) == digest
    assert os.path.samefile(out / "speaker.mp4", inputs["crop"].dir / "left.mp4")  # linked
    assert speaker.mix_sha256 == listener.mix_sha256 == sha256_file(out / "mix.wav")
    assert outcome.meta["panels"] == {"speaker": "left", "listener": "right"}
    assert outcome.meta["inputs"]["face"] == inputs["face"].fingerprint


def test_copies_when_asked_and_resamples_speech_to_16k(ws):
    entry, segment, inputs = one_clip(ws, rate=8000)
    outcome = run_shard(ws, entry, "src_000", segment, inputs, link_media=False)
    assert outcome.status == "done", outcome.message
    out = ws.output_dir("clip", "src_000", "shard")
    assert not os.path.samefile(out / "speaker.mp4", inputs["crop"].dir / "left.mp4")
    audio, rate = read_wav(out / "listener.wav")
    assert (rate, len(audio)) == (SR, N * 640)


def test_words_follow_the_stream_when_chrono_strips_punctuation(ws):
    entry, segment, inputs = one_clip(ws, punctuation="strip")
    assert run_shard(ws, entry, "src_000", segment, inputs).status == "done"
    rows = read_track_records(ws.output_dir("clip", "src_000", "shard") / "tracks.parquet")
    speaker = next(r for r in rows if r.role == "speaker")
    assert [w["text"] for w in speaker.words] == ["hello", "there"]


def test_stream_words_refuses_a_stream_of_other_words():
    tokens = chrono.encode([chrono.Word("other", 0.1, 0.3)], N, FPS)
    with pytest.raises(StageFailure) as error:
        stream_words([chrono.Word("hello", 0.1, 0.3)], tokens, FPS, "clip c track left")
    assert error.value.reason == "bad_input"
    assert "--force chrono" in error.value.message


@pytest.mark.parametrize("kwargs, fragment", [
    ({"roles": {"left": "speaker", "right": "speaker"}}, "expected one speaker and one listener"),
    ({"n_face": N - 1}, "blendshapes has 49 frames, n_frames is 50"),
])
def test_bad_inputs_fail_with_bad_input(ws, kwargs, fragment):
    entry, segment, inputs = one_clip(ws, **kwargs)
    outcome = run_shard(ws, entry, "src_000", segment, inputs)
    assert (outcome.status, outcome.reason) == ("failed", "bad_input")
    assert fragment in outcome.message and "src_000" in outcome.message
    assert not ws.output_dir("clip", "src_000", "shard").exists()


def test_wrong_blendshape_names_fail(ws):
    entry, segment, inputs = one_clip(ws)
    face = inputs["face"]
    inputs["face"] = StageResult(face.dir, {**face.meta, "blendshape_names": ["a"] * 52},
                                 face.fingerprint)
    outcome = run_shard(ws, entry, "src_000", segment, inputs)
    assert outcome.reason == "bad_input" and "BLENDSHAPE_NAMES" in outcome.message


def test_history_shifts_earlier_turns_and_follows_panels():
    clips = [ClipShard("s_000", "s", 0, 10.0, {"speaker": "left", "listener": "right"},
                       Path("."), {}, 2.0),
             ClipShard("s_001", "s", 1, 14.0, {"speaker": "right", "listener": "left"},
                       Path("."), {}, 2.0),
             ClipShard("t_000", "t", 0, 0.0, {"speaker": "left", "listener": "right"},
                       Path("."), {}, 2.0)]
    turns = {"s_000": [{"role": "speaker", "start": 0.5, "end": 1.5, "text": "hi"},
                       {"role": "listener", "start": 1.6, "end": 1.9, "text": "yes"}],
             "s_001": [{"role": "speaker", "start": 0.0, "end": 1.0, "text": "later"}],
             "t_000": [{"role": "speaker", "start": 0.0, "end": 1.0, "text": "other source"}]}
    history = history_turns(clips, turns)
    assert history["s_000"] == [] and history["t_000"] == []
    # s_001 starts 4 s after s_000; the left person (speaker then) is the listener now.
    assert history["s_001"] == [{"role": "listener", "start": -3.5, "end": -2.5, "text": "hi"},
                                {"role": "speaker", "start": -2.4, "end": -2.1, "text": "yes"}]
    assert history_turns(clips, turns, max_turns=1)["s_001"] == history["s_001"][-1:]


def build_folder(ws: Workspace) -> list[SourceEntry]:
    """Source a: two clips; source b: one clip that failed in face; source c: no download."""
    entries = [source("a"), source("b"), source("c")]
    segment = fake_segment(ws, "a", 2)
    for clip_id in ("a_000", "a_001"):
        assert run_shard(ws, entries[0], clip_id, segment, fake_clip(ws, clip_id)).status == "done"
    fake_segment(ws, "b", 1)
    write_json_atomic(ws.failure_file("clip", "b_000", "face"),
                      {"stage": "face", "reason": "no_face", "message": "no face in b_000"})
    write_json_atomic(ws.failure_file("source", "c", "download"),
                      {"stage": "download", "reason": "not_found", "message": "c is gone"})
    return entries


def test_assemble_writes_a_valid_corpus_and_lists_what_is_left_out(ws):
    entries = build_folder(ws)
    result = assemble(ws.root, entries, CONFIG)
    assert validate_root(ws.root) == []
    assert (result.clips, result.rows, result.changed) == (2, 4, True)
    assert result.shards == ["shards/unsplit/tracks-00000.parquet"]
    shard = pq.ParquetFile(ws.root / result.shards[0])
    assert [shard.metadata.row_group(i).num_rows for i in range(shard.num_row_groups)] == [2, 2]
    group = shard.metadata.row_group(0)
    encodings = {group.column(j).path_in_schema: group.column(j).encodings
                 for j in range(group.num_columns)}
    assert "RLE_DICTIONARY" in encodings["chrono.list.element"]
    assert "RLE_DICTIONARY" not in encodings["blendshapes.list.element.list.element"]
    rows = {(r.clip_id, r.role): r for r in read_track_records(ws.root / result.shards[0])}
    assert rows[("a_000", "speaker")].history == []
    earlier = rows[("a_000", "speaker")].turns
    offset = -(N / FPS + 1.0)  # a_001 starts 3 s after a_000
    assert rows[("a_001", "listener")].history == [
        {**t, "start": pytest.approx(t["start"] + offset), "end": pytest.approx(t["end"] + offset)}
        for t in earlier]
    card = json.loads((ws.root / "dataset.json").read_text())
    assert card["excluded"] == [
        {"source_id": "b", "clip_id": "b_000", "stage": "face", "reason": "no_face",
         "message": "no face in b_000"},
        {"source_id": "c", "clip_id": None, "stage": "download", "reason": "not_found",
         "message": "c is gone"}]
    assert card["build_report"]["failures_by_reason"] == {"no_face": 1, "not_found": 1}
    assert card["build_report"]["stages"]["shard"] == {"done": 2, "failed": 0}
    assert card["config"] == CONFIG
    assert sorted(p.name for p in (ws.root / "media" / "a_001").iterdir()) == [
        "listener.mp4", "listener.wav", "mix.wav", "speaker.mp4", "speaker.wav"]


def test_assemble_again_changes_nothing(ws):
    entries = build_folder(ws)
    assemble(ws.root, entries, CONFIG)
    before = {p: p.read_bytes() for p in ws.root.rglob("*")
              if p.is_file() and "work" not in p.parts}
    again = assemble(ws.root, entries, CONFIG)
    assert not again.changed
    after = {p: p.read_bytes() for p in ws.root.rglob("*")
             if p.is_file() and "work" not in p.parts}
    assert after == before
    assert not [p for p in ws.root.iterdir() if p.name.startswith(".") and p.name != ".lock"]


def test_a_changed_input_leaves_the_stale_clip_out(ws):
    entries = build_folder(ws)
    result_file = ws.output_dir("clip", "a_001", "chrono") / "_result.json"
    data = json.loads(result_file.read_text())
    result_file.write_text(json.dumps({**data, "fingerprint": "changed"}))
    result = assemble(ws.root, entries, CONFIG)
    assert result.clips == 1
    assert result.excluded[0]["clip_id"] == "a_001"
    assert result.excluded[0]["reason"] == "not_built"
    assert validate_root(ws.root) == []
    assert not (ws.root / "media" / "a_001").exists()


def test_a_later_failure_leaves_the_clip_out_despite_its_old_outputs(ws):
    entries = build_folder(ws)
    write_json_atomic(ws.failure_file("clip", "a_000", "separate"),
                      {"stage": "separate", "reason": "no_speech", "message": "silent"})
    result = assemble(ws.root, entries, CONFIG)
    assert [(x["clip_id"], x["stage"], x["reason"]) for x in result.excluded] == [
        ("a_000", "separate", "no_speech"), ("b_000", "face", "no_face"),
        (None, "download", "not_found")]
    assert validate_root(ws.root) == []


def test_split_files_place_rows_and_shards_hold_clips_per_shard(ws):
    entries = build_folder(ws)
    segment = fake_segment(ws, "d", 3)
    entries.append(source("d"))
    for k in range(3):
        assert run_shard(ws, entries[-1], f"d_{k:03d}", segment,
                         fake_clip(ws, f"d_{k:03d}")).status == "done"
    (ws.root / "splits").mkdir(parents=True)
    (ws.root / "splits" / "train.txt").write_text("d_000\nd_001\nd_002\n")
    (ws.root / "splits" / "test.txt").write_text("# pair a\na_000\na_001\n")
    result = assemble(ws.root, entries, CONFIG, ShardConfig(clips_per_shard=2))
    assert result.shards == ["shards/test/tracks-00000.parquet",
                             "shards/train/tracks-00000.parquet",
                             "shards/train/tracks-00001.parquet"]
    assert validate_root(ws.root) == []
    assert not (ws.root / "shards" / "unsplit").exists()
    card = json.loads((ws.root / "dataset.json").read_text())
    assert "splits/train.txt" in card["checksums"]
    assert card["build_report"]["splits"] == {"test": 2, "train": 3}


# --- end to end: every real stage on synthetic conversations ----------------------------------

#: Pooled WER of the speaker rows against the synthetic truth: faster-whisper tiny.en on the
#: avgate-separated voices, measured 0.38 here (0.50-0.53 with 256-pixel crops, whose mouth
#: activity separates the voices less well; 0.32 on the demo corpus). Whisper tiny.en on the
#: clean synthetic voices alone gives about 0.3.
SPEAKER_WER = 0.5


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path, dict]:
    """Two synthetic conversations with a camera cut (two clips each) and a source without
    faces, built with ``--stage all`` (cpu-small, 384-pixel crops) and built again."""
    pytest.importorskip("mediapipe", reason="the face stages need MediaPipe (extra 'face')")
    pytest.importorskip("faster_whisper", reason="transcribe needs faster-whisper (extra 'asr')")
    import yaml

    from responsenet.build.pipeline import build
    from responsenet.synth.generate import SynthSpec, synthesize
    from responsenet.testing.media import make_video

    folder = tmp_path_factory.mktemp("shard-e2e")
    manifest = synthesize(folder / "synth", SynthSpec(n=2, seed=3, duration=10,
                                                      size=(480, 270), cut=True), progress=False)
    rows = yaml.safe_load(manifest.read_text())["sources"]
    for row in rows:
        row["path"] = str(folder / "synth" / row["path"])
    make_video(folder / "noface.mp4", duration=4.0, size=(320, 180))
    rows.append({"id": "noface", "path": str(folder / "noface.mp4"), "layout": "lr"})
    (folder / "m.yaml").write_text(yaml.safe_dump(rows))
    out = folder / "corpus"
    config = Path(__file__).resolve().parents[3] / "pipelines" / "cpu-small.yaml"
    report = build(folder / "m.yaml", out, "all", config_path=config,
                   overrides=["crop.size=384"], progress=False)
    if any(f["reason"] == "weights_missing" for f in report.failures):
        pytest.skip(f"model weights missing: {report.failures}")
    first = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*")
             if p.is_file() and p.parts[len(out.parts)] in ("dataset.json", "shards", "media")}
    again = build(folder / "m.yaml", out, "all", config_path=config,
                  overrides=["crop.size=384"], progress=False)
    return out, folder / "synth", {"first": first, "report": report, "again": again}


def test_end_to_end_corpus_is_valid_and_matches_the_truth(built):
    out, synth, _ = built
    assert validate_root(out) == []
    records = [r for p in sorted((out / "shards").rglob("*.parquet"))
               for r in read_track_records(p)]
    clips = sorted({r.clip_id for r in records})
    assert clips == ["synth-s3-000_000", "synth-s3-000_001", "synth-s3-001_000",
                     "synth-s3-001_001"]
    assert len(records) == 2 * len(clips)
    errors = total = 0
    for record in records:
        truth = json.loads((synth / f"{record.source_id}.truth.json").read_text())
        person = next(p for p in truth["participants"] if p["panel"] == record.panel)
        assert record.role == person["role"]
        assert record.participant_id == person["participant_id"]
        for name in ("blendshapes", "pose", "face_present", "face_interpolated", "vad", "chrono"):
            assert len(getattr(record, name)) == record.n_frames, name
        for kind in ("video", "audio", "mix"):
            assert sha256_file(out / getattr(record, f"{kind}_path")) == getattr(
                record, f"{kind}_sha256")
        if record.role == "speaker":
            start, end = record.source_start_s, record.source_end_s
            ref = " ".join(w["text"] for w in person["words"]
                           if start <= (w["start"] + w["end"]) / 2 < end)
            e, n = word_errors(ref, " ".join(w["text"] for w in record.words))
            errors, total = errors + e, total + n
        if record.clip_id.endswith("_001"):
            assert record.history and all(t["end"] <= 0 for t in record.history)
    assert errors / total < SPEAKER_WER


def test_end_to_end_failed_clip_is_listed_and_a_rebuild_changes_nothing(built):
    out, _, runs = built
    card = json.loads((out / "dataset.json").read_text())
    assert [(x["clip_id"], x["stage"], x["reason"]) for x in card["excluded"]] == [
        ("noface_000", "crop", "no_face")]
    assert not (out / "media" / "noface_000").exists()
    again = runs["again"]
    assert again.stages["shard"].done == 0 and again.stages["shard"].skipped == 4
    now = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*")
           if p.is_file() and p.parts[len(out.parts)] in ("dataset.json", "shards", "media")}
    assert now == runs["first"]
    assert any("dataset.json unchanged" in note for note in again.notes)
