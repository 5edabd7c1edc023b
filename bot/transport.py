"""How the scheduler reaches GPU workers: the interface, and the embedded (local) transport.

A transport moves protocol messages (`engine.protocol`) and nothing else: it does not queue,
order or retry — the scheduler does that from SQLite. `submit` is only called when some worker
has reported a free slot, so a transport never holds a backlog of its own.

The local transport runs one worker as a spawned child process (the bot never imports torch,
nor any worker code: the child loads `engine.worker.local` by name) and talks to it over a
pipe. A reader thread turns pipe messages into an asyncio queue, so the event loop never blocks
on the worker. If the child dies the transport reports `WorkerLost` (the scheduler requeues its
jobs) and starts a fresh child.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import multiprocessing
import threading
import uuid
from collections.abc import AsyncIterator
from multiprocessing.connection import Connection
from typing import Protocol

from engine.protocol import (
    CancelJob,
    FromWorker,
    GenerateBatch,
    Shutdown,
    ToWorker,
    TrainJob,
    WorkerLost,
    WorkerReady,
)
from engine.worker_config import EngineSpec, WorkerConfig

log = logging.getLogger("lexicon.transport")


class Transport(Protocol):
    """The scheduler's view of the workers."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def submit(self, work: GenerateBatch | TrainJob) -> None: ...

    async def cancel(self, job_id: int) -> None: ...

    def events(self) -> AsyncIterator[FromWorker]: ...


# The embedded worker's entry point, named rather than imported: the bot process never loads
# worker code (nor, through it, torch); only the spawned child imports it.
WORKER_MODULE = "engine.worker.local"


def _child_main(connection: Connection, spec: EngineSpec, config: WorkerConfig) -> None:
    """The spawned child's target: import the worker there, and run it."""
    importlib.import_module(WORKER_MODULE).child_main(connection, spec, config)


class WorkerStartError(RuntimeError):
    """The worker could not start (its message is one sentence for the operator)."""


class LocalTransport:
    """One worker in a child process of the bot, restarted when it dies."""

    def __init__(
        self,
        spec: EngineSpec,
        config: WorkerConfig,
        restart_delay: float = 1.0,
    ) -> None:
        self.spec = spec
        self.config = config
        self.restart_delay = restart_delay
        self._events: asyncio.Queue[FromWorker] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._connection: Connection | None = None
        self._send_lock = asyncio.Lock()
        self._closing = False
        self._ever_ready = False
        self._generation = 0
        self.startup_error: str | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._spawn()

    def _spawn(self) -> None:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe(duplex=True)
        self._generation += 1
        worker_id = f"{self.config.worker_id}-{self._generation}-{uuid.uuid4().hex[:6]}"
        config = WorkerConfig(**{**self.config.__dict__, "worker_id": worker_id})
        process = context.Process(
            target=_child_main, args=(child, self.spec, config), name=worker_id, daemon=True
        )
        process.start()
        child.close()
        self._process, self._connection = process, parent
        reader = threading.Thread(
            target=self._read, args=(parent, process, worker_id), daemon=True, name="pipe-reader"
        )
        reader.start()

    def _read(
        self, connection: Connection, process: multiprocessing.process.BaseProcess, worker_id: str
    ) -> None:
        """Reader thread: forward every message; report the worker lost at end of pipe."""
        reason = "the worker process exited"
        while True:
            try:
                message = connection.recv()
            except (EOFError, OSError):
                break
            if isinstance(message, WorkerLost):
                reason = message.reason
                continue
            if isinstance(message, WorkerReady):
                self._ever_ready = True
            self._post(message)
        process.join(timeout=5)
        if process.exitcode not in (0, None) and reason == "the worker process exited":
            reason = f"the worker process died (exit code {process.exitcode})"
        self._post(WorkerLost(worker_id, reason))
        if self._loop is not None and not self._closing:
            self._loop.call_soon_threadsafe(self._schedule_restart, reason)

    def _post(self, message: FromWorker) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._events.put_nowait, message)

    def _schedule_restart(self, reason: str) -> None:
        if self._closing:
            return
        if not self._ever_ready:
            # It never came up: restarting would fail the same way. Say why, once.
            self.startup_error = reason
            log.error("%s", reason)
            return
        log.warning("%s; starting a new worker in %.0f s", reason, self.restart_delay)
        assert self._loop is not None
        self._loop.call_later(self.restart_delay, self._respawn)

    def _respawn(self) -> None:
        if not self._closing:
            self._spawn()

    async def _send(self, message: ToWorker) -> None:
        connection = self._connection
        if connection is None:
            raise WorkerStartError(self.startup_error or "the GPU worker is not running.")
        async with self._send_lock:
            try:
                # Large payloads (photos) can fill the pipe; never block the event loop on it.
                await asyncio.to_thread(connection.send, message)
            except (OSError, EOFError, BrokenPipeError) as error:
                log.warning("could not send to the worker: %s", error)

    async def submit(self, work: GenerateBatch | TrainJob) -> None:
        await self._send(work)

    async def cancel(self, job_id: int) -> None:
        await self._send(CancelJob(job_id))

    async def events(self) -> AsyncIterator[FromWorker]:
        while True:
            yield await self._events.get()

    async def close(self, grace_seconds: float = 10.0) -> None:
        """Ask the worker to stop, wait a little, then make sure it is gone."""
        self._closing = True
        process, connection = self._process, self._connection
        if process is None or connection is None:
            return
        with contextlib.suppress(OSError, EOFError, BrokenPipeError):
            await asyncio.to_thread(connection.send, Shutdown())
        await asyncio.to_thread(process.join, grace_seconds)
        if process.is_alive():
            process.kill()
            await asyncio.to_thread(process.join, 5)
        connection.close()
