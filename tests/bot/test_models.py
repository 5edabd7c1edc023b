"""Several checkpoints in one deployment: requests name their model, the scheduler hands each
job only to a worker that holds its model (fairly among the jobs that worker can run), and a
job for a model nobody serves waits. The workers are real `engine.worker.loop.Worker`s with the
stand-in engine, in threads of this process."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import queue
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bot.app import Lexicon
from bot.hub import JobHub
from bot.scheduler import ModelSwitch, Scheduler, choose_batch, resident_first
from bot.services import ImagineOptions, ServiceError
from engine import protocol
from engine.jobs import GenerateRequest, TrainRequest
from engine.standin import StandInEngine
from engine.worker.cache import Loaded, ModelCache
from engine.worker.loop import Worker
from engine.worker_config import WorkerConfig
from storage import Storage
from storage.models import JobKind, JobState
from tests.bot.conftest import RecordingTransport, make_settings, until, wait_all

STEP_SECONDS = 0.02
LOAD_SECONDS = 0.01  # a stand-in model's load: a switch takes measurable time


def test_requests_keep_their_model_through_the_job_row() -> None:
    """to_params/from_params carry the model; a row without one reads as the default ("")."""
    generate = GenerateRequest("a cat", 1, 4, 7.0, 64, 64, model="anime")
    train = TrainRequest("zorb", steps=10, model="sd15")
    assert GenerateRequest.from_params(generate.to_params()) == generate
    assert TrainRequest.from_params(train.to_params()) == train
    old = {k: v for k, v in generate.to_params().items() if k != "model"}
    assert GenerateRequest.from_params(old).model == ""


async def test_a_batch_never_mixes_models(tmp_path: Path) -> None:
    """Compatible requests of three users for two models: the batch takes the head's model only."""
    request = GenerateRequest("a cube", 1, 10, 7.5, 64, 64)
    async with await Storage.open(tmp_path / "data") as store:
        for user, model in ((1, "a"), (2, "b"), (3, "a")):
            stored = dataclasses.replace(request, model=model)
            await store.jobs.enqueue(
                user, "generate", stored.to_params(), batch_key=stored.batch_key, model=model
            )
        chosen = choose_batch(await store.jobs.fair_order(kinds=[JobKind.GENERATE]), 8)
        assert [(job.user_id, job.model) for job in chosen] == [(1, "a"), (3, "a")]


class _Inbox:
    """A `Channel` between one in-process worker thread and the transport."""

    def __init__(self, deliver: Any) -> None:
        self.messages: queue.Queue[protocol.ToWorker] = queue.Queue()
        self.deliver = deliver

    def send(self, message: protocol.FromWorker) -> None:
        self.deliver(message)

    def poll(self, timeout: float) -> protocol.ToWorker | None:
        try:
            return self.messages.get(timeout=timeout) if timeout > 0 else self.messages.get_nowait()
        except queue.Empty:
            return None


def _load_standin(_name: str) -> Loaded:
    time.sleep(LOAD_SECONDS)
    return Loaded(StandInEngine(STEP_SECONDS), 1)


class InProcessWorkers:
    """A `Transport` to worker loops in threads, one per entry of `held` (worker id → models).
    Work goes to the worker the scheduler leased it to, so a wrong choice would show."""

    def __init__(self, held: dict[str, tuple[str, ...]], budget: int | None = None) -> None:
        self.held = held
        self.budget = budget  # bytes for each worker's models; every stand-in counts as 1
        self.app: Lexicon | None = None
        self.started: list[tuple[int, str]] = []  # (job id, worker id) in start order
        self._events: asyncio.Queue[protocol.FromWorker] = asyncio.Queue()
        self._inboxes: dict[str, _Inbox] = {}
        self._threads: list[threading.Thread] = []

    async def start(self) -> None:
        for worker_id, models in self.held.items():
            self.start_worker(worker_id, models)

    def start_worker(self, worker_id: str, models: tuple[str, ...]) -> None:
        """Start one more worker loop (those of `held` start with the transport)."""
        loop = asyncio.get_running_loop()
        self.held[worker_id] = models
        inbox = _Inbox(lambda m: loop.call_soon_threadsafe(self._events.put_nowait, m))
        cache = ModelCache(models, _load_standin, budget=self.budget)
        cache.start()
        worker = Worker(cache, inbox, WorkerConfig(worker_id, heartbeat_interval=0.2))
        thread = threading.Thread(target=worker.run, name=worker_id, daemon=True)
        self._inboxes[worker_id] = inbox
        self._threads.append(thread)
        thread.start()

    async def close(self) -> None:
        for inbox in self._inboxes.values():
            inbox.messages.put(protocol.Shutdown())
        for thread in self._threads:
            await asyncio.to_thread(thread.join, 10)

    async def submit(self, work: protocol.GenerateBatch | protocol.TrainJob) -> None:
        assert self.app is not None
        first = work.jobs[0].job_id if isinstance(work, protocol.GenerateBatch) else work.job_id
        owner = (await self.app.storage.jobs.get(first)).lease_owner
        assert owner is not None
        self._inboxes[owner].messages.put(work)

    async def cancel(self, job_id: int) -> None:
        for inbox in self._inboxes.values():
            inbox.messages.put(protocol.CancelJob(job_id))

    async def events(self) -> AsyncIterator[protocol.FromWorker]:
        while True:
            event = await self._events.get()
            if isinstance(event, protocol.JobStarted):
                self.started.append((event.job_id, event.worker_id))
            yield event


@contextlib.asynccontextmanager
async def two_workers(
    tmp_path: Path, models: str, held: dict[str, tuple[str, ...]], budget: int | None = None
) -> AsyncIterator[tuple[Lexicon, InProcessWorkers]]:
    """A Lexicon whose configured `models` (LEXICON_MODELS) are served by in-process workers."""
    settings = make_settings(
        tmp_path / "data", "", model_list=models, engine="standin", allowed_sizes=["64x64"]
    )
    transport = InProcessWorkers(held, budget)
    app = await Lexicon.open(settings, transport, start_worker=False)
    transport.app = app
    try:
        await app.scheduler.start()
        served = {name for names in held.values() for name in names}
        await until(lambda: set(app.scheduler.models) == served, limit=30)
        yield app, transport
    finally:
        await app.close()


async def test_jobs_go_only_to_a_worker_that_holds_their_model(tmp_path: Path) -> None:
    """Jobs for a and b from several users each run once, on the worker holding their model."""
    held = {"wa": ("a",), "wb": ("b",)}
    async with two_workers(tmp_path, "a=standin,b=standin", held) as (app, transport):
        ids: dict[int, str] = {}
        for index in range(12):
            model = "ab"[index % 2]
            options = ImagineOptions(f"a cube {index}", seed=index, model=model)
            ids[(await app.imagine.submit(index % 3 + 1, options)).job.id] = model
        await wait_all(app, list(ids), limit=60)
        for job_id, model in ids.items():
            job = await app.storage.jobs.get(job_id)
            assert (job.state, job.attempts, job.model) == (JobState.SUCCEEDED, 1, model)
        ran_on = dict(transport.started)
        assert {job_id: held[ran_on[job_id]][0] for job_id in ids} == ids
        assert app.scheduler.models["a"].family == "tiny"


async def test_fairness_across_users_holds_within_a_model(tmp_path: Path) -> None:
    """One member's ten jobs for a, then another's one: it starts before the first's third."""
    held = {"wa": ("a",), "wb": ("b",)}
    async with two_workers(tmp_path, "a=standin,b=standin", held) as (app, transport):
        first = [
            (await app.imagine.submit(1, ImagineOptions(f"x {i}", seed=i, model="a"))).job.id
            for i in range(10)
        ]
        second = (await app.imagine.submit(2, ImagineOptions("y", seed=1, model="a"))).job.id
        await wait_all(app, [*first, second], limit=60)
        order = [job_id for job_id, _ in transport.started]
        assert order.index(second) < order.index(first[2])


async def test_a_model_no_worker_holds_waits_and_says_so(tmp_path: Path) -> None:
    """A job for c (configured, held by no live worker) waits with the sentence that says why,
    while the jobs of a keep running; an unknown name is refused in one sentence."""
    held = {"wa": ("a",), "wb": ("b",)}
    async with two_workers(tmp_path, "a=standin,b=standin,c=standin", held) as (app, _):
        waiting = await app.imagine.submit(1, ImagineOptions("z", seed=1, model="c"))
        assert waiting.standing.waiting_for == "c"
        running = await app.imagine.submit(2, ImagineOptions("w", seed=1, model="a"))
        assert running.standing.waiting_for is None
        await wait_all(app, [running.job.id], limit=60)
        assert (await app.storage.jobs.get(waiting.job.id)).state is JobState.QUEUED
        try:
            await app.imagine.submit(1, ImagineOptions("v", model="nope"))
        except ServiceError as refusal:
            assert str(refusal) == (
                "There is no model called **nope** here; choose one of **a**, **b**, **c**."
            )
        else:
            raise AssertionError("an unknown model was accepted")


async def test_a_models_family_waits_for_the_worker_that_reports_it(tmp_path: Path) -> None:
    """What an import checks a file against: a member is answered at once when no live worker
    has reported the model yet; the CLI's wait ends when a worker starts and reports it, or
    with one sentence when none does in time."""
    async with two_workers(tmp_path, "a=standin,b=standin", {"wa": ("a",)}) as (app, transport):
        assert await app.library.model_family("a", 0) == "tiny"
        try:
            await app.library.model_family("b", 0)  # a member's import does not wait
        except ServiceError as refusal:
            assert str(refusal) == (
                "No GPU worker serving **b** has reported in yet, so the file cannot be checked "
                "against it; try again in a minute."
            )
        else:
            raise AssertionError("a model no worker reported was given a family")
        waiting = asyncio.create_task(app.library.model_family("b", limit_seconds=30))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        transport.start_worker("wb", ("b",))
        assert await asyncio.wait_for(waiting, 10) == "tiny"
        try:
            await app.library.model_family("c", limit_seconds=0.2)
        except ServiceError as refusal:
            assert str(refusal) == (
                "No GPU worker serving **c** is running, so the file cannot be checked against "
                "the model; try again later."
            )
        else:
            raise AssertionError("a model no worker reported was given a family")


async def test_an_embedding_of_another_family_is_refused_by_name(tmp_path: Path) -> None:
    """An SD 1.x word in a prompt for a tiny model: one sentence naming both families, the
    word and the model; nothing is queued."""
    held = {"wa": ("a",), "wb": ("b",)}
    async with two_workers(tmp_path, "a=standin,b=standin", held) as (app, _):
        await app.storage.embeddings.create(
            1, "zorb", b"sd1 vectors", n_vectors=1, width=768, family="sd1", source="imported"
        )
        try:
            await app.imagine.submit(1, ImagineOptions("a photo of <zorb>", model="b"))
        except ServiceError as refusal:
            assert str(refusal) == (
                "**zorb** was trained for SD 1.x, but **b** is the tiny test model; no model "
                "here fits it, so leave it out of the prompt."
            )
        else:
            raise AssertionError("an SD 1.x embedding was accepted for a tiny model")
        assert await app.storage.jobs.list_for_user(1) == []


def _held(name: str, resident: bool, seconds: float) -> protocol.ModelHeld:
    return protocol.ModelHeld(name, "tiny", 32, "h", resident=resident, switch_seconds=seconds)


async def test_the_eta_includes_loading_a_model_that_is_not_resident(tmp_path: Path) -> None:
    """A job whose model no serving worker has resident gets the last measured load time added
    to its ETA; a switch report moves it to the model evicted; bad reports change nothing."""
    async with await Storage.open(tmp_path / "data") as store:
        scheduler = Scheduler(
            store.jobs, store.embeddings, store.files, InProcessWorkers({}), JobHub()
        )
        await scheduler.handle(
            protocol.WorkerReady("w", "cpu", 8, (_held("a", True, 2.0), _held("b", False, 12.0)))
        )
        jobs = {}
        for user, model in ((1, "a"), (2, "b")):
            request = GenerateRequest("a cube", 1, 4, 7.0, 64, 64, model=model)
            jobs[model] = await store.jobs.enqueue(
                user, "generate", request.to_params(), batch_key=request.batch_key, model=model
            )
        assert scheduler.model_switch(jobs["a"]) is None
        assert scheduler.model_switch(jobs["b"]) == ModelSwitch("b", 12.0)
        # Nothing runs and both fit one batch: only the load stands between b and its start.
        assert await scheduler.estimate_start(jobs["a"]) == 0.0
        assert await scheduler.estimate_start(jobs["b"]) == 12.0

        await scheduler.handle(protocol.ModelSwitched("w", "b", 9.5, ("b",)))
        assert scheduler.model_switch(jobs["b"]) is None
        assert scheduler.model_switch(jobs["a"]) == ModelSwitch("a", 2.0)

        for bad in (
            protocol.ModelSwitched("w", "zz", 1.0, ("zz",)),  # a model it does not hold
            protocol.ModelSwitched("w", "a", 1.0, ("a", "zz")),
            protocol.ModelSwitched("nobody", "a", 1.0, ("a",)),  # not a live worker
        ):
            await scheduler.handle(bad)
            assert scheduler.model_switch(jobs["a"]) == ModelSwitch("a", 2.0)
        # An unbelievable time (NaN, over an hour) updates what is resident, not the cost.
        await scheduler.handle(protocol.ModelSwitched("w", "a", float("nan"), ("a",)))
        assert scheduler.model_switch(jobs["b"]) == ModelSwitch("b", 9.5)
        await scheduler.handle(protocol.ModelSwitched("w", "b", 1e9, ("b",)))
        assert scheduler.model_switch(jobs["a"]) == ModelSwitch("a", 2.0)


async def test_a_worker_short_of_memory_reports_its_switches(tmp_path: Path) -> None:
    """One worker holds a and b with room for one: a job for b makes it switch, and the
    scheduler then counts a load for a's next job, not b's."""
    held = {"w": ("a", "b")}
    async with two_workers(tmp_path, "a=standin,b=standin", held, budget=1) as (app, _):
        scheduler = app.scheduler
        # 50 steps keep the worker busy on b for a second: a's job waits, its cost known.
        slow = await app.imagine.submit(1, ImagineOptions("v", seed=1, steps=50, model="b"))
        await until(lambda: scheduler.model_switch(slow.job) is None, limit=10)
        assert (await app.storage.jobs.get(slow.job.id)).state is JobState.RUNNING
        waiting = await app.imagine.submit(2, ImagineOptions("w", seed=1, model="a"))
        standing = waiting.standing
        assert standing.switch is not None and standing.switch.model == "a"
        assert standing.switch.seconds >= LOAD_SECONDS
        assert standing.eta_seconds is not None and standing.eta_seconds >= standing.switch.seconds
        await wait_all(app, [slow.job.id, waiting.job.id], limit=60)
        switch = scheduler.model_switch(slow.job)
        assert switch is not None and switch.model == "b"


async def _enqueue(store: Storage, user: int, model: str) -> int:
    request = GenerateRequest("a cube", 1, 4, 7.0, 64, 64, model=model)
    job = await store.jobs.enqueue(
        user, "generate", request.to_params(), batch_key=request.batch_key, model=model
    )
    return job.id


async def test_a_worker_runs_its_resident_model_first_within_the_bound(tmp_path: Path) -> None:
    """A worker with a resident and b not: a's later jobs go first, but only a batch's worth
    (2 jobs) passes b's older job; then b runs, then a again, users in fair order."""
    async with await Storage.open(tmp_path / "data") as store:
        transport = RecordingTransport()
        scheduler = Scheduler(store.jobs, store.embeddings, store.files, transport, JobHub())
        b_job = await _enqueue(store, 1, "b")
        a_jobs = [await _enqueue(store, user, "a") for user in (2, 3, 4, 5)]
        await scheduler.start()
        try:
            ready = (_held("a", True, 1.0), _held("b", False, 5.0))
            await transport.events_in.put(protocol.WorkerReady("w", "cpu", 2, ready))
            for count in (1, 2, 3):
                await until(lambda: len(transport.batches) >= count, limit=10)  # noqa: B023
                await transport.events_in.put(protocol.SlotFree("w", "generate"))
        finally:
            await scheduler.close()
        assert transport.batches == [a_jobs[:2], [b_job], a_jobs[2:]]


async def test_a_batch_is_trimmed_to_the_room_a_passed_job_has_left(tmp_path: Path) -> None:
    """A job of another model passed once already, with a bound of 2: the resident model's
    next batch takes one job, not two, and the passed job goes after it."""
    async with await Storage.open(tmp_path / "data") as store:
        transport = RecordingTransport()
        scheduler = Scheduler(store.jobs, store.embeddings, store.files, transport, JobHub())
        b_job = await _enqueue(store, 1, "b")
        a_jobs = [await _enqueue(store, user, "a") for user in (2, 3)]
        scheduler._passed[b_job] = 1
        await scheduler.start()
        try:
            ready = (_held("a", True, 1.0), _held("b", False, 5.0))
            await transport.events_in.put(protocol.WorkerReady("w", "cpu", 2, ready))
            await until(lambda: len(transport.batches) >= 1, limit=10)
            await transport.events_in.put(protocol.SlotFree("w", "generate"))
            await until(lambda: len(transport.batches) >= 2, limit=10)
        finally:
            await scheduler.close()
        assert transport.batches == [a_jobs[:1], [b_job]]


async def test_with_nothing_resident_the_fair_order_stands(tmp_path: Path) -> None:
    """No model resident on the worker: its batch starts at the fairly-next job."""
    async with await Storage.open(tmp_path / "data") as store:
        jobs = [await _enqueue(store, user, model) for user, model in ((1, "b"), (2, "a"))]
        candidates = await store.jobs.fair_order(kinds=[JobKind.GENERATE])
        assert [job.id for job in resident_first(candidates, lambda _: False, {}, 2)] == jobs
        resident_a = resident_first(candidates, lambda job: job.model == "a", {}, 2)
        assert [job.id for job in resident_a] == jobs[1:]
        overdue = resident_first(candidates, lambda job: job.model == "a", {jobs[0]: 2}, 2)
        assert [job.id for job in overdue] == jobs


async def test_the_line_counts_only_jobs_that_can_run_first(tmp_path: Path) -> None:
    """Two jobs parked for b (no live worker holds it) are not ahead of a's job: it is next
    up, in its own query and in the line the delivery refreshes; the parked ones keep theirs."""
    async with await Storage.open(tmp_path / "data") as store:
        scheduler = Scheduler(
            store.jobs, store.embeddings, store.files, RecordingTransport(), JobHub()
        )
        await scheduler.handle(protocol.WorkerReady("w", "cpu", 8, (_held("a", True, 1.0),)))
        parked = [await _enqueue(store, user, "b") for user in (1, 2)]
        flowing = await store.jobs.get(await _enqueue(store, 3, "a"))
        assert await store.jobs.queue_position(flowing.id) == 3
        assert await scheduler.queue_position(flowing) == 1
        line = [(job.id, place) for job, place in await scheduler.line(10)]
        assert line == [(parked[0], 1), (parked[1], 2), (flowing.id, 1)]


async def test_a_lost_worker_s_jobs_are_announced(tmp_path: Path) -> None:
    """A worker lost with two jobs: the one with attempts left is announced as a retry, the
    one on its last attempt as failed."""
    async with await Storage.open(tmp_path / "data") as store:
        hub = JobHub()
        scheduler = Scheduler(store.jobs, store.embeddings, store.files, RecordingTransport(), hub)
        await scheduler.handle(protocol.WorkerReady("w", "cpu", 8, (_held("a", True, 1.0),)))
        request = GenerateRequest("a cube", 1, 4, 7.0, 64, 64, model="a")
        again, last = [
            await store.jobs.enqueue(
                user, "generate", request.to_params(), model="a", max_attempts=attempts
            )
            for user, attempts in ((1, 3), (2, 1))
        ]
        await store.jobs.claim_ids([again.id, last.id], "w", 60)
        with hub.subscribe() as updates:
            await scheduler.handle(protocol.WorkerLost("w", "killed"))
            announced = [updates.get_nowait() for _ in range(updates.qsize())]
        assert [(u.job_id, u.user_id, u.kind) for u in announced] == [
            (again.id, 1, "retry"),
            (last.id, 2, "failed"),
        ]
        assert (await store.jobs.get(again.id)).state is JobState.QUEUED
        assert (await store.jobs.get(last.id)).state is JobState.FAILED


async def test_reports_outlive_the_bot_and_odd_ones_are_not_kept(tmp_path: Path) -> None:
    """A worker's report of a configured model is recalled by the next scheduler on the same
    database; one of a model the bot does not configure, of a family storage does not know, or
    of no width, is used by this run only (a Redis entry is a stranger's) and never kept."""
    sources = {"a": "standin", "b": "standin", "c": "standin"}
    async with await Storage.open(tmp_path / "data") as store:

        def scheduler_on_this_database() -> Scheduler:
            return Scheduler(
                store.jobs,
                store.embeddings,
                store.files,
                RecordingTransport(),
                JobHub(),
                reports=store.model_reports,
                sources=sources,
            )

        scheduler = scheduler_on_this_database()
        held = (
            _held("a", True, 1.0),
            protocol.ModelHeld("b", "sd9", 32, "h"),
            protocol.ModelHeld("c", "tiny", 0, "h"),
            protocol.ModelHeld("zz", "tiny", 32, "h"),
        )
        await scheduler.handle(protocol.WorkerReady("w", "cpu", 8, held))
        assert set(scheduler.models) == {"a", "b", "c", "zz"}

        later = scheduler_on_this_database()
        await later.start()
        try:
            assert list(later.models) == ["a"]
            assert later.models["a"].family == "tiny" and later.models["a"].width == 32
        finally:
            await later.close()


async def test_a_dispatch_that_outlives_its_worker_leaves_the_jobs_queued(tmp_path: Path) -> None:
    """A dispatch looks at the workers, then waits on the database. If the worker is lost in
    between, the jobs it claimed go back to the queue at once with no attempt spent: the loss
    was already handled, so otherwise they would wait for their leases to expire."""
    async with await Storage.open(tmp_path / "data") as store:
        transport = RecordingTransport()
        scheduler = Scheduler(store.jobs, store.embeddings, store.files, transport, JobHub())
        await scheduler.handle(protocol.WorkerReady("w", "cpu", 8, (_held("a", True, 1.0),)))
        seen_before_the_loss = scheduler._workers["w"]
        generate = await _enqueue(store, 1, "a")
        train = await store.jobs.enqueue(
            2, "train", TrainRequest("zorb", (), steps=10, model="a").to_params(), model="a"
        )
        await scheduler.handle(protocol.WorkerLost("w", "killed"))

        assert not await scheduler._dispatch_generate(seen_before_the_loss)
        assert not await scheduler._dispatch_train(seen_before_the_loss)
        for job_id in (generate, train.id):
            job = await store.jobs.get(job_id)
            assert (job.state, job.attempts, job.lease_owner) == (JobState.QUEUED, 0, None)
        assert transport.batches == []

        await scheduler.handle(protocol.WorkerReady("v", "cpu", 8, (_held("a", True, 1.0),)))
        assert await scheduler._dispatch_generate(scheduler._workers["v"])
        assert transport.batches == [[generate]]
        assert (await store.jobs.get(generate)).attempts == 1
