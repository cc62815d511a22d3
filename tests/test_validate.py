"""validate_root: a valid tiny corpus has no problems; each corruption gives its exact problem."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from responsenet.hashing import sha256_file
from responsenet.schema import FORMAT_VERSION_KEY, tracks_schema
from responsenet.testing.corpus import clip_id_for, make_tiny_corpus, refresh_checksums
from responsenet.validate import schema_problems, validate_root, word_time_problems

TRAIN = "shards/train/tracks-00000.parquet"
VAL = "shards/val/tracks-00000.parquet"
C0, C1 = clip_id_for(0), clip_id_for(1)  # C0 is in train, C1 in val


@pytest.fixture
def root(tmp_path):
    return make_tiny_corpus(tmp_path / "corpus", n_clips=3, n_frames=10)


def _edit_rows(root, rel: str, edit: Callable[[list[dict]], None], refresh: bool = True) -> None:
    """Rewrite a shard with edited rows, bypassing write_tracks' checks (like a buggy writer)."""
    rows = pq.read_table(root / rel).to_pylist()
    edit(rows)
    pq.write_table(pa.Table.from_pylist(rows, schema=tracks_schema()), root / rel)
    if refresh:
        refresh_checksums(root)


def _row(rows: list[dict], clip_id: str, role: str) -> dict:
    return next(r for r in rows if r["clip_id"] == clip_id and r["role"] == role)


def _edit_card(root, **changes) -> None:
    path = root / "dataset.json"
    card = json.loads(path.read_text())
    card.update(changes)
    path.write_text(json.dumps(card))


def test_valid_corpus_has_no_problems(root):
    assert validate_root(root) == []


def test_wrong_array_length(root):
    _edit_rows(root, TRAIN, lambda rows: _row(rows, C0, "listener")["blendshapes"].pop())
    assert validate_root(root) == [
        f"{TRAIN}: clip {C0} role listener: blendshapes has 9 frames, n_frames is 10"]


def test_tracks_disagree_on_n_frames(root):
    def shorten(rows):
        row = _row(rows, C0, "listener")
        row["n_frames"], row["duration_s"] = 9, 9 / 25
        for name in ("blendshapes", "pose", "face_present", "face_interpolated", "vad", "chrono"):
            row[name].pop()
        row["words"] = []
    _edit_rows(root, TRAIN, shorten)
    assert validate_root(root) == [
        f"clip {C0}: tracks disagree on n_frames (listener 9, speaker 10)"]


def test_missing_media(root):
    (root / f"media/{C0}/listener.wav").unlink()
    rel = f"media/{C0}/listener.wav"
    assert validate_root(root) == [
        f"dataset.json: checksums: {rel} does not exist",
        f"{TRAIN}: clip {C0} role listener: audio_path {rel} does not exist"]


def test_media_sha_mismatch(root):
    rel = f"media/{C1}/mix.wav"
    recorded = sha256_file(root / rel)
    (root / rel).write_bytes(b"changed")
    actual = sha256_file(root / rel)
    mismatch = f"{rel} has sha256 {actual[:12]}..., recorded {recorded[:12]}..."
    assert validate_root(root) == [
        f"dataset.json: checksums: {mismatch}",
        f"{VAL}: clip {C1} role listener: mix_path {mismatch}",
        f"{VAL}: clip {C1} role speaker: mix_path {mismatch}"]


def test_checksum_of_a_splits_file(root):
    recorded = sha256_file(root / "splits/train.txt")
    with open(root / "splits/train.txt", "a") as f:
        f.write("# comments and blank lines are ignored\n\n")
    actual = sha256_file(root / "splits/train.txt")
    assert validate_root(root) == [f"dataset.json: checksums: splits/train.txt has sha256 "
                                   f"{actual[:12]}..., recorded {recorded[:12]}..."]


def test_same_clip_in_two_splits(root):
    moved = [dict(r, split="val") for r in pq.read_table(root / TRAIN).to_pylist()]
    _edit_rows(root, VAL, lambda rows: rows.extend(moved))
    unique = "(clip_id, role) must be unique"
    assert validate_root(root) == [
        f"clip {C0} role listener: 2 rows ({TRAIN}, {VAL}); {unique}",
        f"clip {C0} role speaker: 2 rows ({TRAIN}, {VAL}); {unique}",
        f"clip {C0}: in splits train and val; a clip belongs to one split",
        f"clip {C0}: listed in splits/train.txt but its rows are in split train, val",
        f"participant p000: in splits train ({C0}) and val ({C0}); "
        "splits must be disjoint by participant",
        f"participant p001: in splits train ({C0}) and val ({C0}); "
        "splits must be disjoint by participant"]


def test_participant_in_two_splits(root):
    _edit_rows(root, VAL, lambda rows: _row(rows, C1, "listener").update(participant_id="p000"))
    problem = (f"participant p000: in splits train ({C0}) and val ({C1}); "
               "splits must be disjoint by participant")
    assert validate_root(root) == [problem]
    shutil.rmtree(root / "splits")  # without split files there is no participant rule
    refresh_checksums(root)
    assert validate_root(root) == []


def test_split_files_disagree_with_shards(root):
    (root / "splits/val.txt").write_text(f"{C0}\nsrc-gone_000\n")
    refresh_checksums(root)
    assert validate_root(root) == [
        f"clip {C0}: listed in splits/train.txt and splits/val.txt",
        "splits/val.txt: clip src-gone_000 has no rows in shards/",
        f"clip {C1}: in shards but in no splits/*.txt file"]


def test_split_column_disagrees_with_folder(root):
    _edit_rows(root, TRAIN, lambda rows: _row(rows, C0, "speaker").update(split="test"))
    assert validate_root(root) == [
        f"{TRAIN}: clip {C0} role speaker: split is 'test' but the shard is in shards/train/",
        f"clip {C0}: in splits test and train; a clip belongs to one split",
        f"clip {C0}: listed in splits/train.txt but its rows are in split test, train"]


def test_missing_dataset_json(root):
    (root / "dataset.json").unlink()
    assert validate_root(root) == [
        "dataset.json: missing; a built corpus has {root}/dataset.json (shard stage)"]


def test_wrong_format_version_and_missing_keys(root):
    _edit_card(root, format_version=2)
    assert validate_root(root) == ["dataset.json: format_version is 2, expected 1"]
    card = json.loads((root / "dataset.json").read_text())
    del card["pipeline_version"], card["format_version"]
    (root / "dataset.json").write_text(json.dumps(card))
    assert validate_root(root) == ["dataset.json: missing key 'format_version'",
                                   "dataset.json: missing key 'pipeline_version'"]


def test_shard_with_another_format_version(root):
    table = pq.read_table(root / TRAIN).replace_schema_metadata({FORMAT_VERSION_KEY: b"2"})
    pq.write_table(table, root / TRAIN)
    refresh_checksums(root)
    assert validate_root(root) == [f"{TRAIN}: schema metadata format version is 2, expected 1"]


def test_schema_field_missing_extra_and_retyped(root):
    table = pq.read_table(root / TRAIN).drop_columns(["vad"])
    table = table.append_column("extra", pa.array([1, 2]))
    index = table.schema.get_field_index("pose")
    pose = table.column("pose").cast(pa.list_(pa.list_(pa.float32())))
    table = table.set_column(index, "pose", pose)
    pq.write_table(table, root / TRAIN)
    refresh_checksums(root)
    actual = pq.read_schema(root / TRAIN).field("pose").type
    assert validate_root(root) == [
        f"{TRAIN}: field vad is missing",
        f"{TRAIN}: field extra is not a format v1 field",
        f"{TRAIN}: field pose has type {actual}, expected {tracks_schema().field('pose').type}"]


def test_duplicate_clip_role(root):
    _edit_rows(root, TRAIN, lambda rows: rows.append(dict(_row(rows, C0, "speaker"))))
    assert validate_root(root) == [
        f"clip {C0} role speaker: 2 rows ({TRAIN}, {TRAIN}); (clip_id, role) must be unique"]


def test_clip_with_two_listeners(root):
    _edit_rows(root, TRAIN, lambda rows: _row(rows, C0, "speaker").update(role="listener"))
    assert validate_root(root) == [
        f"clip {C0} role listener: 2 rows ({TRAIN}, {TRAIN}); (clip_id, role) must be unique",
        f"clip {C0}: no speaker row; a clip has one speaker and one listener row"]


def test_word_after_clip_end(root):
    def stretch(rows):
        _row(rows, C0, "speaker")["words"][1]["end"] = 0.5
    _edit_rows(root, TRAIN, stretch)
    word = pq.read_table(root / TRAIN).to_pylist()[1]["words"][1]["text"]
    assert validate_root(root) == [f"{TRAIN}: clip {C0} role speaker: words[1] {word!r} ends "
                                   "at 0.500 s, after duration_s 0.400"]


def test_shard_outside_split_folder_and_unsafe_media_path(root):
    _edit_rows(root, TRAIN, lambda rows: _row(rows, C0, "speaker").update(
        video_path="../outside.mp4"), refresh=False)
    (root / TRAIN).rename(root / "shards/tracks-00000.parquet")
    refresh_checksums(root)
    assert validate_root(root) == [
        "shards/tracks-00000.parquet: not in a split folder; shards live in shards/{split}/",
        f"shards/tracks-00000.parquet: clip {C0} role speaker: video_path '../outside.mp4' "
        "is not a relative path inside the corpus root"]


def test_no_shards(root):
    shutil.rmtree(root / "shards")
    refresh_checksums(root)
    problems = validate_root(root)
    assert problems[0] == "shards/: no Parquet shards; expected shards/{split}/tracks-00000.parquet"


def test_pure_checks():
    words = [{"text": "a", "start": 0.2, "end": 0.1}, {"text": "b", "start": -1.0, "end": 0.0}]
    assert word_time_problems(words, 1.0) == [
        "words[0] 'a' starts at 0.200 s, after its end 0.100 s",
        "words[1] 'b' starts at -1.000 s, before the clip start 0 s"]
    assert schema_problems(tracks_schema()) == []


def test_unreadable_shard(root):
    (root / VAL).write_bytes(b"not parquet")
    refresh_checksums(root)
    problems = validate_root(root)
    assert problems[0].startswith(f"{VAL}: not a readable Parquet file (")
    assert problems[1:] == [f"splits/val.txt: clip {C1} has no rows in shards/"]
