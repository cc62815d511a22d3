"""``build()``: the library call behind ``responsenet build``.

Everything the user gave is checked (stages, config, manifest) before anything is written, so a
bad manifest or a typo in ``--set`` leaves the output folder untouched.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from responsenet.build.executors import make_executor
from responsenet.build.plan import parse_force, parse_stages
from responsenet.build.report import BuildReport
from responsenet.build.runner import Runner
from responsenet.build.workspace import Workspace
from responsenet.config import load_config
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
        runner.run(report)
        if "shard" in names:
            _assemble(ws, entries, config, report)
        report.write(ws.reports)
    finally:
        runner_executor.close()
        ws.unlock()
    return report


def _assemble(ws: Workspace, entries, config, report: BuildReport) -> None:
    """Put the corpus root together from the shard outputs (responsenet.corpus.assemble)."""
    from responsenet.corpus import assemble

    try:
        result = assemble(ws.root, entries, config.model_dump(mode="json"), config.shard)
    except OSError as e:
        report.add_failure("corpus", "shard", "assembly_failed",
                           f"could not write the corpus into {ws.root}: {e}")
        return
    state = "written" if result.changed else "unchanged"
    report.notes.append(
        f"corpus: {result.clips} clip(s), {result.rows} rows in {len(result.shards)} shard(s), "
        f"{len(result.excluded)} left out (see dataset.json 'excluded'); dataset.json {state} "
        f"({result.seconds:.1f} s)")
    report.notes += result.notes
