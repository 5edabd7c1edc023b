"""Hostile Redis entries and credentials (issue 15, item 12 a and c), with a real redis-server.

A deeply nested or oversized entry used to raise out of the bot's event reader (and, being
pending, again after every restart) and out of a worker's poll; now each side acknowledges it,
moves it to `lexicon:dead` with the reason, and goes on. A refused password used to be retried
forever; now the bot and `lexicon worker` stop at start-up with one sentence.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import pytest

from bot.app import Lexicon
from bot.config import StartupError
from engine import protocol
from engine.jobs import GenerateRequest
from tests.redis.conftest import (
    RedisServer,
    Workers,
    make_settings,
    redis_transport,
)
from tests.redis.test_transport import _next

DEEP = b"[" * 2000 + b"]" * 2000  # json.loads alone raises RecursionError on this


def _dead(server: RedisServer) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in server.client().xrange("lexicon:dead")]


async def test_poison_events_are_dead_lettered_also_after_a_restart(
    redis_server: RedisServer,
) -> None:
    """A pending over-deep event and a new oversized one are moved aside; reading goes on."""
    client = redis_server.client()
    events = "lexicon:events:bot"
    client.xgroup_create(events, "bot", "0", mkstream=True)
    client.xadd(events, {"m": DEEP})
    # A previous bot process read it and died before acknowledging it: it is pending.
    assert client.xreadgroup("bot", "bot", {events: ">"}, count=10)
    client.xadd(events, {"m": b'{"__t":"SlotFree","worker_id":"w1","slot":"' + b"x" * 5000})
    client.xadd(events, {"m": protocol.encode(protocol.SlotFree("w1", "train"))})
    transport = redis_transport(redis_server.url, max_payload_bytes=4096)
    await transport.start()
    try:
        events_seen = transport.events()
        freed = await _next(events_seen, protocol.SlotFree, limit=10)
        assert freed == protocol.SlotFree("w1", "train")
        dead = _dead(redis_server)
        assert [d[b"reason"] for d in dead] == [
            f"the message nests deeper than {protocol.MAX_DEPTH} levels".encode(),
            b"the entry is 5043 bytes, over the 4096-byte limit",
        ]
        assert dead[0][b"size"] == str(len(DEEP)).encode() and len(dead[0][b"sample"]) == 1024
        with contextlib.suppress(TimeoutError):  # hand the SlotFree back as handled
            await asyncio.wait_for(events_seen.__anext__(), 0.3)
    finally:
        await transport.close()
    assert client.xlen(events) == 0


async def test_a_worker_survives_poison_control_and_work_entries(
    redis_server: RedisServer, workers: Workers
) -> None:
    """Poison on a worker's control and work streams is dead-lettered; the worker keeps going."""
    transport = redis_transport(redis_server.url)
    await transport.start()
    worker = workers.standin("w0")
    try:
        events = transport.events()
        await _next(events, protocol.WorkerReady)
        client = redis_server.client()
        client.xadd("lexicon:control:w0", {"m": DEEP})
        client.set("lexicon:payload:bad", DEEP)
        client.xadd("lexicon:work:generate:standin", {"p": "lexicon:payload:bad", "jobs": "5:1"})
        released = await _next(events, protocol.JobReleased)
        assert (released.job_id, released.attempt) == (5, 1)
        client.xadd("lexicon:work:generate:standin", {"p": "lexicon:payload:x", "jobs": "five"})
        request = GenerateRequest(
            "a cube", 1, steps=2, guidance=7.0, width=64, height=64, model="standin"
        )
        await transport.submit(protocol.GenerateBatch((protocol.GenerateJob(6, 1, request),)))
        done = await _next(events, protocol.GenerateDone)
        assert done.job_id == 6 and done.worker_id == "w0"
        assert worker.process.poll() is None, worker.log()
        reasons = [d[b"reason"].decode() for d in _dead(redis_server)]
        assert len(reasons) == 3, reasons
        assert sum("deeper than" in r for r in reasons) == 2
        assert any("unreadable work entry fields" in r for r in reasons)
        assert client.xlen("lexicon:work:generate:standin") == 0
    finally:
        await transport.close()


@pytest.mark.parametrize("given", [None, "wrong"])
async def test_a_refused_password_stops_the_bot_at_start(tmp_path: Path, given: str | None) -> None:
    """A missing or wrong password ends the bot's start with one sentence naming LEXICON_QUEUE."""
    server = RedisServer(tmp_path / "redis", password="s3cret")
    server.directory.mkdir()
    server.start()
    try:
        auth = f":{given}@" if given else ""
        url = f"redis://{auth}127.0.0.1:{server.port}/0"
        settings = make_settings(tmp_path / "data", "standin", engine="standin", queue=url)
        started = time.monotonic()
        with pytest.raises(StartupError) as refused:
            await Lexicon.open(settings, redis_transport(url))
        assert time.monotonic() - started < 10
        sentence = str(refused.value)
        assert "Redis refused the credentials in LEXICON_QUEUE" in sentence
        assert sentence.count(". ") == 0 and "s3cret" not in sentence
        right = f"redis://:s3cret@127.0.0.1:{server.port}/0"
        app = await Lexicon.open(settings, redis_transport(right))  # the lock was released
        await app.close()
    finally:
        server.kill()


def test_a_refused_password_stops_lexicon_worker(cli: Any, tmp_path: Path) -> None:
    """`lexicon worker` with a wrong password exits 1 with one sentence, before loading a model."""
    server = RedisServer(tmp_path / "redis", password="s3cret")
    server.directory.mkdir()
    server.start()
    try:
        url = f"redis://:wrong@127.0.0.1:{server.port}/0"
        result = cli("worker", "--queue", url, "--device", "cpu", timeout=60)
        assert result.returncode == 1, result.stderr
        assert "Redis refused the credentials in LEXICON_QUEUE" in result.stderr
        assert "Traceback" not in result.stderr and "wrong" not in result.stderr
    finally:
        server.kill()
