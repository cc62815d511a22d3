"""Where tasks run: in this process, a local process pool (``--workers N``), or Ray.

An executor only schedules; it yields each outcome as soon as it is ready so that the runner can
update progress. Whatever the executor, a task's outputs are the same: the stage writes them into
the build folder, which every worker must see at the same path.
"""

from __future__ import annotations

import logging
import multiprocessing
import re
import socket
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Protocol, TypeVar

from responsenet.build.tasks import Task, TaskOutcome, failure_record
from responsenet.build.workspace import Workspace, write_json_atomic
from responsenet.errors import StageFailure, UsageError
from responsenet.registry import Registry

T = TypeVar("T")
R = TypeVar("R")

#: What a task asks for when its stage declares nothing (see ``Stage.resources``).
DEFAULT_RESOURCES: dict[str, float] = {"CPU": 1}
_RAY_OPTION = {"CPU": "num_cpus", "GPU": "num_gpus", "memory": "memory"}
_SOFT = ("CPU", "memory")  # estimates: lowered to the largest node rather than never scheduled
_MISSING_MODULE = re.compile(r"No module named '([^']+)'")
_LOCK_NAME = ".lock"
#: How to ask for less when no node has what a build task needs (a task's ``schedule_hint``
#: replaces it, e.g. eval's).
_STAGE_HINT = "change the stage's config (e.g. device=cpu)"  # Workspace.lock() holds this file in the build folder during a build


class Executor(Protocol):
    def map_unordered(self, fn: Callable[[T], R], tasks: Iterable[T]) -> Iterator[R]: ...

    def close(self) -> None: ...


class SerialExecutor:
    """Run tasks one after another in this process (``--workers 1``)."""

    def map_unordered(self, fn, tasks):
        for task in tasks:
            yield fn(task)

    def close(self) -> None:
        pass


class LocalExecutor:
    """A pool of ``workers`` processes; the pool is kept for the whole build.

    A worker that dies (killed, out of memory, a crash in native code) breaks the whole pool and
    every task in flight. The pool is then started again and each of those tasks is re-run on its
    own: the one that kills its worker again is recorded as ``worker_crashed`` (``on_lost``); the
    others finish normally.

    Args:
        workers: processes in the pool.
        on_lost: (task, reason, message) -> outcome for a task whose worker died twice; the
            default records a build task's failure (:func:`lost_task_outcome`).
    """

    def __init__(self, workers: int, *,
                 on_lost: Callable[[Any, str, str], Any] | None = None):
        self.workers = workers
        self.on_lost = on_lost or lost_task_outcome
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        # forkserver: workers fork from a clean server process, not from this one, which may
        # already hold threads (OpenMP, CTranslate2, progress bars) that a forked child would
        # inherit in a locked state and hang on
        return ProcessPoolExecutor(max_workers=self.workers,
                                   mp_context=multiprocessing.get_context("forkserver"))

    def _restart(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._new_pool()

    def map_unordered(self, fn, tasks):
        futures = {self._pool.submit(fn, task): task for task in tasks}
        broken = []
        for future in as_completed(futures):
            try:
                yield future.result()
            except BrokenProcessPool:
                broken.append(futures[future])
        for task in broken:  # one at a time, so the task that kills its worker is known
            self._restart()
            try:
                yield self._pool.submit(fn, task).result()
            except BrokenProcessPool:
                yield self.on_lost(task, "worker_crashed", "its worker process died (killed, "
                                   "out of memory, or a crash in native code) twice, the second "
                                   "time running this task alone")
        if broken:
            self._restart()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


# --- Ray -------------------------------------------------------------------------------------


class WorkspaceNotShared(UsageError):
    """A Ray worker cannot see the build folder (it is not on storage every node mounts)."""


def task_resources(task: object) -> dict[str, float]:
    """What one task asks the scheduler for: ``CPU``, ``GPU``, ``memory`` (bytes), or custom.

    A task's own ``resources`` dict (e.g. an eval generation task's) comes first; else the
    stage's declared ``resources``. A stage config with ``device: cuda`` adds one GPU, and a
    config ``threads`` count raises ``CPU`` to it. Zero entries are left out.
    """
    own = getattr(task, "resources", None)
    if isinstance(own, dict):
        request = dict(own)
    else:
        stage_cls = getattr(task, "stage_cls", None)
        request = dict(getattr(stage_cls, "resources", DEFAULT_RESOURCES))
    config = getattr(task, "config", None) or {}
    if config.get("device") == "cuda":
        request["GPU"] = max(request.get("GPU", 0), 1)
    threads = config.get("threads")
    if isinstance(threads, int) and threads > request.get("CPU", 0):
        request["CPU"] = threads
    return {name: amount for name, amount in request.items() if amount}


def ray_options(request: dict[str, float]) -> dict[str, Any]:
    """``task_resources`` as Ray task options (num_cpus, num_gpus, memory, resources)."""
    options: dict[str, Any] = {"num_cpus": request.get("CPU", 0)}
    if request.get("GPU"):
        options["num_gpus"] = request["GPU"]
    if request.get("memory"):
        options["memory"] = int(request["memory"])
    custom = {k: v for k, v in request.items() if k not in _RAY_OPTION}
    if custom:
        options["resources"] = custom
    return options


def fit_to_nodes(request: dict[str, float], largest: dict[str, float],
                 hint: str | None = None) -> dict[str, float] | str:
    """Lower CPU and memory to the largest node's; say why when a GPU or custom resource is
    missing from every node (Ray would otherwise wait for it forever)."""
    fitted = dict(request)
    for name, amount in request.items():
        have = largest.get(name, 0.0)
        if amount <= have:
            continue
        if name in _SOFT and have > 0:
            fitted[name] = have
            continue
        unit = " bytes" if name == "memory" else ""
        return (f"it needs {amount:g}{unit} {name} but no node of the Ray cluster has more than "
                f"{have:g}; add such a node, or {hint or _STAGE_HINT}")
    return fitted


def _run_on_node(fn: Callable[[T], R], task: T) -> R:
    """Runs on a Ray worker: checks that the build folder is visible there, then runs ``fn``."""
    root = getattr(task, "root", None)
    if root is not None and not (Path(root) / _LOCK_NAME).is_file():
        raise WorkspaceNotShared(
            f"the build folder {root} is not visible on Ray node {socket.gethostname()}; put "
            "--out on storage that every node mounts at the same path (e.g. NFS)")
    return fn(task)


def lost_task_outcome(task: object, reason: str, message: str) -> TaskOutcome:
    """The failed outcome of a task that never returned one, recorded like any failure.

    Raises:
        StageFailure: ``task`` is not a build :class:`Task`, so there is no outcome to make.
    """
    if not isinstance(task, Task):
        raise StageFailure(reason, message)
    ws, stage = Workspace(task.root), task.stage_cls.name
    message = f"{task.unit} {task.item_id}, stage {stage}: {message}"
    write_json_atomic(ws.failure_file(task.unit, task.item_id, stage),
                      failure_record(task, stage, reason, message))
    return TaskOutcome(stage, task.item_id, "failed", 0.0, reason=reason, message=message)


def import_ray():
    """Import Ray, or say how to install it."""
    try:
        import ray
    except ImportError as e:
        raise UsageError("--executor ray needs Ray, which is not installed here: "
                         "pip install 'responsenet[ray]' (on every node of the cluster)") from e
    return ray


def _first_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0][:300]}"


def lost_reason(ray, error: Exception) -> tuple[str, str]:
    """(reason code, message) for a task whose Ray worker raised or died instead of returning."""
    seen = _first_line(error)
    if isinstance(error, ray.exceptions.RayTaskError):
        cause = error.cause
        if isinstance(cause, UsageError):
            return "usage_error", str(cause)
        missing = _MISSING_MODULE.search(str(cause))
        if missing:
            return "usage_error", (f"a Ray worker could not import {missing.group(1)!r}; install "
                                   "responsenet and the extras its stages need on every node")
        return "internal_error", f"the task raised on a Ray worker: {_first_line(cause)}"
    if isinstance(error, ray.exceptions.OutOfMemoryError):
        return "out_of_memory", (f"Ray stopped the worker because its node ran out of memory "
                                 f"({seen}); run fewer tasks per node or declare more memory for "
                                 "the stage, then re-run with --retry-failed")
    if isinstance(error, ray.exceptions.TaskCancelledError):
        return "interrupted", f"the task was cancelled ({seen})"
    if isinstance(error, (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                          ray.exceptions.ObjectLostError)):
        return "worker_crashed", (f"the Ray worker running it died ({seen}): a crash in native "
                                  "code or a lost node; see the worker logs in /tmp/ray/session_"
                                  "latest/logs, then re-run with --retry-failed")
    return "internal_error", f"Ray could not run the task ({seen})"


class RayExecutor:
    """Tasks as Ray remote functions, on a local Ray or a cluster (``--executor ray``).

    Each task asks Ray for its stage's resources (:func:`task_resources`); outcomes come back in
    the order they finish. A task that raises or whose worker dies comes back as a failed outcome
    (``on_lost``), so one crash never stops the build.

    Args:
        workers: CPUs of the local Ray started when ``address`` is None; a cluster's own
            resources decide how much runs at once, whatever ``workers`` says.
        address: None starts a local Ray; ``auto`` joins the cluster of this machine;
            ``ray://host:10001`` joins through Ray Client; ``host:6379`` a head's address.
        max_retries: times Ray reruns a task whose worker died before the death is a failure.
        on_lost: (task, reason, message) -> outcome for a task that never returned one.
    """

    def __init__(self, workers: int, address: str | None = None, *, max_retries: int = 1,
                 on_lost: Callable[[Any, str, str], Any] = lost_task_outcome):
        self._ray = ray = import_ray()
        self.max_retries, self.on_lost = max_retries, on_lost
        self._owned = not ray.is_initialized()
        if self._owned:
            _start_ray(ray, workers, address)
        self._remote = ray.remote(_run_on_node)
        self._largest: dict[str, float] | None = None
        self._pending: dict[Any, Any] = {}

    def map_unordered(self, fn, tasks):
        ray = self._ray
        for task in tasks:
            request = fit_to_nodes(task_resources(task), self._largest_node(),
                                   getattr(task, "schedule_hint", None))
            if isinstance(request, str):
                yield self.on_lost(task, "usage_error", f"Ray cannot schedule it: {request}")
                continue
            options = ray_options(request) | {"max_retries": self.max_retries}
            self._pending[self._remote.options(**options).remote(fn, task)] = task
        while self._pending:
            (ref,), _ = ray.wait(list(self._pending), num_returns=1)
            task = self._pending.pop(ref)
            try:
                outcome = ray.get(ref)
            except ray.exceptions.RayError as error:
                outcome = self.on_lost(task, *lost_reason(ray, error))
            yield outcome

    def _largest_node(self) -> dict[str, float]:
        """Each resource's largest amount on one live node (read once per build)."""
        if self._largest is None:
            self._largest = {}
            for node in self._ray.nodes():
                if not node.get("Alive"):
                    continue
                for name, amount in (node.get("Resources") or {}).items():
                    self._largest[name] = max(self._largest.get(name, 0.0), amount)
        return self._largest

    def close(self) -> None:
        for ref in self._pending:
            self._ray.cancel(ref, force=True)
        self._pending.clear()
        if self._owned and self._ray.is_initialized():
            self._ray.shutdown()


def _start_ray(ray, workers: int, address: str | None) -> None:
    if address is None:
        args: dict[str, Any] = {"num_cpus": workers, "include_dashboard": False}
    else:
        args = {"address": address}
    try:
        ray.init(**args, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = f"join the Ray cluster at {address!r}" if address else "start a local Ray"
        hint = ("start one with `ray start --head` (see docs/scale-out.md), or leave "
                "--ray-address out for a local Ray" if address else "see the error above")
        raise UsageError(f"could not {where}: {e}; {hint}") from e


executors: Registry = Registry("executor")
executors.register("local", "responsenet.build.executors:LocalExecutor")
executors.register("ray", "responsenet.build.executors:RayExecutor")


def check_executor(name: str, workers: int, ray_address: str | None = None) -> None:
    """Refuse executor options that cannot work, before anything is started or written.

    Raises:
        UsageError: ``workers`` < 1, an unknown executor, ``ray_address`` without ``ray``, or
            Ray not installed.
    """
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    if name not in executors:
        raise UsageError(f"--executor: {executors.unknown_message(name)}")
    if name != "ray" and ray_address is not None:
        raise UsageError(f"--ray-address is for --executor ray, but the executor is {name!r}; "
                         "add --executor ray or leave --ray-address out")
    if name == "ray":
        import_ray()


def make_executor(name: str, workers: int, *, ray_address: str | None = None) -> Executor:
    """Build the executor called ``name`` (``local`` or ``ray``) with ``workers`` processes.

    Args:
        ray_address: the Ray cluster to join (``ray`` only); None starts a local Ray.
    """
    check_executor(name, workers, ray_address)
    cls = executors.get(name)
    if name == "ray":
        return cls(workers, ray_address)
    return SerialExecutor() if workers == 1 and name == "local" else cls(workers)
