"""The two-model story in a simulated server, over a real redis-server (issue 19).

The deployment runs tiny SD 1.x as **sd** and tiny SDXL as **xl**; two real `lexicon worker`
processes hold one model each. A member trains a word on each model, renders each on its own
model, is refused across families, and keeps working on sd after the xl worker is SIGKILLed
mid-job: xl's jobs wait, saying so, and finish on a replacement worker. Every job must run on a
worker that holds its model, and nothing the bot sends may expose internals.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from simcord.actors import MemberActor
from simcord.results import InteractionResult

from engine.png import read_parameters
from engine.protocol import GenerateDone, JobStarted, TrainDone, WorkerLost
from storage.models import Job, JobState
from tests.bot.conftest import make_settings
from tests.e2e.conftest import photo_options, refusal
from tests.redis.conftest import (
    LEASE_SECONDS,
    RedisServer,
    Workers,
    assert_redis_clean,
    observe_events,
)
from tests.simulation import Simulation, simulated

MODELS = "sd=tiny,xl=tiny-sdxl"
# What a member must never read: tracebacks, Python names, hashes, raw ids, the queue's insides.
INTERNALS = re.compile(
    r"Traceback|File \"|\.py\b|\b\w*(Error|Exception)\b|\bNone\b|\bself\b|redis|lexicon:"
    r"|\b[0-9a-f]{16,}\b|\b\d{15,}\b|sha256|\blease\b|worker_id",
    re.IGNORECASE,
)
MENTIONS = re.compile(r"<(@[!&]?|#|t:)\d+(:[a-zA-Z])?>")  # Discord renders these as names
SHOWN_KEYS = {"content", "title", "description", "name", "value", "text", "label", "placeholder"}


def _shown_texts(payload: Any) -> Iterator[str]:
    """Every string of a REST payload that Discord shows to people."""
    if isinstance(payload, dict):
        for key, value in payload.items():
            if isinstance(value, str) and key in SHOWN_KEYS:
                yield value
            else:
                yield from _shown_texts(value)
    elif isinstance(payload, list):
        for item in payload:
            yield from _shown_texts(item)


def assert_nothing_internal_was_shown(sim: Simulation, worker_ids: set[str]) -> int:
    """Read every text the bot sent or edited into Discord (messages, edits, refusals, buttons);
    fail on any that exposes internals or names a worker. Returns how many texts were read."""
    texts = [
        text
        for entry in sim.env.http_requests
        if "/commands" not in entry.path  # the command list synced at login: not a message
        for text in _shown_texts(entry.json)
    ]
    exposing = [
        text
        for text in texts
        if INTERNALS.search(MENTIONS.sub("", text)) or any(w in text for w in worker_ids)
    ]
    assert exposing == []
    return len(texts)


async def _done(sim: Simulation, job_id: int, model: str) -> Job:
    job = await sim.job_done(job_id, limit=300)
    assert (job.state, job.model) == (JobState.SUCCEEDED, model), job.error
    return job


async def _rendered_with(sim: Simulation, message_id: int, word: str) -> None:
    """The delivered message carries a PNG whose parameters name `word` as an embedding."""
    attachments = sim.channel_message(message_id).attachments
    assert attachments, "the result has no image"
    data = await attachments[0].read()
    assert data.startswith(b"\x89PNG")
    assert word in read_parameters(data)


async def _imagine(
    sim: Simulation, member: MemberActor, model: str, prompt: str, **options: Any
) -> tuple[InteractionResult, Job]:
    """`/imagine` on `model`; the interaction's result and the job it queued."""
    result = await member.slash(sim.channel, "imagine", prompt=prompt, model=model, **options)
    return result, await sim.latest_job(member)


async def test_two_models_two_workers_one_killed(
    tmp_path: Path, redis_server: RedisServer, workers: Workers
) -> None:
    """Train and render on sd and xl, each on the worker holding it; a word of one family is
    refused on the other; the xl worker killed mid-job leaves sd working and xl's jobs waiting,
    with a sentence, until a new xl worker runs them."""
    workers.cli_holding("sd-worker", MODELS, "sd")
    xl_worker = workers.cli_holding("xl-worker", MODELS, "xl")
    settings = make_settings(
        tmp_path / "data",
        "",
        model_list=MODELS,
        queue=redis_server.url,
        lease_seconds=LEASE_SECONDS,
        train_steps=4,
        max_steps=60,
    )
    async with simulated(settings) as sim:
        events = observe_events(sim.app)
        await sim.until(
            lambda: all(sim.app.scheduler.is_served(m) for m in ("sd", "xl")),
            limit=300,
            what="a worker for each model",
        )
        alice = sim.member("alice")

        # A word trained on each model: the embedding records its model's family.
        trains = {}
        for model, word in (("sd", "sdzorb"), ("xl", "xlzorb")):
            await alice.slash(sim.channel, "train", name=word, model=model, **photo_options())
            trains[model] = (await sim.latest_job(alice)).id
        for model, job_id in trains.items():
            await _done(sim, job_id, model)
        families = {
            e.name_folded: e.family.value
            for e in await sim.app.storage.embeddings.list_owned(alice.id)
        }
        assert families == {"sdzorb": "tiny", "xlzorb": "tiny-sdxl"}

        # Each word renders on its own model.
        renders = {}
        for model, word in (("sd", "sdzorb"), ("xl", "xlzorb")):
            result, job = await _imagine(sim, alice, model, f"a photo of {word}", seed=7)
            await _done(sim, job.id, model)
            await _rendered_with(sim, result.response.id, word)
            renders[model] = job.id

        # Across families: one sentence naming both, suggesting the model that fits; no job.
        jobs_before = len(await sim.app.storage.jobs.list_for_user(alice.id, states=None))
        refused = await alice.slash(sim.channel, "imagine", prompt="a xlzorb", model="sd")
        assert refusal(refused) == (
            "**xlzorb** was trained for the tiny SDXL test model, but **sd** is the tiny test "
            "model; try model **xl**."
        )
        refused = await alice.slash(sim.channel, "imagine", prompt="a sdzorb", model="xl")
        assert refusal(refused) == (
            "**sdzorb** was trained for the tiny test model, but **xl** is the tiny SDXL test "
            "model; try model **sd**."
        )
        assert len(await sim.app.storage.jobs.list_for_user(alice.id, states=None)) == jobs_before

        # The xl worker is SIGKILLed while it renders a long xl job.
        long, long_job = await _imagine(sim, alice, "xl", "a long xlzorb", steps=60, count=2)
        await sim.until(
            lambda: any(isinstance(e, JobStarted) and e.job_id == long_job.id for e in events),
            what="the long xl job to start",
        )
        xl_worker.kill(signal.SIGKILL)
        await sim.until(
            lambda: any(isinstance(e, WorkerLost) for e in events),
            limit=60,
            what="the bot to notice the killed worker",
        )
        assert not sim.app.scheduler.is_served("xl")
        # Its member is told, not left with a frozen progress bar.
        stopped = (
            f"The worker stopped during **a long xlzorb** (job #{long_job.id}); it will run "
            "again, waiting for a worker that serves **xl**; it starts when one is back, or "
            "`/cancel` it and pick another `model:`."
        )
        await sim.until(
            lambda: sim.channel_message(long.response.id).content == stopped,
            limit=30,
            what="the interrupted job's message to say the worker stopped",
        )

        # xl's jobs wait and say so; the family check still holds; sd keeps working meanwhile.
        waiting, parked = await _imagine(sim, alice, "xl", "a parked xlzorb", seed=3)
        assert waiting.response.content == (
            f"Queued **a parked xlzorb** (job #{parked.id}) — waiting for a worker that serves "
            "**xl**; it starts when one is back, or `/cancel` it and pick another `model:`."
        )
        refused = await alice.slash(sim.channel, "imagine", prompt="a sdzorb", model="xl")
        assert refusal(refused).startswith("**sdzorb** was trained for the tiny test model")
        result, flowing = await _imagine(sim, alice, "sd", "a flowing sdzorb", seed=4)
        # The two xl jobs parked ahead of it are not in its line: it is next (or already off).
        announced = result.response.content
        assert announced.startswith("Starting") or " — next up, " in announced, announced
        await _done(sim, flowing.id, "sd")
        await _rendered_with(sim, result.response.id, "sdzorb")
        for job_id in (long_job.id, parked.id):
            job = await sim.app.storage.jobs.get(job_id)
            assert job.state is JobState.QUEUED
            assert sim.app.scheduler.waiting_for(job) == "xl"

        # A replacement xl worker runs both: the interrupted job as its second attempt.
        workers.cli_holding("xl-worker-2", MODELS, "xl")
        assert (await _done(sim, long_job.id, "xl")).attempts == 2
        assert (await _done(sim, parked.id, "xl")).attempts == 1

        # Every job ran where its model is held, and finished there.
        name_of_pid = {w.pid: w.worker_id for w in workers.started}

        def runner(worker_id: str) -> str:
            return name_of_pid[int(worker_id.rsplit("-", 2)[1])]

        started = [(e.job_id, runner(e.worker_id)) for e in events if isinstance(e, JobStarted)]
        finished = {
            e.job_id: runner(e.worker_id) for e in events if isinstance(e, GenerateDone | TrainDone)
        }
        assert sorted(started) == sorted(
            [
                (trains["sd"], "sd-worker"),
                (trains["xl"], "xl-worker"),
                (renders["sd"], "sd-worker"),
                (renders["xl"], "xl-worker"),
                (long_job.id, "xl-worker"),
                (flowing.id, "sd-worker"),
                (long_job.id, "xl-worker-2"),
                (parked.id, "xl-worker-2"),
            ]
        )
        assert finished == {
            trains["sd"]: "sd-worker",
            trains["xl"]: "xl-worker",
            renders["sd"]: "sd-worker",
            renders["xl"]: "xl-worker",
            flowing.id: "sd-worker",
            long_job.id: "xl-worker-2",
            parked.id: "xl-worker-2",
        }
        assert [runner(e.worker_id) for e in events if isinstance(e, WorkerLost)] == ["xl-worker"]

        worker_ids = {e.worker_id for e in events if isinstance(e, JobStarted)}
        assert assert_nothing_internal_was_shown(sim, worker_ids) > 20
    await assert_redis_clean(redis_server.client())
