"""responsenet export: ResponseNet folder layout, exact vectors, Croissant metadata."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from responsenet.cli import app
from responsenet.errors import UsageError
from responsenet.export import CSV_COLUMNS, MODALITIES, export_corpus
from responsenet.hashing import sha256_file
from responsenet.shards import read_track_records, write_tracks
from responsenet.testing.corpus import make_tiny_corpus, refresh_checksums

ROLES = ("listener", "speaker")
EXT = {"video": "mp4", "audio": "wav", "text": "json", "vector": "npy"}
CROISSANT_KEYS = ("@context", "@type", "name", "description", "license", "conformsTo",
                  "distribution", "recordSet")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = make_tiny_corpus(tmp_path_factory.mktemp("export") / "corpus", n_clips=7,
                            n_frames=13)
    # one shard with several clips per row group, so that reading works off row offsets too
    shard = root / "shards" / "train" / "tracks-00000.parquet"
    write_tracks(read_track_records(shard), shard, row_group_size=100)
    refresh_checksums(root)
    return root


@pytest.fixture(scope="module")
def exported(corpus):
    out = corpus.parent / "out"
    report = export_corpus(corpus, out)
    return corpus, out, report


def records(root):
    return [r for path in sorted(root.glob("shards/*/*.parquet"))
            for r in read_track_records(path)]


def test_tree_structure_and_counts(exported):
    corpus, out, report = exported
    recs = records(corpus)
    expected = {f"{r.split}/{m}/{r.role}/{r.clip_id}.{EXT[m]}" for r in recs for m in MODALITIES}
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert files == expected | {"metadata.csv", "croissant.json"}
    splits = sorted({r.split for r in recs})
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == splits
    for split in splits:
        assert sorted(p.name for p in (out / split).iterdir()) == sorted(MODALITIES)
        for modality in MODALITIES:
            assert sorted(p.name for p in (out / split / modality).iterdir()) == list(ROLES)
    assert report.tracks == len(recs) == 14
    assert report.files == {m: 14 for m in MODALITIES} and report.missing_media == []


def test_vectors_equal_the_shard_arrays(exported):
    corpus, out, _ = exported
    for r in records(corpus):
        vector = np.load(out / r.split / "vector" / r.role / f"{r.clip_id}.npy")
        assert vector.dtype == np.float32 and vector.shape == (r.n_frames, 64)
        assert np.array_equal(vector[:, :52], r.blendshapes)
        assert np.array_equal(vector[:, 52:], r.pose)


def test_text_and_media(exported):
    corpus, out, _ = exported
    for r in records(corpus):
        text = json.loads((out / r.split / "text" / r.role / f"{r.clip_id}.json").read_text())
        assert text["text"] == " ".join(w["text"] for w in r.words)
        assert text["chrono"] == r.chrono and len(text["chrono"]) == r.n_frames
        assert [w["start"] for w in text["words"]] == [w["start"] for w in r.words]
        assert [np.float32(w["prob"]) for w in text["words"]] == [
            np.float32(w["prob"]) for w in r.words]
        assert (text["clip_id"], text["role"], text["fps"]) == (r.clip_id, r.role, r.fps)
        for modality in ("video", "audio"):
            copy = out / r.split / modality / r.role / f"{r.clip_id}.{EXT[modality]}"
            assert sha256_file(copy) == getattr(r, f"{modality}_sha256")


def test_metadata_csv(exported):
    corpus, out, _ = exported
    with open(out / "metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(CSV_COLUMNS)
    by_key = {(r.clip_id, r.role): r for r in records(corpus)}
    assert {(row["clip_id"], row["role"]) for row in rows} == set(by_key)
    for row in rows:
        record = by_key[row["clip_id"], row["role"]]
        assert row["participant_id"] == record.participant_id and row["split"] == record.split
        assert float(row["asr_confidence"]) == pytest.approx(0.9)
        assert row["vector"] == f"{record.split}/vector/{record.role}/{record.clip_id}.npy"


def test_croissant(exported):
    _, out, _ = exported
    card = json.loads((out / "croissant.json").read_text())
    assert all(key in card for key in CROISSANT_KEYS)
    assert card["@type"] == "sc:Dataset" and card["conformsTo"].endswith("croissant/1.0")
    assert card["@context"]["cr"] == "http://mlcommons.org/croissant/"
    assert card["name"] == "corpus" and card["license"] == "CC-BY-4.0"
    listed = {item["contentUrl"]: item for item in card["distribution"]}
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert set(listed) == files - {"croissant.json"}
    for rel, item in listed.items():
        assert item["@type"] == "cr:FileObject" and item["sha256"] == sha256_file(out / rel)
    (tracks,) = card["recordSet"]
    assert [f["name"] for f in tracks["field"]] == list(CSV_COLUMNS)
    assert all(f["source"]["fileObject"]["@id"] == "metadata.csv" for f in tracks["field"])


def test_refuses_a_non_empty_out_unless_overwrite(corpus, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(UsageError, match="exists and is not empty"):
        export_corpus(corpus, out)
    assert (out / "keep.txt").exists()
    export_corpus(corpus, out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "croissant.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folders left


def test_missing_media_is_skipped_and_reported(tmp_path):
    root = make_tiny_corpus(tmp_path / "c", n_clips=1)
    shard = root / "shards" / "train" / "tracks-00000.parquet"
    rows = read_track_records(shard)
    rows[0].video_path = rows[0].video_sha256 = None
    write_tracks(rows, shard)
    report = export_corpus(root, tmp_path / "out")
    assert report.missing_media == ["clip src-tiny0000_000 role listener: video has no path"]
    assert report.files == {"video": 1, "audio": 2, "text": 2, "vector": 2}


def test_hardlink_media(tmp_path):
    root = make_tiny_corpus(tmp_path / "c", n_clips=1)
    export_corpus(root, tmp_path / "out", media="hardlink")
    source = root / "media" / "src-tiny0000_000" / "speaker.wav"
    linked = tmp_path / "out" / "train" / "audio" / "speaker" / "src-tiny0000_000.wav"
    assert linked.stat().st_ino == source.stat().st_ino


def test_cli_export(corpus, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["export", str(corpus), "--layout", "responsenet",
                                 "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "exported 14 tracks (14 video, 14 audio, 14 text, 14 vector)" in result.output
    result = runner.invoke(app, ["export", str(corpus), "--layout", "react",
                                 "--out", str(tmp_path / "p")])
    assert result.exit_code == 2
    assert "unknown layout 'react'; available: responsenet" in result.output
    assert not (tmp_path / "p").exists()
