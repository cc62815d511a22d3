"""Participant-disjoint, topic-stratified train/val/test splits of a built corpus.

The unit of assignment is a connected component of the graph whose nodes are participants and
whose edges are the clips they share: a conversation's pair stays together, and a person who
appears in many clips takes all of them to one split. Components are assigned greedily (largest
first in clip count, ties in a seed-shuffled order) to the split whose ratio target in hours and
per-topic hours they help most; of several seeded passes the closest to the targets is kept.
``assign_splits`` is the pure part (clip facts in, assignment out); ``split_corpus`` reads the
shards, rewrites them into ``shards/{split}/``, writes ``splits/{split}.txt`` and
``splits/spec.json`` and updates dataset.json's checksums.

The rewrite is safe against a kill at any moment: dataset.json never lists a file that is not
there, and a split that was killed or failed half-way is completed (or its leftovers removed)
by the next ``split_corpus`` before it does anything else (:func:`recover`).

A track whose ``participant_id`` is None is an unknown person: it links nothing, so a clip with
no known participant is a unit of its own (the spec and the message say how many such clips).
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import shutil
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from responsenet import __version__
from responsenet.build.workspace import fsync_tree, write_error
from responsenet.errors import UsageError
from responsenet.hashing import checksum_tree
from responsenet.schema import check_format_version, tracks_schema
from responsenet.shards import string_columns
from responsenet.split_publish import (
    NEW,
    OLD,
    TREES,
    corpus_lock,
    journal_exists,
    publish,
    recover,
)

#: Split names in the order of ``--ratios``.
SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")
DEFAULT_RATIOS = "6:2:2"
#: Method label recorded in splits/spec.json.
METHOD = ("participant-graph components; greedy hours + topic-hours stratification, best of "
          "seeded shuffles (v1)")
#: Largest |achieved - asked| hours fraction per split that still counts as meeting the ratios.
DEFAULT_TOLERANCE = 0.05
NO_TOPIC = "(none)"
#: Seeded greedy passes per split; the one closest to the targets is kept.
DEFAULT_ATTEMPTS = 16


@dataclasses.dataclass(frozen=True)
class ClipFacts:
    """What the assignment needs of one clip.

    Attributes:
        clip_id: the clip.
        duration_s: clip length, seconds.
        topic: topic label or None.
        participants: the known ``participant_id`` values of its tracks.
        unknown_tracks: how many of its tracks have no ``participant_id``.
    """

    clip_id: str
    duration_s: float
    topic: str | None
    participants: tuple[str, ...]
    unknown_tracks: int = 0


@dataclasses.dataclass
class SplitAssignment:
    """The result of ``assign_splits``.

    Attributes:
        clips: split name -> sorted clip ids (every split of ``ratios``, maybe empty).
        ratios: asked fraction per split (sums to 1).
        achieved_clips: achieved fraction of clips per split.
        achieved_hours: achieved fraction of hours per split.
        units: the components, each a sorted list of clip ids, largest first.
        met: every split is within ``tolerance`` of its asked hours fraction.
        notes: human-readable remarks (ratios not met, unknown participants).
        seed: the seed used.
        tolerance: the tolerance used.
        recovered: what ``split_corpus`` did about an earlier split that was interrupted
            (completed it, or removed its leftovers); not part of ``notes`` or spec.json.
    """

    clips: dict[str, list[str]]
    ratios: dict[str, float]
    achieved_clips: dict[str, float]
    achieved_hours: dict[str, float]
    units: list[list[str]]
    met: bool
    notes: list[str]
    seed: int
    tolerance: float
    recovered: list[str] = dataclasses.field(default_factory=list)


def parse_ratios(text: str | Sequence[float] | Mapping[str, float]) -> dict[str, float]:
    """Parse ``"6:2:2"`` (train:val:test) into fractions that sum to 1.

    Raises:
        UsageError: not three non-negative numbers with a positive sum.
    """
    if isinstance(text, Mapping):
        names, parts = list(text), [text[name] for name in text]
    else:
        names = list(SPLIT_NAMES)
        try:
            parts = [float(p) for p in text.split(":")] if isinstance(text, str) else list(text)
        except ValueError:
            parts = []
    if len(parts) != len(names) or not all(math.isfinite(p) and p >= 0 for p in parts) \
            or sum(parts) <= 0:
        raise UsageError(f"--ratios expects three non-negative numbers train:val:test with a "
                         f"positive sum, such as {DEFAULT_RATIOS}; got {text!r}")
    total = float(sum(parts))
    return {name: float(p) / total for name, p in zip(names, parts)}


def participant_units(clips: Sequence[ClipFacts]) -> list[list[int]]:
    """Connected components of clips linked by shared participants (indices into ``clips``).

    Returns:
        Components as sorted index lists, ordered by their first index.
    """
    parent = list(range(len(clips)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_clip: dict[str, int] = {}
    for i, clip in enumerate(clips):
        for person in clip.participants:
            j = first_clip.setdefault(person, i)
            parent[find(i)] = find(j)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(len(clips)):
        groups[find(i)].append(i)
    return sorted(groups.values(), key=lambda group: group[0])


def assign_splits(clips: Sequence[ClipFacts], ratios: Mapping[str, float], seed: int = 0,
                  tolerance: float = DEFAULT_TOLERANCE,
                  attempts: int = DEFAULT_ATTEMPTS) -> SplitAssignment:
    """Assign participant components to splits, balancing hours and topic hours.

    Each attempt shuffles the components with the seeded generator, orders them by clip count
    (largest first, stable) and places each where the deviation from the targets grows least;
    the attempt with the smallest final deviation wins (the first one on a tie).

    Args:
        clips: one entry per clip (clip ids unique).
        ratios: split name -> asked fraction (as from ``parse_ratios``); splits asked 0 get none.
        seed: seeds the shuffles; the same seed and clips give the same assignment.
        tolerance: largest |achieved - asked| hours fraction per split that counts as met.
        attempts: number of seeded greedy passes.
    """
    ordered = sorted(clips, key=lambda c: c.clip_id)
    units = participant_units(ordered)
    rng = random.Random(seed)
    best: tuple[float, list[list[int]], dict[str, list[str]], dict[str, float]] | None = None
    for _ in range(max(attempts, 1)):
        rng.shuffle(units)
        trial = sorted(units, key=len, reverse=True)  # stable: the shuffle orders equal sizes
        cost, chosen, hours = _greedy([[ordered[i] for i in u] for u in trial], ratios)
        if best is None or cost < best[0] - 1e-9:
            best = (cost, trial, chosen, hours)
    _, units, chosen, hours = best
    total, n_clips = sum(hours.values()) or 1.0, max(len(ordered), 1)
    result = SplitAssignment(
        clips={name: sorted(ids) for name, ids in chosen.items()}, ratios=dict(ratios),
        achieved_clips={name: len(chosen[name]) / n_clips for name in ratios},
        achieved_hours={name: hours[name] / total for name in ratios},
        units=[sorted(ordered[i].clip_id for i in unit) for unit in units],
        met=True, notes=[], seed=seed, tolerance=tolerance)
    result.met = all(abs(result.achieved_hours[n] - ratios[n]) <= tolerance + 1e-9
                     for n in ratios)
    result.notes = _notes(result, ordered)
    return result


def _greedy(units: list[list[ClipFacts]], ratios: Mapping[str, float]
            ) -> tuple[float, dict[str, list[str]], dict[str, float]]:
    """One greedy pass in the given order: (final deviation, split -> clip ids, split -> s)."""
    total = sum(c.duration_s for unit in units for c in unit)
    topic_total: dict[str, float] = defaultdict(float)
    for clip in (c for unit in units for c in unit):
        topic_total[clip.topic or NO_TOPIC] += clip.duration_s
    hours = {name: 0.0 for name in ratios}
    topic_hours: dict[str, dict[str, float]] = {name: defaultdict(float) for name in ratios}
    chosen: dict[str, list[str]] = {name: [] for name in ratios}
    for members in units:
        name = _best_split(members, ratios, hours, topic_hours, total, topic_total)
        for clip in members:
            hours[name] += clip.duration_s
            topic_hours[name][clip.topic or NO_TOPIC] += clip.duration_s
            chosen[name].append(clip.clip_id)
    cost = sum(abs(hours[n] - r * total) + sum(abs(topic_hours[n][k] - r * topic_total[k])
                                               for k in topic_total)
               for n, r in ratios.items())
    return cost, chosen, hours


def _best_split(members: list[ClipFacts], ratios: Mapping[str, float], hours: dict[str, float],
                topic_hours: dict[str, dict[str, float]], total: float,
                topic_total: Mapping[str, float]) -> str:
    """The split whose deviation from its targets (hours and per-topic hours) grows least."""
    size = sum(c.duration_s for c in members)
    per_topic: dict[str, float] = defaultdict(float)
    for clip in members:
        per_topic[clip.topic or NO_TOPIC] += clip.duration_s

    def cost(name: str) -> tuple[float, float, int]:
        ratio = ratios[name]
        delta = abs(hours[name] + size - ratio * total) - abs(hours[name] - ratio * total)
        for topic, extra in per_topic.items():
            target, have = ratio * topic_total[topic], topic_hours[name][topic]
            delta += abs(have + extra - target) - abs(have - target)
        return (round(delta, 9), hours[name] - ratio * total, list(ratios).index(name))

    candidates = [name for name in ratios if ratios[name] > 0]
    return min(candidates, key=cost)


def _notes(result: SplitAssignment, clips: Sequence[ClipFacts]) -> list[str]:
    notes = []
    if not result.met:
        notes.append(_unmet_message(result, clips))
    unknown = [c for c in clips if c.unknown_tracks]
    if unknown:
        notes.append(
            f"{len(unknown)} of {len(clips)} clips have tracks without participant_id: each "
            "such track counts as a person of its own, so a clip with no known participant is "
            "a unit of its own; disjointness by participant cannot be checked for them")
    return notes


def _unmet_message(result: SplitAssignment, clips: Sequence[ClipFacts]) -> str:
    by_id = {c.clip_id: c for c in clips}
    biggest = result.units[0] if result.units else []
    share = sum(by_id[i].duration_s for i in biggest) / (sum(c.duration_s for c in clips) or 1)
    people = Counter(p for i in biggest for p in by_id[i].participants)
    hubs = sorted(people.items(), key=lambda item: (-item[1], item[0]))[:3]
    shown = ", ".join(f"{person} ({n} clip{'s' if n > 1 else ''})" for person, n in hubs)
    counts = " / ".join(str(len(result.clips[n])) for n in result.ratios)
    return (f"split ratios not met (tolerance {result.tolerance:.2f}): asked "
            f"{_fmt(result.ratios)} of hours, achieved {_fmt(result.achieved_hours)} of hours "
            f"and {_fmt(result.achieved_clips)} of clips ({counts} clips). The clips form "
            f"{len(result.units)} units (clips linked by shared participants stay together); "
            f"the largest has {len(biggest)} clip(s) and {share:.0%} of the hours"
            + (f" (most connected: {shown})" if len(biggest) > 1 else "")
            + ". More clips, or conversations between distinct people, let the split come "
            "closer to the ratios")


def _fmt(fractions: Mapping[str, float]) -> str:
    return " / ".join(f"{name} {value:.2f}" for name, value in fractions.items())


def spec_dict(result: SplitAssignment, clips: Sequence[ClipFacts]) -> dict[str, Any]:
    """The ``splits/spec.json`` record of an assignment (asked and achieved ratios, seed, ...)."""
    by_id = {c.clip_id: c for c in clips}
    splits = {}
    for name, ids in result.clips.items():
        topics: dict[str, dict[str, float]] = defaultdict(lambda: {"clips": 0, "hours": 0.0})
        for clip_id in ids:
            entry = topics[by_id[clip_id].topic or NO_TOPIC]
            entry["clips"] += 1
            entry["hours"] += by_id[clip_id].duration_s / 3600
        splits[name] = {
            "clips": len(ids), "hours": sum(by_id[i].duration_s for i in ids) / 3600,
            "participants": sorted({p for i in ids for p in by_id[i].participants}),
            "topics": dict(sorted(topics.items())),
        }
    return {
        "method": METHOD, "seed": result.seed, "responsenet_version": __version__,
        "ratios_asked": result.ratios,
        "ratios_achieved": {"clips": result.achieved_clips, "hours": result.achieved_hours},
        "ratios_met": result.met, "tolerance": result.tolerance, "notes": result.notes,
        "units": len(result.units), "largest_unit_clips": len(result.units[0]) if result.units
        else 0,
        "clips_without_participant": sum(1 for c in clips if c.unknown_tracks),
        "splits": splits,
    }


def split_corpus(root: str | Path, ratios: str | Mapping[str, float] = DEFAULT_RATIOS,
                 seed: int = 0, tolerance: float = DEFAULT_TOLERANCE,
                 clips_per_shard: int = 128) -> SplitAssignment:
    """Split a built corpus in place: shards, ``splits/*.txt``, ``splits/spec.json``, checksums.

    An earlier split of ``root`` that was interrupted is completed (or its leftovers removed)
    first (:func:`recover`; the result's ``recovered`` says what was done). The new ``shards/``
    and ``splits/`` are written into a hidden folder under ``root`` and swapped in only when
    complete (the old ``splits/`` folder is replaced as a whole; see ``split_publish.publish``);
    dataset.json's ``checksums`` entries under ``shards/`` and ``splits/`` are replaced, every
    other entry is kept as it is.

    Args:
        root: corpus root (dataset.json, shards/).
        ratios: ``"6:2:2"`` or split name -> weight.
        seed: see ``assign_splits``.
        tolerance: see ``assign_splits``.
        clips_per_shard: most clips per rewritten shard (each clip one row group, two rows).

    Raises:
        UsageError: no dataset.json or no shards under ``root``, bad ratios, or a build or
            another split is running on ``root`` (they share its ``.lock``).
        ShardFormatError: a shard is not a format v1 tracks shard.
        OutputWriteError: the disk is full, read-only or ``root`` is not writable.
        OSError: another file-system error; the corpus is as it was, or (when the swap had
            begun) consistent and completed by the next split.
    """
    asked = parse_ratios(ratios)
    if clips_per_shard < 1:
        raise UsageError(f"clips_per_shard must be at least 1, got {clips_per_shard}")
    root = Path(root)
    try:
        with corpus_lock(root):
            recovered = recover(root)
            corpus = _scan(root)
            result = assign_splits(corpus.clips, asked, seed=seed, tolerance=tolerance)
            _rewrite(corpus, result.clips, spec_dict(result, corpus.clips), clips_per_shard)
    except OSError as e:
        fatal = write_error(e, root, "split: ", resume="an interrupted split is completed first")
        if fatal is not None:
            raise fatal from e
        if not getattr(e, "__notes__", None):  # failed before the swap began
            e.add_note(f"The corpus in {root} was left as it was.")
        raise
    result.recovered = recovered
    return result


@dataclasses.dataclass
class _Corpus:
    root: Path
    clips: list[ClipFacts]
    places: dict[str, list[tuple[Path, int]]]  # clip id -> (shard, row group) holding its rows


_SCAN_COLUMNS = ["clip_id", "participant_id", "duration_s", "topic"]


def _scan(root: Path) -> _Corpus:
    """Clip facts and row-group locations of every clip in ``root/shards``."""
    if not (root / "dataset.json").is_file():
        raise UsageError(f"{root}: no dataset.json; expected a corpus built by "
                         "'responsenet build' (see docs/format.md)")
    paths = sorted(p for p in (root / "shards").rglob("*.parquet")
                   if not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not paths:
        raise UsageError(f"{root}: no shards; expected shards/{{split}}/tracks-00000.parquet")
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    places: dict[str, list[tuple[Path, int]]] = defaultdict(list)
    for path in paths:
        parquet = pq.ParquetFile(path)
        check_format_version(parquet.schema_arrow, where=path.relative_to(root).as_posix())
        for group in range(parquet.num_row_groups):
            for row in parquet.read_row_group(group, columns=_SCAN_COLUMNS).to_pylist():
                rows[row["clip_id"]].append(row)
                if (path, group) not in places[row["clip_id"]]:
                    places[row["clip_id"]].append((path, group))
    clips = [ClipFacts(clip_id, max(r["duration_s"] for r in group),
                       next((r["topic"] for r in group if r["topic"] is not None), None),
                       tuple(sorted({r["participant_id"] for r in group
                                     if r["participant_id"] is not None})),
                       sum(1 for r in group if r["participant_id"] is None))
             for clip_id, group in sorted(rows.items())]
    return _Corpus(root, clips, dict(places))


def _rewrite(corpus: _Corpus, clips_by_split: Mapping[str, list[str]], spec: Mapping[str, Any],
             clips_per_shard: int) -> None:
    """Write new shards/ and splits/ into a hidden folder, then publish them (:func:`~responsenet.split_publish.publish`)."""
    root = corpus.root
    token = uuid.uuid4().hex[:12]
    new, old = root / f"{NEW}{token}", root / f"{OLD}{token}"
    new.mkdir()
    published = False
    try:
        files: dict[str, pq.ParquetFile] = {}
        for name, ids in clips_by_split.items():
            for k in range(0, len(ids), clips_per_shard):
                path = new / "shards" / name / f"tracks-{k // clips_per_shard:05d}.parquet"
                _write_shard(path, (_clip_table(corpus, files, clip_id, name)
                                    for clip_id in ids[k:k + clips_per_shard]))
        for parquet in files.values():
            parquet.close()
        (new / "splits").mkdir()
        for name, ids in clips_by_split.items():
            header = f"# {name}: {len(ids)} clips; responsenet split, seed {spec['seed']}\n"
            (new / "splits" / f"{name}.txt").write_text(
                header + "".join(f"{clip_id}\n" for clip_id in ids), encoding="utf-8")
        (new / "splits" / "spec.json").write_text(
            json.dumps(spec, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        fsync_tree(new)
        sums = {f"{name}/{rel}": sha for name in TREES
                for rel, sha in checksum_tree(new / name, exclude=()).items()}
        publish(root, new, old, sums)
        published = True
    finally:
        if published or not journal_exists(root):
            shutil.rmtree(new, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)  # the old trees; a roll forward never needs them


def _clip_table(corpus: _Corpus, files: dict[Path, pq.ParquetFile], clip_id: str,
                split: str) -> pa.Table:
    """The clip's rows (sorted by role) with ``split`` set, in ``tracks_schema()``."""
    parts = []
    for path, group in corpus.places[clip_id]:
        if path not in files:
            files[path] = pq.ParquetFile(path)
        table = files[path].read_row_group(group)
        parts.append(table.filter(pc.equal(table["clip_id"], clip_id)))
    table = pa.concat_tables(parts).sort_by([("role", "ascending")])
    column = pa.array([split] * table.num_rows, pa.string())
    table = table.set_column(table.schema.get_field_index("split"), "split", column)
    return table.cast(tracks_schema())


def _write_shard(path: Path, tables: Iterable[pa.Table]) -> None:
    """A tracks shard with one row group per clip table; zstd, dictionary-encoded strings."""
    path.parent.mkdir(parents=True, exist_ok=True)
    schema = tracks_schema()
    with pq.ParquetWriter(path, schema, compression="zstd",
                          use_dictionary=string_columns(schema)) as writer:
        for table in tables:
            writer.write_table(table, row_group_size=max(table.num_rows, 1))
