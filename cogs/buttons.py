"""Persistent buttons: everything they need is in their `custom_id` or in SQLite.

Each button is a `DynamicItem` whose template parses ids out of the custom id
(`lexicon:reroll:<job_id>:<idx>`), so a button on a message posted before a restart still works:
`setup_hook` registers the classes in `PERSISTENT_ITEMS`, and discord.py rebuilds the item from
the clicked component. Buttons have no command tree, so each callback sends its failures to the
same error path the commands use.
"""

from __future__ import annotations

import re
from typing import Any

import discord

from bot.services import ServiceError
from cogs._common import actor_of, check_rate, lexicon_bot, shorten
from cogs._flows import CancelButton, guarded, queue_imagine
from cogs._images import parse_parameters
from cogs._library import LibraryPageButton
from engine.png import read_parameters
from storage.models import Embedding, EmbeddingKind

TRY_PROMPTS = {"style": "a painting in the style of <{}>", "face": "a portrait photo of <{}>"}


class RerollButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"lexicon:reroll:(?P<job>[0-9]+):(?P<idx>[0-9]+)",
):
    """The same request again with a new seed, queued for whoever clicks."""

    def __init__(self, job_id: int, idx: int, label: str = "Reroll", row: int | None = None):
        super().__init__(
            discord.ui.Button(
                label=label,
                style=discord.ButtonStyle.primary,
                custom_id=f"lexicon:reroll:{job_id}:{idx}",
                row=row,
            )
        )
        self.job_id, self.idx = job_id, idx

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str]
    ) -> RerollButton:
        return cls(int(match["job"]), int(match["idx"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await guarded(interaction, self._reroll(interaction))

    async def _reroll(self, interaction: discord.Interaction[Any]) -> None:
        check_rate(interaction)
        job = await lexicon_bot(interaction).app.storage.jobs.get(self.job_id)
        params = job.params
        await queue_imagine(
            interaction,
            str(params["prompt"]),
            negative=str(params.get("negative", "")),
            count=1,
            steps=int(params["steps"]),
            guidance=float(params["guidance"]),
            size=f"{params['width']}x{params['height']}",
            scheduler=str(params["scheduler"]),
        )


class InfoButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"lexicon:info:(?P<job>[0-9]+):(?P<idx>[0-9]+)",
):
    """What made this image, read from the `parameters` chunk of the stored PNG (private)."""

    def __init__(self, job_id: int, idx: int, label: str = "Info", row: int | None = None):
        super().__init__(
            discord.ui.Button(
                label=label,
                style=discord.ButtonStyle.secondary,
                custom_id=f"lexicon:info:{job_id}:{idx}",
                row=row,
            )
        )
        self.job_id, self.idx = job_id, idx

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str]
    ) -> InfoButton:
        return cls(int(match["job"]), int(match["idx"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await guarded(interaction, self._info(interaction))

    async def _info(self, interaction: discord.Interaction[Any]) -> None:
        images = lexicon_bot(interaction).app.storage.images
        png = await images.read_png(await images.get(self.job_id, self.idx))
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


class DeleteButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"lexicon:delete:(?P<job>[0-9]+)"
):
    """Remove the result message; only the person whose job it was may."""

    def __init__(self, job_id: int, row: int | None = None):
        super().__init__(
            discord.ui.Button(
                label="Delete",
                style=discord.ButtonStyle.danger,
                custom_id=f"lexicon:delete:{job_id}",
                row=row,
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str]
    ) -> DeleteButton:
        return cls(int(match["job"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await guarded(interaction, self._delete(interaction))

    async def _delete(self, interaction: discord.Interaction[Any]) -> None:
        job = await lexicon_bot(interaction).app.storage.jobs.get(self.job_id)
        if job.user_id != interaction.user.id:
            raise ServiceError("Only the person who asked for these images can delete them.")
        await interaction.response.defer()
        await interaction.delete_original_response()


class TryButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"lexicon:try:(?P<embedding>[0-9]+)"
):
    """Render a first image with a fresh embedding, for whoever clicks (if they may use it)."""

    def __init__(self, embedding_id: int):
        super().__init__(
            discord.ui.Button(
                label="Try it",
                style=discord.ButtonStyle.primary,
                custom_id=f"lexicon:try:{embedding_id}",
            )
        )
        self.embedding_id = embedding_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str]
    ) -> TryButton:
        return cls(int(match["embedding"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await guarded(interaction, self._try(interaction))

    async def _try(self, interaction: discord.Interaction[Any]) -> None:
        check_rate(interaction)
        app = lexicon_bot(interaction).app
        embedding = await app.storage.embeddings.get(self.embedding_id, interaction.user.id)
        job = await app.storage.jobs.get(embedding.job_id) if embedding.job_id else None
        kind = str(job.params.get("kind", "object")) if job is not None else "object"
        prompt = TRY_PROMPTS.get(kind, "a photo of <{}>").format(embedding.name_folded)
        await queue_imagine(interaction, prompt)


class ShareButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"lexicon:share:(?P<embedding>[0-9]+)"
):
    """Put an embedding in the shared library (its owner only; storage checks)."""

    def __init__(self, embedding_id: int):
        super().__init__(
            discord.ui.Button(
                label="Share",
                style=discord.ButtonStyle.secondary,
                custom_id=f"lexicon:share:{embedding_id}",
            )
        )
        self.embedding_id = embedding_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str]
    ) -> ShareButton:
        return cls(int(match["embedding"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await guarded(interaction, self._share(interaction))

    async def _share(self, interaction: discord.Interaction[Any]) -> None:
        embeddings = lexicon_bot(interaction).app.storage.embeddings
        shared = await embeddings.share(actor_of(interaction), self.embedding_id)
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
        view.add_item(RerollButton(job_id, idx, f"Reroll{suffix}", row=0 if single else row))
        view.add_item(InfoButton(job_id, idx, f"Info{suffix}", row=0 if single else row))
    view.add_item(DeleteButton(job_id, row=0 if single else min(len(indices), 4)))
    return view


def card_view(embedding: Embedding) -> discord.ui.View | None:
    view = discord.ui.View(timeout=None)
    if embedding.kind is EmbeddingKind.POSITIVE:
        view.add_item(TryButton(embedding.id))
    if not embedding.is_shared:
        view.add_item(ShareButton(embedding.id))
    return view if view.children else None


PERSISTENT_ITEMS: tuple[type[discord.ui.DynamicItem[Any]], ...] = (
    CancelButton,
    RerollButton,
    InfoButton,
    DeleteButton,
    TryButton,
    ShareButton,
    LibraryPageButton,
)
