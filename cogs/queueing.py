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
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol, cast

import discord

from bot.discord_bot import LexiconBot
from bot.services import ImagineOptions, Submitted, TrainOptions
from cogs.common import actor_of, check_lookup, delivery_for
from cogs.errors import PUBLIC_DEFER, defer_public
from cogs.persistent import PersistentButton
from cogs.text import queued_text
from storage.models import Delivery

log = logging.getLogger("lexicon.discord.queueing")

Submit = Callable[[Delivery], Awaitable[Submitted]]

# The delivery cog's name. It is found by name, not imported: the delivery cog renders results
# with buttons that queue jobs through this module, so an import would close a circle.
DELIVERY_COG = "Delivery"


class DeliveryGuard(Protocol):
    """What queueing needs of the delivery cog (`cogs.delivery.DeliveryCog`)."""

    def submitting(self, user_id: int) -> contextlib.AbstractAsyncContextManager[None]: ...

    def note_edit(self, job_id: int) -> None: ...


def delivery_guard(bot: LexiconBot) -> DeliveryGuard | None:
    cog = bot.get_cog(DELIVERY_COG)
    return cast("DeliveryGuard", cog) if cog is not None else None


@contextlib.asynccontextmanager
async def _submitting(bot: LexiconBot, user_id: int) -> AsyncIterator[None]:
    guard = delivery_guard(bot)
    if guard is None:
        yield
        return
    async with guard.submitting(user_id):
        yield


async def queue_job(
    interaction: discord.Interaction[LexiconBot], submit: Submit, *, message_id: int | None = None
) -> Submitted:
    """Acknowledge (unless the caller did: `message_id`), submit with this interaction as the
    delivery address, announce."""
    bot = interaction.client
    if message_id is None:
        message_id = await defer_public(interaction)
    async with _submitting(bot, interaction.user.id):
        submitted = await submit(delivery_for(interaction, message_id))
        job = submitted.job
        interaction.extras.pop(PUBLIC_DEFER, None)  # the message is the job's now; keep it
        try:
            await interaction.edit_original_response(
                content=queued_text(job, submitted.standing),
                view=progress_view(job.id),
            )
        except discord.HTTPException as error:
            # The job is queued: never answer it with an error now. Progress edits and the
            # delivery (or its channel fallback) reach the user later.
            log.warning("job %d is queued but its announcement failed: %s", job.id, error)
        guard = delivery_guard(bot)
        if guard is not None:
            guard.note_edit(job.id)
    return submitted


async def queue_options(
    interaction: discord.Interaction[LexiconBot],
    submit_options: Callable[..., Awaitable[Submitted]],
    options: ImagineOptions | TrainOptions,
    *,
    message_id: int | None = None,
) -> Submitted:
    """Queue a member's `options` with a service's `submit` (`app.imagine.submit`,
    `app.train.submit`) for whoever interacted (see `queue_job`)."""

    async def submit(delivery: Delivery) -> Submitted:
        return await submit_options(
            interaction.user.id, options, guild_id=interaction.guild_id, delivery=delivery
        )

    return await queue_job(interaction, submit, message_id=message_id)


async def queue_imagine(
    interaction: discord.Interaction[LexiconBot], options: ImagineOptions
) -> Submitted:
    """Queue an `/imagine` (or a button's) for whoever interacted."""
    return await queue_options(interaction, interaction.client.app.imagine.submit, options)


class CancelButton(PersistentButton, action="cancel", fields=("job",)):
    """Cancel a queued or running job: its owner, or a manager of the server it came from."""

    label = "Cancel"

    async def pressed(self, interaction: discord.Interaction[LexiconBot]) -> None:
        check_lookup(interaction)
        await cancel_job(interaction, self.value("job"))


async def cancel_job(interaction: discord.Interaction[LexiconBot], job_id: int) -> None:
    """Cancel in the database, then tell the worker; the delivery cog removes the job's
    message, and the member is told privately."""
    app = interaction.client.app
    cancellation = await app.storage.jobs.cancel(actor_of(interaction), job_id)
    await app.scheduler.cancel(cancellation.job, cancellation.stopped_worker)
    await interaction.response.send_message(f"Cancelled job #{job_id}.", ephemeral=True)


def progress_view(job_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job_id))
    return view
