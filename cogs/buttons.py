"""The buttons on results and embedding cards, and the extension that registers every
persistent button (see `cogs.persistent` for how they survive a restart)."""

from __future__ import annotations

import discord

from bot.discord_bot import LexiconBot
from bot.services import ImagineOptions, ServiceError
from cogs.common import actor_of, check_rate, shorten
from cogs.images import parse_parameters
from cogs.library import LibraryPageButton
from cogs.persistent import PersistentButton
from cogs.queueing import CancelButton, queue_imagine
from engine.jobs import GenerateRequest, TrainRequest
from engine.png import read_parameters
from storage.models import Embedding, EmbeddingKind

TRY_PROMPTS = {"style": "a painting in the style of <{}>", "face": "a portrait photo of <{}>"}


class RerollButton(PersistentButton, action="reroll", fields=("job", "idx")):
    """The same request again with a new seed, queued for whoever clicks."""

    label = "Reroll"
    style = discord.ButtonStyle.primary

    async def pressed(self, interaction: discord.Interaction[LexiconBot]) -> None:
        await self._reroll(interaction)

    async def _reroll(self, interaction: discord.Interaction[LexiconBot]) -> None:
        check_rate(interaction)
        job = await interaction.client.app.storage.jobs.get(self.value("job"))
        await queue_imagine(
            interaction, ImagineOptions.again(GenerateRequest.from_params(job.params))
        )


class InfoButton(PersistentButton, action="info", fields=("job", "idx")):
    """What made this image, read from the `parameters` chunk of the stored PNG (private)."""

    label = "Info"

    async def pressed(self, interaction: discord.Interaction[LexiconBot]) -> None:
        await self._info(interaction)

    async def _info(self, interaction: discord.Interaction[LexiconBot]) -> None:
        images = interaction.client.app.storage.images
        png = await images.read_png(await images.get(self.value("job"), self.value("idx")))
        info = parse_parameters(read_parameters(png))
        lines = [f"**Prompt** {shorten(info.prompt, 900)}"]
        if info.negative:
            lines.append(f"**Negative** {shorten(info.negative, 500)}")
        lines.append(f"**Seed** {info.seed or '?'}")
        lines.append(f"**Embeddings** {', '.join(info.embeddings) or 'none'}")
        shown = ("Steps", "Sampler", "CFG scale", "Size", "Model hash")
        settings = [f"{key} {info.settings[key]}" for key in shown if key in info.settings]
        if settings:
            lines.append(" · ".join(settings))
        await interaction.response.send_message("\n".join(lines), ephemeral=True)


class DeleteButton(PersistentButton, action="delete", fields=("job",)):
    """Remove the result message; only the person whose job it was may."""

    label = "Delete"
    style = discord.ButtonStyle.danger

    async def pressed(self, interaction: discord.Interaction[LexiconBot]) -> None:
        await self._delete(interaction)

    async def _delete(self, interaction: discord.Interaction[LexiconBot]) -> None:
        job = await interaction.client.app.storage.jobs.get(self.value("job"))
        if job.user_id != interaction.user.id:
            raise ServiceError("Only the person who asked for these images can delete them.")
        await interaction.response.defer()
        await interaction.delete_original_response()


class TryButton(PersistentButton, action="try", fields=("embedding",)):
    """Render a first image with a fresh embedding, for whoever clicks (if they may use it)."""

    label = "Try it"
    style = discord.ButtonStyle.primary

    async def pressed(self, interaction: discord.Interaction[LexiconBot]) -> None:
        await self._try(interaction)

    async def _try(self, interaction: discord.Interaction[LexiconBot]) -> None:
        check_rate(interaction)
        app = interaction.client.app
        embedding = await app.storage.embeddings.get(self.value("embedding"), interaction.user.id)
        job = await app.storage.jobs.get(embedding.job_id) if embedding.job_id else None
        kind = TrainRequest.from_params(job.params).kind if job is not None else "object"
        prompt = TRY_PROMPTS.get(kind, "a photo of <{}>").format(embedding.name_folded)
        await queue_imagine(interaction, ImagineOptions(prompt))


class ShareButton(PersistentButton, action="share", fields=("embedding",)):
    """Put an embedding in this server's library (its owner only; the library service checks)."""

    label = "Share"

    async def pressed(self, interaction: discord.Interaction[LexiconBot]) -> None:
        await self._share(interaction)

    async def _share(self, interaction: discord.Interaction[LexiconBot]) -> None:
        library = interaction.client.app.library
        shared = await library.share_by_id(actor_of(interaction), self.value("embedding"))
        await interaction.response.send_message(
            f"**{shared.name}** is in the shared library now; anyone can write "
            f"`<{shared.name_folded}>`.",
            ephemeral=True,
        )


def result_view(job_id: int, indices: list[int]) -> discord.ui.View:
    """Reroll and Info per image (one row each), and one Delete for the message."""
    view = discord.ui.View(timeout=None)
    single = len(indices) == 1
    for row, idx in enumerate(indices[:4]):
        suffix = "" if single else f" {idx + 1}"
        view.add_item(RerollButton(job_id, idx, label=f"Reroll{suffix}", row=0 if single else row))
        view.add_item(InfoButton(job_id, idx, label=f"Info{suffix}", row=0 if single else row))
    view.add_item(DeleteButton(job_id, row=0 if single else min(len(indices), 4)))
    return view


def card_view(embedding: Embedding) -> discord.ui.View | None:
    view = discord.ui.View(timeout=None)
    if embedding.kind is EmbeddingKind.POSITIVE:
        view.add_item(TryButton(embedding.id))
    if not embedding.is_shared:
        view.add_item(ShareButton(embedding.id))
    return view if view.children else None


PERSISTENT_BUTTONS: tuple[type[PersistentButton], ...] = (
    CancelButton,
    RerollButton,
    InfoButton,
    DeleteButton,
    TryButton,
    ShareButton,
    LibraryPageButton,
)


async def setup(bot: LexiconBot) -> None:
    bot.add_dynamic_items(*PERSISTENT_BUTTONS)


async def teardown(bot: LexiconBot) -> None:
    bot.remove_dynamic_items(*PERSISTENT_BUTTONS)
