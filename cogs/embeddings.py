"""`/embeddings …` (your words: list, info, share, rename, delete, export, import) and `/library`.

Authorization lives in storage (only owners change their embeddings, a server's managers may
remove what is shared there) and bans and blocked words in the library service; these commands
turn the answers into private messages. Names and the library are this server's. Lists name
each word's family and the model it was trained on; `model:` on `/embeddings list` and `/library`
keeps the words that fit that model's family, because members know their models by name.
"""

from __future__ import annotations

import io
from typing import Literal

import discord
from discord import app_commands

from bot.app import Lexicon
from bot.discord_bot import LexiconBot
from bot.services import ServiceError
from cogs.buttons import card_view, trained_as
from cogs.cards import embedding_card, family_words, labelled
from cogs.common import LookupCog, actor_of, check_rate, fit_lines, model_choices
from cogs.library import (
    FILTERS,
    ORDERS,
    QUERY_MAX,
    LibraryPageButton,
    OldLibraryPageButton,
    library_page,
    made_for,
    thumbnail,
)
from cogs.persistent import PersistentButton
from storage.errors import NotFound
from storage.models import Embedding, Family

NAME_OPTION = "An embedding name"
MODEL_FILTER = "Only the embeddings that fit this model (its family)"
NONE_YET = "You have no embeddings yet: `/train` one from photos, or `/embeddings import` a file."


async def usable_name_choices(
    interaction: discord.Interaction[LexiconBot], current: str
) -> list[app_commands.Choice[str]]:
    """Autocomplete: the names this user may use here, their own first (at most 25), each
    shown with the family of models it is made for."""
    words = await interaction.client.app.library.usable(
        interaction.user.id, current.strip(), limit=25, guild_id=interaction.guild_id
    )
    return [
        app_commands.Choice(name=labelled(word.name_folded, word), value=word.name_folded)
        for word in words
    ]


def _none_owned(model: str) -> str:
    """The answer of a filtered `/embeddings list` that keeps nothing."""
    return (
        f"None of your embeddings fits **{model}**; leave out `model:` to see them all, or "
        f"`/train model:{model}` one for it."
    )


def _kib(size: int) -> str:
    return f"{size / 1024:.0f} KiB"


async def card_message(
    app: Lexicon, embedding: Embedding
) -> tuple[list[discord.Embed], list[discord.File]]:
    """The card of a stored embedding (with the model it was trained on, when it was trained
    here), with its training's first preview when it has one."""
    kind, job = await trained_as(app, embedding)
    model = app.scheduler.model_of(job) if job is not None else None
    png = await thumbnail(app, embedding)
    if png is None:
        return embedding_card(embedding, kind=kind, model=model), []
    name = f"{embedding.name_folded}.png"
    files = [discord.File(io.BytesIO(png), filename=name)]
    return embedding_card(embedding, kind=kind, images=[name], model=model), files


class ConfirmDeleteEmbeddingButton(
    PersistentButton, action="embedding-delete-yes", fields=("embedding",)
):
    """Delete an embedding, once `/embeddings delete` was confirmed (storage checks who may)."""

    label = "Delete for good"
    style = discord.ButtonStyle.danger

    async def pressed(self, interaction: discord.Interaction[LexiconBot]) -> None:
        try:
            embedding = await interaction.client.app.library.delete_by_id(
                actor_of(interaction), self.value("embedding")
            )
        except NotFound:
            raise ServiceError(
                "That embedding is already gone; `/embeddings list` shows the ones you have."
            ) from None
        await interaction.response.edit_message(content=f"Deleted **{embedding.name}**.", view=None)


class Embeddings(LookupCog):
    def __init__(self, bot: LexiconBot) -> None:
        self.bot = bot

    embeddings = app_commands.Group(name="embeddings", description="Your embeddings")

    @embeddings.command(name="list", description="List your embeddings")
    @app_commands.describe(model=MODEL_FILTER)
    @app_commands.autocomplete(model=model_choices)
    async def list_(
        self, interaction: discord.Interaction[LexiconBot], model: str | None = None
    ) -> None:
        library = self.bot.app.library
        family = None if model is None else await library.family_filter(interaction.guild_id, model)
        owned = await library.list_owned(interaction.user.id, family)
        if not owned:
            await interaction.response.send_message(
                _none_owned(model) if model is not None else NONE_YET, ephemeral=True
            )
            return
        trained = await library.trained_on(owned)
        lines = [
            f"**{e.name}** · {e.kind.value} · {e.n_vectors} vector{'s' * (e.n_vectors != 1)} · "
            f"{made_for(e, trained.get(e.id))} · {'shared' if e.is_shared else 'private'} · "
            f"{e.use_count} uses" + ("" if e.usable else " · **file missing**")
            for e in owned
        ]
        more = (
            "`/embeddings info` opens any of them (start typing its name), or narrow the list "
            "with `model:`."
        )
        await interaction.response.send_message(fit_lines(lines, more), ephemeral=True)

    @embeddings.command(name="info", description="Show an embedding's card")
    @app_commands.describe(name=NAME_OPTION)
    @app_commands.autocomplete(name=usable_name_choices)
    async def info(self, interaction: discord.Interaction[LexiconBot], name: str) -> None:
        embedding = await self.bot.app.library.info(interaction.user.id, name, interaction.guild_id)
        embeds, files = await card_message(self.bot.app, embedding)
        await interaction.response.send_message(
            embeds=embeds, files=files, view=card_view(embedding), ephemeral=True
        )

    @embeddings.command(name="describe", description="Say what one of your embeddings is")
    @app_commands.describe(name=NAME_OPTION, description="A sentence the library shows")
    @app_commands.autocomplete(name=usable_name_choices)
    async def describe(
        self,
        interaction: discord.Interaction[LexiconBot],
        name: str,
        description: app_commands.Range[str, 1, 200],
    ) -> None:
        embedding = await self.bot.app.library.describe(actor_of(interaction), name, description)
        await interaction.response.send_message(
            f"**{embedding.name}** now reads: {embedding.description}", ephemeral=True
        )

    @embeddings.command(name="share", description="Put one of your embeddings in the library")
    @app_commands.describe(name=NAME_OPTION)
    @app_commands.autocomplete(name=usable_name_choices)
    async def share(self, interaction: discord.Interaction[LexiconBot], name: str) -> None:
        embedding = await self.bot.app.library.share(actor_of(interaction), name)
        await interaction.response.send_message(
            f"**{embedding.name}** is shared: anyone can write `<{embedding.name_folded}>`.",
            ephemeral=True,
        )

    @embeddings.command(name="unshare", description="Take an embedding out of the library")
    @app_commands.describe(name=NAME_OPTION)
    @app_commands.autocomplete(name=usable_name_choices)
    async def unshare(self, interaction: discord.Interaction[LexiconBot], name: str) -> None:
        embedding = await self.bot.app.library.unshare(actor_of(interaction), name)
        await interaction.response.send_message(
            f"**{embedding.name}** is private again.", ephemeral=True
        )

    @embeddings.command(name="rename", description="Rename one of your embeddings")
    @app_commands.describe(name=NAME_OPTION, new_name="The new name")
    @app_commands.autocomplete(name=usable_name_choices)
    async def rename(
        self,
        interaction: discord.Interaction[LexiconBot],
        name: str,
        new_name: app_commands.Range[str, 2, 32],
    ) -> None:
        embedding = await self.bot.app.library.rename(actor_of(interaction), name, new_name)
        await interaction.response.send_message(
            f"Renamed to **{embedding.name}**; write `<{embedding.name_folded}>` from now on.",
            ephemeral=True,
        )

    @embeddings.command(name="delete", description="Delete one of your embeddings")
    @app_commands.describe(name=NAME_OPTION)
    @app_commands.autocomplete(name=usable_name_choices)
    async def delete(self, interaction: discord.Interaction[LexiconBot], name: str) -> None:
        embedding = await self.bot.app.library.deletable(actor_of(interaction), name)
        view = discord.ui.View(timeout=None)
        view.add_item(ConfirmDeleteEmbeddingButton(embedding.id))
        await interaction.response.send_message(
            f"Delete **{embedding.name}** for good? Prompts that use it will no longer find it; "
            "images already made stay. This cannot be undone.",
            view=view,
            ephemeral=True,
        )

    @embeddings.command(name="export", description="Download an embedding (A1111/diffusers format)")
    @app_commands.describe(name=NAME_OPTION)
    @app_commands.autocomplete(name=usable_name_choices)
    async def export(self, interaction: discord.Interaction[LexiconBot], name: str) -> None:
        filename, data = await self.bot.app.library.export(actor_of(interaction), name)
        await interaction.response.send_message(
            f"`{filename}` loads in A1111, kohya and diffusers as it is.",
            file=discord.File(io.BytesIO(data), filename=filename),
            ephemeral=True,
        )

    @embeddings.command(name="import", description="Add an embedding file (.safetensors/.pt/.bin)")
    @app_commands.describe(
        file="The embedding file",
        name="The word it will answer to",
        negative="Meant for negative prompts (EasyNegative-style)",
        share="Put it in the shared library",
    )
    async def import_(
        self,
        interaction: discord.Interaction[LexiconBot],
        file: discord.Attachment,
        name: app_commands.Range[str, 2, 32],
        negative: bool = False,
        share: bool = False,
    ) -> None:
        check_rate(interaction)  # an import starts a converter process: it counts like work
        await interaction.response.defer(thinking=True, ephemeral=True)
        limit = self.bot.settings.max_embedding_bytes
        if file.size > limit:
            raise ServiceError(
                f"{file.filename} is {_kib(file.size)}; embedding files may be at most "
                f"{_kib(limit)}."
            )
        data = await file.read()
        embedding = await self.bot.app.library.import_file(
            actor_of(interaction), file.filename, data, name, negative=negative, share=share
        )
        where = "in the shared library" if embedding.is_shared else "private to you"
        preview = ""
        if embedding.thumbnail_job_id is not None:
            preview = " A preview is being rendered for the library."
        vectors = f"{embedding.n_vectors} vector{'s' * (embedding.n_vectors != 1)}"
        await interaction.followup.send(
            f"Imported **{embedding.name}** ({vectors}, {embedding.kind.value}, made for "
            f"{family_words(embedding.family)}), {where}.{preview}",
            embeds=embedding_card(embedding),
            ephemeral=True,
        )

    @app_commands.command(name="library", description="Browse and search shared embeddings")
    @app_commands.describe(
        query="Words to look for in names and descriptions",
        sort="Most used or newest first",
        model=MODEL_FILTER,
    )
    @app_commands.autocomplete(model=model_choices)
    async def library(
        self,
        interaction: discord.Interaction[LexiconBot],
        query: app_commands.Range[str, 0, QUERY_MAX] = "",
        sort: Literal["popular", "new"] = "popular",
        model: str | None = None,
    ) -> None:
        family = 0
        if model is not None:
            fits = await self.bot.app.library.family_filter(interaction.guild_id, model)
            family = FILTERS.index(Family(fits))
        text, embeds, files, view = await library_page(
            self.bot.app, query.strip(), 1, interaction.guild_id, ORDERS.index(sort), family
        )
        await interaction.response.send_message(
            text, embeds=embeds, files=files, view=view, ephemeral=True
        )


async def setup(bot: LexiconBot) -> None:
    # /library's page buttons and delete confirmations, after a restart too
    bot.add_dynamic_items(LibraryPageButton, OldLibraryPageButton, ConfirmDeleteEmbeddingButton)
    await bot.add_cog(Embeddings(bot))


async def teardown(bot: LexiconBot) -> None:
    bot.remove_dynamic_items(LibraryPageButton, OldLibraryPageButton, ConfirmDeleteEmbeddingButton)
