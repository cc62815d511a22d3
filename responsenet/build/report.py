"""The build report: per-stage counts, failures by reason, timing; as JSON and as a table."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from responsenet.build.workspace import write_json_atomic


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
    """Everything a build run did; ``items`` maps each source id to ``ok`` or ``failed``."""

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

    def add_failure(self, item: str, stage: str, reason: str, message: str,
                    cached: bool = False) -> None:
        self.failures.append({"item": item, "stage": stage, "reason": reason,
                              "message": message, "cached": cached})

    @property
    def succeeded(self) -> int:
        return sum(status == "ok" for status in self.items.values())

    def to_dict(self) -> dict[str, Any]:
        stages = {name: {**asdict(c), "items_per_second": round(c.items_per_second, 3)}
                  for name, c in self.stages.items()}
        by_reason = Counter(f["reason"] for f in self.failures)
        return {"manifest": self.manifest, "out": self.out, "started": self.started,
                "finished": self.finished, "stages_requested": self.stages_requested,
                "stages": stages, "failures": self.failures,
                "failures_by_reason": dict(sorted(by_reason.items())),
                "items": self.items, "succeeded": self.succeeded, "notes": self.notes,
                "config": self.config}

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
            console.print(f"[red]failed[/red] {f['item']} in {f['stage']}: "
                          f"[bold]{f['reason']}[/bold]{tag}: {f['message']}", highlight=False)
        for note in self.notes:
            console.print(f"[yellow]note[/yellow]: {note}", highlight=False)
        console.print(f"{self.succeeded} of {len(self.items)} sources went through every "
                      "requested stage", highlight=False)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+0000")
