"""responsenet split: participant components, topic-stratified greedy assignment, shard rewrite."""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import subprocess
import sys
from collections import defaultdict

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from responsenet import split as split_module
from responsenet.cli import app
from responsenet.errors import UsageError
from responsenet.shards import read_track_records, write_tracks
from responsenet.split import (
    ClipFacts,
    assign_splits,
    parse_ratios,
    participant_units,
    split_corpus,
)
from responsenet.testing.corpus import (
    clip_id_for,
    make_tiny_corpus,
    make_track,
    refresh_checksums,
)
from responsenet.validate import validate_root

RATIOS = parse_ratios("6:2:2")
MEDIA = ("video_path", "video_sha256", "audio_path", "audio_sha256", "mix_path", "mix_sha256")


def build_corpus(root, clips: list[dict]):
    """A tiny corpus whose clip i has ``clips[i]``'s speaker/listener ids, topic and length."""
    make_tiny_corpus(root, n_clips=len(clips))
    index = {clip_id_for(i): spec for i, spec in enumerate(clips)}
    for shard in sorted(root.glob("shards/*/*.parquet")):
        rows = []
        for row in pq.read_table(shard).to_pylist():
            spec = index[row["clip_id"]]
            new = make_track(row["clip_id"], row["role"], n_frames=spec.get("n_frames", 10),
                             split=row["split"])
            new.update({key: row[key] for key in MEDIA})
            new.update(participant_id=spec[row["role"]], topic=spec.get("topic"))
            rows.append(new)
        write_tracks(rows, shard)
    refresh_checksums(root)
    return root


def pairs(n: int, topics=("work", "family"), hub: int | None = None) -> list[dict]:
    """n conversations; with ``hub``, that many of them share one speaker ``hub``."""
    return [{"speaker": "hub" if hub is not None and i < hub else f"s{i}", "listener": f"l{i}",
             "topic": topics[i % len(topics)], "n_frames": 10 + (i % 4)} for i in range(n)]


def all_records(root):
    return {(r.clip_id, r.role): r for path in sorted(root.glob("shards/*/*.parquet"))
            for r in read_track_records(path)}


def test_units_are_connected_components_of_shared_participants():
    clips = [ClipFacts("a", 1, None, ("p1", "p2")), ClipFacts("b", 1, None, ("p3", "p4")),
             ClipFacts("c", 1, None, ("p2", "p5")), ClipFacts("d", 1, None, ("p5", "p6")),
             ClipFacts("e", 1, None, ()), ClipFacts("f", 1, None, ("p4",), unknown_tracks=1)]
    assert participant_units(clips) == [[0, 2, 3], [1, 5], [4]]


@pytest.mark.parametrize("seed", range(5))
def test_random_graphs_give_participant_disjoint_splits(seed):
    rng = random.Random(seed)
    clips = [ClipFacts(f"c{i:03d}", rng.uniform(27, 863), rng.choice("ABC"),
                       tuple(f"p{p}" for p in rng.sample(range(120), 2))) for i in range(80)]
    result = assign_splits(clips, RATIOS, seed=seed)
    assigned = [c for ids in result.clips.values() for c in ids]
    assert sorted(assigned) == sorted(c.clip_id for c in clips)
    where = defaultdict(set)
    by_id = {c.clip_id: c for c in clips}
    for name, ids in result.clips.items():
        for clip_id in ids:
            for person in by_id[clip_id].participants:
                where[person].add(name)
    assert all(len(splits) == 1 for splits in where.values())
    assert sum(result.achieved_hours.values()) == pytest.approx(1.0)


def test_equal_clips_meet_ratios_and_topics_exactly():
    clips = [ClipFacts(f"c{i:02d}", 60.0, "A" if i < 10 else "B", (f"s{i}", f"l{i}"))
             for i in range(20)]
    result = assign_splits(clips, RATIOS, seed=3)
    per_topic = {name: sorted(clip_id < "c10" for clip_id in ids)
                 for name, ids in result.clips.items()}
    assert per_topic == {"train": [False] * 6 + [True] * 6, "val": [False] * 2 + [True] * 2,
                         "test": [False] * 2 + [True] * 2}
    assert result.achieved_clips == pytest.approx(RATIOS) and result.met
    assert result.notes == []


def test_best_possible_rounding_counts_as_met():
    clips = [ClipFacts(f"c{i:02d}", 60.0, "A", (f"s{i}", f"l{i}")) for i in range(12)]
    result = assign_splits(clips, RATIOS, seed=0)
    assert sorted(len(ids) for ids in result.clips.values()) == [2, 3, 7]
    assert result.met and result.notes == []


def test_same_seed_same_split_other_seed_other_split():
    clips = [ClipFacts(f"c{i:02d}", 60.0, "A", (f"s{i}", f"l{i}")) for i in range(20)]
    first = assign_splits(clips, RATIOS, seed=7)
    assert assign_splits(list(reversed(clips)), RATIOS, seed=7).clips == first.clips
    assert any(assign_splits(clips, RATIOS, seed=s).clips != first.clips for s in range(8, 12))


def test_one_person_in_many_conversations_cannot_meet_ratios():
    clips = [ClipFacts(f"c{i}", 60.0, "A", ("hub" if i < 8 else f"s{i}", f"l{i}"))
             for i in range(10)]
    result = assign_splits(clips, RATIOS, seed=0)
    assert not result.met
    assert result.clips["train"] == [f"c{i}" for i in range(8)]
    assert sorted([result.clips["val"], result.clips["test"]]) == [["c8"], ["c9"]]
    assert result.notes == [
        "split ratios not met (tolerance 0.05): asked train 0.60 / val 0.20 / test 0.20 of "
        "hours, achieved train 0.80 / val 0.10 / test 0.10 of hours and train 0.80 / val 0.10 / "
        "test 0.10 of clips (8 / 1 / 1 clips). The clips form 3 units (clips linked by shared "
        "participants stay together); the largest has 8 clip(s) and 80% of the hours (most "
        "connected: hub (8 clips), l0 (1 clip), l1 (1 clip)). More clips, or "
        "conversations between distinct people, let the split come closer to the ratios"]


def test_unknown_participants_make_single_clip_units_and_are_noted():
    clips = [ClipFacts(f"c{i}", 60.0, "A", (), unknown_tracks=2) for i in range(5)]
    result = assign_splits(clips, RATIOS, seed=0)
    assert len(result.units) == 5
    assert result.notes[-1].startswith("5 of 5 clips have tracks without participant_id")


@pytest.mark.parametrize("text", ["6:2", "a:b:c", "1:-1:1", "0:0:0", "", "1:inf:1", "1:nan:1"])
def test_bad_ratios(text):
    with pytest.raises(UsageError, match="--ratios expects three non-negative numbers"):
        parse_ratios(text)


def test_zero_ratio_split_gets_no_clips():
    clips = [ClipFacts(f"c{i}", 60.0, "A", (f"s{i}", f"l{i}")) for i in range(10)]
    result = assign_splits(clips, parse_ratios("8:0:2"), seed=0)
    assert (len(result.clips["train"]), result.clips["val"], len(result.clips["test"])) \
        == (8, [], 2)


@pytest.fixture
def corpus(tmp_path):
    return build_corpus(tmp_path / "corpus", pairs(15, hub=3))


def test_split_corpus_rewrites_shards_and_validates(corpus):
    before = all_records(corpus)
    assert any("splits must be disjoint by participant" in p for p in validate_root(corpus))
    result = split_corpus(corpus, "6:2:2", seed=1)
    assert validate_root(corpus) == []
    after = all_records(corpus)
    assert set(after) == set(before)
    for key, record in after.items():
        assert record.split in result.clips and key[0] in result.clips[record.split]
        before[key].split = record.split
        assert record == before[key]  # every other field unchanged
    hub_clips = {clip_id_for(i) for i in range(3)}
    assert any(hub_clips <= set(ids) for ids in result.clips.values())
    for path in corpus.glob("shards/*/*.parquet"):
        parquet = pq.ParquetFile(path)
        groups = [parquet.read_row_group(g, columns=["clip_id", "role"]).to_pylist()
                  for g in range(parquet.num_row_groups)]
        assert all(len(g) == 2 and g[0]["clip_id"] == g[1]["clip_id"] and
                   [g[0]["role"], g[1]["role"]] == ["listener", "speaker"] for g in groups)
    assert [p.name for p in corpus.iterdir() if p.name.startswith(".")] == [".lock"]


def test_split_files_and_spec(corpus):
    result = split_corpus(corpus, "6:2:2", seed=1)
    for name, ids in result.clips.items():
        lines = (corpus / "splits" / f"{name}.txt").read_text().splitlines()
        assert lines[0].startswith(f"# {name}: {len(ids)} clips") and lines[1:] == ids
    spec = json.loads((corpus / "splits" / "spec.json").read_text())
    assert spec["seed"] == 1 and spec["method"] == split_module.METHOD
    assert spec["ratios_asked"] == pytest.approx({"train": 0.6, "val": 0.2, "test": 0.2})
    assert spec["ratios_achieved"]["hours"] == pytest.approx(result.achieved_hours)
    assert spec["ratios_achieved"]["clips"] == pytest.approx(result.achieved_clips)
    assert spec["ratios_met"] is result.met and spec["notes"] == result.notes
    records = all_records(corpus).values()
    for name, entry in spec["splits"].items():
        mine = [r for r in records if r.split == name]
        assert entry["participants"] == sorted({r.participant_id for r in mine})
        assert entry["clips"] == len({r.clip_id for r in mine})
        assert entry["hours"] == pytest.approx(
            sum(r.duration_s for r in mine if r.role == "speaker") / 3600)
        assert sum(t["clips"] for t in entry["topics"].values()) == entry["clips"]


def test_split_is_deterministic_on_disk(tmp_path):
    a = build_corpus(tmp_path / "a", pairs(12))
    b = build_corpus(tmp_path / "b", pairs(12))
    split_corpus(a, seed=5)
    split_corpus(b, seed=5)
    for rel in ("dataset.json", "splits/spec.json", "splits/train.txt"):
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
    split_corpus(a, seed=5)  # splitting again gives the same corpus
    assert (a / "dataset.json").read_bytes() == (b / "dataset.json").read_bytes()


def test_clips_per_shard(corpus):
    result = split_corpus(corpus, seed=1, clips_per_shard=2)
    n_train = len(result.clips["train"])
    names = sorted(p.name for p in (corpus / "shards" / "train").iterdir())
    assert names == [f"tracks-{i:05d}.parquet" for i in range((n_train + 1) // 2)]
    assert validate_root(corpus) == []


def test_failure_leaves_the_corpus_untouched(corpus, monkeypatch):
    snapshot = {p.relative_to(corpus): p.read_bytes() for p in corpus.rglob("*") if p.is_file()}

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(split_module, "_write_shard", broken)
    with pytest.raises(OSError, match="disk full"):
        split_corpus(corpus, seed=1)
    after = {p.relative_to(corpus): p.read_bytes() for p in corpus.rglob("*")
             if p.is_file() and p.name != ".lock"}  # the lock a build holds too: no content
    assert after == snapshot


def test_validate_fails_when_a_participant_is_in_two_splits(corpus):
    result = split_corpus(corpus, seed=1)
    train_person = next(r.participant_id for r in all_records(corpus).values()
                        if r.split == "train")
    val_clip = result.clips["val"][0]
    shard = corpus / "shards" / "val" / "tracks-00000.parquet"
    rows = read_track_records(shard)
    for row in rows:
        if row.clip_id == val_clip and row.role == "listener":
            row.participant_id = train_person
    write_tracks(rows, shard)
    refresh_checksums(corpus)
    problems = validate_root(corpus)
    assert len(problems) == 1
    assert problems[0].startswith(f"participant {train_person}: in splits train (")
    assert problems[0].endswith(f"val ({val_clip}); splits must be disjoint by participant")


def test_tracks_without_participant(tmp_path):
    clips = pairs(6)
    for spec in clips[:2]:
        spec["speaker"] = spec["listener"] = None
    root = build_corpus(tmp_path / "c", clips)
    result = split_corpus(root, seed=0)
    assert result.notes[-1].startswith("2 of 6 clips have tracks without participant_id")
    spec = json.loads((root / "splits" / "spec.json").read_text())
    assert spec["clips_without_participant"] == 2
    assert validate_root(root) == []


def test_split_corpus_refuses_a_folder_without_a_corpus(tmp_path):
    with pytest.raises(UsageError, match="no dataset.json"):
        split_corpus(tmp_path)


def test_cli_split(corpus):
    runner = CliRunner()
    result = runner.invoke(app, ["split", str(corpus), "--ratios", "6:2:2", "--seed", "1"])
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "train: " in flat and "wrote shards/, splits/*.txt and splits/spec.json" in flat
    assert validate_root(corpus) == []
    assert runner.invoke(app, ["validate", str(corpus)]).exit_code == 0


def test_cli_split_says_when_ratios_cannot_be_met(tmp_path):
    root = build_corpus(tmp_path / "c", pairs(5, hub=4))
    result = CliRunner().invoke(app, ["split", str(root)])
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "note: split ratios not met (tolerance 0.05)" in flat
    assert "achieved train 0." in flat
    spec = json.loads((root / "splits" / "spec.json").read_text())
    assert spec["ratios_met"] is False and spec["notes"][0].startswith("split ratios not met")


@pytest.mark.parametrize("args, fragment", [
    (["--ratios", "6:2"], "--ratios expects three non-negative numbers"),
    (["--seed", "x"], "Invalid value"),
])
def test_cli_split_usage_errors(corpus, args, fragment):
    before = (corpus / "dataset.json").read_bytes()
    result = CliRunner().invoke(app, ["split", str(corpus), *args])
    assert result.exit_code == 2 and fragment in " ".join(result.output.split()), result.output
    assert (corpus / "dataset.json").read_bytes() == before


def test_cli_split_not_a_corpus(tmp_path):
    result = CliRunner().invoke(app, ["split", str(tmp_path)])
    assert result.exit_code == 2 and "no dataset.json" in " ".join(result.output.split())


# --- a split killed or failing at any step --------------------------------------------------

CRASH_AT_REPLACE = """
import os, sys
from responsenet.split import split_corpus
k, calls, real = int(sys.argv[2]), [0], os.replace
def replace(*args, **kwargs):
    calls[0] += 1
    if calls[0] == k:
        os._exit(17)  # a kill: no except, no finally
    return real(*args, **kwargs)
os.replace = replace
split_corpus(sys.argv[1], seed=1)
"""


def listing_problems(root) -> list[str]:
    """What dataset.json lists that is not there, or not with the listed sha256."""
    return [p for p in validate_root(root) if p.startswith("dataset.json")]


def hidden(root) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".") and p.name != ".lock")


@pytest.fixture
def template(tmp_path):
    """A corpus, the same corpus split with seed 1, and how many os.replace that split made."""
    base = build_corpus(tmp_path / "template", pairs(6))
    done = tmp_path / "done"
    shutil.copytree(base, done)
    calls = []
    real = os.replace

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "replace", counting)
        split_corpus(done, seed=1)
    assert validate_root(done) == []
    return base, done, len(calls)


def rerun_gives_the_same_corpus(root, done) -> list[str]:
    """Split ``root`` again (seed 1); return what differs from the uninterrupted split."""
    left = hidden(root)
    result = split_corpus(root, seed=1)
    problems = [f"validate: {p}" for p in validate_root(root)]
    for rel in ("dataset.json", "splits/spec.json", "splits/train.txt"):
        if (root / rel).read_bytes() != (done / rel).read_bytes():
            problems.append(f"{rel} differs from the uninterrupted split")
    if hidden(root):
        problems.append(f"leftovers: {hidden(root)}")
    if bool(left) != bool(result.recovered):
        problems.append(f"left {left}, the rerun said it recovered {result.recovered}")
    return problems


def test_a_split_failing_at_each_rename_leaves_a_listed_corpus_and_a_rerun_completes(
        template, tmp_path, monkeypatch):
    base, done, n_replace = template
    assert n_replace == 7  # journal, dataset.json, 2 x 2 trees, dataset.json
    problems = {}
    real = os.replace
    for k in range(1, n_replace + 1):
        root = tmp_path / f"k{k}"
        shutil.copytree(base, root)
        calls = []

        def failing(*args, k=k, calls=calls, **kwargs):
            calls.append(args)
            if len(calls) == k:
                raise OSError(errno.EIO, "Input/output error", str(args[1]))
            return real(*args, **kwargs)

        monkeypatch.setattr(os, "replace", failing)
        with pytest.raises(OSError, match="Input/output error"):
            split_corpus(root, seed=1)
        monkeypatch.setattr(os, "replace", real)
        found = [f"after the failure: {p}" for p in listing_problems(root)]
        found += rerun_gives_the_same_corpus(root, done)
        if found:
            problems[k] = found
    assert problems == {}


def test_a_split_killed_at_each_rename_leaves_a_listed_corpus_and_a_rerun_completes(
        template, tmp_path):
    base, done, n_replace = template
    problems = {}
    for k in range(1, n_replace + 1):
        root = tmp_path / f"k{k}"
        shutil.copytree(base, root)
        killed = subprocess.run([sys.executable, "-c", CRASH_AT_REPLACE, str(root), str(k)],
                                capture_output=True, text=True, timeout=120)
        found = [] if killed.returncode == 17 else [f"not killed: {killed.stderr[-2000:]}"]
        found += [f"after the kill: {p}" for p in listing_problems(root)]
        found += rerun_gives_the_same_corpus(root, done)
        if found:
            problems[k] = found
    assert problems == {}


def test_leftovers_of_a_killed_split_are_removed(corpus):
    (corpus / ".split-old-k3jd8a_x" / "shards" / "unsplit").mkdir(parents=True)
    (corpus / ".split-new-0123456789ab" / "splits").mkdir(parents=True)
    (corpus / ".dataset.json.tmp").write_text("{")
    result = split_corpus(corpus, seed=1)
    assert hidden(corpus) == []
    assert result.recovered == [f"removed 3 leftover(s) of an interrupted split of {corpus}"]
    assert validate_root(corpus) == []


def test_a_journal_older_than_dataset_json_is_not_replayed(template, tmp_path):
    """Killed after its journal (k=2); then the corpus was rebuilt: the old split is dropped."""
    base, _, _ = template
    root = tmp_path / "c"
    shutil.copytree(base, root)
    killed = subprocess.run([sys.executable, "-c", CRASH_AT_REPLACE, str(root), "2"],
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == 17, killed.stderr
    assert ".split-journal.json" in hidden(root)
    card = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**card, "rebuilt": True}))  # a new build
    before = {p.relative_to(root): p.read_bytes() for p in root.rglob("*")
              if p.is_file() and not p.relative_to(root).parts[0].startswith(".")}
    notes = split_module.recover(root)
    assert notes == [f"removed the leftovers of an interrupted split of {root}: dataset.json "
                     "changed since (a rebuild?), so the corpus was left as it is"]
    after = {p.relative_to(root): p.read_bytes() for p in root.rglob("*")
             if p.is_file() and p.name != ".lock"}
    assert after == before and hidden(root) == []


def test_cli_split_reports_a_file_system_error_with_exit_1(corpus, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(split_module, "_write_shard", broken)
    result = CliRunner().invoke(app, ["split", str(corpus)])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    flat = "".join(result.output.split())
    expected = (f"error: split of {corpus} failed: [Errno 5] Input/output error. The corpus in "
                f"{corpus} was left as it was.")
    assert "".join(expected.split()) in flat, result.output
    assert hidden(corpus) == []


def test_cli_split_disk_full_exits_2_and_names_the_fix(corpus, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(corpus / "x.parquet"))

    monkeypatch.setattr(split_module, "_write_shard", full)
    result = CliRunner().invoke(app, ["split", str(corpus)])
    assert result.exit_code == 2, result.output
    flat = "".join(result.output.split())
    assert "split:cannotwrite" in flat and "(ENOSPC)" in flat, result.output
    assert "aninterruptedsplitiscompletedfirst" in flat, result.output
    assert hidden(corpus) == []


def test_split_refuses_a_corpus_that_a_build_is_writing(corpus):
    """A build holds the folder's .lock; a split of it must wait, and change nothing."""
    from responsenet.build.workspace import Workspace

    before = {p.relative_to(corpus).as_posix(): p.read_bytes()
              for p in sorted(corpus.rglob("*")) if p.is_file() and p.name != ".lock"}
    build = Workspace(corpus)
    build.lock()
    try:
        with pytest.raises(UsageError, match="a build or another split is running"):
            split_corpus(corpus, "4:1:1")
    finally:
        build.unlock()
    after = {p.relative_to(corpus).as_posix(): p.read_bytes()
             for p in sorted(corpus.rglob("*")) if p.is_file() and p.name != ".lock"}
    assert after == before
    assert split_corpus(corpus, "4:1:1").met  # the lock is free again


def test_a_build_cannot_start_while_a_split_holds_the_corpus(corpus, monkeypatch):
    from responsenet.build.workspace import Workspace

    seen = []

    def scan_then_try_a_build(root):
        with pytest.raises(UsageError, match=r"another build \(or a split\) is running"):
            Workspace(root).lock()
        seen.append(root)
        return real_scan(root)

    real_scan = split_module._scan
    monkeypatch.setattr(split_module, "_scan", scan_then_try_a_build)
    split_corpus(corpus, "4:1:1")
    assert seen == [corpus]
