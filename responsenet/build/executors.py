"""Where tasks run: in this process, or in a local process pool (``--workers N``).

An executor only schedules; it yields each outcome as soon as it is ready so that the runner can
update progress. Ray lands here as another executor with the same interface.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Protocol, TypeVar

from responsenet.errors import UsageError
from responsenet.registry import Registry

T = TypeVar("T")
R = TypeVar("R")


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
    """A pool of ``workers`` processes; the pool is kept for the whole build."""

    def __init__(self, workers: int):
        self.workers = workers
        self._pool = ProcessPoolExecutor(max_workers=workers)

    def map_unordered(self, fn, tasks):
        futures = [self._pool.submit(fn, task) for task in tasks]
        for future in as_completed(futures):
            yield future.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


executors: Registry = Registry("executor")
executors.register("local", "responsenet.build.executors:LocalExecutor")
executors.plan("ray", "the Ray executor comes with the scale-out release")


def make_executor(name: str, workers: int) -> Executor:
    """Build the executor called ``name`` (``local``) with ``workers`` processes."""
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    cls = executors.get(name)
    return SerialExecutor() if workers == 1 and name == "local" else cls(workers)
