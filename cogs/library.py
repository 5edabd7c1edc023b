"""`/library` as a gallery: one embed per shared word with its thumbnail (the first preview of
its training, or the render queued when it was imported), description, owner and uses, **Try**
and **Use** buttons, Prev/Next and a sort toggle (popular/new). The page, sort and query live in
the buttons' custom ids."""

from __future__ import annotations

import io

import discord

from bot.app import Lexicon
from bot.discord_bot import LexiconBot
from cogs.buttons import HowToButton, TryButton
from cogs.common import check_lookup
from cogs.persistent import PersistentButton
from storage.models import Embedding

QUERY_MAX = 50  # keeps `lexicon:lib:<page>:<sort>:<query>` under Discord's 100-character id
ORDERS = ("popular", "new")


async def thumbnail(app: Lexicon, embedding: Embedding) -> bytes | None:
    """The first preview its training rendered, else the render queued when it was imported
    (once that is done), else None."""
    for job_id in (embedding.job_id, embedding.thumbnail_job_id):
        if job_id is not None:
            images = await app.storage.images.list_for_job(job_id)
            if images:
                return await app.storage.images.read_png(images[0])
    return None


def gallery_entry(embedding: Embedding, image: str | None) -> discord.Embed:
    lines = [embedding.description or "*No description yet.*"]
    lines.append(
        f"by <@{embedding.owner_id}> · {embedding.kind.value} · {embedding.use_count} uses · "
        f"created <t:{int(embedding.created_at.timestamp())}:R>"
    )
    lines.append(f"Write `<{embedding.name_folded}>`")
    entry = discord.Embed(
        title=embedding.name, description="\n".join(lines), colour=discord.Colour.blurple()
    )
    if image is not None:
        entry.set_thumbnail(url=f"attachment://{image}")
    return entry


async def library_page(
    app: Lexicon, query: str, page: int, guild_id: int | None, order: int = 0
) -> tuple[str, list[discord.Embed], list[discord.File], discord.ui.View]:
    """(text, embeds, thumbnails, buttons) of one gallery page of the library `guild_id` sees."""
    order = order if 0 <= order < len(ORDERS) else 0
    found = await app.library.browse(query, page, guild_id, ORDERS[order])
    heading = "Shared library" + (f" — “{query}”" if query else "")
    if not found.items:
        text = "Nothing shared matches that." if query else "Nothing is shared yet."
    else:
        text = f"{heading} · {ORDERS[order]} first · page {found.page} of {found.pages}"
        text += f" · {found.total} shared"
    embeds, files = [], []
    view = discord.ui.View(timeout=None)
    for row, embedding in enumerate(found.items):
        png = await thumbnail(app, embedding)
        name = f"thumb-{embedding.id}.png" if png is not None else None
        if png is not None and name is not None:
            files.append(discord.File(io.BytesIO(png), filename=name))
        embeds.append(gallery_entry(embedding, name))
        view.add_item(TryButton(embedding.id, label=f"Try {embedding.name}", row=row))
        view.add_item(HowToButton(embedding.id, label=f"Use {embedding.name}", row=row))
    nav = len(found.items)
    short = query[:QUERY_MAX]
    view.add_item(
        LibraryPageButton(
            max(0, found.page - 1), order, short, label="Prev", disabled=found.page <= 1, row=nav
        )
    )
    view.add_item(
        LibraryPageButton(
            found.page + 1,
            order,
            short,
            label="Next",
            disabled=found.page >= found.pages,
            row=nav,
        )
    )
    other = 1 - order
    view.add_item(LibraryPageButton(1, other, short, label=f"Sort: {ORDERS[other]}", row=nav))
    return text, embeds, files, view


class LibraryPageButton(
    PersistentButton, action="lib", fields=("page", "order", "query"), text_field="query"
):
    """Turn to another page (or order) of a `/library` gallery."""

    async def pressed(self, interaction: discord.Interaction[LexiconBot]) -> None:
        check_lookup(interaction)
        text, embeds, files, view = await library_page(
            interaction.client.app,
            self.value("query"),
            self.value("page"),
            interaction.guild_id,
            self.value("order"),
        )
        await interaction.response.edit_message(
            content=text, embeds=embeds, attachments=files, view=view
        )
