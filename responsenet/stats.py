"""Data card of a built corpus: Markdown with PNG figures, like ResponseNet's dataset section.

``corpus_stats`` computes the numbers from track rows (pure); ``write_data_card`` reads the
shards, draws the figures (matplotlib, Agg canvas; the word cloud with the ``wordcloud`` package
when it is installed, else a word-frequency bar chart) and writes ``README.md`` and
``stats.json`` into the output folder.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from responsenet import __version__
from responsenet.errors import UsageError
from responsenet.schema import QUALITY_FIELDS

#: Split names listed first, in this order; other splits follow alphabetically.
SPLIT_ORDER: tuple[str, ...] = ("train", "val", "test")
NO_TOPIC = "(none)"
#: Columns the card needs (no per-frame arrays).
STATS_COLUMNS = ["clip_id", "role", "split", "participant_id", "duration_s", "topic", "quality",
                 "words"]
#: Common English words left out of the word cloud / word-frequency figure.
STOPWORDS = frozenset(
    "a an and are as at be but by can't do don't for from had has have he her him his i i'm "
    "i've if in is it it's its me my no not of on or our she so that that's the their them "
    "there they they're this to uh um was we we're were what when which who will with you "
    "you're your".split())
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


@dataclasses.dataclass
class SplitStats:
    """Counts of one split: clips, total clip seconds, distinct known participants."""

    clips: int = 0
    seconds: float = 0.0
    participants: int = 0
    tracks_without_participant: int = 0

    @property
    def hours(self) -> float:
        return self.seconds / 3600


@dataclasses.dataclass
class CorpusStats:
    """The numbers of a data card.

    Attributes:
        splits: split name -> its counts, in ``SPLIT_ORDER`` then alphabetical order.
        total: the same counts over the whole corpus.
        tracks: number of track rows.
        durations_s: clip lengths, seconds, sorted by clip id.
        topics: topic -> {"clips", "seconds", and per split clip counts}; most clips first.
        words: word -> count over every track's words (lowercase, stopwords removed).
        quality: quality field -> its non-null values over tracks.
        quality_missing: quality field -> number of tracks where it is null.
    """

    splits: dict[str, SplitStats]
    total: SplitStats
    tracks: int
    durations_s: list[float]
    topics: dict[str, dict[str, float]]
    words: Counter
    quality: dict[str, list[float]]
    quality_missing: dict[str, int]


def corpus_stats(rows: Iterable[Mapping[str, Any]]) -> CorpusStats:
    """Compute a data card's numbers from track rows (dicts with ``STATS_COLUMNS``)."""
    clips: dict[str, dict[str, Any]] = {}
    people: dict[str, set[str]] = defaultdict(set)
    unknown: Counter = Counter()
    words: Counter = Counter()
    quality: dict[str, list[float]] = {name: [] for name in QUALITY_FIELDS}
    missing = Counter({name: 0 for name in QUALITY_FIELDS})
    n_tracks = 0
    for row in rows:
        n_tracks += 1
        clip = clips.setdefault(row["clip_id"], {"split": row["split"], "duration": 0.0,
                                                 "topic": None})
        clip["duration"] = max(clip["duration"], float(row["duration_s"]))
        clip["topic"] = clip["topic"] or row["topic"]
        if row["participant_id"] is None:
            unknown[row["split"]] += 1
        else:
            people[row["split"]].add(row["participant_id"])
        words.update(tokenize(" ".join(w["text"] for w in row["words"] or [])))
        for name in QUALITY_FIELDS:
            value = (row["quality"] or {}).get(name)
            if value is None:
                missing[name] += 1
            else:
                quality[name].append(float(value))
    splits = {name: SplitStats() for name in _split_order({c["split"] for c in clips.values()})}
    topics: dict[str, dict[str, float]] = {}
    for clip in clips.values():
        stats = splits[clip["split"]]
        stats.clips, stats.seconds = stats.clips + 1, stats.seconds + clip["duration"]
        entry = topics.setdefault(clip["topic"] or NO_TOPIC,
                                  {"clips": 0, "seconds": 0.0, **{n: 0 for n in splits}})
        entry["clips"] += 1
        entry["seconds"] += clip["duration"]
        entry[clip["split"]] += 1
    for name, stats in splits.items():
        stats.participants, stats.tracks_without_participant = len(people[name]), unknown[name]
    total = SplitStats(len(clips), sum(s.seconds for s in splits.values()),
                       len(set().union(*people.values())), sum(unknown.values()))
    return CorpusStats(
        splits=splits, total=total, tracks=n_tracks,
        durations_s=[clips[c]["duration"] for c in sorted(clips)],
        topics=dict(sorted(topics.items(), key=lambda item: (-item[1]["clips"], item[0]))),
        words=words, quality=quality, quality_missing=dict(missing))


def tokenize(text: str) -> list[str]:
    """Lowercase words of ``text`` without punctuation and without ``STOPWORDS``."""
    return [w for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


def _split_order(names: Iterable[str]) -> list[str]:
    names = set(names)
    return [n for n in SPLIT_ORDER if n in names] + sorted(names - set(SPLIT_ORDER))


def read_stats_rows(root: str | Path) -> list[dict[str, Any]]:
    """The ``STATS_COLUMNS`` of every track row under ``root/shards``.

    Raises:
        UsageError: there are no shards under ``root``.
        ShardFormatError: a shard is not a format v1 tracks shard.
    """
    from responsenet.shards import read_tracks

    root = Path(root)
    paths = sorted(p for p in (root / "shards").rglob("*.parquet")
                   if not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not paths:
        raise UsageError(f"{root}: no shards; expected shards/{{split}}/tracks-00000.parquet "
                         "(a corpus built by 'responsenet build')")
    return [row for path in paths for row in read_tracks(path, columns=STATS_COLUMNS).to_pylist()]


def write_data_card(root: str | Path, out: str | Path, title: str | None = None) -> Path:
    """Write ``out/README.md`` (the data card), its PNG figures and ``out/stats.json``.

    Args:
        root: corpus root.
        out: output folder (created; files of the same names are replaced).
        title: card title; defaults to the corpus folder name.

    Returns:
        The path of README.md.

    Raises:
        UsageError: no shards, or matplotlib is not installed.
    """
    root, out = Path(root), Path(out)
    stats = corpus_stats(read_stats_rows(root))
    out.mkdir(parents=True, exist_ok=True)
    figures = draw_figures(stats, out)
    card = render_card(stats, figures, title or root.resolve().name, _dataset_card(root))
    (out / "stats.json").write_text(json.dumps(stats_dict(stats), indent=2) + "\n",
                                    encoding="utf-8")
    path = out / "README.md"
    path.write_text(card, encoding="utf-8")
    return path


def _dataset_card(root: Path) -> dict[str, Any]:
    try:
        card = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return card if isinstance(card, dict) else {}


def stats_dict(stats: CorpusStats) -> dict[str, Any]:
    """``stats`` as JSON-ready data (hours included; the 100 most frequent words)."""
    def split(s: SplitStats) -> dict[str, Any]:
        return {**dataclasses.asdict(s), "hours": s.hours}

    return {
        "responsenet_version": __version__, "tracks": stats.tracks, "total": split(stats.total),
        "splits": {name: split(s) for name, s in stats.splits.items()},
        "durations_s": stats.durations_s, "topics": stats.topics,
        "top_words": stats.words.most_common(100),
        "quality": {name: _summary(values) | {"missing": stats.quality_missing[name]}
                    for name, values in stats.quality.items()},
    }


def _summary(values: Sequence[float]) -> dict[str, float | None]:
    import numpy as np

    if not values:
        return {"mean": None, "median": None, "min": None, "max": None}
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()), "median": float(np.median(array)),
            "min": float(array.min()), "max": float(array.max())}


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render_card(stats: CorpusStats, figures: Mapping[str, str], title: str,
                dataset: Mapping[str, Any] | None = None) -> str:
    """The data card in Markdown; ``figures`` maps figure kind -> PNG file name beside it."""
    dataset = dataset or {}
    total, durations = stats.total, _summary(stats.durations_s)
    lines = [f"# Data card: {title}", "",
             f"Corpus format v{dataset.get('format_version', '?')}, built by responsenet "
             f"{dataset.get('pipeline_version', '?')}; card written by responsenet {__version__} "
             "(`responsenet stats`).", "",
             "## Summary", "", "| clips | tracks | hours | seconds | participants | topics |",
             "|---:|---:|---:|---:|---:|---:|",
             f"| {total.clips} | {stats.tracks} | {total.hours:.4f} | {total.seconds:.2f} | "
             f"{total.participants} | {len(stats.topics)} |", "",
             "## Splits", "", "| split | clips | hours | seconds | participants |",
             "|---|---:|---:|---:|---:|"]
    for name, s in [*stats.splits.items(), ("total", total)]:
        lines.append(f"| {name} | {s.clips} | {s.hours:.4f} | {s.seconds:.2f} | "
                     f"{s.participants} |")
    if total.tracks_without_participant:
        lines += ["", f"{total.tracks_without_participant} track(s) have no participant_id "
                  "and are not counted as participants."]
    lines += ["", "## Clip durations", "", f"![clip-duration histogram]({figures['duration']})",
              "", f"Mean {_num(durations['mean'], 2)} s, median {_num(durations['median'], 2)} "
              f"s, shortest {_num(durations['min'], 2)} s, longest {_num(durations['max'], 2)} s.",
              "", "## Topics", "", f"![topic distribution]({figures['topics']})", "",
              "| topic | clips | hours | " + " | ".join(stats.splits) + " |",
              "|---|---:|---:|" + "---:|" * len(stats.splits)]
    for topic, entry in stats.topics.items():
        per_split = " | ".join(str(entry[name]) for name in stats.splits)
        lines.append(f"| {topic} | {entry['clips']} | {entry['seconds'] / 3600:.4f} | "
                     f"{per_split} |")
    lines += _words_section(stats, figures) + _quality_section(stats, figures)
    return "\n".join(lines) + "\n"


def _words_section(stats: CorpusStats, figures: Mapping[str, str]) -> list[str]:
    kind = "word cloud" if figures["words"].startswith("wordcloud") else "word frequency"
    lines = ["", "## Words", "", f"![{kind}]({figures['words']})", "",
             f"{sum(stats.words.values())} words ({len(stats.words)} distinct) after removing "
             "common English words; the most frequent:", "", "| word | count |", "|---|---:|"]
    return lines + [f"| {word} | {count} |" for word, count in stats.words.most_common(20)]


def _quality_section(stats: CorpusStats, figures: Mapping[str, str]) -> list[str]:
    lines = ["", "## Quality", "", f"![face presence]({figures['face_presence']})",
             f"![ASR confidence]({figures['asr_confidence']})", "",
             "Per track; `missing` counts tracks where the measure is null.", "",
             "| measure | tracks | missing | mean | median | min | max |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, values in stats.quality.items():
        s = _summary(values)
        lines.append(f"| {name} | {len(values)} | {stats.quality_missing[name]} | "
                     + " | ".join(_num(s[k], 3) for k in ("mean", "median", "min", "max"))
                     + " |")
    return lines


def draw_figures(stats: CorpusStats, out: Path) -> dict[str, str]:
    """Draw the card's PNG figures into ``out``; return figure kind -> file name.

    Raises:
        UsageError: matplotlib is not installed.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise UsageError("responsenet stats draws its figures with matplotlib: "
                         "pip install matplotlib (and wordcloud for the word cloud)") from e

    def save(fig: Figure, name: str) -> str:
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        return name

    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    ax.hist(stats.durations_s, bins=min(30, max(len(stats.durations_s), 1)), color="#4c72b0")
    ax.set(xlabel="clip duration (s)", ylabel="clips", title="Clip durations")
    figures = {"duration": save(fig, "duration_histogram.png")}
    fig = Figure(figsize=(7, max(3.0, 0.4 * len(stats.topics) + 1)))
    ax = fig.add_subplot()
    names, left = list(stats.topics)[::-1], [0] * len(stats.topics)
    for split in stats.splits:
        counts = [stats.topics[n][split] for n in names]
        ax.barh(names, counts, left=left, label=split)
        left = [a + b for a, b in zip(left, counts)]
    ax.set(xlabel="clips", title="Topics (clips per split)")
    ax.legend(loc="lower right")
    figures["topics"] = save(fig, "topics.png")
    figures["words"] = _draw_words(stats.words, out, save)
    for name, label in (("face_presence", "face presence (fraction of frames)"),
                        ("asr_confidence", "ASR confidence (mean word probability)")):
        fig = Figure(figsize=(6, 3.5))
        ax = fig.add_subplot()
        ax.hist(stats.quality[name], bins=20, range=(0.0, 1.0), color="#c44e52")
        ax.set(xlabel=label, ylabel="tracks", xlim=(0, 1),
               title=f"{label.split(' (')[0]} ({stats.quality_missing[name]} missing)")
        figures[name] = save(fig, f"{name}.png")
    return figures


def _draw_words(words: Counter, out: Path, save) -> str:
    """A word cloud (``wordcloud`` package) or, without it, a word-frequency bar chart."""
    from matplotlib.figure import Figure

    try:
        from wordcloud import WordCloud
    except ImportError:
        WordCloud = None
    if WordCloud is not None and words:
        cloud = WordCloud(width=800, height=400, background_color="white", random_state=0,
                          max_words=200).generate_from_frequencies(dict(words))
        cloud.to_file(str(out / "wordcloud.png"))
        return "wordcloud.png"
    top = words.most_common(25)[::-1]
    fig = Figure(figsize=(7, max(3.0, 0.3 * len(top) + 1)))
    ax = fig.add_subplot()
    ax.barh([w for w, _ in top], [c for _, c in top], color="#8172b2")
    ax.set(xlabel="count", title="Word frequency" if top else "Word frequency (no words)")
    return save(fig, "word_frequency.png")
