"""responsenet stats: the data card's numbers match the corpus; figures are real PNG images."""

from __future__ import annotations

import json
import sys
from collections import Counter

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from responsenet.cli import app
from responsenet.errors import UsageError
from responsenet.shards import write_tracks
from responsenet.split import split_corpus
from responsenet.stats import corpus_stats, tokenize, write_data_card
from responsenet.testing.corpus import clip_id_for, make_tiny_corpus, make_track, refresh_checksums

MEDIA = ("video_path", "video_sha256", "audio_path", "audio_sha256", "mix_path", "mix_sha256")
TOPICS = ("work", "family", "science")


def build_corpus(root, n_clips: int):
    """Clips of 10..16 frames over three topics; clip 0 has no participant ids, clip 1 no
    quality measures, clips 2 and 3 share a speaker."""
    make_tiny_corpus(root, n_clips=n_clips)
    for shard in sorted(root.glob("shards/*/*.parquet")):
        rows = []
        for row in pq.read_table(shard).to_pylist():
            i = [clip_id_for(k) for k in range(n_clips)].index(row["clip_id"])
            new = make_track(row["clip_id"], row["role"], n_frames=10 + 2 * (i % 4),
                             split=row["split"], n_words=3)
            new.update({key: row[key] for key in MEDIA})
            person = "shared" if i in (2, 3) and row["role"] == "speaker" else f"{row['role']}{i}"
            new.update(topic=TOPICS[i % 3], participant_id=None if i == 0 else person,
                       quality={} if i == 1 else {"face_presence": 0.5 + 0.05 * i,
                                                  "asr_confidence": 0.9 - 0.04 * i})
            rows.append(new)
        write_tracks(rows, shard)
    refresh_checksums(root)
    return root


@pytest.fixture(scope="module")
def card(tmp_path_factory):
    root = build_corpus(tmp_path_factory.mktemp("stats") / "corpus", n_clips=9)
    split_corpus(root, seed=0)
    out = root.parent / "card"
    return root, out, write_data_card(root, out).read_text()


def frame(root) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p, columns=["clip_id", "role", "split", "participant_id",
                                                  "duration_s", "topic", "quality", "words"])
                      for p in sorted(root.glob("shards/*/*.parquet"))])


def test_split_table_matches_the_corpus(card):
    root, _, text = card
    rows = frame(root)
    clips = rows[rows.role == "speaker"]
    for split in ("train", "val", "test", "total"):
        mine = clips if split == "total" else clips[clips.split == split]
        people = rows if split == "total" else rows[rows.split == split]
        seconds = mine.duration_s.sum()
        line = (f"| {split} | {len(mine)} | {seconds / 3600:.4f} | {seconds:.2f} | "
                f"{people.participant_id.dropna().nunique()} |")
        assert line in text.splitlines(), line
    assert (f"| {len(clips)} | {len(rows)} | {clips.duration_s.sum() / 3600:.4f} | "
            f"{clips.duration_s.sum():.2f} | {rows.participant_id.dropna().nunique()} | 3 |"
            in text)
    assert "2 track(s) have no participant_id" in text


def test_topic_and_quality_tables_match_the_corpus(card):
    root, _, text = card
    rows = frame(root)
    clips = rows[rows.role == "speaker"]
    for topic, group in clips.groupby("topic"):
        per_split = " | ".join(str((group.split == s).sum()) for s in ("train", "val", "test"))
        assert (f"| {topic} | {len(group)} | {group.duration_s.sum() / 3600:.4f} | {per_split} |"
                in text.splitlines())
    for name in ("face_presence", "asr_confidence"):
        values = np.array([q[name] for q in rows.quality if q[name] is not None])
        line = (f"| {name} | {len(values)} | {len(rows) - len(values)} | {values.mean():.3f} | "
                f"{np.median(values):.3f} | {values.min():.3f} | {values.max():.3f} |")
        assert line in text.splitlines(), line
    durations = clips.duration_s
    assert (f"Mean {durations.mean():.2f} s, median {durations.median():.2f} s, shortest "
            f"{durations.min():.2f} s, longest {durations.max():.2f} s.") in text


def test_words_and_stats_json(card):
    root, out, text = card
    rows = frame(root)
    counts = Counter(w for words in rows.words for w in tokenize(" ".join(x["text"]
                                                                          for x in words)))
    word, n = counts.most_common(1)[0]
    assert f"| {word} | {n} |" in text
    stats = json.loads((out / "stats.json").read_text())
    clips = rows[rows.role == "speaker"]
    assert stats["total"]["clips"] == len(clips) and stats["tracks"] == len(rows)
    assert stats["total"]["hours"] == pytest.approx(clips.duration_s.sum() / 3600)
    assert stats["splits"]["train"]["clips"] == (clips.split == "train").sum()


def test_figures_are_valid_pngs(card):
    _, out, text = card
    names = [line.split("](")[1].rstrip(")") for line in text.splitlines()
             if line.startswith("![")]
    assert len(names) == 5
    for name in names:
        path = out / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.width >= 400 and image.height >= 250
            low, high = image.convert("L").getextrema()
            assert high - low > 100, f"{name} looks blank"


def test_word_cloud_when_wordcloud_is_installed(card):
    pytest.importorskip("wordcloud")
    assert "![word cloud](wordcloud.png)" in card[2]


def test_word_frequency_figure_without_wordcloud(card, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wordcloud", None)  # import fails
    text = write_data_card(card[0], tmp_path / "card").read_text()
    assert "![word frequency](word_frequency.png)" in text and "word cloud" not in text
    assert (tmp_path / "card" / "word_frequency.png").stat().st_size > 5000


def test_corpus_stats_by_hand():
    def row(clip, split, person, seconds, topic, words=()):
        return {"clip_id": clip, "role": "speaker", "split": split, "participant_id": person,
                "duration_s": seconds, "topic": topic, "quality": {"face_presence": 1.0},
                "words": [{"text": w} for w in words]}

    stats = corpus_stats([row("a", "val", "p1", 30.0, None, ["Yes!", "the", "yes"]),
                          row("a", "val", "p2", 30.0, None), row("b", "train", None, 90.0, "x")])
    assert list(stats.splits) == ["train", "val"]
    assert (stats.splits["val"].clips, stats.splits["val"].seconds,
            stats.splits["val"].participants) == (1, 30.0, 2)
    assert stats.splits["train"].tracks_without_participant == 1
    assert (stats.total.clips, stats.total.seconds, stats.tracks) == (2, 120.0, 3)
    assert stats.topics == {"(none)": {"clips": 1, "seconds": 30.0, "train": 0, "val": 1},
                            "x": {"clips": 1, "seconds": 90.0, "train": 1, "val": 0}}
    assert stats.words == Counter({"yes": 2})
    assert stats.quality_missing["asr_confidence"] == 3 and stats.quality["face_presence"] == [
        1.0, 1.0, 1.0]


def test_no_shards(tmp_path):
    with pytest.raises(UsageError, match="no shards"):
        write_data_card(tmp_path, tmp_path / "card")


def test_cli_stats(tmp_path):
    root = make_tiny_corpus(tmp_path / "c", n_clips=3)
    result = CliRunner().invoke(app, ["stats", str(root), "--out", str(tmp_path / "card")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "card" / "README.md").is_file()
    result = CliRunner().invoke(app, ["stats", str(tmp_path / "none"), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "no shards" in " ".join(result.output.split())
