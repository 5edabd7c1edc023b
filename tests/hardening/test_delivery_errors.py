"""Discord API errors while Lexicon talks to Discord: the result is delivered now through
another route or later by the sweep, never lost and never posted twice."""

from __future__ import annotations

import discord

from cogs.delivery._cog import SWEEP_SECONDS
from storage.models import Job
from tests.simulation import Simulation


def _results(sim: Simulation, job: Job) -> list[discord.Message]:
    """The channel's messages that carry a rendered image of this (the test's only) job."""
    title = f"**{job.params['prompt']}**"
    return [
        m
        for m in sim.channel.history()
        if title in m.content and any(a.filename.endswith(".png") for a in m.attachments)
    ]


async def _sweep(sim: Simulation, times: int = 1) -> None:
    for _ in range(times):
        await sim.advance_time(SWEEP_SECONDS + 1)


async def _finished_while_failing(sim: Simulation, *, status: int, times: int) -> Job:
    """Alice's `/imagine`, finished while every webhook edit fails and the next `times` channel
    posts fail with `status`."""
    alice = sim.member("alice")
    await alice.slash(sim.channel, "imagine", prompt="a red cube")
    sim.env.inject_error("PATCH", "/webhooks/*", status=500, times=None)
    sim.env.inject_error("POST", "/channels/*/messages", status=status, times=times)
    job = await sim.latest_job(alice)
    await sim.until(lambda: _finished(sim, job.id), what="the job to finish")
    return job


async def _delivered(sim: Simulation, job: Job) -> bool:
    return (await sim.app.storage.jobs.get(job.id)).delivered


async def test_a_dead_interaction_token_route_falls_back_to_the_channel(sim: Simulation) -> None:
    """Every webhook edit fails (500): the result goes out at once as a channel reply, once."""
    alice = sim.member("alice")
    result = await alice.slash(sim.channel, "imagine", prompt="a red cube")
    sim.env.inject_error("PATCH", "/webhooks/*", status=500, times=None)
    job = await sim.job_done(alice)
    (posted,) = _results(sim, job)
    assert posted.content.startswith(f"<@{alice.id}> ")
    assert posted.reference is not None and posted.reference.message_id == result.response.id
    await _sweep(sim, 2)
    assert len(_results(sim, job)) == 1  # the sweep does not post it again


async def test_a_short_outage_is_retried_by_the_sweep(sim: Simulation) -> None:
    """Both routes fail once: nothing is marked delivered; the next sweep delivers it once."""
    job = await _finished_while_failing(sim, status=503, times=1)
    assert not await _delivered(sim, job)
    assert _results(sim, job) == []
    await _sweep(sim)
    assert await _delivered(sim, job)
    assert len(_results(sim, job)) == 1
    await _sweep(sim, 2)
    assert len(_results(sim, job)) == 1


async def test_a_long_outage_does_not_drop_the_result(sim: Simulation) -> None:
    """Discord answers 500 for eight sweeps in a row: the result still arrives, once, after."""
    job = await _finished_while_failing(sim, status=500, times=9)
    await _sweep(sim, 8)
    assert _results(sim, job) == []
    assert not await _delivered(sim, job)
    await _sweep(sim)
    assert await _delivered(sim, job)
    assert len(_results(sim, job)) == 1


async def test_a_failed_queued_announcement_still_delivers_once(sim: Simulation) -> None:
    """The "queued" edit fails: the job is not refused after being queued; it arrives once."""
    alice = sim.member("alice")
    sim.env.inject_error("PATCH", "/webhooks/*/messages/@original", status=500, times=1)
    result = await alice.slash(sim.channel, "imagine", prompt="a red cube")
    job = await sim.job_done(alice)
    assert job.state.value == "succeeded"
    assert [m.content for m in result.followups if m.ephemeral] == []  # no error told
    assert len(_results(sim, job)) == 1
    await _sweep(sim, 2)
    assert len(_results(sim, job)) == 1


async def _finished(sim: Simulation, job_id: int) -> bool:
    return (await sim.app.storage.jobs.get(job_id)).is_final
