"""The scheduler: the one place that decides what runs next, and what happened.

Jobs wait in SQLite (the single source of truth). The scheduler hands work to the transport only
when a worker has reported a free slot, picks it in round-robin order across users, groups
compatible `/imagine` requests into one GPU batch, and turns worker events into database
transitions. Because nothing is queued anywhere but SQLite, a restart of any process loses
nothing: the bot requeues what was running, and workers need no state.

Models: each job names a configured model (none: the deployment's default) and each worker
says which models it holds (`WorkerReady.models`). A worker is handed only jobs for its models,
picked in fair order among those jobs; a batch holds jobs of the head job's model only, so
batches never mix models. A job for a model no live worker holds waits in the queue until one comes.
A worker may hold more models than fit on its accelerator (`engine.worker.cache`): it says which
are resident and how long each took to load (`ModelHeld`, then `ModelSwitched` after each switch),
and a queued job whose model no serving worker has resident gets that load time in its ETA
(`model_switch`). When a worker asks for work it gets the fairly-next job whose model it has
resident first, within a bound (`resident_first`), so alternating models do not reload at every
batch.

Batching vs fairness: a batch takes jobs in fair order that share the head job's batch key, at
most one per user. So one user's twenty requests never start before another user's first (not
even in the same batch), and a busy server with many users still runs full batches. The price
is that a user alone on an idle GPU gets one request (up to 4 images) per batch.

Trust: a worker's result is stored only when it comes from the worker that holds the job's
lease (every report names its sender, `JobAttempt.worker_id`); anything else is ignored with a
log line. A trained embedding is checked like an import before it is stored
(`engine.embedding_metadata.check_trained`): Lexicon's layout, the job's vector count, a width
of the served model's family; a worker that returns anything else fails that attempt.

Survival: the three loops (dispatch, lease expiry, worker events) catch every exception, log
it, back off and go on, so a full or failing disk stops work only while it lasts. A job whose
result could not be recorded stays leased until its lease expires and then runs again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from bot import metrics
from bot.hub import JobHub, JobUpdate
from bot.transport import Transport
from engine.embedding_metadata import NotLexiconEmbedding, check_trained
from engine.jobs import GenerateRequest, TrainRequest
from engine.protocol import (
    MAX_SWITCH_SECONDS,
    FromWorker,
    GenerateBatch,
    GenerateDone,
    GenerateJob,
    Heartbeat,
    JobAttempt,
    JobCancelled,
    JobFailed,
    JobReleased,
    JobStarted,
    ModelHeld,
    ModelSwitched,
    ProgressReport,
    SlotFree,
    TrainCheckpoint,
    TrainDone,
    TrainJob,
    WorkerLost,
    WorkerReady,
)
from storage.clock import utc_now
from storage.embeddings import EmbeddingRepository
from storage.errors import LeaseLost, NameTaken, NotFound, StorageError, StorageUnavailable
from storage.files import FileStore
from storage.jobs import UNCHECKED, JobRepository, Lease, ModelFilter
from storage.model_reports import ModelReport, ModelReportRepository
from storage.models import Family, FileKind, Job, JobKind, JobProgress, JobState, NewImage

log = logging.getLogger("lexicon.scheduler")

FAMILIES = frozenset(family.value for family in Family)

SCHEDULER_OWNER = "scheduler"
# Reports that change a job's stored state: accepted only from the worker holding the lease.
# The other reports are checked against the lease inside the storage write that records them
# (`lease_of`); a finished training is checked first because its embedding is stored before the
# job completes.
LEASE_HOLDER_ONLY = (TrainDone,)
BACKOFF_SECONDS = (0.5, 30.0)  # after a failed dispatch: the first wait, doubling up to the last


def lease_of(report: JobAttempt) -> Lease:
    """The lease a worker's report about a job claims: its worker and attempt."""
    return Lease(report.worker_id, report.attempt)


def backoff(failures: int) -> float:
    """Seconds to wait after `failures` consecutive failures."""
    first, longest = BACKOFF_SECONDS
    return float(min(longest, first * 2 ** max(0, failures - 1)))


def _log_failure(what: str, error: Exception) -> None:
    """A failing disk is expected and says why in one sentence; anything else is a bug."""
    if isinstance(error, StorageUnavailable):
        log.warning("%s failed: %s", what, error)
    else:
        log.error("%s failed", what, exc_info=error)


@dataclass(frozen=True)
class ModelInfo:
    """What the workers reported about one configured model."""

    name: str
    family: str
    width: int
    model_hash: str


@dataclass(frozen=True)
class ModelSwitch:
    """A queued job's model is not on the accelerator of any worker serving it: loading it
    takes about `seconds` (the last measured load), included in the job's ETA."""

    model: str
    seconds: float


@dataclass(frozen=True)
class Standing:
    """Where a queued job stands, as its messages tell it: its place in line (None: no longer
    queued), seconds until it should start, the model whose worker it waits for while no live
    worker holds it, and the model load its start includes."""

    position: int | None
    eta_seconds: float | None
    waiting_for: str | None = None
    switch: ModelSwitch | None = None


@dataclass
class _Worker:
    worker_id: str
    max_batch: int
    models: frozenset[str]
    free: set[str] = field(default_factory=lambda: {"generate", "train"})
    jobs: set[int] = field(default_factory=set)
    resident: frozenset[str] = frozenset()  # the models on its accelerator now
    switch_seconds: dict[str, float] = field(default_factory=dict)  # last load time per model


@dataclass
class _Durations:
    """Exponentially weighted mean run time per job kind, for queue ETAs."""

    seconds: dict[str, float] = field(default_factory=lambda: {"generate": 5.0, "train": 60.0})

    def record(self, kind: str, value: float) -> None:
        self.seconds[kind] = 0.8 * self.seconds[kind] + 0.2 * value


class Scheduler:
    def __init__(
        self,
        jobs: JobRepository,
        embeddings: EmbeddingRepository,
        files: FileStore,
        transport: Transport,
        hub: JobHub,
        *,
        max_batch: int = 8,
        lease_seconds: float = 30.0,
        owner_prefix: str = "local",
        default_model: str = "",
        reports: ModelReportRepository | None = None,
        sources: Mapping[str, str] | None = None,
    ) -> None:
        self.jobs = jobs
        self.embeddings = embeddings
        self.files = files
        self.transport = transport
        self.hub = hub
        self.max_batch = max_batch
        self.lease_seconds = lease_seconds
        self.owner_prefix = owner_prefix
        self.durations = _Durations()
        self._workers: dict[str, _Worker] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._started_at: dict[int, float] = {}
        self._running_kind: dict[int, str] = {}  # job id → kind, for queue ETAs
        # Queued job id → how many jobs of a resident model went before it (`resident_first`).
        self._passed: dict[int, int] = {}
        self.worker_ready = asyncio.Event()
        self.last_worker_error: str | None = None
        # The deployment's default model: what a job that names none runs on.
        self.default_model = default_model
        # Every model a worker has reported, by name (kept after the worker goes: a model's
        # family does not change while the bot runs); `models_reported` wakes who waits on one.
        # With `reports`, each report is kept under the model's configured source (`sources`:
        # name → source), and `start` recalls them: before this run's first report, a model's
        # family is the one reported when it last ran from the same source.
        self.models: dict[str, ModelInfo] = {}
        self.models_reported = asyncio.Condition()
        self.reports = reports
        self.sources = dict(sources or {})

    # --- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Recover what a previous process left running, then start dispatching."""
        if getattr(self.transport, "workers_outlive_bot", False):
            # Remote workers (Redis) kept running while the bot was down: their jobs come back
            # through heartbeats; `_watch_leases` requeues only those whose leases then expire.
            log.info("leaving running jobs to their workers; expired leases will be requeued")
        else:
            requeued = await self.jobs.requeue_running(
                "Lexicon restarted while this job was running; it will run again."
            )
            if requeued:
                log.info("requeued %d jobs that were running before the restart", len(requeued))
        await self._recall_models()
        await self.transport.start()
        self._tasks = [
            asyncio.create_task(self._consume_events(), name="scheduler-events"),
            asyncio.create_task(self._dispatch_loop(), name="scheduler-dispatch"),
            asyncio.create_task(self._watch_leases(), name="scheduler-leases"),
        ]
        self.wake()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self.transport.close()

    def wake(self) -> None:
        """Something changed (a job queued, a slot freed): look for work to hand out."""
        self._wake.set()

    async def _recall_models(self) -> None:
        """What workers reported of the configured models when they last ran from the same
        sources; this run's reports replace it as they come."""
        if self.reports is None:
            return
        try:
            recalled = await self.reports.recall(self.sources)
        except StorageError as error:
            _log_failure("recalling the models' last reports", error)
            return
        for report in recalled:
            self.models[report.name] = ModelInfo(
                report.name, report.family, report.width, report.model_hash
            )
        if recalled:
            log.info("families as last reported: %s", _families(self.models.values()))

    async def _remember_models(self, held: Iterable[ModelHeld]) -> None:
        """Keep what a worker reported of the configured models, for the next start."""
        if self.reports is None:
            return
        reports = []
        for model in held:
            source = self.sources.get(model.name)
            if source is None or model.family not in FAMILIES or model.width <= 0:
                log.warning("not keeping a report of model %r: %r", model.name, model)
                continue
            reports.append(
                ModelReport(model.name, source, model.family, model.width, model.model_hash)
            )
        if not reports:
            return
        try:
            await self.reports.remember(reports)
        except StorageError as error:
            _log_failure("keeping the models' reports", error)

    # --- queries for services ----------------------------------------------------------------

    async def estimate_start(self, job: Job, position: int | None = None) -> float | None:
        """Seconds until the job is expected to start, from measured run times: what the
        running jobs of its kind still need, then one run per batch ahead of it in line.
        `position` is its place in line when the caller has just read it (saves a query)."""
        if position is None:
            position = await self.queue_position(job)
        if position is None:
            return None
        kind = job.kind.value
        per_job = self.durations.seconds[kind]
        batch = self.max_batch if job.kind is JobKind.GENERATE else 1
        workers = max(1, len(self._workers))
        now = time.monotonic()
        running = [
            max(0.0, per_job - (now - started))
            for job_id, started in self._started_at.items()
            if self._running_kind.get(job_id) == kind
        ]
        busy = min(running) if running else 0.0  # the first slot to come free
        switch = self.model_switch(job)
        loading = switch.seconds if switch is not None else 0.0
        return busy + per_job * ((position - 1) // batch) / workers + loading

    async def standing(self, job: Job, position: int | None = None) -> Standing:
        """Where `job` stands (`position`: its place in line when the caller has just read it)."""
        if position is None:
            position = await self.queue_position(job)
        eta = None if position is None else await self.estimate_start(job, position)
        return Standing(position, eta, self.waiting_for(job), self.model_switch(job))

    async def queue_position(self, job: Job) -> int | None:
        """The job's place in line (1: next up; None: not queued), counting only the jobs that
        can run before it: those a worker serving its model can run. A job parked for a model
        no live worker holds is not ahead of anyone else's."""
        return await self.jobs.queue_position(job.id, self._line_models(job))

    async def line(self, limit: int) -> list[tuple[Job, int]]:
        """The first `limit` queued jobs in fair order, each with its place in line as
        `queue_position` counts it (one query per set of models, not one per job)."""
        waiting = await self.jobs.fair_order(limit=limit)
        places: dict[ModelFilter | None, dict[int, int]] = {None: {}}
        placed: list[tuple[Job, int]] = []
        for index, job in enumerate(waiting, start=1):
            models = self._line_models(job)
            if models not in places:
                among = await self.jobs.fair_order(limit=limit, models=models)
                places[models] = {other.id: place for place, other in enumerate(among, start=1)}
            placed.append((job, places[models].get(job.id, index)))
        return placed

    def _line_models(self, job: Job) -> ModelFilter | None:
        """The models of the live workers serving the job's model (None: any, while none does)."""
        model = self.model_of(job)
        names = frozenset(
            name
            for worker in self._workers.values()
            if model in worker.models
            for name in worker.models
        )
        return ModelFilter(names, self.default_model) if names else None

    def model_switch(self, job: Job) -> ModelSwitch | None:
        """What loading the job's model costs when no live worker serving it has it resident
        (the cheapest such worker's last measured load); None when one has it, or none serves."""
        model = self.model_of(job)
        serving = [worker for worker in self._workers.values() if model in worker.models]
        if not serving or any(model in worker.resident for worker in serving):
            return None
        seconds = min(worker.switch_seconds.get(model, 0.0) for worker in serving)
        return ModelSwitch(model, seconds) if seconds > 0 else None

    def model_of(self, job: Job) -> str:
        """The configured model a job runs on."""
        return job.model or self.default_model

    def is_served(self, model: str) -> bool:
        """Whether a live worker holds `model` (else its jobs wait for one)."""
        return any(model in worker.models for worker in self._workers.values())

    def waiting_for(self, job: Job) -> str | None:
        """The job's model when workers are up but none holds it (the job waits for one)."""
        model = self.model_of(job)
        return model if self._workers and not self.is_served(model) else None

    async def cancel(self, job: Job, stopped_worker: str | None) -> None:
        """Tell the worker to stop a job that was already marked cancelled in the database."""
        self._passed.pop(job.id, None)
        self.hub.publish(JobUpdate(job.id, job.user_id, "cancelled"))
        if stopped_worker is not None:
            await self.transport.cancel(job.id)

    # --- dispatch ----------------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        failures = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._dispatch()
            except Exception as error:  # never let one failure stop the dispatching
                failures += 1
                _log_failure("dispatch", error)
                await asyncio.sleep(backoff(failures))
                self.wake()
            else:
                failures = 0

    async def _dispatch(self) -> None:
        for worker in list(self._workers.values()):
            if "generate" in worker.free and await self._dispatch_generate(worker):
                worker.free.discard("generate")
            if "train" in worker.free and await self._dispatch_train(worker):
                worker.free.discard("train")

    def _filter(self, worker: _Worker) -> ModelFilter:
        return ModelFilter(worker.models, self.default_model)

    async def _dispatch_generate(self, worker: _Worker) -> bool:
        candidates = await self.jobs.fair_order(
            limit=256, kinds=[JobKind.GENERATE], models=self._filter(worker)
        )
        limit = min(worker.max_batch, self.max_batch)
        ordered = resident_first(
            candidates, lambda job: self.model_of(job) in worker.resident, self._passed, limit
        )
        skipped = candidates[: len(candidates) - len(ordered)]
        room = min((limit - self._passed.get(job.id, 0) for job in skipped), default=limit)
        chosen = choose_batch(ordered, limit)[:room]
        if not chosen:
            return False
        claimed = await self._claim(worker, [job.id for job in chosen])
        for waiting in skipped:
            self._passed[waiting.id] = self._passed.get(waiting.id, 0) + len(claimed)
        for job in claimed:
            self._passed.pop(job.id, None)
        work: list[GenerateJob] = []
        for job in claimed:
            request = await self._generate_request(job, worker.worker_id)
            if request is not None:
                work.append(GenerateJob(job.id, job.attempts, request))
        if not work:
            return False
        worker.jobs.update(job.job_id for job in work)
        await self.transport.submit(GenerateBatch(tuple(work)))
        metrics.BATCH_SIZE.observe(len(work))
        return True

    async def _dispatch_train(self, worker: _Worker) -> bool:
        candidates = await self.jobs.fair_order(
            limit=1, kinds=[JobKind.TRAIN], models=self._filter(worker)
        )
        if not candidates:
            return False
        claimed = await self._claim(worker, [candidates[0].id])
        if not claimed:
            return False
        job = claimed[0]
        try:
            photos = [
                await asyncio.to_thread(self.files.read, FileKind.PHOTOS, sha)
                for sha in await self.jobs.photos(job.id)
            ]
            checkpoint = (
                await asyncio.to_thread(
                    self.files.read, FileKind.CHECKPOINTS, job.checkpoint_sha256
                )
                if job.checkpoint_sha256
                else None
            )
        except (NotFound, OSError):
            await self._fail(job.id, job.user_id, "The photos for this training were lost.", False)
            return False
        request = replace(
            TrainRequest.from_params(job.params).with_photos(tuple(photos)),
            model=self.model_of(job),
        )
        worker.jobs.add(job.id)
        await self.transport.submit(TrainJob(job.id, job.attempts, request, checkpoint))
        return True

    async def _claim(self, worker: _Worker, job_ids: list[int]) -> list[Job]:
        """Lease jobs to a worker, unless it was lost while this dispatch ran.

        A dispatch looks at the workers, then awaits the database; a `WorkerLost` handled in
        between has already requeued that worker's jobs, so nothing would requeue these until
        their leases expired (a wait, and an attempt spent on a worker that never saw them).
        They go back to the queue at once, the attempt not counted.
        """
        claimed = await self.jobs.claim_ids(job_ids, worker.worker_id, self.lease_seconds)
        if claimed and self._workers.get(worker.worker_id) is not worker:
            for job in claimed:
                with contextlib.suppress(LeaseLost):  # requeued or cancelled meanwhile
                    await self.jobs.release(job.id, Lease(worker.worker_id, job.attempts))
            self.wake()  # another worker may take them
            return []
        return claimed

    async def _generate_request(self, job: Job, worker_id: str) -> GenerateRequest | None:
        request = replace(GenerateRequest.from_params(job.params), model=self.model_of(job))
        files: dict[str, bytes] = {}
        for used in request.embeddings:
            try:
                files[used.sha256] = await asyncio.to_thread(
                    self.files.read, FileKind.EMBEDDINGS, used.sha256
                )
            except (NotFound, OSError):
                await self._fail(
                    job.id,
                    job.user_id,
                    f"The embedding '{used.name}' was deleted before this image started.",
                    False,
                )
                return None
        init_image = b""
        if request.is_img2img:
            try:
                init_image = await asyncio.to_thread(
                    self.files.read, FileKind.PHOTOS, request.init_sha256
                )
            except (NotFound, OSError):
                await self._fail(
                    job.id, job.user_id, "The starting image of this job was lost.", False
                )
                return None
        return request.with_files(files.__getitem__, init_image)

    # --- events ------------------------------------------------------------------------------

    async def _consume_events(self) -> None:
        failures = 0
        while True:
            try:
                async for event in self.transport.events():
                    await self._record(event)
                    failures = 0
            except Exception as error:  # the transport's own stream failed: listen again
                failures += 1
                _log_failure("reading worker events", error)
                await asyncio.sleep(backoff(failures))

    async def _record(self, event: FromWorker) -> None:
        try:
            await self.handle(event)
        except LeaseLost as error:
            # A late report about a job that was requeued, cancelled or finished elsewhere.
            log.info("ignored a stale report: %s", error)
        except Exception as error:  # one bad event must never stop the scheduler listening
            _log_failure(f"recording {type(event).__name__}", error)

    async def handle(self, event: FromWorker) -> None:
        handler = self._handlers.get(type(event))
        if handler is None:
            return
        if isinstance(event, LEASE_HOLDER_ONLY) and not await self._from_lease_holder(event):
            return
        await handler(self, event)

    async def _from_lease_holder(self, event: JobAttempt) -> bool:
        """Whether the report comes from the worker holding the job's lease. A job that is no
        longer running (no holder) is left to the attempt checks, which log it as stale."""
        job = await self.jobs.get(event.job_id)
        if job.lease_owner is None or job.lease_owner == event.worker_id:
            return True
        log.warning(
            "ignored %s for job %s attempt %s from worker %r: the job is leased to %r",
            type(event).__name__,
            event.job_id,
            event.attempt,
            event.worker_id,
            job.lease_owner,
        )
        return False

    async def _on_ready(self, event: WorkerReady) -> None:
        names = frozenset(model.name for model in event.models)
        worker = _Worker(
            event.worker_id,
            event.max_batch,
            names,
            resident=frozenset(model.name for model in event.models if model.resident),
            switch_seconds={
                model.name: model.switch_seconds
                for model in event.models
                if _believable(model.switch_seconds)
            },
        )
        # A worker that (re)appears while it still holds jobs (a bot restart with remote
        # workers) is busy in those slots until it reports them free.
        for job in await self.jobs.leased_to(event.worker_id):
            worker.free.discard(job.kind.value)
            worker.jobs.add(job.id)
        self._workers[event.worker_id] = worker
        async with self.models_reported:
            for held in event.models:
                self.models[held.name] = _info(held)
            self.models_reported.notify_all()
        await self._remember_models(event.models)
        self.worker_ready.set()
        self.wake()

    async def _on_model_switched(self, event: ModelSwitched) -> None:
        worker = self._workers.get(event.worker_id)
        if worker is None:
            return
        if event.model not in worker.models or not set(event.resident) <= worker.models:
            log.warning(
                "ignored a model switch of worker %r naming models it does not hold",
                event.worker_id,
            )
            return
        worker.resident = frozenset(event.resident)
        metrics.MODEL_SWITCHES.labels(event.model).inc()
        if _believable(event.seconds):
            worker.switch_seconds[event.model] = event.seconds
            metrics.SWITCH_SECONDS.labels(event.model).observe(event.seconds)

    async def _on_slot_free(self, event: SlotFree) -> None:
        worker = self._workers.get(event.worker_id)
        if worker is not None:
            worker.free.add(event.slot)
            self.wake()

    async def _on_started(self, event: JobStarted) -> None:
        self._started_at[event.job_id] = time.monotonic()
        job = await self.jobs.get(event.job_id)
        self._running_kind[job.id] = job.kind.value
        waited = (utc_now() - job.created_at).total_seconds()
        metrics.WAIT_SECONDS.labels(job.kind.value).observe(max(0.0, waited))
        if job.lease_owner not in (None, event.worker_id):
            # A shared queue (Redis) lets any free worker take the batch: the lease follows
            # the worker that runs it, so its heartbeats extend it and its loss requeues it.
            job = await self.jobs.move_lease(
                job.id, event.worker_id, self.lease_seconds, attempt=event.attempt
            )
        self.hub.publish(
            JobUpdate(
                job.id,
                job.user_id,
                "started",
                batch_size=event.batch_size,
                batch_job_ids=event.batch_job_ids,
            )
        )

    async def _on_progress(self, event: ProgressReport) -> None:
        progress = event.progress
        job = await self.jobs.set_progress(
            event.job_id,
            JobProgress(progress.step, progress.total, progress.eta_seconds),
            lease_of(event),
        )
        self.hub.publish(JobUpdate.progress_of(job, progress))

    async def _on_checkpoint(self, event: TrainCheckpoint) -> None:
        await self.jobs.save_checkpoint(event.job_id, event.data, lease_of(event))

    async def _on_generate_done(self, event: GenerateDone) -> None:
        self.durations.record("generate", event.seconds)
        metrics.RUN_SECONDS.labels("generate").observe(event.seconds)
        job = await self.jobs.get(event.job_id)
        images = [NewImage(image.index, image.seed, image.png) for image in event.images]
        used = [e.id for e in GenerateRequest.from_params(job.params).embeddings if e.id]
        job = await self.jobs.complete(
            job.id,
            {"images": len(images)},
            lease_of(event),
            images=images,
        )
        if used:
            await self.embeddings.increment_use(used)
        self._forget(job.id)
        self.hub.publish(JobUpdate(job.id, job.user_id, "succeeded"))

    async def _on_train_done(self, event: TrainDone) -> None:
        self.durations.record("train", event.seconds)
        metrics.RUN_SECONDS.labels("train").observe(event.seconds)
        job = await self.jobs.get(event.job_id)
        request, result = TrainRequest.from_params(job.params), event.result
        attempt = Lease(attempt=event.attempt)  # its worker was checked: LEASE_HOLDER_ONLY
        served = self.models.get(self.model_of(job))
        family = served.family if served is not None else result.family
        try:
            width = check_trained(result.embedding, n_vectors=request.n_vectors, family=family)
            if (result.n_vectors, result.width, result.family) != (
                request.n_vectors,
                width,
                family,
            ):
                raise NotLexiconEmbedding("its description does not match its header")
        except NotLexiconEmbedding as error:
            log.warning(
                "job %s: worker %r returned an invalid embedding (%s)",
                job.id,
                event.worker_id,
                error,
            )
            await self._fail(
                job.id,
                job.user_id,
                "The GPU worker returned a damaged embedding; the training will run again.",
                True,
                attempt,
            )
            return
        try:
            embedding = await self.embeddings.create(
                job.user_id,
                request.name,
                result.embedding,
                n_vectors=result.n_vectors,
                width=result.width,
                family=result.family,
                source="trained",
                kind="negative" if request.negative else "positive",
                shared=request.share,
                shared_guild_id=job.guild_id,
                job_id=job.id,
            )
        except (StorageUnavailable, OSError):  # a full or failing disk: a retry may succeed
            log.exception("could not store the embedding of job %s", job.id)
            await self._fail(
                job.id,
                job.user_id,
                "Lexicon could not save the trained embedding (its disk may be full); "
                "it will try again.",
                True,
                attempt,
            )
            return
        except (NameTaken, StorageError) as error:
            await self._fail(job.id, job.user_id, str(error), False, attempt)
            return
        outcome = {"embedding_id": embedding.id, "final_loss": result.final_loss}
        previews = [NewImage(i, 0, png) for i, png in enumerate(result.previews)]
        job = await self.jobs.complete(job.id, outcome, attempt, images=previews)
        self._forget(job.id)
        self.hub.publish(JobUpdate(job.id, job.user_id, "succeeded"))

    async def _on_failed(self, event: JobFailed) -> None:
        job = await self.jobs.get(event.job_id)
        await self._fail(
            job.id,
            job.user_id,
            event.error,
            event.retryable,
            lease_of(event),
        )

    async def _on_cancelled(self, event: JobCancelled) -> None:
        self._forget(event.job_id)  # already cancelled in the database by whoever asked

    async def _on_released(self, event: JobReleased) -> None:
        await self.jobs.release(event.job_id, Lease(attempt=event.attempt))
        self._forget(event.job_id)
        self.wake()

    async def _on_heartbeat(self, event: Heartbeat) -> None:
        metrics.GPU_MEMORY_BYTES.labels(event.worker_id).set(event.peak_memory_bytes)
        for job_id in event.job_ids:
            with contextlib.suppress(LeaseLost, NotFound):
                await self.jobs.heartbeat(job_id, event.worker_id, self.lease_seconds)

    async def _on_worker_lost(self, event: WorkerLost) -> None:
        worker = self._workers.pop(event.worker_id, None)
        self.last_worker_error = event.reason
        if not self._workers:
            self.worker_ready.clear()
        log.warning("worker %s lost: %s", event.worker_id, event.reason)
        lost = await self.jobs.leased_to(event.worker_id)
        await self.jobs.requeue_worker(
            event.worker_id, "The GPU worker running this job stopped; it will run again."
        )
        await self._announce_interrupted([job.id for job in lost])
        if worker is not None or lost:
            self.wake()

    _handlers: ClassVar[dict[type, Callable[[Scheduler, Any], Awaitable[None]]]] = {
        WorkerReady: _on_ready,
        ModelSwitched: _on_model_switched,
        SlotFree: _on_slot_free,
        JobStarted: _on_started,
        ProgressReport: _on_progress,
        TrainCheckpoint: _on_checkpoint,
        GenerateDone: _on_generate_done,
        TrainDone: _on_train_done,
        JobFailed: _on_failed,
        JobCancelled: _on_cancelled,
        JobReleased: _on_released,
        Heartbeat: _on_heartbeat,
        WorkerLost: _on_worker_lost,
    }

    # --- helpers -----------------------------------------------------------------------------

    async def _fail(
        self,
        job_id: int,
        user_id: int,
        error: str,
        retryable: bool,
        lease: Lease = UNCHECKED,
    ) -> None:
        job = await self.jobs.fail(job_id, error, retryable=retryable, lease=lease)
        self._forget(job_id)
        self.hub.publish(
            JobUpdate(job_id, user_id, "retry" if job.state is JobState.QUEUED else "failed")
        )
        self.wake()

    async def _announce_interrupted(self, job_ids: list[int]) -> None:
        """Tell the owners of jobs a lost worker was running what became of them: "retry" for
        those back in the queue, "failed" for those out of attempts (else their messages stay
        frozen on the last progress line)."""
        for job_id in job_ids:
            self._forget(job_id)
            job = await self.jobs.get(job_id)
            if job.state is JobState.QUEUED:
                self.hub.publish(JobUpdate(job_id, job.user_id, "retry"))
            elif job.state is JobState.FAILED:
                self.hub.publish(JobUpdate(job_id, job.user_id, "failed"))

    def _forget(self, job_id: int) -> None:
        self._started_at.pop(job_id, None)
        self._running_kind.pop(job_id, None)
        for worker in self._workers.values():
            worker.jobs.discard(job_id)

    async def _watch_leases(self) -> None:
        while True:
            await asyncio.sleep(max(0.5, self.lease_seconds / 3))
            try:
                requeued = await self.jobs.requeue_expired_leases()
                metrics.QUEUE_DEPTH.set(await self.jobs.count_queued())
            except Exception as error:  # try again at the next tick
                _log_failure("the lease check", error)
                continue
            if requeued:
                log.warning("requeued jobs with expired leases: %s", requeued)
                await self._announce_interrupted(requeued)
                self.wake()


def _believable(seconds: float) -> bool:
    """A switch cost a worker reported that is worth showing (finite, within the bound)."""
    return 0.0 <= seconds <= MAX_SWITCH_SECONDS


def _info(held: ModelHeld) -> ModelInfo:
    return ModelInfo(held.name, held.family, held.width, held.model_hash)


def _families(models: Iterable[ModelInfo]) -> str:
    return ", ".join(f"{model.name} {model.family}" for model in models)


def resident_first(
    candidates: list[Job], resident: Callable[[Job], bool], passed: Mapping[int, int], bound: int
) -> list[Job]:
    """The candidates (queued jobs in fair order) from the job a worker should run next: the
    fairly-next one whose model is `resident` on it, so alternating models do not reload at
    every batch. The jobs of other models ahead of it (skipped) let at most `bound` jobs in all
    go before them this way (`passed` counts them; the dispatcher trims a batch to the room
    left): a skipped job passed `bound` times goes next, and its model is loaded. Users keep
    their fair order among the jobs of each model. With nothing resident the fair order stands.

    The scheduler's bound is the worker's batch size (in jobs): models that alternate then
    switch at most once per full batch of resident work, and a job of another model waits at
    most about one batch longer than the fair order says, however many keep arriving."""
    for index, job in enumerate(candidates):
        if resident(job) or passed.get(job.id, 0) >= bound:
            return candidates[index:]
    return candidates


def choose_batch(candidates: list[Job], max_images: int) -> list[Job]:
    """Pick a GPU batch from queued jobs in fair order (see the module docstring)."""
    if not candidates:
        return []
    head = candidates[0]
    chosen: list[Job] = []
    users: set[int] = set()
    images = 0
    for job in candidates:
        if job.batch_key != head.batch_key or job.model != head.model or job.user_id in users:
            continue
        count = GenerateRequest.from_params(job.params).count
        if chosen and images + count > max_images:
            continue
        chosen.append(job)
        users.add(job.user_id)
        images += count
        if images >= max_images:
            break
    return chosen
