"""Scheduler, local transport and worker together: real processes, the tiny model on CPU."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import statistics
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from bot.app import Lexicon
from bot.hub import JobUpdate
from bot.scheduler import choose_batch
from bot.services import ImagineOptions, TrainOptions
from bot.transport import LocalTransport
from engine.embedding_files import write_embedding
from engine.jobs import GenerateRequest
from engine.png import read_parameters
from storage import Storage
from storage.models import Actor, JobKind, JobState
from tests.bot.conftest import (
    AppFactory,
    make_settings,
    recording,
    three_photos,
    until,
    wait_all,
    worker_pid,
)
from tests.conftest import REPO_ROOT


def started_order(updates: list[JobUpdate]) -> list[int]:
    return [u.job_id for u in updates if u.kind == "started"]


async def test_round_robin_fairness(open_app: AppFactory) -> None:
    """One user's 20 jobs, then two users' one each: both start before the first's third."""
    async with open_app() as app, recording(app) as updates:
        first = [
            (await app.imagine.submit(1, ImagineOptions(f"a red cube {i}", seed=i))).job.id
            for i in range(20)
        ]
        second = (await app.imagine.submit(2, ImagineOptions("a blue ball", seed=1))).job.id
        third = (await app.imagine.submit(3, ImagineOptions("a green cone", seed=1))).job.id
        await wait_all(app, [*first, second, third])
        order = started_order(updates)
        assert order.index(second) < order.index(first[2])
        assert order.index(third) < order.index(first[2])
        assert sorted(order) == sorted([*first, second, third])  # each started exactly once


async def test_compatible_requests_share_one_batch(open_app: AppFactory) -> None:
    """8 requests from 8 users with their own embeddings run as one engine batch."""
    async with open_app() as app, recording(app) as updates:
        blocker = (
            await app.imagine.submit(99, ImagineOptions("a slow warm-up image", steps=40))
        ).job.id
        await until(lambda: any(u.job_id == blocker and u.kind == "started" for u in updates))
        jobs = {}
        for user in range(1, 9):
            data = write_embedding(
                torch.randn(1, 32, generator=torch.Generator().manual_seed(user)),
                name=f"word{user}",
                kind="positive",
                family="tiny",
            )
            await app.storage.embeddings.create(
                user, f"word{user}", data, n_vectors=1, width=32, family="tiny", source="imported"
            )
            submitted = await app.imagine.submit(
                user, ImagineOptions(f"a photo of word{user}", seed=user)
            )
            jobs[user] = submitted.job.id
        await wait_all(app, [blocker, *jobs.values()])
        starts = [u for u in updates if u.kind == "started" and u.job_id in jobs.values()]
        assert {u.batch_size for u in starts} == {8}
        assert {frozenset(u.batch_job_ids) for u in starts} == {frozenset(jobs.values())}
        for user, job_id in jobs.items():
            job = await app.storage.jobs.get(job_id)
            assert job.state is JobState.SUCCEEDED and job.user_id == user
            (image,) = await app.storage.images.list_for_job(job_id)
            parameters = read_parameters(await app.storage.images.read_png(image))
            assert f"a photo of word{user}" in parameters
            assert f"word{user}:" in parameters  # its own embedding, by name and hash


async def test_a_batch_takes_the_fairly_next_job_and_compatible_ones(tmp_path: Path) -> None:
    """A batch starts with the fairly-next job and adds only other users' jobs of its batch key."""
    a, b, c = 1, 2, 3
    square = GenerateRequest("a cube", seed=1, steps=10, guidance=7.5, width=512, height=512)
    wide = dataclasses.replace(square, width=768)
    async with await Storage.open(tmp_path / "data") as store:
        for user, request in ((a, square), (a, square), (b, wide), (c, square)):
            await store.jobs.enqueue(
                user, "generate", request.to_params(), batch_key=request.batch_key
            )
        chosen = choose_batch(await store.jobs.fair_order(kinds=[JobKind.GENERATE]), 3)
        batch = await store.jobs.claim_ids([job.id for job in chosen], "worker-1", 60)
        assert [(job.user_id, job.batch_key) for job in batch] == [
            (a, square.batch_key),
            (c, square.batch_key),
        ]
        assert all(job.state is JobState.RUNNING and job.lease_owner == "worker-1" for job in batch)
        rest = choose_batch(await store.jobs.fair_order(kinds=[JobKind.GENERATE]), 3)
        assert [job.user_id for job in rest] == [b]


async def test_imagine_starts_within_one_training_slice(open_app: AppFactory) -> None:
    """While training runs, a new /imagine starts before training advances one more slice."""
    slice_steps = 5
    async with (
        open_app(train_steps=60, train_slice_steps=slice_steps) as app,
        recording(app) as updates,
    ):
        train = (await app.train.submit(1, TrainOptions("zorb", three_photos()))).job.id

        def train_step() -> int:
            steps = [u.step or 0 for u in updates if u.job_id == train and u.kind == "progress"]
            return max(steps, default=0)

        await until(lambda: train_step() >= slice_steps)
        at_submit = train_step()
        imagine = (await app.imagine.submit(2, ImagineOptions("a photo of a dog"))).job.id
        await until(lambda: any(u.job_id == imagine and u.kind == "started" for u in updates))
        assert train_step() <= at_submit + slice_steps
        await wait_all(app, [train, imagine])
        assert (await app.storage.jobs.get(train)).state is JobState.SUCCEEDED


async def test_worker_sigkill_mid_generation_and_training(open_app: AppFactory) -> None:
    """SIGKILL the worker twice mid-work: every job finishes once; training resumes."""
    async with open_app(train_steps=40) as app, recording(app) as updates:
        train = (await app.train.submit(1, TrainOptions("zorb", three_photos()))).job.id
        images = [
            (await app.imagine.submit(2, ImagineOptions(f"a cat {i}", steps=30))).job.id
            for i in range(4)
        ]

        def train_steps() -> list[int]:
            return [u.step for u in updates if u.job_id == train and u.step is not None]

        async def kill_worker_when(condition: Callable[[], bool]) -> None:
            await until(condition)
            transport = app.scheduler.transport
            assert isinstance(transport, LocalTransport)
            os.kill(worker_pid(transport), signal.SIGKILL)

        await kill_worker_when(
            lambda: any(u.kind == "progress" and u.job_id in images for u in updates)
        )
        await kill_worker_when(lambda: max(train_steps(), default=0) >= 15)
        seen_before_kill = len(train_steps())
        killed_at = max(train_steps())
        await wait_all(app, [train, *images])

        for job_id in [train, *images]:
            job = await app.storage.jobs.get(job_id)
            assert job.state is JobState.SUCCEEDED, (job_id, job.state, job.error)
            assert [u.kind for u in updates if u.job_id == job_id].count("succeeded") == 1
        for job_id in images:
            assert len(await app.storage.images.list_for_job(job_id)) == 1
        # After the kill, training continued from a checkpoint (every 5 steps), not from step 0:
        # its first report is one slice (5 steps) past a checkpoint at or after step 5.
        resumed_at = train_steps()[seen_before_kill]
        assert 10 <= resumed_at <= killed_at + 5, (resumed_at, killed_at)
        assert (await app.storage.embeddings.get_owned_by_name(1, "zorb")).n_vectors == 1


async def test_cancel_queued_and_running(open_app: AppFactory) -> None:
    """Cancel works for a queued job at once and for a running one at the next step."""
    async with open_app() as app, recording(app) as updates:
        running = (await app.imagine.submit(1, ImagineOptions("a long image", steps=50))).job.id
        queued = (await app.imagine.submit(1, ImagineOptions("a queued image"))).job.id
        await until(lambda: any(u.job_id == running and u.kind == "progress" for u in updates))
        for job_id in (queued, running):
            cancellation = await app.storage.jobs.cancel(Actor(1), job_id)
            await app.scheduler.cancel(cancellation.job, cancellation.stopped_worker)
        follow_up = (await app.imagine.submit(2, ImagineOptions("after the cancel"))).job.id
        await wait_all(app, [follow_up])
        for job_id in (queued, running):
            assert (await app.storage.jobs.get(job_id)).state is JobState.CANCELLED
            assert await app.storage.images.list_for_job(job_id) == []


async def test_event_loop_stays_responsive(open_app: AppFactory) -> None:
    """While the worker is busy, the bot's event loop lag stays under 50 ms at p99."""
    async with open_app() as app:
        jobs = [
            (await app.imagine.submit(u, ImagineOptions("busy work", steps=20))).job.id
            for u in range(1, 7)
        ]
        lags: list[float] = []
        done = asyncio.ensure_future(wait_all(app, jobs))
        while not done.done():
            before = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - before - 0.01)
        await done
        p99 = statistics.quantiles(lags, n=100)[98]
        assert len(lags) > 50
        assert p99 < 0.050, f"p99 event-loop lag {p99 * 1000:.1f} ms"


_BOT_THAT_DIES = """
import asyncio, os, signal, sys
from pathlib import Path
sys.path.insert(0, {root!r})
from bot.app import Lexicon
from bot.services import ImagineOptions
from tests.bot.conftest import make_settings

async def main():
    settings = make_settings(Path({data!r}), {model!r})
    app = await Lexicon.open(settings)
    await app.wait_for_worker(limit_seconds=180)
    ids = [
        (await app.imagine.submit(u % 4 + 1, ImagineOptions(f"job {{u}}", steps=8))).job.id
        for u in range(20)
    ]
    print("queued", *ids, flush=True)
    while not await app.storage.jobs.list_for_user(1, states=["running"]):
        await asyncio.sleep(0.01)
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


async def test_bot_killed_with_20_jobs_queued_finishes_each_once(
    tmp_path: Path, tiny_model_path: Path
) -> None:
    """SIGKILL the bot with 20 jobs queued or running; the next start finishes each exactly once."""
    data = tmp_path / "data"
    script = _BOT_THAT_DIES.format(root=str(REPO_ROOT), data=str(data), model=str(tiny_model_path))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        textwrap.dedent(script),
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 240)
    assert process.returncode == -signal.SIGKILL, stderr.decode()[-2000:]
    job_ids = [int(x) for x in stdout.decode().split()[1:]]
    assert len(job_ids) == 20

    app = await Lexicon.open(make_settings(data, tiny_model_path))
    try:
        async with recording(app) as updates:
            await wait_all(app, job_ids, limit=300)
            lost = 0
            for job_id in job_ids:
                job = await app.storage.jobs.get(job_id)
                images = await app.storage.images.list_for_job(job_id)
                lost += job.state is not JobState.SUCCEEDED or len(images) != 1
            assert lost == 0
            finished = [u.job_id for u in updates if u.kind == "succeeded"]
            assert len(finished) == len(set(finished))
    finally:
        await app.close()


@pytest.mark.parametrize("bad_size", ["63x64"])
async def test_refusals_store_nothing(open_app: AppFactory, bad_size: str) -> None:
    """A refused request leaves no job row behind."""
    from bot.services import ServiceError
    from storage.errors import EmbeddingNotFound

    async with open_app() as app:
        with pytest.raises(ServiceError, match="size"):
            await app.imagine.submit(1, ImagineOptions("a cat", size=bad_size))
        with pytest.raises(EmbeddingNotFound, match="<zorp>"):
            await app.imagine.submit(1, ImagineOptions("a photo of <zorp>"))
        assert await app.storage.jobs.list_for_user(1, states=None) == []


def test_settings_helper_builds_valid_settings(tmp_path: Path) -> None:
    """The test settings are accepted by the real Settings model."""
    settings = make_settings(tmp_path, "tiny")
    assert settings.allowed_sizes == ["64x64"] and settings.device == "cpu"
