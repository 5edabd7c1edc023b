"""In-process publish/subscribe of job updates, from the scheduler to whoever shows them.

The database is the source of truth; the hub only says "look again, something changed", plus
the things not worth a database write (live preview images). A subscriber that falls behind
loses nothing it cannot re-read from SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from engine.jobs import Progress
    from storage.models import Job

UpdateKind = Literal["queued", "started", "progress", "succeeded", "failed", "cancelled", "retry"]
FINAL_KINDS: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


@dataclass(frozen=True)
class JobUpdate:
    job_id: int
    user_id: int
    kind: UpdateKind
    step: int | None = None
    total: int | None = None
    loss: float | None = None
    eta_seconds: float | None = None
    preview_png: bytes | None = None
    batch_size: int | None = None
    batch_job_ids: tuple[int, ...] = ()

    @classmethod
    def progress_of(cls, job: Job, progress: Progress) -> JobUpdate:
        """The "progress" update that passes a worker's report on (its preview image too)."""
        return cls(
            job.id,
            job.user_id,
            "progress",
            step=progress.step,
            total=progress.total,
            loss=progress.loss,
            eta_seconds=progress.eta_seconds,
            preview_png=progress.preview_png,
        )

    @property
    def is_final(self) -> bool:
        return self.kind in FINAL_KINDS


class JobHub:
    def __init__(self, max_backlog: int = 1000) -> None:
        self._subscribers: set[asyncio.Queue[JobUpdate]] = set()
        self._max_backlog = max_backlog

    def publish(self, update: JobUpdate) -> None:
        for queue in list(self._subscribers):
            if queue.qsize() >= self._max_backlog and not update.is_final:
                continue  # a slow reader misses progress, never an outcome
            queue.put_nowait(update)

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[asyncio.Queue[JobUpdate]]:
        queue: asyncio.Queue[JobUpdate] = asyncio.Queue()
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)
