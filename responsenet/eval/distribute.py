"""Generation across processes or Ray: the clips to generate, cut into groups, one task each.

``responsenet eval --workers N`` (a local process pool) or ``--executor ray`` cuts the clips still
to generate into about one group per worker, consecutive in clip order, each a multiple of
``batch_clips`` clips (the last one may be shorter) so that lock-step batches hold the same clips
as in one process. Each group is one :class:`GenerateTask`: its worker builds the model once
(seeded as the driver is), streams its clips through the harness and writes them into the run
folder, which every worker must see at the same path. Scoring stays in the driver.

A group whose worker dies or raises stops only that group: each of its clips without a
``status.json`` is recorded as failed with the reason (``worker_crashed``, ``out_of_memory``,
``usage_error``, ``internal_error``, ...), and the next ``eval`` of the same run generates those
clips again (:data:`responsenet.eval.run.LOST_REASONS`).

Same outputs: each worker calls ``seed_everything(seed)`` and builds the model afresh, so a model
whose outputs depend only on (seed, clip) gives the same bytes whatever the number of workers.
Every built-in baseline does: ``random_train`` draws from ``default_rng([seed, crc32(clip_id)])``,
``nearest`` uses the seed only to sample its train frames when it is built, and ``silent``,
``mirror`` and ``lstm`` (greedy) draw nothing. A model that draws from one generator across clips
(``np.random`` or ``torch`` after the global seed) gets other draws for the clips of a second
group than one process would give; to be independent of the split, seed per clip in ``reset``,
e.g. ``np.random.default_rng([seed, zlib.crc32(clip.clip_id.encode())])``.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from responsenet.data.index import ClipRef
from responsenet.errors import UsageError
from responsenet.eval.clips import EvalClipReader
from responsenet.eval.harness import ClipRun, generate
from responsenet.eval.protocol import load_model
from responsenet.eval.run import EvalOptions, needs_generation, seed_everything, video_loader
from responsenet.eval.rundir import read_status, write_clip

log = logging.getLogger(__name__)


@dataclass
class GenerateTask:
    """One group of clips for one worker (picklable: paths, strings and numbers only).

    Attributes:
        model, model_args: the ``--model`` spec and ``--model-args``.
        defaults: what ``load_model`` fills in (``corpus``, ``seed``, ``device``).
        refs: the clips of the group, in clip order.
        data, out: the corpus and the run folder, at the same paths on every worker.
        sys_path: the driver's ``sys.path`` (absolute), so that a plugin module importable
            there is importable on a worker of the same machine.
        resources: what the task asks the scheduler for: ``{"CPU": 1}``, plus ``"GPU": 1``
            with ``--device cuda``.
        group, n_groups: which group this is (0-based), of how many.
    """

    model: str
    model_args: dict[str, Any]
    defaults: dict[str, Any]
    refs: list[ClipRef]
    data: Path
    out: Path
    offline: bool = False
    batch_clips: int = 1
    sys_path: list[str] = field(default_factory=list)
    resources: dict[str, float] = field(default_factory=lambda: {"CPU": 1})
    group: int = 0
    n_groups: int = 1
    #: How to ask for less when no node can run the task (the executor's refusal says it).
    schedule_hint: ClassVar[str] = "run eval with --device cpu"

    @property
    def clip_ids(self) -> list[str]:
        return [ref.clip_id for ref in self.refs]


@dataclass
class GroupSummary:
    """What came back for one group.

    Attributes:
        ok: ids of the clips generated completely; failed: clip id -> (reason, message) for
            the clips the model failed on.
        lost: (reason, message) when the group stopped before writing every clip (its worker
            died or raised); the driver then records its clips without a status as failed.
    """

    group: int
    ok: list[str] = field(default_factory=list)
    failed: dict[str, tuple[str, str]] = field(default_factory=dict)
    lost: tuple[str, str] | None = None


def partition(refs: list[ClipRef], workers: int, batch_clips: int = 1) -> list[list[ClipRef]]:
    """Cut ``refs`` into at most ``workers`` groups of consecutive clips, in order; every group
    but the last holds a multiple of ``batch_clips`` clips (at least ``batch_clips``)."""
    if not refs:
        return []
    size = -(-len(refs) // max(1, workers))
    size = -(-size // max(1, batch_clips)) * max(1, batch_clips)
    return [refs[i:i + size] for i in range(0, len(refs), size)]


def make_tasks(refs: list[ClipRef], root: Path, opts: EvalOptions) -> list[GenerateTask]:
    """One :class:`GenerateTask` per group of ``refs`` (see :func:`partition`)."""
    groups = partition(refs, opts.workers, opts.batch_clips)
    resources = {"CPU": 1, "GPU": 1} if opts.device == "cuda" else {"CPU": 1}
    sys_path = [os.path.abspath(p or os.curdir) for p in sys.path]
    defaults = {"corpus": root, "seed": opts.seed, "device": opts.device}
    return [GenerateTask(model=opts.model, model_args=dict(opts.model_args),
                         defaults=dict(defaults), refs=group, data=root,
                         out=opts.out.resolve(), offline=opts.offline,
                         batch_clips=opts.batch_clips, sys_path=sys_path,
                         resources=dict(resources), group=i, n_groups=len(groups))
            for i, group in enumerate(groups)]


# --- on the worker ----------------------------------------------------------------------------


def run_generate_task(task: GenerateTask) -> GroupSummary:
    """Runs on a worker: generate ``task``'s clips that have no status yet into the run folder.

    Never raises for a failure of the group: an exception (the run folder not visible, the
    plugin not importable, a write error) comes back as ``lost`` with ``usage_error`` or
    ``internal_error``; clips written before it stay written.
    """
    summary = GroupSummary(task.group)
    try:
        _generate_group(task, summary)
    except UsageError as e:
        summary.lost = ("usage_error", str(e))
    except Exception as e:  # noqa: BLE001 - recorded for the group's clips by the driver
        summary.lost = ("internal_error", f"generation raised on {socket.gethostname()}: "
                        f"{type(e).__name__}: {e}")
    return summary


def _generate_group(task: GenerateTask, summary: GroupSummary) -> None:
    _check_visible(task)
    missing = [p for p in task.sys_path if p not in sys.path]
    if missing:
        sys.path[:0] = missing
        importlib.invalidate_caches()
    pending = [ref for ref in task.refs if needs_generation(read_status(task.out, ref.clip_id))]
    if not pending:
        return
    seed_everything(int(task.defaults.get("seed", 0)))
    model = load_model(task.model, task.model_args, defaults=task.defaults)
    reader = EvalClipReader(task.data)
    clips = (reader.load(ref) for ref in pending)
    for result in generate(model, clips, offline=task.offline, batch_clips=task.batch_clips,
                           load_video=video_loader(model)):
        write_clip(task.out, result, int(model.sample_rate))
        if result.ok:
            summary.ok.append(result.clip_id)
        else:
            summary.failed[result.clip_id] = (str(result.reason), str(result.error))


def _check_visible(task: GenerateTask) -> None:
    """Raise UsageError when this worker cannot see the run folder or the corpus."""
    host = socket.gethostname()
    if not (task.out / "run.json").is_file():
        raise UsageError(f"the run folder {task.out} is not visible on {host} (no run.json "
                         "there); put --out on storage that every node mounts at the same path "
                         "(e.g. NFS)")
    if not (task.data / "dataset.json").is_file():
        raise UsageError(f"the corpus {task.data} is not visible on {host} (no dataset.json "
                         "there); put --data on storage that every node mounts at the same path")


# --- in the driver ----------------------------------------------------------------------------


def lost_group(task: GenerateTask, reason: str, message: str) -> GroupSummary:
    """The summary of a group whose task never returned one (an executor's ``on_lost``)."""
    return GroupSummary(task.group, lost=(reason, message))


def make_generate_executor(name: str, workers: int, ray_address: str | None = None) -> Any:
    """The executor that runs :class:`GenerateTask` objects: a local pool or Ray.

    Raises:
        UsageError: as :func:`~responsenet.build.executors.check_executor` says.
    """
    from responsenet.build.executors import check_executor, executors

    check_executor(name, workers, ray_address)
    if name == "ray":
        return executors.get(name)(workers, ray_address, on_lost=lost_group)
    return executors.get(name)(workers, on_lost=lost_group)


def generate_distributed(refs: list[ClipRef], root: Path, opts: EvalOptions,
                         sample_rate: int) -> None:
    """Generate ``refs`` into ``opts.out`` through ``opts.executor`` with ``opts.workers``.

    Args:
        sample_rate: the model's (for the status of clips lost with their worker).
    """
    tasks = make_tasks(refs, root, opts)
    by_group = {task.group: task for task in tasks}
    mode = "offline" if opts.offline else "online"
    executor = make_generate_executor(opts.executor, opts.workers, opts.ray_address)
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), disable=not opts.progress) as bar:
            progress = bar.add_task(f"generate ({mode}, {len(tasks)} group(s) on "
                                    f"{opts.executor})", total=len(refs))
            for summary in executor.map_unordered(run_generate_task, tasks):
                task = by_group[summary.group]
                record_summary(task, summary, opts.out, sample_rate)
                bar.advance(progress, len(task.refs))
    finally:
        executor.close()


def record_summary(task: GenerateTask, summary: GroupSummary, out: Path,
                   sample_rate: int) -> list[str]:
    """Log the group's failures; for a lost group, write a failed status (``summary.lost``'s
    reason) for each of its clips still to generate. Returns the ids of those clips."""
    for clip_id, (reason, message) in summary.failed.items():
        log.warning("clip %s failed (%s): %s", clip_id, reason, message)
    if summary.lost is None:
        return []
    reason, message = summary.lost
    ids = task.clip_ids
    where = (f"group {task.group + 1} of {task.n_groups} (clips {ids[0]} .. {ids[-1]}) "
             "stopped before this clip was written")
    lost = []
    for ref in task.refs:
        if not needs_generation(read_status(out, ref.clip_id)):
            continue
        error = f"clip {ref.clip_id}: {where}: {message}"
        write_clip(out, ClipRun(ref.clip_id, ref.n_frames, float(ref.fps), reason=reason,
                                error=error), sample_rate)
        log.warning("clip %s failed (%s): %s", ref.clip_id, reason, error)
        lost.append(ref.clip_id)
    return lost
