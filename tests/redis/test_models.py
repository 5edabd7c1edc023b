"""Several models over Redis: each job reaches only a worker that holds its model; when the only
worker of a model dies, that model's jobs wait (and say so) while the other model's flow, and
they run once a worker holding it comes back."""

from __future__ import annotations

import signal
from pathlib import Path

from bot.services import ImagineOptions
from engine.protocol import (
    GenerateDone,
    Heartbeat,
    JobStarted,
    ModelHeld,
    ModelSwitched,
    WorkerLost,
    WorkerReady,
    decode,
)
from engine.worker.redis import RedisChannel
from storage.models import JobState
from tests.redis.conftest import (
    RedisServer,
    Workers,
    assert_redis_clean,
    observe_events,
    open_bot,
    recording,
    redis_transport,
    until,
    wait_all,
)
from tests.redis.test_transport import _next

MODELS = "a=standin,b=standin"


async def test_jobs_follow_their_model_and_wait_for_its_worker(
    tmp_path: Path, redis_server: RedisServer, workers: Workers
) -> None:
    """Two workers hold a and b; killing a's worker mid-job parks a's jobs while b's finish;
    a new worker for a runs them (the interrupted one as its second attempt)."""
    workers.standin("wa", models=("a",), step_seconds=0.05)
    workers.standin("wb", models=("b",), step_seconds=0.01)
    async with open_bot(tmp_path / "data", redis_server.url, model_list=MODELS) as app:
        events = observe_events(app)
        await until(lambda: set(app.scheduler.models) == {"a", "b"}, limit=60)
        async with recording(app) as updates:
            first = {
                (await app.imagine.submit(user, ImagineOptions(f"{m} {user}", model=m))).job.id: m
                for user in (1, 2, 3)
                for m in "ab"
            }
            await wait_all(app, list(first), limit=120)
            runner = {e.job_id: e.worker_id for e in events if isinstance(e, JobStarted)}
            assert {job_id: runner[job_id] for job_id in first} == {
                job_id: f"w{model}" for job_id, model in first.items()
            }

            slow = await app.imagine.submit(4, ImagineOptions("slow a", steps=40, model="a"))
            await until(
                lambda: any(u.job_id == slow.job.id for u in updates if u.kind == "progress")
            )
            workers.started[0].kill(signal.SIGKILL)
            await until(lambda: any(isinstance(e, WorkerLost) for e in events), limit=60)
            parked = await app.imagine.submit(5, ImagineOptions("parked a", model="a"))
            assert parked.standing.waiting_for == "a"
            flowing = await app.imagine.submit(5, ImagineOptions("flowing b", model="b"))
            await wait_all(app, [flowing.job.id], limit=60)
            for job_id in (slow.job.id, parked.job.id):
                assert (await app.storage.jobs.get(job_id)).state is JobState.QUEUED
                assert app.scheduler.waiting_for(await app.storage.jobs.get(job_id)) == "a"

            workers.standin("wa2", models=("a",), step_seconds=0.01)
            await wait_all(app, [slow.job.id, parked.job.id], limit=120)
            assert (await app.storage.jobs.get(slow.job.id)).attempts == 2
            done_by = {e.job_id: e.worker_id for e in events if isinstance(e, GenerateDone)}
            assert done_by[slow.job.id] == done_by[parked.job.id] == "wa2"
            assert done_by[flowing.job.id] == "wb"
    await assert_redis_clean(redis_server.client())


async def test_a_model_switch_crosses_redis_and_stays_in_the_registration(
    redis_server: RedisServer,
) -> None:
    """A worker's `ModelSwitched` reaches the bot; its registration says what is resident after
    the next heartbeat (a bot that starts later reads it there); a switch whose resident list
    is not names is dead-lettered."""
    transport = redis_transport(redis_server.url, models=("a", "b"))
    await transport.start()
    client = redis_server.client()
    channel = RedisChannel(redis_server.client(), "w9")
    try:
        events = transport.events()
        held = (
            ModelHeld("a", "tiny", 32, "h1", resident=True, switch_seconds=1.5),
            ModelHeld("b", "tiny", 32, "h2", resident=False, switch_seconds=5.0),
        )
        channel.send(WorkerReady("w9", "cpu", 8, held))
        assert (await _next(events, WorkerReady)).models == held
        client.xadd(
            "lexicon:events:bot",
            {
                "m": b'{"__t":"ModelSwitched","worker_id":"w9","model":"b","seconds":1.0,'
                b'"resident":[7]}'
            },
        )
        channel.send(ModelSwitched("w9", "b", 4.0, ("b",)))
        assert await _next(events, ModelSwitched) == ModelSwitched("w9", "b", 4.0, ("b",))
        channel.send(Heartbeat("w9"))
        ready = decode(client.hget("lexicon:worker:w9", "ready") or b"")
        assert [(m.name, m.resident, m.switch_seconds) for m in ready.models] == [
            ("a", False, 1.5),
            ("b", True, 4.0),
        ]
        reasons = [fields[b"reason"] for _, fields in client.xrange("lexicon:dead")]
        assert reasons == [b"ModelSwitched.resident is not a list of strings"]
    finally:
        await transport.close()
