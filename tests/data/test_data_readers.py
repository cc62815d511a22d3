"""The shards read by other tools (docs/data.md, "Other readers"): same values as the writer's."""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest
from data_fixtures import N_CLIPS, N_FRAMES, expected_track

from responsenet.testing.corpus import SPLITS, clip_id_for


def test_pandas(corpus):
    frame = pd.read_parquet(corpus / "shards" / "val")
    assert sorted(zip(frame.clip_id, frame.role)) == sorted(
        (clip_id_for(i), r) for i in (1, 4) for r in ("speaker", "listener"))
    row = frame[(frame.clip_id == clip_id_for(4)) & (frame.role == "listener")].iloc[0]
    expected = expected_track(4, "listener")
    assert np.array_equal(np.stack(row.blendshapes), expected["blendshapes"])
    assert np.array_equal(np.stack(row.pose), expected["pose"])
    assert row.chrono.tolist() == expected["chrono"]
    assert row.n_frames == N_FRAMES and row.split == "val"


def test_duckdb(corpus):
    duckdb = pytest.importorskip("duckdb", reason="duckdb is in the dev extra")
    query = (f"SELECT clip_id, role, split, len(blendshapes) AS n, "
             f"blendshapes[1][26] AS jaw_open_first_frame, pose[10] AS pose_frame_10, "
             f"chrono[1] AS first_token "
             f"FROM '{corpus}/shards/*/*.parquet' ORDER BY clip_id, role")
    rows = duckdb.connect().execute(query).fetchall()
    assert len(rows) == 2 * N_CLIPS
    for clip_id, role, split, n, jaw_open, pose, token in rows:
        i = int(clip_id[len("src-tiny"):len("src-tiny") + 4])
        expected = expected_track(i, role)
        assert (split, n) == (SPLITS[i % 3], N_FRAMES)
        assert jaw_open == pytest.approx(float(expected["blendshapes"][0, 25]), abs=0)
        assert np.array_equal(np.array(pose, np.float32), expected["pose"][9])
        assert token == expected["chrono"][0]


@pytest.mark.skipif(importlib.util.find_spec("datasets") is None,
                    reason="Hugging Face datasets is not installed (pip install datasets)")
def test_hugging_face_datasets(corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    from datasets import load_dataset

    files = {split: str(corpus / "shards" / split / "*.parquet") for split in SPLITS}
    loaded = load_dataset("parquet", data_files=files, cache_dir=str(tmp_path / "hf"))
    assert {split: loaded[split].num_rows for split in SPLITS} == {s: 4 for s in SPLITS}
    test = loaded["test"].with_format("numpy")
    row = next(r for r in test if r["clip_id"] == clip_id_for(5) and r["role"] == "speaker")
    expected = expected_track(5, "speaker")
    assert np.array_equal(np.stack(row["blendshapes"]), expected["blendshapes"])
    assert list(row["chrono"]) == expected["chrono"]
    features = loaded["test"].features
    assert repr(features["blendshapes"]) == "List(List(Value('float32'), length=52))"
    assert repr(features["chrono"]) == "List(Value('string'))"
    assert loaded["test"].with_format("torch")[0]["pose"].shape == (N_FRAMES, 12)
