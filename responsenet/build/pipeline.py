"""``build()``: the library call behind ``responsenet build``.

Everything the user gave is checked (stages, config, manifest) before anything is written, so a
bad manifest or a typo in ``--set`` leaves the output folder untouched.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape

from responsenet.build.executors import make_executor
from responsenet.build.plan import parse_force, parse_stages
from responsenet.build.report import BuildReport
from responsenet.build.runner import Runner
from responsenet.build.workspace import OutputWriteError, Workspace, write_error
from responsenet.config import load_config
from responsenet.errors import UsageError
from responsenet.manifest import load_manifest


def build(manifest: str | Path, out: str | Path, stages: str = "all", *,
          config_path: str | Path | None = None, overrides: list[str] = (), workers: int = 1,
          executor: str = "local", ray_address: str | None = None, force: list[str] = (),
          retry_failed: bool = False, progress: bool = True,
          console: Console | None = None) -> BuildReport:
    """Run pipeline stages over a manifest into ``out``; return the report (also written to disk).

    Args:
        manifest: YAML, JSONL or CSV manifest of sources.
        out: build folder; created if missing; re-running into it resumes.
        stages: ``"all"`` or a comma list in any order (run in pipeline order).
        config_path: YAML config (``pipelines/default.yaml`` layout); None uses the defaults.
        overrides: ``stage.key=value`` strings applied after the YAML.
        workers: processes for the local executor (1 runs in this process), or the CPUs of
            the local Ray that the ``ray`` executor starts.
        executor: executor name (``local`` or ``ray``).
        ray_address: Ray cluster to join (``auto``, ``ray://host:10001``); None starts a local
            Ray. Every node must see ``out`` at the same path (docs/scale-out.md).
        force: stages to redo along with every stage that depends on them.
        retry_failed: retry failures remembered from earlier runs.
        progress: show progress bars.

    Raises:
        UsageError: a bad stage name, config or manifest; nothing is written then.
        OutputWriteError: a write error of the machine stopped the build; the report of what
            finished (with ``stopped``) is written first when the disk allows.
    """
    console = console or Console(stderr=True)
    names, not_yet = parse_stages(stages)
    forced = parse_force(list(force), names)
    config = load_config(config_path, list(overrides))
    entries = load_manifest(manifest)
    ws = Workspace(Path(out).absolute())  # tasks may run where the working directory differs
    runner_executor = make_executor(executor, workers, ray_address=ray_address)
    report = BuildReport(manifest=str(manifest), out=str(out), stages_requested=names,
                         config=config.model_dump(mode="json"))
    if not_yet:
        report.notes.append(f"stages not available yet, left out of 'all': {', '.join(not_yet)}")
    ws.lock()
    try:
        removed = ws.clean_stale()
        if removed:
            report.notes.append(f"removed {removed} partial output(s) left by an interrupted run")
        runner = Runner(ws, entries, names, config, runner_executor, force=forced,
                        retry_failed=retry_failed, console=console, progress=progress)
        try:
            runner.run(report)
            if "shard" in names:
                _assemble(ws, entries, config, report)
        except OutputWriteError as e:
            report.stop(e)
            _write_stopped_report(report, ws, console)
            raise
        report.write(ws.reports)
    finally:
        runner_executor.close()
        ws.unlock()
    return report


def _write_stopped_report(report: BuildReport, ws: Workspace, console: Console) -> None:
    """Best effort: write the report of a build that a write error stopped, and say where.

    The disk may refuse this too; then stderr says so and the build's own error (raised by the
    caller) stays the one reported.
    """
    try:
        path = report.write(ws.reports)
    except (OSError, UsageError) as e:  # OutputWriteError is a UsageError
        console.print(f"[yellow]note[/yellow]: the build stopped and its report could not be "
                      f"written into {escape(str(ws.reports))} either ({escape(str(e))})",
                      highlight=False)
        return
    console.print(f"[yellow]note[/yellow]: the build stopped; what finished is in "
                  f"{escape(str(path))}", highlight=False)


def _assemble(ws: Workspace, entries, config, report: BuildReport) -> None:
    """Put the corpus root together from the shard outputs (responsenet.corpus.assemble).

    A write error of the machine stops the build (OutputWriteError); any other file-system
    error fails the corpus: ``report.corpus`` is ``failed``, with an ``assembly_failed``
    failure (item ``corpus``), and the build exits 1.
    """
    from responsenet.corpus import assemble

    try:
        result = assemble(ws.root, entries, config.model_dump(mode="json"), config.shard)
    except OSError as e:
        fatal = write_error(e, ws.root, "corpus assembly: ")
        if fatal is not None:
            raise fatal from e
        report.corpus = "failed"
        report.add_failure("corpus", "shard", "assembly_failed",
                           f"could not write the corpus into {ws.root}: {e}. The corpus there "
                           "was left as it was (stage outputs are kept); fix the cause and run "
                           "the same command again")
        return
    report.corpus = state = "written" if result.changed else "unchanged"
    report.notes.append(
        f"corpus: {result.clips} clip(s), {result.rows} rows in {len(result.shards)} shard(s), "
        f"{len(result.excluded)} left out (see dataset.json 'excluded'); dataset.json {state} "
        f"({result.seconds:.1f} s)")
    report.notes += result.notes
