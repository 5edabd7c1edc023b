"""Scale-out end to end: a bot core, a real redis-server and standalone worker processes."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import redis

from bot.app import Lexicon
from bot.hub import JobUpdate
from bot.services import ImagineOptions, TrainOptions
from engine.protocol import (
    GenerateDone,
    JobCancelled,
    JobStarted,
    ModelHeld,
    TrainDone,
    WorkerLost,
    WorkerReady,
    encode,
)
from storage.models import Actor, JobState
from tests.bot.conftest import three_photos
from tests.redis.conftest import (
    LEASE_SECONDS,
    RedisServer,
    Workers,
    assert_each_finished_once,
    assert_redis_clean,
    observe_events,
    open_bot,
    recording,
    until,
    until_async,
    wait_all,
)

USERS = (1, 2, 3, 4, 5)


async def queue_forty(app: Lexicon, steps: int = 4) -> dict[int, list[int]]:
    """8 jobs for each of 5 users, user by user (the worst order for fairness)."""
    jobs: dict[int, list[int]] = {}
    for user in USERS:
        jobs[user] = [
            (
                await app.imagine.submit(
                    user, ImagineOptions(f"user {user} image {i}", seed=i, steps=steps)
                )
            ).job.id
            for i in range(8)
        ]
    return jobs


async def assert_fair(
    app: Lexicon, jobs: dict[int, list[int]], events: list[Any], workers: int
) -> None:
    """Round-robin holds across workers.

    Claims (what the scheduler hands out) go strictly round by round: no user's (r+1)-th job is
    claimed before any other user's r-th. Starts (what workers report) follow the claims, except
    that up to `workers` batches run at once: no job starts before a job of a batch claimed
    `workers` batches earlier.
    """
    claimed: dict[int, datetime] = {}
    for ids in jobs.values():
        for job_id in ids:
            started_at = (await app.storage.jobs.get(job_id)).started_at
            assert started_at is not None
            claimed[job_id] = started_at
    for user in USERS:
        for other in USERS:
            for round_ in range(7):
                first, later = jobs[other][round_], jobs[user][round_ + 1]
                assert claimed[later] > claimed[first], (user, other, round_)
    starts = [e for e in events if isinstance(e, JobStarted)]
    batches = sorted({e.batch_job_ids for e in starts}, key=lambda b: min(claimed[j] for j in b))
    batch = {job_id: index for index, ids in enumerate(batches) for job_id in ids}
    position = {e.job_id: index for index, e in enumerate(starts)}
    for early in claimed:
        for late in claimed:
            if batch[late] >= batch[early] + workers:
                assert position[early] < position[late], (early, late)


async def share_forty_jobs(app: Lexicon, start_workers: Any, count: int) -> None:
    """Queue 40 jobs with no worker up, start `count` workers, check every outcome."""
    events = observe_events(app)
    async with recording(app) as updates:
        jobs = await queue_forty(app)
        all_ids = [job_id for ids in jobs.values() for job_id in ids]
        start_workers()
        await wait_all(app, all_ids, limit=400)
        await assert_each_finished_once(app, all_ids, updates)
        results = Counter(e.job_id for e in events if isinstance(e, GenerateDone))
        assert results == Counter(all_ids)  # exactly one result per job, none duplicated
        for job_id in all_ids:
            assert (await app.storage.jobs.get(job_id)).attempts == 1
        runners = {e.worker_id for e in events if isinstance(e, JobStarted)}
        assert len(runners) == count  # every worker took a share
        started = [u.job_id for u in updates if u.kind == "started"]
        assert sorted(started) == sorted(all_ids)
        await assert_fair(app, jobs, events, count)


async def test_two_cli_workers_tiny_model_share_40_jobs_fairly(
    tmp_path: Path, redis_server: RedisServer, workers: Workers, tiny_model_path: Path
) -> None:
    """Two `lexicon worker` processes (tiny model) run 40 jobs of 5 users once each, fairly."""
    async with open_bot(tmp_path / "data", redis_server.url, tiny_model_path, max_batch=4) as app:

        def start() -> None:
            for name in ("cli-a", "cli-b"):
                workers.cli(name, tiny_model_path, "--max-batch", "4", "--device", "cpu")

        await share_forty_jobs(app, start, 2)
        for worker in workers.started:  # SIGTERM: a clean exit, and the bot is told
            worker.kill(signal.SIGTERM)
            assert await asyncio.to_thread(worker.wait, 30) == 0
        await until(lambda: not app.scheduler.worker_ready.is_set(), limit=10)
    await assert_redis_clean(redis_server.client())


async def test_four_standin_workers_share_40_jobs_fairly(
    tmp_path: Path, redis_server: RedisServer, workers: Workers
) -> None:
    """Four stand-in workers run 40 jobs of 5 users, each exactly once, in fair order."""
    async with open_bot(tmp_path / "data", redis_server.url, max_batch=4) as app:

        def start() -> None:
            workers.standins(4, step_seconds=0.05, max_batch=4)

        await share_forty_jobs(app, start, 4)
    await assert_redis_clean(redis_server.client())


@contextlib.asynccontextmanager
async def training_zorb(
    data_dir: Path, url: str
) -> AsyncIterator[tuple[Lexicon, list[Any], list[JobUpdate], int]]:
    """A bot whose 60-step training of 'zorb' (user 1) is queued once a worker is up: the app,
    the events and updates recorded from its start, and the training's job id."""
    async with open_bot(data_dir, url, train_steps=60) as app:
        events = observe_events(app)
        async with recording(app) as updates:
            await app.wait_for_worker(60)
            submitted = await app.train.submit(1, TrainOptions("zorb", three_photos()))
            yield app, events, updates, submitted.job.id


def progress_steps(updates: list[JobUpdate], job_id: int) -> list[int]:
    """The steps a job's progress updates reported, in order."""
    return [u.step or 0 for u in updates if u.job_id == job_id and u.kind == "progress"]


async def test_sigkill_worker_mid_job_is_reclaimed_and_finished(
    tmp_path: Path, redis_server: RedisServer, workers: Workers
) -> None:
    """SIGKILL a worker mid-generation and mid-training: another finishes both; none is lost."""
    killed = workers.standin("victim", step_seconds=0.05)
    async with training_zorb(tmp_path / "data", redis_server.url) as (app, events, updates, train):

        def train_progress() -> list[int]:
            return progress_steps(updates, train)

        def trained_steps() -> int:
            return max(train_progress(), default=0)

        await until(lambda: trained_steps() >= 15)
        images = [
            (await app.imagine.submit(u, ImagineOptions(f"a cat {u}", steps=30))).job.id
            for u in (2, 3, 4)
        ]
        all_ids = [train, *images]
        await until(lambda: any(u.kind == "progress" and u.job_id in images for u in updates))
        running = [
            job_id
            for job_id in all_ids
            if (await app.storage.jobs.get(job_id)).lease_owner == "victim"
        ]
        assert train in running and len(running) >= 2
        killed.kill(signal.SIGKILL)
        seen_before_kill = len(train_progress())
        killed_at = trained_steps()
        workers.standin("rescuer", step_seconds=0.01)
        await wait_all(app, all_ids, limit=120)

        await assert_each_finished_once(app, images, updates)
        job = await app.storage.jobs.get(train)
        assert job.state is JobState.SUCCEEDED and job.attempts == 2
        assert (await app.storage.embeddings.get_owned_by_name(1, "zorb")).n_vectors == 1
        lost = [e for e in events if isinstance(e, WorkerLost)]
        assert [e.worker_id for e in lost] == ["victim"]
        for job_id in running:  # each started on the victim, then on the rescuer
            runners = [
                e.worker_id for e in events if isinstance(e, JobStarted) and e.job_id == job_id
            ]
            assert runners == ["victim", "rescuer"]
        finishers = {e.job_id for e in events if isinstance(e, GenerateDone | TrainDone)}
        assert finishers == set(all_ids)
        # Training resumed from a checkpoint (every 5 steps), not from step 0: its first
        # report on the rescuer is one slice past a checkpoint at or after step 10.
        resumed_at = train_progress()[seen_before_kill]
        assert 15 <= resumed_at <= killed_at + 5, (resumed_at, killed_at)
    client = redis_server.client()
    consumers = {
        c["name"] for c in client.xinfo_consumers("lexicon:work:generate:standin", "workers")
    }
    assert b"victim" not in consumers
    await assert_redis_clean(client)


async def test_redis_restart_mid_run_loses_no_job(
    tmp_path: Path, redis_server: RedisServer, workers: Workers
) -> None:
    """redis-server killed mid-run and restarted empty: all reconnect, every job finishes once."""
    workers.standins(2, step_seconds=0.03, max_batch=2)
    async with open_bot(tmp_path / "data", redis_server.url, max_batch=2) as app:
        events = observe_events(app)
        async with recording(app) as updates:
            await app.wait_for_worker(60)
            ids = [
                (
                    await app.imagine.submit(
                        u % 5 + 1, ImagineOptions(f"image {u}", seed=u, steps=10)
                    )
                ).job.id
                for u in range(30)
            ]
            await until(lambda: sum(u.kind == "succeeded" for u in updates) >= 6)
            redis_server.kill()
            done_at_kill = sum(u.kind == "succeeded" for u in updates)
            await asyncio.sleep(1.5)
            redis_server.start()
            restarted_at = len(events)
            await wait_all(app, ids, limit=180)

            assert done_at_kill < len(ids)
            await assert_each_finished_once(app, ids, updates)
            assert not [e for e in events if isinstance(e, WorkerLost)]
            runners_after = {
                e.worker_id for e in events[restarted_at:] if isinstance(e, JobStarted)
            }
            assert runners_after == {"w0", "w1"}  # both workers came back and kept working
    await assert_redis_clean(redis_server.client())


def register_ghost(client: redis.Redis, name: str = "ghost") -> None:
    """Register a live worker that never reads: what a worker looks like to the bot whose
    batch was still waiting in the stream when Redis lost it."""
    ready = encode(WorkerReady(name, "cpu", 8, (ModelHeld("standin", "tiny", 32, "standin0"),)))
    client.hset(f"lexicon:worker:{name}", mapping={"ready": ready, "beat": 1, "jobs": ""})
    client.pexpire(f"lexicon:worker:{name}", 120_000)
    client.sadd("lexicon:workers", name)


async def test_work_that_vanished_with_redis_is_sent_again(
    tmp_path: Path, redis_server: RedisServer, workers: Workers
) -> None:
    """A batch lost with an unpersisted Redis is sent again once its SQLite lease expires."""
    async with open_bot(tmp_path / "data", redis_server.url) as app:
        events = observe_events(app)
        register_ghost(redis_server.client())
        await app.wait_for_worker(10)
        job_id = (await app.imagine.submit(1, ImagineOptions("a lost image", seed=1))).job.id
        await until(
            lambda: redis_server.client().xlen("lexicon:work:generate:standin") == 1, limit=10
        )
        assert (await app.storage.jobs.get(job_id)).lease_owner == "ghost"
        redis_server.kill()
        redis_server.start()
        register_ghost(redis_server.client())  # the worker is alive and registers again
        workers.standin("w0")
        job = await app.wait_for_job(job_id)
        assert job.state is JobState.SUCCEEDED and job.attempts == 2
        assert len(await app.storage.images.list_for_job(job_id)) == 1
        assert [e.job_id for e in events if isinstance(e, GenerateDone)] == [job_id]
        assert [e.worker_id for e in events if isinstance(e, JobStarted)] == ["w0"]
        assert not [e for e in events if isinstance(e, WorkerLost)]
    await assert_redis_clean(redis_server.client())


async def test_bot_restart_leaves_running_jobs_to_live_workers(
    tmp_path: Path, redis_server: RedisServer, workers: Workers
) -> None:
    """After a bot restart, jobs that live workers ran meanwhile are collected, not requeued."""
    workers.standins(2, step_seconds=0.05)
    data = tmp_path / "data"
    async with open_bot(data, redis_server.url) as app:
        await app.wait_for_worker(60)
        ids = [
            (await app.imagine.submit(u, ImagineOptions(f"image {u}", seed=u, steps=20))).job.id
            for u in range(1, 11)
        ]

        async def two_running() -> bool:
            states = [(await app.storage.jobs.get(j)).state for j in ids]
            return states.count(JobState.RUNNING) >= 2

        await until_async(two_running)
        running = [j for j in ids if (await app.storage.jobs.get(j)).state is JobState.RUNNING]
    await asyncio.sleep(1.5)  # the workers finish those while no bot listens

    async with open_bot(data, redis_server.url) as app, recording(app) as updates:
        await wait_all(app, ids, limit=120)
        for job_id in ids:
            job = await app.storage.jobs.get(job_id)
            assert job.state is JobState.SUCCEEDED and job.attempts == 1, job
            assert len(await app.storage.images.list_for_job(job_id)) == 1
        finished_now = {u.job_id for u in updates if u.kind == "succeeded"}
        assert set(running) <= finished_now  # delivered to the new bot, not run again
    await assert_redis_clean(redis_server.client())


async def test_sigterm_releases_work_and_exits_cleanly(
    tmp_path: Path, redis_server: RedisServer, workers: Workers
) -> None:
    """SIGTERM mid-training: checkpoint, release, exit 0; another worker resumes the job."""
    leaving = workers.standin("leaving", step_seconds=0.05)
    async with training_zorb(tmp_path / "data", redis_server.url) as (app, events, updates, train):
        await until(lambda: any(u.job_id == train and (u.step or 0) >= 10 for u in updates))
        leaving.kill(signal.SIGTERM)
        assert await asyncio.to_thread(leaving.wait, 30) == 0
        assert "stopped" in leaving.log()
        await until(lambda: any(isinstance(e, WorkerLost) for e in events), limit=10)
        assert (await app.storage.jobs.get(train)).state is JobState.QUEUED
        before = progress_steps(updates, train)
        workers.standin("staying", step_seconds=0.01)
        await wait_all(app, [train], limit=60)
        job = await app.storage.jobs.get(train)
        assert job.state is JobState.SUCCEEDED and job.attempts == 1
        steps = progress_steps(updates, train)
        # The checkpoint taken at SIGTERM is the last step reported; one slice (5) later:
        assert steps[len(before)] == before[-1] + 5
    await assert_redis_clean(redis_server.client())


async def test_cancel_reaches_the_worker_running_the_job(
    tmp_path: Path, redis_server: RedisServer, workers: Workers
) -> None:
    """Running jobs on two workers stop at the next step when cancelled; the workers go on."""
    workers.standins(2, step_seconds=0.1)
    async with open_bot(tmp_path / "data", redis_server.url) as app:
        events = observe_events(app)
        async with recording(app) as updates:
            await app.wait_for_worker(60)
            long_jobs = [
                (await app.imagine.submit(u, ImagineOptions("a long image", steps=50))).job.id
                for u in (1, 2)
            ]

            def progressing(job_id: int) -> bool:
                return any(u.job_id == job_id and u.kind == "progress" for u in updates)

            await until(lambda: all(progressing(job_id) for job_id in long_jobs))
            runners = {e.worker_id for e in events if isinstance(e, JobStarted)}
            assert runners == {"w0", "w1"}
            asked = time.monotonic()
            for user, job_id in zip((1, 2), long_jobs, strict=True):
                cancellation = await app.storage.jobs.cancel(Actor(user), job_id)
                await app.scheduler.cancel(cancellation.job, cancellation.stopped_worker)
            await until(
                lambda: {e.job_id for e in events if isinstance(e, JobCancelled)} == set(long_jobs)
            )
            assert time.monotonic() - asked < 3.0  # 50 steps would take 5 s
            follow_up = (await app.imagine.submit(3, ImagineOptions("after the cancel"))).job.id
            await wait_all(app, [follow_up], limit=30)
            for job_id in long_jobs:
                assert (await app.storage.jobs.get(job_id)).state is JobState.CANCELLED
                assert await app.storage.images.list_for_job(job_id) == []
            assert not [e for e in events if isinstance(e, GenerateDone) and e.job_id in long_jobs]
    await assert_redis_clean(redis_server.client())


async def test_a_training_slower_to_start_than_its_lease_runs_once(
    redis_server: RedisServer, workers: Workers, tmp_path: Path
) -> None:
    """A remote training that takes longer than the lease to start succeeds on attempt 1."""
    workers.standin("w0", start_seconds=LEASE_SECONDS + 4)
    async with open_bot(tmp_path / "data", redis_server.url) as app, recording(app) as updates:
        await app.wait_for_worker(60)
        job_id = (await app.train.submit(1, TrainOptions("slowstart", three_photos()))).job.id
        job = await asyncio.wait_for(app.wait_for_job(job_id), 90)
        assert job.state is JobState.SUCCEEDED and job.attempts == 1, job.error
        assert [u.kind for u in updates if u.job_id == job_id].count("retry") == 0
