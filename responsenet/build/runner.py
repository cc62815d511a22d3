"""The stage runner: per-item caching and resume, failure records, progress, and the report.

For each stage in pipeline order, the runner lists the items (sources, or the clips that
``segment`` made), skips those whose recorded fingerprint matches, hands the rest to an
executor, and records every outcome. A failure stops only that item; every other item goes on.

The exception is a write error of the machine (disk full, read-only file system, build folder
not writable: :class:`~responsenet.build.workspace.OutputWriteError`). Every later item would
meet it too, so the runner records it for the item and stops the build by raising it; the
message names the path, the errno and the fix. Before it raises, the report holds what
finished: the counts of every stage begun, and each source's status (``stopped`` for a source
that had not gone through every stage); ``build()`` then writes it when the disk allows.
Finished outputs are untouched and the next run resumes (the item's ``disk_full`` /
``read_only`` / ``permission_denied`` failure is retried).

Every failure names the source its item came from (a clip's source), in the report and, for a
failure of a task, in the item's ``{stage}.failed.json`` (``source``).

Item ids become folder names: a source id or a clip id that is not a safe file name (``../x``,
``a/b``) is refused, so no output lands outside the build folder.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from responsenet.build.executors import Executor
from responsenet.build.report import BuildReport, StageCounts
from responsenet.build.stages import stages as stage_registry
from responsenet.build.stages.base import StageResult
from responsenet.build.tasks import TRANSIENT_REASONS, Task, TaskOutcome, execute_task, fingerprint
from responsenet.build.workspace import (
    OutputWriteError,
    Workspace,
    read_json,
    safe_name_problem,
    write_error,
)
from responsenet.errors import UsageError
from responsenet.manifest import SourceEntry


@dataclass(frozen=True)
class Item:
    """One thing a stage runs on: a source, or a clip of a source."""

    unit: str
    item_id: str
    source: SourceEntry


class Runner:
    """Runs the chosen stages over the manifest entries into one build folder.

    Args:
        workspace: the build folder.
        entries: validated manifest entries.
        stage_names: stages to run, in pipeline order.
        config: the resolved pipeline config (one attribute per stage section).
        executor: where tasks run.
        force: stages to redo whatever their fingerprints say.
        retry_failed: also retry failures remembered from earlier runs.
        lookup: stage name -> stage class (the registry by default; tests pass their own).
    """

    def __init__(self, workspace: Workspace, entries: list[SourceEntry], stage_names: list[str],
                 config: BaseModel, executor: Executor, *, force: set[str] = frozenset(),
                 retry_failed: bool = False, console: Console | None = None,
                 progress: bool = True, lookup: Callable[[str], type] = stage_registry.get):
        self.ws, self.entries, self.stage_names = workspace, entries, stage_names
        self.config, self.executor, self.force = config, executor, force
        self.retry_failed, self.lookup, self.progress = retry_failed, lookup, progress
        self.console = console or Console(stderr=True)
        self.failed_sources: set[str] = set()
        self.failed_clips: set[str] = set()
        self.partial_sources: set[str] = set()
        self.stopped_sources: set[str] = set()
        self.current_stage: str | None = None
        self.pending: Counter[str] = Counter()  # source -> its items left in the current stage

    def run(self, report: BuildReport) -> BuildReport:
        """Run every stage over every item; fill and return ``report``.

        Raises:
            UsageError: a source id is not a safe file name.
            OutputWriteError: a write failed because of the machine; the build stopped.
        """
        for entry in self.entries:
            if (why := safe_name_problem(entry.id)) is not None:
                raise UsageError(f"source id {why}")
        report.items = {e.id: "ok" for e in self.entries}
        with Progress(TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=self.console,
                      disable=not self.progress) as bar:
            try:
                for name in self.stage_names:
                    self._run_stage(name, report, bar)
            except OutputWriteError:
                self._mark_stopped()
                raise
            except OSError as e:  # --force's discard, or another write of the runner itself
                fatal = write_error(e, self.ws.root)
                if fatal is not None:
                    self._mark_stopped()
                raise (fatal or e) from e
            finally:
                self._settle_items(report)
        return report

    def _settle_items(self, report: BuildReport) -> None:
        """Each source's status: failed > stopped (not through every stage) > partial > ok."""
        for source_id in self.partial_sources:
            report.items[source_id] = "partial"
        for source_id in self.stopped_sources:
            report.items[source_id] = "stopped"
        for source_id in self.failed_sources:
            report.items[source_id] = "failed"

    def _mark_stopped(self) -> None:
        """The sources that had not gone through every stage when the build stopped."""
        current = self.stage_names.index(self.current_stage) if self.current_stage else -1
        if current < len(self.stage_names) - 1:  # later stages never ran
            self.stopped_sources |= {e.id for e in self.entries}
        else:
            self.stopped_sources |= {source for source, left in self.pending.items() if left}

    def _section(self, name: str, stage_cls: type) -> dict[str, Any]:
        section = getattr(self.config, name, None)
        if section is None:
            section = stage_cls.Config()
        return section.model_dump(mode="json")

    def _items(self, stage_cls: type, report: BuildReport) -> list[Item]:
        live = [e for e in self.entries if e.id not in self.failed_sources]
        if stage_cls.unit == "source":
            return [Item("source", e.id, e) for e in live]
        items = []
        for entry in live:
            result = self.ws.read_result("source", entry.id, "segment")
            if result is None:
                self._fail(report, Item("source", entry.id, entry), stage_cls.name,
                           "missing_input", f"source {entry.id} has no segment output; "
                           f"run with --stage segment,{stage_cls.name}")
                continue
            clip_ids = [clip.get("clip_id") for clip in result["meta"].get("clips", [])]
            unsafe = next((why for c in clip_ids if (why := safe_name_problem(c))), None)
            if unsafe is not None:
                self._fail(report, Item("source", entry.id, entry), stage_cls.name, "bad_input",
                           f"source {entry.id}: its segment result lists a clip id {unsafe}; "
                           "run segment again (--force segment)")
                continue
            items += [Item("clip", c, entry) for c in clip_ids if c not in self.failed_clips]
        return items

    def _inputs(self, item: Item, stage_cls: type) -> dict[str, StageResult] | str:
        inputs = {}
        for req in stage_cls.requires:
            unit = self.lookup(req).unit
            req_id = item.source.id if unit == "source" else item.item_id
            result = self.ws.read_result(unit, req_id, req)
            if result is None:
                return (f"{item.unit} {item.item_id} has no {req} output; "
                        f"run with --stage {req},{stage_cls.name}")
            inputs[req] = StageResult(self.ws.output_dir(unit, req_id, req), result["meta"],
                                      result["fingerprint"])
        return inputs

    def _fingerprint(self, item: Item, stage, section, inputs) -> str:
        data = {"stage": stage.name, "version": stage.version, "config": section,
                "inputs": {k: v.fingerprint for k, v in inputs.items()},
                "extra": stage.input_fingerprint(item.source, stage.Config(**section))}
        if not stage.requires:
            data["source"] = item.source.model_dump(include={"url", "path", "start", "end"})
        return fingerprint(data)

    def _cached(self, item: Item, stage, fp: str, report: BuildReport) -> bool:
        result = self.ws.read_result(item.unit, item.item_id, stage.name)
        if result is not None and result.get("fingerprint") == fp:
            return True
        failure = read_json(self.ws.failure_file(item.unit, item.item_id, stage.name))
        if (failure and failure.get("fingerprint") == fp and not self.retry_failed
                and failure.get("reason") not in TRANSIENT_REASONS):
            self._fail(report, item, stage.name, failure["reason"], failure["message"], True)
            return True
        return False

    def _run_stage(self, name: str, report: BuildReport, bar: Progress) -> None:
        """Run one stage; its counts are in ``report.stages[name]`` from the start, so a stop
        half-way still reports what finished."""
        stage_cls = self.lookup(name)
        stage, section = stage_cls(), self._section(name, stage_cls)
        counts = report.stages[name] = StageCounts()
        started = time.perf_counter()
        self.current_stage, self.pending = name, Counter(e.id for e in self.entries)
        try:
            items = self._items(stage_cls, report)
            self.pending = Counter(item.source.id for item in items)
            bar_task = bar.add_task(name, total=len(items))
            tasks = []
            for item in items:
                inputs = self._inputs(item, stage_cls)
                if isinstance(inputs, str):
                    self._fail(report, item, name, "missing_input", inputs)
                    counts.failed += 1
                    self._finished(item, bar, bar_task)
                    continue
                fp = self._fingerprint(item, stage, section, inputs)
                if name in self.force:
                    self.ws.discard(item.unit, item.item_id, name)
                elif self._cached(item, stage, fp, report):
                    counts.skipped += 1
                    self._finished(item, bar, bar_task)
                    continue
                tasks.append(Task(stage_cls, item.unit, item.item_id, item.source, section,
                                  inputs, fp, self.ws.root))
            by_id = {item.item_id: item for item in items}
            for outcome in self.executor.map_unordered(execute_task, tasks):
                item = by_id[outcome.item_id]
                if outcome.error is None:
                    self._finished(item, bar, bar_task)
                self._record(outcome, item, counts, report)
        finally:
            counts.seconds = time.perf_counter() - started

    def _finished(self, item: Item, bar: Progress, bar_task: TaskID) -> None:
        """``item`` is through the current stage (done, skipped or failed)."""
        self.pending[item.source.id] -= 1
        bar.advance(bar_task)

    def _record(self, outcome: TaskOutcome, item: Item, counts: StageCounts,
                report: BuildReport) -> None:
        counts.work_seconds += outcome.seconds
        if outcome.status == "done":
            counts.done += 1
            return
        counts.failed += 1
        self._fail(report, item, outcome.stage, outcome.reason, outcome.message)
        if outcome.error is not None:
            raise outcome.error  # the machine's problem: every later item would fail the same

    def _fail(self, report: BuildReport, item: Item, stage: str, reason: str, message: str,
              cached: bool = False) -> None:
        report.add_failure(item.item_id, stage, reason, message, cached, source=item.source.id)
        if item.unit == "source":
            self.failed_sources.add(item.item_id)
        else:
            self.failed_clips.add(item.item_id)
            self.partial_sources.add(item.source.id)
