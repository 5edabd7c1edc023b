"""`Lexicon`: the application core, opened once and shared by the Discord bot and the CLI.

It owns the storage, the scheduler with its transport, the job hub and the services. Opening it
takes the data dir's lock (one app core per data dir: `storage.lock`), sweeps the file store
(crash repair), requeues work a previous process left running and starts the worker; closing it
releases all of that in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass

from bot import metrics
from bot.config import Settings
from bot.defaults import DefaultsService
from bot.hub import JobHub
from bot.library import LibraryService
from bot.scheduler import Scheduler
from bot.services import ImagineService, TrainService, _Checks
from bot.transport import LocalTransport, Transport
from engine.vocabulary import is_single_token, reads_as_words
from engine.worker_config import EngineSpec, WorkerConfig, warm_up_batch_sizes
from storage.db import AsyncClosing
from storage.facade import Storage
from storage.lock import DataDirLock
from storage.models import Job

log = logging.getLogger("lexicon.app")


class WorkerUnavailable(RuntimeError):
    """The GPU worker could not start; the message says why in one sentence."""


def engine_spec(settings: Settings) -> EngineSpec:
    """What a worker (embedded or standalone) builds its engines from: the models it holds."""
    return EngineSpec(
        settings.engine,
        settings.worker_models,
        settings.device,
        settings.data_dir,
        torch_threads=settings.torch_threads,
        compile_mode=settings.compile,
        cuda_graphs=settings.cuda_graphs,
        vae_float32=settings.vae_float32,
        warm_up_batches=warm_up_batch_sizes(settings.max_batch),
        train_batch_size=settings.train_batch,
        model_memory=settings.worker_model_memory,
    )


def worker_config(settings: Settings, worker_id: str, **overrides: float) -> WorkerConfig:
    """How a worker (embedded or standalone) runs its loop."""
    return WorkerConfig(
        worker_id=worker_id,
        max_batch=settings.max_batch,
        train_slice_steps=settings.train_slice_steps,
        checkpoint_every=settings.checkpoint_every,
        **overrides,
    )


def default_transport(settings: Settings) -> Transport:
    """The transport `LEXICON_QUEUE` asks for."""
    if settings.queue != "local":
        from bot.redis_transport import RedisTransport

        return RedisTransport(settings.queue, models=tuple(m.name for m in settings.models))
    return LocalTransport(engine_spec(settings), worker_config(settings, f"local{os.getpid()}"))


@dataclass
class Lexicon(AsyncClosing):
    settings: Settings
    storage: Storage
    hub: JobHub
    scheduler: Scheduler
    imagine: ImagineService
    train: TrainService
    library: LibraryService
    lock: DataDirLock
    defaults: DefaultsService

    @classmethod
    async def open(
        cls,
        settings: Settings,
        transport: Transport | None = None,
        *,
        start_worker: bool = True,
    ) -> Lexicon:
        """Open storage and services; with `start_worker`, also the scheduler and its worker
        (commands that only read or edit the library leave the GPU alone)."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        lock = DataDirLock.acquire(settings.data_dir)
        try:
            app = await cls._open(settings, transport, lock)
        except BaseException:
            lock.release()
            raise
        if start_worker:
            if settings.metrics_port is not None:
                metrics.serve(settings.metrics_port)
            try:
                await app.scheduler.start()
            except BaseException:
                await app.close()
                raise
        return app

    @classmethod
    async def _open(
        cls, settings: Settings, transport: Transport | None, lock: DataDirLock
    ) -> Lexicon:
        storage = await Storage.open(
            settings.data_dir,
            database_path=settings.database_path,
            is_reserved_word=is_single_token,
            reads_as_words=reads_as_words,
        )
        try:
            report = await storage.sweep()
        except BaseException:
            await storage.close()
            raise
        if report.removed_orphans or report.missing or report.marked_unusable:
            log.warning(
                "start-up sweep removed %d orphan files; %d rows point at missing files",
                len(report.removed_orphans),
                len(report.missing),
            )
        hub = JobHub()
        scheduler = Scheduler(
            storage.jobs,
            storage.embeddings,
            storage.files,
            transport or default_transport(settings),
            hub,
            max_batch=settings.max_batch,
            lease_seconds=settings.lease_seconds,
            default_model=settings.default_model,
            reports=storage.model_reports,
            sources={model.name: model.source for model in settings.models},
        )
        checks = _Checks(
            settings,
            storage.users,
            storage.guilds,
            storage.jobs,
            storage.preferences,
            storage.embeddings,
        )
        imagine = ImagineService(
            settings, checks, storage.embeddings, scheduler, hub, storage.images
        )
        return cls(
            settings=settings,
            storage=storage,
            hub=hub,
            scheduler=scheduler,
            imagine=imagine,
            train=TrainService(settings, checks, storage.embeddings, scheduler, hub),
            library=LibraryService(settings, storage, scheduler, checks, imagine),
            lock=lock,
            defaults=DefaultsService(settings, storage.preferences),
        )

    async def close(self) -> None:
        try:
            await self.scheduler.close()
            await self.storage.close()
        finally:
            self.lock.release()

    async def wait_for_worker(self, limit_seconds: float = 600.0) -> None:
        """Until a worker has loaded its model; WorkerUnavailable if it cannot start."""
        transport = self.scheduler.transport
        deadline = asyncio.get_running_loop().time() + limit_seconds
        while not self.scheduler.worker_ready.is_set():
            error = getattr(transport, "startup_error", None)
            if error:
                raise WorkerUnavailable(error)
            if asyncio.get_running_loop().time() > deadline:
                raise WorkerUnavailable(f"no GPU worker came up within {limit_seconds:.0f} s.")
            await asyncio.sleep(0.1)

    async def wait_for_job(self, job_id: int) -> Job:
        """Until the job reaches a final state (succeeded, failed, cancelled)."""
        with self.hub.subscribe() as updates:
            while True:
                job = await self.storage.jobs.get(job_id)
                if job.is_final:
                    return job
                error = getattr(self.scheduler.transport, "startup_error", None)
                if error:
                    raise WorkerUnavailable(error)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(updates.get(), timeout=1.0)
