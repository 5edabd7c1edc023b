"""Results reach the user through restarts, token expiry and throttled progress."""

from __future__ import annotations

import asyncio
import io
import itertools
import math
import time
from pathlib import Path

from PIL import Image

from bot.hub import JobUpdate
from cogs.delivery import EDIT_INTERVAL
from tests.e2e.conftest import SLOW_STEP_SECONDS, photo_options, standin_settings
from tests.simulation import Simulation, simulated


async def test_buttons_on_old_results_work_after_a_restart(sim: Simulation) -> None:
    """Reroll and Info on a message posted before `restart_bot()` still answer."""
    alice, bob = sim.member("alice"), sim.member("bob")
    before = await alice.slash(sim.channel, "imagine", prompt="a red cube", seed=7)
    first = await sim.job_done(alice)
    await sim.restart_bot()

    info = await bob.click(before.response, label="Info")
    assert info.ephemeral
    assert "**Prompt** a red cube" in info.response.content
    assert "**Seed** 7" in info.response.content

    reroll = await bob.click(before.response, label="Reroll")
    again = await sim.job_done(bob)
    assert again.id != first.id and again.user_id == bob.id
    assert again.params["prompt"] == "a red cube" and again.params["seed"] != 7
    assert reroll.response is not None and reroll.response.attachments


async def test_a_job_queued_before_a_restart_is_delivered(slow_sim: Simulation) -> None:
    """A job still running when the bot restarts runs again and reaches its message."""
    sim = slow_sim
    alice = sim.member("alice")
    result = await alice.slash(sim.channel, "imagine", prompt="a slow cube", steps=12)
    job = await sim.latest_job(alice)
    assert not job.is_final
    await sim.restart_bot()
    done = await sim.job_done(job.id)
    assert done.state.value == "succeeded"
    message = sim.channel_message(result.response.id)
    assert message.attachments and message.attachments[0].filename.endswith(".png")
    assert [c["label"] for c in message.components[0].to_dict()["components"]] == [
        "Reroll",
        "Delete",
    ]
    assert [c["label"] for c in message.components[1].to_dict()["components"]][-1] == "Info"


async def test_a_long_job_is_delivered_to_the_channel_after_the_token_expires(
    slow_sim: Simulation,
) -> None:
    """Past the 15-minute token, the result is a channel reply that mentions the user."""
    sim = slow_sim
    alice = sim.member("alice")
    result = await alice.slash(sim.channel, "train", name="zorb", **photo_options())
    original = result.response
    await sim.advance_time(16 * 60)
    job = await sim.job_done(alice)
    assert job.state.value == "succeeded"
    replies = [m for m in sim.channel.history() if m.reference is not None]
    assert len(replies) == 1
    reply = replies[0]
    assert reply.reference.message_id == original.id
    assert reply.content.startswith(f"<@{alice.id}> **zorb** is ready")
    assert alice.id in [user.id for user in reply.mentions]
    assert reply.embeds[0].title == "zorb"
    assert "see the reply below" in sim.channel_message(original.id).content


class _StampedLog(list):  # type: ignore[type-arg]
    """SimCord's request log, stamping each request with the moment Discord received it, on
    the bot's clock (SimCord's virtual `time.monotonic`, which the throttle reads too)."""

    def __init__(self, entries: list[object]) -> None:
        super().__init__(entries)
        self.times = [-math.inf] * len(entries)

    def append(self, entry: object) -> None:
        self.times.append(time.monotonic())
        super().append(entry)


async def test_progress_edits_are_throttled(tmp_path: Path) -> None:
    """Every-step progress reaches the job's message at most once per 2 s of real time."""
    settings = standin_settings(tmp_path / "data", train_steps=24, train_slice_steps=1)
    async with simulated(settings, standin_step_seconds=SLOW_STEP_SECONDS) as sim:
        requests = sim.env.backend.http_requests = _StampedLog(sim.env.http_requests)
        alice = sim.member("alice")
        result = await alice.slash(sim.channel, "train", name="zorb", **photo_options())
        deadline = asyncio.get_running_loop().time() + 120
        while not (await sim.latest_job(alice)).delivered:
            assert asyncio.get_running_loop().time() < deadline, "the training never arrived"
            await asyncio.sleep(0.05)
        await sim.settle()
        edits = [  # (when Discord received it, content) of each edit of its message
            (when, (entry.json if isinstance(entry.json, dict) else {}).get("content") or "")
            for when, entry in zip(requests.times, requests, strict=True)
            if entry.method == "PATCH" and "/webhooks/" in entry.path
        ]
        progress = [t for t, content in edits if content.startswith(("Training", "Started"))]
        assert len(progress) >= 2, edits
        assert len(progress) < 24 / 2, edits  # far fewer edits than progress reports
        # Every edit before the result (queued, started, progress); the result itself is
        # delivered at once, not held back by the throttle.
        shown = [t for t, content in edits if content.startswith(("Queued", "Started", "Training"))]
        assert edits[0][1].startswith("Queued"), edits  # the announcement, then progress
        gaps = [later - earlier for earlier, later in itertools.pairwise(shown)]
        assert min(gaps) >= EDIT_INTERVAL - 0.05, edits
        assert "step 24/24" not in result.response.content  # replaced by the card
        assert result.response.embeds[0].title == "zorb"


async def test_progress_shows_the_live_preview(slow_sim: Simulation) -> None:
    """A progress update that carries a preview image puts it on the job's message."""
    sim = slow_sim
    alice = sim.member("alice")
    result = await alice.slash(sim.channel, "imagine", prompt="a slow cube", steps=40)
    job = await sim.latest_job(alice)
    preview = _png(32)
    sim.app.hub.publish(
        JobUpdate(job.id, alice.id, "progress", step=3, total=40, preview_png=preview)
    )

    def shows_preview() -> bool:
        message = sim.channel_message(result.response.id)
        return [a.filename for a in message.attachments] == ["preview.png"]

    await sim.until(shows_preview, limit=30, what="the preview on the progress message")
    message = sim.channel_message(result.response.id)
    assert await message.attachments[0].read() == preview
    assert message.content.startswith("Imagining **a slow cube**")
    await alice.click(message, label="Cancel")
    await sim.job_done(job.id)


async def test_training_shows_a_preview_half_way(slow_sim: Simulation) -> None:
    """Half way through training, the progress message shows the word's first render."""
    sim = slow_sim
    alice = sim.member("alice")
    result = await alice.slash(sim.channel, "train", name="zorb", **photo_options())

    def shows_preview() -> bool:
        message = sim.channel_message(result.response.id)
        return [a.filename for a in message.attachments] == ["preview.png"]

    await sim.until(shows_preview, limit=60, what="the halfway preview")
    message = sim.channel_message(result.response.id)
    assert message.content.startswith("Training **zorb**"), message.content
    assert not (await sim.latest_job(alice)).is_final
    with Image.open(io.BytesIO(await message.attachments[0].read())) as image:
        assert (image.format, image.size) == ("PNG", (32, 32))
    job = await sim.job_done(alice)
    assert job.state.value == "succeeded"


def _png(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


async def test_the_same_bot_logging_in_again_keeps_working(sim: Simulation) -> None:
    """SimCord's plain `env.restart_bot()` (same bot object) reloads the cogs cleanly."""
    alice = sim.member("alice")
    before = await alice.slash(sim.channel, "imagine", prompt="a red cube", seed=3)
    await sim.job_done(alice)
    await sim.env.restart_bot()
    assert sim.bot.failed_extensions == {}
    info = await alice.click(before.response, label="Info")
    assert "**Seed** 3" in info.response.content
    after = await alice.slash(sim.channel, "imagine", prompt="a blue cube")
    await sim.job_done(alice)
    assert sim.channel_message(after.response.id).attachments
