"""Queueing a job from an interaction, the way `/imagine`, `/train`, Reroll and "Try it" share.

The pattern: acknowledge at once with a public "thinking…" message (its id and the interaction
token become the job's delivery address), submit to the service, then turn the message into
"queued, #N in line" with a Cancel button. Submitting and announcing happen under the delivery
cog's guard, so a job that finishes within those milliseconds is delivered after the
announcement, never overwritten by it (the guard holds only that user's deliveries).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import discord

from bot.services import Submitted
from cogs._common import actor_of, delivery_for, lexicon_bot
from cogs._errors import PUBLIC_DEFER, defer_public, report_error
from cogs._text import queued_text
from storage.models import Delivery

if TYPE_CHECKING:
    from bot.discord_bot import LexiconBot
    from cogs.delivery import Delivery as DeliveryCog

log = logging.getLogger("lexicon.discord.flows")

Submit = Callable[[Delivery], Awaitable[Submitted]]


async def guarded(interaction: discord.Interaction[Any], work: Awaitable[None]) -> None:
    """Run a button's work; any failure goes to the one error path (buttons have no tree)."""
    try:
        await work
    except Exception as error:
        await report_error(interaction, error)


def delivery_cog(bot: LexiconBot) -> DeliveryCog | None:
    from cogs.delivery import Delivery

    cog = bot.get_cog(Delivery.__cog_name__)
    return cog if isinstance(cog, Delivery) else None


@contextlib.asynccontextmanager
async def _submitting(bot: LexiconBot, user_id: int) -> AsyncIterator[None]:
    cog = delivery_cog(bot)
    if cog is None:
        yield
        return
    async with cog.submitting(user_id):
        yield


async def queue_job(
    interaction: discord.Interaction[Any], submit: Submit, *, message_id: int | None = None
) -> Submitted:
    """Acknowledge (unless the caller did: `message_id`), submit with this interaction as the
    delivery address, announce."""
    bot = lexicon_bot(interaction)
    if message_id is None:
        message_id = await defer_public(interaction)
    async with _submitting(bot, interaction.user.id):
        submitted = await submit(delivery_for(interaction, message_id))
        job = submitted.job
        interaction.extras.pop(PUBLIC_DEFER, None)  # the message is the job's now; keep it
        try:
            await interaction.edit_original_response(
                content=queued_text(job, submitted.position, submitted.eta_seconds),
                view=progress_view(job.id),
            )
        except discord.HTTPException as error:
            # The job is queued: never answer it with an error now. Progress edits and the
            # delivery (or its channel fallback) reach the user later.
            log.warning("job %d is queued but its announcement failed: %s", job.id, error)
        cog = delivery_cog(bot)
        if cog is not None:
            cog.note_edit(job.id)
    return submitted


async def queue_imagine(
    interaction: discord.Interaction[Any],
    prompt: str,
    *,
    negative: str = "",
    count: int = 1,
    steps: int | None = None,
    guidance: float = 7.5,
    seed: int | None = None,
    size: str | None = None,
    scheduler: str | None = None,
) -> Submitted:
    app = lexicon_bot(interaction).app
    extra = {"scheduler": scheduler} if scheduler else {}

    async def submit(delivery: Delivery) -> Submitted:
        return await app.imagine.submit(
            interaction.user.id,
            prompt,
            negative=negative,
            count=count,
            steps=steps,
            guidance=guidance,
            seed=seed,
            size=size,
            guild_id=interaction.guild_id,
            delivery=delivery,
            **extra,
        )

    return await queue_job(interaction, submit)


class CancelButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"lexicon:cancel:(?P<job>[0-9]+)"
):
    """Cancel a queued or running job: its owner, or a manager of the server it came from."""

    def __init__(self, job_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Cancel",
                style=discord.ButtonStyle.secondary,
                custom_id=f"lexicon:cancel:{job_id}",
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str]
    ) -> CancelButton:
        return cls(int(match["job"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await guarded(interaction, cancel_job(interaction, self.job_id, quiet=True))


async def cancel_job(interaction: discord.Interaction[Any], job_id: int, *, quiet: bool) -> None:
    """Cancel in the database, then tell the worker; the delivery cog updates the message."""
    app = lexicon_bot(interaction).app
    cancellation = await app.storage.jobs.cancel(actor_of(interaction), job_id)
    await app.scheduler.cancel(cancellation.job, cancellation.stopped_worker)
    if quiet:
        await interaction.response.defer()
    else:
        await interaction.response.send_message(f"Cancelled job #{job_id}.", ephemeral=True)


def progress_view(job_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job_id))
    return view
