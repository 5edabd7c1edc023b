"""Per-member command rate limiting (`LEXICON_RATE_LIMIT`), on top of the queue cap."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from simcord.results import InteractionResult

from bot.config import Settings
from bot.ratelimit import RateLimiter
from tests.bot.conftest import make_settings
from tests.e2e.conftest import photo_options, refusal
from tests.hardening.conftest import record_downloads, standin_settings, stored
from tests.simulation import Simulation, simulated


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_limiter_allows_n_per_sliding_minute() -> None:
    """N commands pass, the next waits until the oldest leaves the 60 s window, not longer."""
    clock = FakeClock()
    limiter = RateLimiter(3, clock=clock)
    for step in range(3):
        assert limiter.acquire(1) == 0.0
        clock.now += 10.0 if step < 2 else 0.0
    assert limiter.acquire(1) == pytest.approx(40.0)  # the first was at 1000, now is 1020
    assert limiter.acquire(2) == 0.0  # another member has their own budget
    clock.now += 40.0
    assert limiter.acquire(1) == 0.0
    assert limiter.acquire(1) == pytest.approx(10.0)  # refused ones were not counted


def test_the_limiter_forgets_idle_members() -> None:
    """Memory is bounded by the members active in the last window or two."""
    clock = FakeClock()
    limiter = RateLimiter(5, clock=clock)
    for user in range(5000):
        limiter.acquire(user)
    assert len(limiter._log) == 5000
    clock.now += 60.0
    limiter.acquire(999_999)
    assert len(limiter._log) == 1


def test_the_refusal_is_one_sentence_with_a_whole_number_of_seconds() -> None:
    """Retry times are rounded up, never "0 s"."""
    limiter = RateLimiter(20)
    assert limiter.refusal(0.2) == (
        "You have used 20 commands in the last minute, the most allowed; try again in 1 s."
    )
    assert limiter.refusal(41.01).endswith("try again in 42 s.")


@pytest.fixture
def limited_settings(tmp_path: Path) -> Settings:
    return standin_settings(tmp_path / "data", rate_limit=3)


@pytest.fixture
async def limited(limited_settings: Settings) -> AsyncIterator[Simulation]:
    async with simulated(limited_settings) as simulation:
        yield simulation


def accepted(result: InteractionResult) -> bool:
    """The command was taken: its answer is the job's public message, not a private refusal
    (whose text moves on from "Queued" as fast as the stand-in worker finishes)."""
    return result.response is not None and not result.response.ephemeral


async def test_the_fourth_command_in_a_minute_is_refused_until_the_window_passes(
    limited: Simulation,
) -> None:
    """At 3 per minute: the 4th GPU command gets a sentence with the wait; 60 s later it runs;
    look-ups are not counted."""
    sim = limited
    alice, bob = sim.member("alice"), sim.member("bob")
    for _ in range(3):
        answer = await alice.slash(sim.channel, "imagine", prompt="a red cube")
        assert accepted(answer)
        await sim.job_done(alice)
    before = await stored(sim.app)
    refused = await alice.slash(sim.channel, "imagine", prompt="a red cube")
    sentence = refusal(refused)  # the jobs took some (virtual) seconds of the minute
    assert re.fullmatch(
        r"You have used 3 commands in the last minute, the most allowed; try again in (\d+) s\.",
        sentence,
    )
    wait = int(sentence.rsplit(" ", 2)[-2])
    assert await stored(sim.app) == before
    looked = await alice.slash(sim.channel, "queue")  # a look-up is not counted
    assert looked.response.content == "You have no jobs waiting or running."
    other = await bob.slash(sim.channel, "imagine", prompt="a red cube")  # his own budget
    assert accepted(other)
    await sim.job_done(bob)
    later = await alice.slash(sim.channel, "imagine", prompt="a red cube")
    assert refusal(later).startswith("You have used 3 commands in the last minute")
    await sim.advance_time(wait + 1)
    allowed = await alice.slash(sim.channel, "imagine", prompt="a red cube")
    assert accepted(allowed)
    await sim.job_done(alice)


async def test_a_rate_limited_train_downloads_no_photo(
    limited: Simulation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The limit is checked before the command runs: no attachment is fetched, nothing stored."""
    sim = limited
    alice = sim.member("alice")
    for _ in range(3):
        await alice.slash(sim.channel, "imagine", prompt="a red cube")
        await sim.job_done(alice)
    before = await stored(sim.app)
    fetched = record_downloads(sim, monkeypatch)
    result = await alice.slash(sim.channel, "train", name="zorb", **photo_options())
    assert refusal(result).startswith("You have used 3 commands in the last minute")
    assert fetched == []
    assert await stored(sim.app) == before
    await sim.advance_time(61)
    allowed = await alice.slash(sim.channel, "train", name="zorb", **photo_options())
    assert not allowed.response.ephemeral  # accepted: the public job message, not a refusal
    assert len(fetched) == 3  # the same command, once allowed, does download its photos
    job = await sim.job_done(alice)  # the fast stand-in may finish before we read "Queued"
    assert (job.kind.value, job.state.value) == ("train", "succeeded")


async def test_the_rate_limit_applies_on_top_of_the_queue_cap(tmp_path: Path) -> None:
    """Refusals by the queue cap count too; the rate limit then refuses what the cap would."""
    settings = standin_settings(tmp_path / "data", rate_limit=3, max_queued_per_user=1)
    async with simulated(settings, standin_step_seconds=0.25) as sim:
        alice = sim.member("alice")
        first = await alice.slash(sim.channel, "imagine", prompt="a slow cube", steps=12)
        assert "Queued" in first.response.content
        for _ in range(2):
            capped = await alice.slash(sim.channel, "imagine", prompt="another cube")
            assert refusal(capped).startswith("You already have 1 jobs waiting or running")
        limited = await alice.slash(sim.channel, "imagine", prompt="another cube")
        assert refusal(limited).startswith("You have used 3 commands in the last minute")
        assert (await stored(sim.app)).jobs == 1
        await sim.job_done(alice)


async def test_reroll_clicks_count_and_admin_commands_do_not(limited: Simulation) -> None:
    """A Reroll queues work, so it counts; a manager's /admin commands are never limited."""
    sim = limited
    alice, mia = sim.member("alice"), sim.member("mia", manager=True)
    result = await alice.slash(sim.channel, "imagine", prompt="a red cube")
    await sim.job_done(alice)
    await alice.click(result.response, label="Reroll")
    await sim.job_done(alice)
    third = await alice.click(result.response, label="Reroll")
    await sim.job_done(alice)
    assert third.response is not None
    fourth = await alice.click(result.response, label="Reroll")
    assert fourth.ephemeral
    sentences = [m.content for m in [fourth.response, *fourth.followups] if m is not None]
    assert any(s.startswith("You have used 3 commands in the last minute") for s in sentences)
    assert (await stored(sim.app)).jobs == 3
    for _ in range(5):
        answer = await mia.slash(sim.channel, "admin settings")
        assert answer.response is not None and answer.response.ephemeral


def test_the_default_is_20_per_minute(tmp_path: Path) -> None:
    """LEXICON_RATE_LIMIT defaults to 20 and reads from the environment."""
    assert make_settings(tmp_path, "tiny").rate_limit == 20
    assert Settings.model_validate({"LEXICON_RATE_LIMIT": "7"}).rate_limit == 7
