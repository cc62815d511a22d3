"""The build report: per-stage counts, failures by reason, timing; as JSON and as a table."""

from __future__ import annotations

import errno
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from responsenet.build.workspace import OutputWriteError, write_json_atomic


@dataclass
class StageCounts:
    """How one stage went. ``seconds`` is wall time; ``work_seconds`` the sum over items."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    work_seconds: float = 0.0

    @property
    def items_per_second(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0


@dataclass
class BuildReport:
    """Everything a build run did.

    ``items`` maps each source id to ``ok``, ``partial`` (some of its clips failed), ``failed``
    or ``stopped`` (a write error stopped the build before the source went through every
    stage). ``corpus`` is ``written``, ``unchanged`` or ``failed`` when the corpus was assembled
    (None otherwise); ``stopped`` describes the write error that stopped the build, if one did.
    """

    manifest: str
    out: str
    stages_requested: list[str]
    config: dict[str, Any]
    started: str = field(default_factory=lambda: _now())
    finished: str | None = None
    stages: dict[str, StageCounts] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    items: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    corpus: str | None = None
    stopped: dict[str, Any] | None = None

    def add_failure(self, item: str, stage: str, reason: str, message: str,
                    cached: bool = False, source: str | None = None) -> None:
        """Record one failure; ``source`` is the source id the item came from (None: corpus)."""
        self.failures.append({"item": item, "source": source, "stage": stage, "reason": reason,
                              "message": message, "cached": cached})

    def stop(self, error: OutputWriteError) -> None:
        """Record the write error that stopped the build (what it hit, and how to go on)."""
        self.stopped = {"reason": error.reason, "errno": errno.errorcode.get(error.errno),
                        "path": error.filename, "message": error.message}
        if self.corpus is None and "shard" in self.stages_requested:
            self.corpus = "failed"

    @property
    def succeeded(self) -> int:
        return sum(status == "ok" for status in self.items.values())

    def exit_code(self, strict: bool = False) -> int:
        """0 when at least one source went through every stage (with ``strict``: every source)
        and the corpus, if asked for, was assembled; 1 otherwise; 2 when a write error stopped
        the build (as for usage errors: the machine, not the data, must change)."""
        if self.stopped is not None:
            return 2
        ok, total = self.succeeded, len(self.items)
        if self.corpus == "failed" or not (ok == total if strict else ok > 0):
            return 1
        return 0

    def to_dict(self) -> dict[str, Any]:
        stages = {name: {**asdict(c), "items_per_second": round(c.items_per_second, 3)}
                  for name, c in self.stages.items()}
        by_reason = Counter(f["reason"] for f in self.failures)
        by_source = Counter(f["source"] for f in self.failures if f.get("source") is not None)
        return {"manifest": self.manifest, "out": self.out, "started": self.started,
                "finished": self.finished, "stages_requested": self.stages_requested,
                "stages": stages, "failures": self.failures,
                "failures_by_reason": dict(sorted(by_reason.items())),
                "failures_by_source": dict(sorted(by_source.items())),
                "items": self.items, "succeeded": self.succeeded, "corpus": self.corpus,
                "stopped": self.stopped, "notes": self.notes, "config": self.config}

    def write(self, reports_dir: Path) -> Path:
        """Write ``build-<timestamp>.json`` and ``build-latest.json``; return the first."""
        self.finished = self.finished or _now()
        stamp = self.started.replace(":", "").replace("-", "").replace("+0000", "Z")
        path = reports_dir / f"build-{stamp}.json"
        data = self.to_dict()
        write_json_atomic(path, data)
        write_json_atomic(reports_dir / "build-latest.json", data)
        return path

    def render(self, console: Console) -> None:
        """Print the per-stage summary table and the failures."""
        table = Table(title="build summary")
        for col in ("stage", "done", "skipped", "failed", "seconds", "items/s"):
            table.add_column(col, justify="left" if col == "stage" else "right")
        for name, c in self.stages.items():
            table.add_row(name, str(c.done), str(c.skipped), str(c.failed), f"{c.seconds:.1f}",
                          f"{c.items_per_second:.2f}")
        console.print(table)
        for f in self.failures:
            tag = " (remembered from an earlier run)" if f["cached"] else ""
            source = f.get("source")
            origin = f" (source {source})" if source not in (None, f["item"]) else ""
            console.print(f"[red]failed[/red] {escape(f['item'])}{escape(origin)} in "
                          f"{f['stage']}: [bold]{f['reason']}[/bold]{tag}: "
                          f"{escape(f['message'])}", highlight=False)
        for note in self.notes:
            console.print(f"[yellow]note[/yellow]: {escape(note)}", highlight=False)
        console.print(f"{self.succeeded} of {len(self.items)} sources went through every "
                      "requested stage", highlight=False)
        if self.corpus == "failed":
            console.print("[red]the corpus was not assembled[/red] (see the failure of "
                          "'corpus' above)", highlight=False)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+0000")
