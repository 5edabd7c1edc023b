"""The one error path: every failure a user meets ends here as one private sentence.

Order of handling, for app commands (this extension's `setup` makes `report_error` the command
tree's error handler) and buttons (`cogs.persistent`) alike:

1. unwrap discord.py's `CommandInvokeError` to the error the code raised;
2. a refusal the user can act on — `ServiceError`, `StorageError`, `WorkerUnavailable` — shows
   its own sentence; a name storage did not find also says which list shows the names there
   are, and a member at the embeddings limit how to make room;
3. a failed check (missing Manage Server, used in DMs, on cooldown) shows a sentence saying so;
4. anything else is a bug: a generic sentence for the user, the traceback to the log.

The sentence is ephemeral. When the interaction was already acknowledged with a public
"thinking…" message, that message is completed, the sentence follows privately and the public
message is removed, so a refusal never stays in the channel.
"""

from __future__ import annotations

import logging
from typing import Any

import discord
from discord import app_commands

from bot.app import WorkerUnavailable
from bot.discord_bot import LexiconBot
from bot.services import ServiceError
from storage.errors import EmbeddingNotFound, StorageError, TooManyEmbeddings

log = logging.getLogger("lexicon.discord.errors")

PUBLIC_DEFER = "lexicon_public_defer"
GENERIC_SENTENCE = "Something went wrong on Lexicon's side; it has been logged. Try again later."
USER_ERRORS: tuple[type[BaseException], ...] = (ServiceError, StorageError, WorkerUnavailable)
MAKE_ROOM = "delete one with `/embeddings delete` before adding another"
# Where to look instead, by where storage looked for a name it did not find.
LISTS_TO_SEE = {
    "own": "`/embeddings list` shows the ones you have",
    "shared": "`/library` shows what is shared here",
    "either": "`/embeddings list` and `/library` show the names you can use",
}


def unwrap(error: BaseException) -> BaseException:
    """The error the command itself raised, without discord.py's wrappers."""
    while isinstance(error, app_commands.CommandInvokeError | app_commands.TransformerError):
        inner = error.__cause__ if isinstance(error, app_commands.TransformerError) else None
        original = getattr(error, "original", None) or inner
        if original is None:
            break
        error = original
    return error


def user_sentence(error: BaseException) -> str | None:
    """The sentence to show for an expected failure, or None for a bug."""
    error = unwrap(error)
    if isinstance(error, EmbeddingNotFound):
        return f"{str(error).removesuffix('.')}; {LISTS_TO_SEE[error.searched]}."
    if isinstance(error, TooManyEmbeddings):
        return f"{str(error).removesuffix('.')}; {MAKE_ROOM}."
    if isinstance(error, USER_ERRORS):
        return str(error)
    if isinstance(error, app_commands.NoPrivateMessage):
        return "This command works only in a server."
    if isinstance(error, app_commands.MissingPermissions):
        needed = ", ".join(p.replace("_", " ").title() for p in error.missing_permissions)
        return f"You need the {needed} permission to use this command."
    if isinstance(error, app_commands.BotMissingPermissions):
        needed = ", ".join(p.replace("_", " ").title() for p in error.missing_permissions)
        return f"Lexicon needs the {needed} permission here."
    if isinstance(error, app_commands.CommandOnCooldown):
        return f"Slow down: try again in {error.retry_after:.0f} s."
    if isinstance(error, app_commands.CheckFailure):
        return "You cannot use this command here."
    return None


async def report_error(interaction: discord.Interaction[LexiconBot], error: BaseException) -> None:
    """Show the user one sentence; log the traceback when it is a bug."""
    sentence = user_sentence(error)
    if sentence is None:
        original = unwrap(error)
        command = interaction.command.qualified_name if interaction.command else None
        log.error(
            "unexpected error in %s",
            f"/{command}" if command else f"component {interaction.data!r}",
            exc_info=(type(original), original, original.__traceback__),
        )
        sentence = GENERIC_SENTENCE
    try:
        await send_private(interaction, sentence)
    except discord.HTTPException as http_error:
        log.warning("could not tell the user %r: %s", sentence, http_error)


async def defer_public(interaction: discord.Interaction[LexiconBot]) -> int | None:
    """Acknowledge with a public "thinking…" message; returns that message's id."""
    callback = await interaction.response.defer(thinking=True)
    interaction.extras[PUBLIC_DEFER] = True
    message_id = callback.message_id if callback is not None else None
    if message_id is None:
        message_id = (await interaction.original_response()).id
    return message_id


async def send_private(
    interaction: discord.Interaction[LexiconBot], text: str, **kwargs: Any
) -> None:
    """Send `text` only the user sees, whatever state the interaction is in."""
    if not interaction.response.is_done():
        await interaction.response.send_message(text, ephemeral=True, **kwargs)
        return
    if interaction.extras.pop(PUBLIC_DEFER, False):
        # A public "thinking…" cannot turn private: complete it, answer privately, remove it.
        await interaction.edit_original_response(content=text, attachments=[], view=None)
        await interaction.followup.send(text, ephemeral=True, **kwargs)
        try:
            await interaction.delete_original_response()
        except discord.HTTPException as error:
            log.info("could not remove the public placeholder: %s", error)
        return
    await interaction.followup.send(text, ephemeral=True, **kwargs)


async def setup(bot: LexiconBot) -> None:
    """Make `report_error` the command tree's error handler (buttons call it themselves)."""
    bot.tree.error(report_error)


async def teardown(bot: LexiconBot) -> None:
    del bot.tree.on_error  # back to discord.py's own handler, which logs
