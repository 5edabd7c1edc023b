"""A process-wide thread pool that can be stopped at any time and used again afterwards.

The PNG encoders and the deflate segments each run on one: threads left running at interpreter
shutdown made the worker abort ("terminate called without an active exception"), so whoever
closes an engine stops them; but one process may hold several engines (a worker's models, a
test's), and closing one must not break generation in the next. `close` joins the threads, and
the next `submit` starts new ones (`ThreadPoolExecutor` starts its threads lazily).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class RestartablePool:
    """`ThreadPoolExecutor`'s `submit` and `map`, with a `close` that the next call undoes."""

    def __init__(self, workers: int, prefix: str) -> None:
        self._workers, self._prefix = workers, prefix
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def _running(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix=self._prefix)
            return self._pool

    def submit(self, fn: Callable[..., T], /, *args: Any) -> Future[T]:
        return self._running().submit(fn, *args)

    def map(self, fn: Callable[..., T], *iterables: Iterable[Any]) -> Iterator[T]:
        return self._running().map(fn, *iterables)

    def close(self) -> None:
        """Wait for the queued work and stop the threads; a later call starts new ones."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
