"""A job whose model must be loaded first says so where its ETA is shown: the queued message and
`/queue` read "(includes ~12 s to load **b**)". The stand-in worker holds both models resident,
so the worker's switch reports (`ModelSwitched`, what a worker short of memory sends: proven in
tests/engine/test_worker_models.py) are handed to the scheduler here with a known load time."""

from __future__ import annotations

import re
from pathlib import Path

from engine import protocol
from tests.e2e.conftest import SLOW_STEP_SECONDS, standin_settings
from tests.simulation import simulated


async def test_the_eta_says_how_long_loading_the_model_takes(tmp_path: Path) -> None:
    """b was evicted after a 12 s load: a job for b waiting behind a's says it includes ~12 s
    to load b, in the queued message and in /queue; a job for a says nothing of loading."""
    settings = standin_settings(tmp_path / "data", model_list="a=standin,b=standin")
    async with simulated(settings, standin_step_seconds=SLOW_STEP_SECONDS) as sim:
        scheduler = sim.app.scheduler
        [worker_id] = scheduler._workers  # the one local worker
        await scheduler.handle(protocol.ModelSwitched(worker_id, "b", 12.0, ("b",)))
        await scheduler.handle(protocol.ModelSwitched(worker_id, "a", 3.0, ("a",)))

        alice, bob, cy = sim.member("alice"), sim.member("bob"), sim.member("cy")
        first = await alice.slash(sim.channel, "imagine", prompt="a red cube", steps=20, model="a")
        await sim.until(
            lambda: not sim.channel_message(first.response.id).content.startswith("Queued"),
            limit=30,
            what="alice's job to start",
        )
        waiting = await bob.slash(sim.channel, "imagine", prompt="a green cone", model="b")
        shown = waiting.response.content
        assert re.fullmatch(
            r"Queued \*\*a green cone\*\* \(job #\d+\) — next up, expected to start "
            r"<t:\d+:R> \(includes ~12 s to load \*\*b\*\*\)\.",
            shown,
        ), shown
        listed = await bob.slash(sim.channel, "queue")
        assert "(includes ~12 s to load **b**)" in listed.response.content

        same = await cy.slash(sim.channel, "imagine", prompt="a blue ball", model="a")
        assert "Queued" in same.response.content
        assert "to load" not in same.response.content
        for member in (alice, bob, cy):
            await sim.job_done(member)
