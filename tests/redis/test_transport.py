"""The Redis transport on its own: a real redis-server, stand-in worker processes, no bot."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest

from bot.redis_transport import RedisTransport
from engine import protocol
from engine.jobs import GenerateRequest, TrainRequest
from engine.worker.redis import split_batch
from tests.redis.conftest import (
    RedisServer,
    Workers,
    assert_redis_clean,
    redis_transport,
    until,
)


def _request(prompt: str, steps: int = 4, count: int = 1) -> GenerateRequest:
    return GenerateRequest(
        prompt, 1, steps=steps, guidance=7.0, width=64, height=64, count=count, model="standin"
    )


async def _next(events: Any, kind: type, limit: float = 30.0) -> Any:
    """The next event of `kind` from an `events()` iterator (others are skipped)."""

    async def wait() -> Any:
        async for event in events:
            if isinstance(event, kind):
                return event
        raise AssertionError("the event stream ended")

    return await asyncio.wait_for(wait(), limit)


async def _collect(events: Any, wanted: dict[type, int], limit: float = 30.0) -> dict[type, list]:
    """Events of the `wanted` kinds, as many of each as asked, whatever their order."""
    seen: dict[type, list] = {kind: [] for kind in wanted}

    async def wait() -> dict[type, list]:
        async for event in events:
            kind = type(event)
            if kind in seen and len(seen[kind]) < wanted[kind]:
                seen[kind].append(event)
            if all(len(seen[k]) == n for k, n in wanted.items()):
                return seen
        raise AssertionError("the event stream ended")

    return await asyncio.wait_for(wait(), limit)


@pytest.fixture
async def transport(redis_server: RedisServer) -> Any:
    started = redis_transport(redis_server.url)
    await started.start()
    try:
        yield started
    finally:
        await started.close()


async def test_batch_round_trip_leaves_nothing_in_redis(
    transport: RedisTransport, redis_server: RedisServer, workers: Workers
) -> None:
    """A batch reaches a worker, both results come back, and Redis is empty afterwards."""
    workers.standin("w0")
    events = transport.events()
    ready = await _next(events, protocol.WorkerReady)
    assert ready.worker_id == "w0" and ready.models[0].family == "tiny"
    await _next(events, protocol.SlotFree)
    jobs = (
        protocol.GenerateJob(1, 1, _request("a", count=2)),
        protocol.GenerateJob(2, 1, _request("b", count=2)),
    )
    await transport.submit(protocol.GenerateBatch(jobs))
    # The worker frees its slot before it sends the results, and they travel on different
    # streams: wait for both results and the freed slot, in whichever order they arrive.
    seen = await _collect(events, {protocol.GenerateDone: 2, protocol.SlotFree: 1})
    done = seen[protocol.GenerateDone]
    assert sorted(d.job_id for d in done) == [1, 2]
    assert all(len(d.images) == 2 and d.images[0].png.startswith(b"\x89PNG") for d in done)
    heartbeat = await _next(
        events, protocol.Heartbeat
    )  # liveness reaches the scheduler as a Heartbeat
    assert heartbeat.worker_id == "w0" and heartbeat.peak_memory_bytes == 0
    with contextlib.suppress(TimeoutError):  # hand the last event back as handled
        await asyncio.wait_for(events.__anext__(), 0.3)
    await assert_redis_clean(redis_server.client())


async def test_payload_over_the_limit_fails_with_a_sentence(redis_server: RedisServer) -> None:
    """A job bigger than the payload limit fails at once, for good, and nothing is stored."""
    transport = redis_transport(redis_server.url, max_payload_bytes=100_000)
    await transport.start()
    try:
        photos = tuple(bytes(60_000) for _ in range(3))
        await transport.submit(
            protocol.TrainJob(7, 1, TrainRequest("zorb", photos, steps=12, model="standin"))
        )
        failed = await _next(transport.events(), protocol.JobFailed, limit=5)
        assert failed.job_id == 7 and failed.attempt == 1 and not failed.retryable
        assert "MB" in failed.error and "0 MB a GPU worker accepts" in failed.error
        client = redis_server.client()
        assert client.xlen("lexicon:work:train:standin") == 0
        assert list(client.scan_iter("lexicon:payload:*")) == []
    finally:
        await transport.close()


async def test_cancel_before_any_worker_started_the_job(
    transport: RedisTransport, workers: Workers
) -> None:
    """A job cancelled while its batch waits in the stream is reported cancelled, never run."""
    await transport.submit(
        protocol.GenerateBatch((protocol.GenerateJob(5, 1, _request("slow", steps=40)),))
    )
    await transport.cancel(5)
    workers.standin("w0", step_seconds=0.05)
    seen: list[protocol.FromWorker] = []

    async def until_cancelled_and_free() -> None:
        # The worker frees its slot before it reports the batch's outcomes, and the transport's
        # own offer of the free slot may come first too: the two arrive in either order.
        async for event in transport.events():
            seen.append(event)
            cancelled = any(isinstance(e, protocol.JobCancelled) for e in seen)
            free = any(isinstance(e, protocol.SlotFree) and e.slot == "generate" for e in seen)
            if cancelled and free:
                return

    await asyncio.wait_for(until_cancelled_and_free(), 30)
    assert [e.job_id for e in seen if isinstance(e, protocol.JobCancelled)] == [5]
    assert not [e for e in seen if isinstance(e, protocol.GenerateDone | protocol.JobStarted)]


async def test_janitor_reclaims_entries_of_a_vanished_consumer(redis_server: RedisServer) -> None:
    """An entry of a vanished consumer is XAUTOCLAIMed after the idle time and dropped."""
    client = redis_server.client()
    client.xgroup_create("lexicon:work:generate:standin", "workers", "0", mkstream=True)
    client.set("lexicon:payload:orphan", protocol.encode(protocol.GenerateBatch(())))
    client.xadd("lexicon:work:generate:standin", {"p": "lexicon:payload:orphan", "jobs": "9:1"})
    client.xreadgroup("workers", "ghost", {"lexicon:work:generate:standin": ">"}, count=1)
    assert client.xpending("lexicon:work:generate:standin", "workers")["pending"] == 1
    transport = redis_transport(redis_server.url, reclaim_idle_seconds=1.0)
    await transport.start()
    try:
        await until(lambda: client.xlen("lexicon:work:generate:standin") == 0, limit=10)
        assert client.xpending("lexicon:work:generate:standin", "workers")["pending"] == 0
        assert client.get("lexicon:payload:orphan") is None
    finally:
        await transport.close()


async def test_a_long_job_keeps_its_entry_from_the_janitor(
    redis_server: RedisServer, workers: Workers
) -> None:
    """Heartbeats touch a running entry, so a long job is never reclaimed as an orphan."""
    transport = redis_transport(redis_server.url, reclaim_idle_seconds=1.0)
    await transport.start()
    try:
        workers.standin("w0", step_seconds=0.05)
        events = transport.events()
        await _next(events, protocol.SlotFree)
        photos = (b"a", b"b", b"c")
        await transport.submit(
            protocol.TrainJob(4, 1, TrainRequest("zorb", photos, steps=60, model="standin"))
        )
        await asyncio.sleep(2.0)  # twice the idle limit, a third of the training
        client = redis_server.client()
        pending: Any = client.xpending_range("lexicon:work:train:standin", "workers", "-", "+", 10)
        assert [p["consumer"] for p in pending] == [b"w0"]
        assert pending[0]["time_since_delivered"] < 1000
        done = await _next(events, protocol.TrainDone, limit=30)
        assert done.job_id == 4 and done.result.steps == 60
    finally:
        await transport.close()


async def test_events_not_handled_before_a_bot_crash_are_read_again(
    redis_server: RedisServer, workers: Workers
) -> None:
    """An event the bot read but never finished handling is delivered again after a restart."""
    workers.standin("w0")
    first = redis_transport(redis_server.url)
    await first.start()
    events = first.events()
    await _next(events, protocol.SlotFree)
    await first.submit(protocol.GenerateBatch((protocol.GenerateJob(3, 1, _request("keep me")),)))
    done = await _next(events, protocol.GenerateDone)
    await first.close()  # "crashes" while storing the result: the generator never resumes

    second = redis_transport(redis_server.url)
    await second.start()
    try:
        again = await _next(second.events(), protocol.GenerateDone, limit=10)
        assert again == done
    finally:
        await second.close()


def test_batches_too_big_for_a_worker_are_split() -> None:
    """A worker smaller than the batch runs it in chunks of at most its own size."""
    jobs = tuple(
        protocol.GenerateJob(i, 1, _request(f"p{i}", count=c)) for i, c in enumerate([3, 2, 2, 4])
    )
    chunks = split_batch(protocol.GenerateBatch(jobs), 4)
    assert [[job.job_id for job in chunk.jobs] for chunk in chunks] == [[0], [1, 2], [3]]
    assert split_batch(protocol.GenerateBatch(jobs), 16) == [protocol.GenerateBatch(jobs)]


def test_transport_needs_only_a_url(tmp_path: Path) -> None:
    """`LEXICON_QUEUE=redis://…` is all the bot needs to pick this transport."""
    from bot.app import default_transport
    from bot.config import load_settings

    settings = load_settings(queue="redis://127.0.0.1:1/0", data_dir=tmp_path)
    transport = default_transport(settings)
    assert isinstance(transport, RedisTransport)
    assert transport.workers_outlive_bot is True
