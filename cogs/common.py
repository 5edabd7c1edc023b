"""Small helpers every cog uses: who is asking, where results go, how times read."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord_bot import LexiconBot
from bot.ratelimit import RateLimiter
from bot.services import ServiceError
from storage.models import Actor, Delivery

TOKEN_LIFETIME = timedelta(minutes=15)


class Refused(ServiceError, app_commands.CheckFailure):
    """A refusal from a cog's `interaction_check`. A `ServiceError`, so the error path shows its
    sentence; a `CheckFailure`, so discord.py hands it to the command tree's error handler."""


class RateLimited(Refused):
    """Too many commands in the last minute."""


def check_rate(interaction: discord.Interaction[LexiconBot]) -> None:
    """Count work that starts the GPU against the member's `LEXICON_RATE_LIMIT`, or refuse it."""
    _acquire(interaction.client.rate_limiter, interaction)


def check_lookup(interaction: discord.Interaction[LexiconBot]) -> None:
    """Count a look-up against the member's much higher `LEXICON_LOOKUP_RATE_LIMIT`."""
    _acquire(interaction.client.lookup_limiter, interaction)


def _acquire(limiter: RateLimiter, interaction: discord.Interaction[LexiconBot]) -> None:
    retry_after = limiter.acquire(interaction.user.id)
    if retry_after:
        raise RateLimited(limiter.refusal(retry_after))


class RateLimitedCog(commands.Cog):
    """A cog whose slash commands all start GPU work: each passes the per-member rate limit."""

    async def interaction_check(self, interaction: discord.Interaction[Any]) -> bool:
        check_rate(interaction)
        return True


class LookupCog(commands.Cog):
    """A cog of look-ups: each passes only the flood ceiling (`LEXICON_LOOKUP_RATE_LIMIT`)."""

    async def interaction_check(self, interaction: discord.Interaction[Any]) -> bool:
        check_lookup(interaction)
        return True


def actor_of(interaction: discord.Interaction[LexiconBot]) -> Actor:
    """The storage `Actor` for whoever triggered the interaction: a manager is someone with
    Manage Server in the server the interaction came from; an owner is in `LEXICON_OWNERS`."""
    guild_id = interaction.guild_id
    is_manager = guild_id is not None and interaction.permissions.manage_guild
    is_owner = interaction.user.id in interaction.client.settings.owners
    return Actor(interaction.user.id, is_manager=is_manager, guild_id=guild_id, is_owner=is_owner)


def delivery_for(interaction: discord.Interaction[LexiconBot], message_id: int | None) -> Delivery:
    """Where a job's progress and result go: the response message, and the interaction token
    for as long as Discord honours it (15 minutes from the interaction)."""
    return Delivery(
        channel_id=interaction.channel_id,
        message_id=message_id,
        interaction_token=interaction.token,
        token_expires_at=interaction.created_at + TOKEN_LIFETIME,
    )


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


MESSAGE_LIMIT = 2000  # characters in one Discord message


def fit_lines(lines: list[str], more: str, limit: int = MESSAGE_LIMIT) -> str:
    """As many whole `lines` as fit in one message; when some do not, a last line says how many
    were left out and, in `more`, where to find them (`…and 7 more: {more}`)."""
    for shown in range(len(lines), -1, -1):
        hidden = len(lines) - shown
        trailer = [f"…and {hidden} more: {more}"] if hidden else []
        text = "\n".join(lines[:shown] + trailer)
        if len(text) <= limit:
            return text
    return shorten(f"…and {len(lines)} more: {more}", limit)


def offer_choices(
    command: app_commands.Command[Any, Any, Any], name: str, values: list[str]
) -> None:
    """Give one option of a cog's (per-instance) command choices known only at run time, such
    as the sizes an operator allows. The parameter is replaced, never mutated, because the
    command copy shares parameter objects with the class-level command."""
    params = command._params
    params[name] = dataclasses.replace(
        params[name],
        choices=[app_commands.Choice(name=value, value=value) for value in values[:25]],
    )


def _size(size: int) -> str:
    if size < 1024 * 1024:
        return f"{size / 1024:.0f} KiB"
    return f"{size / (1024 * 1024):.1f} MiB"


def refuse_oversized(photos: list[discord.Attachment], limit: int) -> None:
    """Refuse a photo by its announced size, before a single byte is downloaded."""
    for position, photo in enumerate(photos, start=1):
        if photo.size > limit:
            raise ServiceError(
                f"Photo {position} ({photo.filename}) is {_size(photo.size)}, over the "
                f"{_size(limit)} limit; send a smaller file."
            )


async def model_choices(
    interaction: discord.Interaction[LexiconBot], current: str
) -> list[app_commands.Choice[str]]:
    """Autocomplete: the configured models whose names contain what was typed, the server's
    default first."""
    names = await interaction.client.app.imagine.model_names(interaction.guild_id)
    typed = current.strip().lower()
    return [app_commands.Choice(name=n, value=n) for n in names if typed in n][:25]
