"""`/admin …`: what server managers (Manage Server) control — limits, blocked words, the default
negative prompt and model, this server's shared embeddings, and who may use Lexicon here.

Discord hides the group from members without Manage Server (default permissions), the cog
checks the permission again on every use (server admins can widen command visibility) and
refuses a manager banned here, and storage refuses changes from anyone who is not a manager of
that server. The operator's `LEXICON_OWNERS` pass everywhere and alone may ban everywhere.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord_bot import LexiconBot
from bot.services import BANNED, GUILD_MAX_QUEUED, ServiceError
from cogs.common import Refused, actor_of, model_choices, shorten
from storage.models import GuildSettings

MANAGE_GUILD = discord.Permissions(manage_guild=True)
EVERYWHERE = "In every server (Lexicon's owners only)"


async def shared_name_choices(
    interaction: discord.Interaction[LexiconBot], current: str
) -> list[app_commands.Choice[str]]:
    shared = await interaction.client.app.storage.embeddings.list_shared(
        current, limit=25, guild_id=interaction.guild_id
    )
    return [app_commands.Choice(name=e.name_folded, value=e.name_folded) for e in shared]


class Admin(commands.Cog):
    def __init__(self, bot: LexiconBot) -> None:
        self.bot = bot

    admin = app_commands.Group(
        name="admin",
        description="Lexicon settings for this server (managers)",
        default_permissions=MANAGE_GUILD,
        guild_only=True,
    )
    blocked = app_commands.Group(
        name="blocked", description="Words refused in prompts and names", parent=admin
    )

    async def interaction_check(self, interaction: discord.Interaction[Any]) -> bool:
        if interaction.guild_id is None:
            raise app_commands.NoPrivateMessage()
        actor = actor_of(interaction)
        if actor.is_owner:
            return True
        if not actor.is_manager:
            raise app_commands.MissingPermissions(["manage_guild"])
        if await self.bot.app.storage.users.is_banned(actor.user_id, actor.guild_id):
            raise Refused(BANNED)  # or a banned manager would lift their own ban
        return True

    async def _update(
        self, interaction: discord.Interaction[LexiconBot], change: Any
    ) -> GuildSettings:
        assert interaction.guild_id is not None
        return await self.bot.app.storage.guilds.update(
            actor_of(interaction), interaction.guild_id, change
        )

    @admin.command(name="settings", description="Show this server's Lexicon settings")
    async def settings(self, interaction: discord.Interaction[LexiconBot]) -> None:
        assert interaction.guild_id is not None
        current = await self.bot.app.storage.guilds.get(interaction.guild_id)
        await interaction.response.send_message(describe(current, self.bot), ephemeral=True)

    @admin.command(name="limits", description="Change the per-user job limit on this server")
    @app_commands.describe(max_queued_per_user="Jobs one user may have waiting or running")
    async def limits(
        self,
        interaction: discord.Interaction[LexiconBot],
        max_queued_per_user: app_commands.Range[int, 1, 1000],
    ) -> None:
        def change(current: GuildSettings) -> GuildSettings:
            limits = {**current.limits, GUILD_MAX_QUEUED: max_queued_per_user}
            return dataclasses.replace(current, limits=limits)

        await self._update(interaction, change)
        await interaction.response.send_message(
            f"Each user may now have {max_queued_per_user} jobs waiting or running here.",
            ephemeral=True,
        )

    @blocked.command(name="add", description="Refuse a word in prompts and names")
    @app_commands.describe(word="The word to refuse")
    async def blocked_add(
        self, interaction: discord.Interaction[LexiconBot], word: app_commands.Range[str, 1, 64]
    ) -> None:
        word, updated = await self._set_blocked(interaction, word, blocked=True)
        await interaction.response.send_message(
            f"Blocked '{word}'. {len(updated.blocked_words)} word(s) are blocked here.",
            ephemeral=True,
        )

    @blocked.command(name="remove", description="Allow a blocked word again")
    @app_commands.describe(word="The word to allow again")
    async def blocked_remove(
        self, interaction: discord.Interaction[LexiconBot], word: app_commands.Range[str, 1, 64]
    ) -> None:
        word, _ = await self._set_blocked(interaction, word, blocked=False)
        await interaction.response.send_message(f"'{word}' is allowed again.", ephemeral=True)

    async def _set_blocked(
        self, interaction: discord.Interaction[LexiconBot], word: str, *, blocked: bool
    ) -> tuple[str, GuildSettings]:
        """Block `word` here, or allow it again: (the word as stored, the new settings). The
        check that a word to allow is blocked runs inside the update, so two managers at once
        cannot both succeed."""
        word = word.strip().casefold()
        if not word:
            raise ServiceError(f"Give a word to {'block' if blocked else 'allow again'}.")

        def change(current: GuildSettings) -> GuildSettings:
            others = tuple(w for w in current.blocked_words if w != word)
            if not blocked and len(others) == len(current.blocked_words):
                raise ServiceError(f"'{word}' is not blocked here.")
            words = (*others, word) if blocked else others
            return dataclasses.replace(current, blocked_words=words)

        return word, await self._update(interaction, change)

    @blocked.command(name="list", description="Show the blocked words")
    async def blocked_list(self, interaction: discord.Interaction[LexiconBot]) -> None:
        assert interaction.guild_id is not None
        words = (await self.bot.app.storage.guilds.get(interaction.guild_id)).blocked_words
        text = ", ".join(words) if words else "No words are blocked here."
        await interaction.response.send_message(shorten(text, 2000), ephemeral=True)

    @admin.command(name="negative", description="Set or clear the default negative prompt")
    @app_commands.describe(prompt="Added to every negative prompt here, e.g. easynegative")
    async def negative(
        self,
        interaction: discord.Interaction[LexiconBot],
        prompt: app_commands.Range[str, 0, 500] | None = None,
    ) -> None:
        text = (prompt or "").strip()
        await self._update(
            interaction,
            lambda current: dataclasses.replace(current, default_negative_prompt=text),
        )
        reply = (
            f"Default negative prompt: `{text}`." if text else "Default negative prompt cleared."
        )
        await interaction.response.send_message(reply, ephemeral=True)

    @admin.command(name="model", description="Set or clear the model a bare /imagine uses here")
    @app_commands.describe(name="One of the configured models; leave out for the default")
    @app_commands.autocomplete(name=model_choices)
    async def model(
        self, interaction: discord.Interaction[LexiconBot], name: str | None = None
    ) -> None:
        chosen = None
        if name is not None:
            chosen = await self.bot.app.imagine.checks.model_for(None, name.strip().lower())
        await self._update(
            interaction, lambda current: dataclasses.replace(current, default_model=chosen)
        )
        default = self.bot.settings.default_model
        reply = (
            f"`/imagine` and `/train` here use **{chosen}** unless a member picks another model."
            if chosen
            else f"This server uses the deployment's default model, **{default}**."
        )
        await interaction.response.send_message(reply, ephemeral=True)

    @admin.command(name="remove", description="Take a shared embedding out of the library")
    @app_commands.describe(name="The shared embedding", delete="Delete it instead of unsharing")
    @app_commands.autocomplete(name=shared_name_choices)
    async def remove(
        self, interaction: discord.Interaction[LexiconBot], name: str, delete: bool = False
    ) -> None:
        library = self.bot.app.library
        actor = actor_of(interaction)
        if delete:
            removed = await library.delete(actor, name)
            reply = f"Deleted **{removed.name}** (it belonged to <@{removed.owner_id}>)."
        else:
            removed = await library.unshare(actor, name)
            reply = f"Took **{removed.name}** out of the library; <@{removed.owner_id}> keeps it."
        await interaction.response.send_message(reply, ephemeral=True)

    @admin.command(name="ban", description="Stop a user from using Lexicon on this server")
    @app_commands.describe(user="Who to ban", everywhere=EVERYWHERE)
    async def ban(
        self,
        interaction: discord.Interaction[LexiconBot],
        user: discord.User,
        everywhere: bool = False,
    ) -> None:
        if user.id == interaction.user.id:
            raise ServiceError("You cannot ban yourself.")
        await self.bot.app.storage.users.set_banned(
            actor_of(interaction), user.id, True, everywhere=everywhere
        )
        where = "anywhere" if everywhere else "on this server"
        await interaction.response.send_message(
            f"{user.mention} can no longer use Lexicon {where}.", ephemeral=True
        )

    @admin.command(name="unban", description="Let a banned user use Lexicon here again")
    @app_commands.describe(user="Who to unban", everywhere=EVERYWHERE)
    async def unban(
        self,
        interaction: discord.Interaction[LexiconBot],
        user: discord.User,
        everywhere: bool = False,
    ) -> None:
        users = self.bot.app.storage.users
        await users.set_banned(actor_of(interaction), user.id, False, everywhere=everywhere)
        if not await users.is_banned(user.id, interaction.guild_id):
            reply = f"{user.mention} can use Lexicon again."
        elif everywhere:
            reply = (
                f"{user.mention} is no longer banned everywhere but still is on this server; "
                "unban them again without 'everywhere'."
            )
        else:
            reply = (
                f"{user.mention} is no longer banned on this server, but Lexicon's operator "
                "banned them everywhere; only an owner can lift that."
            )
        await interaction.response.send_message(reply, ephemeral=True)


def describe(settings: GuildSettings, bot: LexiconBot) -> str:
    limit = settings.limits.get(GUILD_MAX_QUEUED, bot.settings.max_queued_per_user)
    words = ", ".join(settings.blocked_words) or "none"
    negative = settings.default_negative_prompt or "none"
    names = [model.name for model in bot.settings.models]
    model = settings.default_model if settings.default_model in names else names[0]
    return (
        f"**Jobs per user** {limit}\n**Blocked words** {shorten(words, 1200)}\n"
        f"**Default negative prompt** {negative}"
        + (f"\n**Default model** {model}" if len(names) > 1 else "")
    )


async def setup(bot: LexiconBot) -> None:
    await bot.add_cog(Admin(bot))
