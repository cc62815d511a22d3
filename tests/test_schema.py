"""Format v1 tracks shards: schema constants, write -> read round trips, readers in the wild."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from responsenet import FORMAT_VERSION
from responsenet.hashing import checksum_tree, sha256_bytes, sha256_file
from responsenet.schema import (
    BLENDSHAPE_NAMES,
    FORMAT_VERSION_KEY,
    POSE_FIELDS,
    ShardFormatError,
    TrackRecord,
    tracks_schema,
)
from responsenet.shards import read_track_records, read_tracks, tracks_table, write_tracks
from responsenet.testing.corpus import clip_id_for, make_tiny_corpus, make_track


def _clip_rows(index: int, n_frames: int = 10, seed: int = 0) -> list[dict]:
    clip_id = clip_id_for(index)
    return [make_track(clip_id, role, n_frames=n_frames, seed=seed)
            for role in ("speaker", "listener")]


def _sorted_records(rows: list[dict]) -> list[TrackRecord]:
    return sorted((TrackRecord.from_dict(r) for r in rows), key=lambda r: (r.clip_id, r.role))


def test_blendshape_names_follow_mediapipe_order():
    assert len(BLENDSHAPE_NAMES) == 52 and len(set(BLENDSHAPE_NAMES)) == 52
    assert BLENDSHAPE_NAMES[:4] == ("_neutral", "browDownLeft", "browDownRight", "browInnerUp")
    assert BLENDSHAPE_NAMES.index("jawOpen") == 25
    assert BLENDSHAPE_NAMES[-1] == "noseSneerRight"
    assert "tongueOut" not in BLENDSHAPE_NAMES


def test_pose_fields_are_top_three_rows_row_major():
    assert POSE_FIELDS == ("m00", "m01", "m02", "m03", "m10", "m11", "m12", "m13",
                           "m20", "m21", "m22", "m23")


def test_schema_carries_format_version_and_matches_record_fields():
    schema = tracks_schema()
    assert schema.metadata[FORMAT_VERSION_KEY] == str(FORMAT_VERSION).encode()
    assert set(schema.names) == {f.name for f in dataclasses.fields(TrackRecord)}
    assert schema.field("blendshapes").type == pa.list_(pa.list_(pa.float32(), 52))
    assert schema.field("chrono").type == pa.list_(pa.string())


@pytest.mark.parametrize("n_frames", [0, 1, 25])
def test_record_dict_round_trip(n_frames):
    row = make_track("src-a_000", "listener", n_frames=n_frames)
    record = TrackRecord.from_dict(row)
    assert TrackRecord.from_dict(record.to_dict()) == record
    assert record.blendshapes.shape == (n_frames, 52) and record.pose.shape == (n_frames, 12)


def test_write_read_round_trip(tmp_path):
    rows = _clip_rows(1) + _clip_rows(0, n_frames=7)
    path = write_tracks(rows, tmp_path / "shards" / "train" / "tracks-00000.parquet")
    assert read_track_records(path) == _sorted_records(rows)
    assert read_tracks(path).schema.metadata[FORMAT_VERSION_KEY] == b"1"


_words = st.lists(st.tuples(st.text(min_size=1, max_size=8), st.floats(0, 1), st.floats(0, 1),
                            st.one_of(st.none(), st.floats(0, 1))), max_size=6)


@given(n_frames=st.integers(0, 40), seed=st.integers(0, 2**16), words=_words)
@settings(max_examples=25, deadline=None)
def test_write_read_round_trip_random(n_frames, seed, words):
    rows = _clip_rows(0, n_frames=n_frames, seed=seed)
    duration = rows[0]["duration_s"]
    rows[0]["words"] = [{"text": text, "start": min(a, b) * duration,
                         "end": max(a, b) * duration, "prob": prob} for text, a, b, prob in words]
    with tempfile.TemporaryDirectory() as tmp:
        path = write_tracks(rows, Path(tmp) / "tracks-00000.parquet")
        assert read_track_records(path) == _sorted_records(rows)


def test_one_clip_per_row_group_and_clip_reads(tmp_path):
    rows = [row for i in range(3) for row in _clip_rows(i)]
    path = write_tracks(rows, tmp_path / "tracks-00000.parquet")
    meta = pq.ParquetFile(path).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [2, 2, 2]
    table = read_tracks(path, clip_ids=[clip_id_for(1)], columns=["clip_id", "role"])
    assert table.to_pylist() == [{"clip_id": clip_id_for(1), "role": "listener"},
                                 {"clip_id": clip_id_for(1), "role": "speaker"}]
    path = write_tracks(rows, tmp_path / "tracks-00001.parquet", row_group_size=4)
    meta = pq.ParquetFile(path).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [4, 2]


def test_write_rejects_wrong_length_atomically(tmp_path):
    path = write_tracks(_clip_rows(0), tmp_path / "tracks-00000.parquet")
    before = path.read_bytes()
    rows = _clip_rows(0)
    rows[1]["vad"] = rows[1]["vad"][:-1]
    with pytest.raises(ShardFormatError) as err:
        write_tracks(rows, path)
    expected = f"clip {clip_id_for(0)} role listener: vad has 9 frames, n_frames is 10"
    assert str(err.value) == expected
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tracks-00000.parquet"]


def test_write_rejects_wrong_width_and_missing_field(tmp_path):
    rows = _clip_rows(0)
    rows[0]["blendshapes"] = rows[0]["blendshapes"][:, :51]
    with pytest.raises(ShardFormatError, match=r"role speaker: blendshapes has shape \(10, 51\)"):
        tracks_table(rows)
    rows = _clip_rows(0)
    del rows[0]["pose"]
    with pytest.raises(ShardFormatError, match="row 0 .* missing 1 required keyword-only"):
        tracks_table(rows)


@pytest.mark.parametrize("version, message", [
    (None, "no responsenet.format_version in the Parquet schema metadata"),
    (b"2", "format version 2, this responsenet reads version 1"),
])
def test_read_checks_format_version(tmp_path, version, message):
    table = tracks_table(_clip_rows(0))
    metadata = None if version is None else {FORMAT_VERSION_KEY: version}
    table = table.replace_schema_metadata(metadata)
    pq.write_table(table, tmp_path / "t.parquet")
    with pytest.raises(ShardFormatError, match=message):
        read_tracks(tmp_path / "t.parquet")


def test_io_names_importable_from_schema():
    from responsenet import schema

    assert (schema.read_tracks, schema.write_tracks) == (read_tracks, write_tracks)


def test_readable_by_pandas(tmp_path):
    pd = pytest.importorskip("pandas", reason="pandas is optional; pip install pandas")
    rows = _clip_rows(0)
    frame = pd.read_parquet(write_tracks(rows, tmp_path / "tracks-00000.parquet"))
    assert list(frame["role"]) == ["listener", "speaker"]
    speaker = frame[frame["role"] == "speaker"].iloc[0]
    assert np.array_equal(np.stack(speaker["blendshapes"]), rows[0]["blendshapes"])
    assert list(speaker["chrono"]) == rows[0]["chrono"]


def test_readable_by_duckdb(tmp_path):
    duckdb = pytest.importorskip("duckdb", reason="duckdb is optional; pip install duckdb")
    rows = _clip_rows(0)
    path = write_tracks(rows, tmp_path / "tracks-00000.parquet")
    got = duckdb.sql(
        "SELECT len(blendshapes), len(blendshapes[1]), blendshapes[3][26], chrono[1], "
        f"words[1].text FROM read_parquet('{path}') WHERE role = 'speaker'").fetchall()
    jaw = float(rows[0]["blendshapes"][2, BLENDSHAPE_NAMES.index("jawOpen")])
    assert got == [(10, 52, pytest.approx(jaw), rows[0]["chrono"][0], rows[0]["words"][0]["text"])]


def test_readable_by_pyarrow_dataset(tmp_path):
    root = make_tiny_corpus(tmp_path, n_clips=3)
    dataset = ds.dataset(root / "shards", format="parquet")
    assert dataset.count_rows() == 6
    table = dataset.to_table(columns=["clip_id", "n_frames"], filter=ds.field("split") == "val")
    assert table.to_pylist() == [{"clip_id": clip_id_for(1), "n_frames": 10}] * 2


def test_readable_by_hf_datasets(tmp_path):
    datasets = pytest.importorskip("datasets", reason="Hugging Face datasets is not installed")
    path = write_tracks(_clip_rows(0), tmp_path / "tracks-00000.parquet")
    loaded = datasets.load_dataset("parquet", data_files=str(path), split="train",
                                   cache_dir=str(tmp_path / "hf"))
    assert loaded.num_rows == 2 and len(loaded[0]["blendshapes"][0]) == 52


def test_hashing(tmp_path):
    (tmp_path / "a").write_bytes(b"abc")
    (tmp_path / ".hidden.tmp").write_bytes(b"x")
    expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert sha256_file(tmp_path / "a", chunk_bytes=2) == sha256_bytes(b"abc") == expected
    assert checksum_tree(tmp_path) == {"a": expected}


def test_tiny_corpus_is_deterministic(tmp_path):
    one = make_tiny_corpus(tmp_path / "one", seed=3)
    two = make_tiny_corpus(tmp_path / "two", seed=3)
    assert (one / "dataset.json").read_text() == (two / "dataset.json").read_text()


def test_format_doc_lists_every_field():
    doc = (Path(__file__).parents[1] / "docs" / "format.md").read_text()
    missing = [name for name in tracks_schema().names if f"| `{name}` |" not in doc]
    assert missing == [], f"docs/format.md has no table row for {missing}"
    assert all(f"`{name}`" in doc for name in BLENDSHAPE_NAMES[1:])
