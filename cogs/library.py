"""`/library` as a gallery: one embed per shared word with its thumbnail (the first preview of
its training, or the render queued when it was imported), description, owner and uses, the
family it is made for and the model it was trained on (for an import, the checkpoint its file
names, as the file's claim), **Try** and **Use** buttons, Prev/Next and a sort toggle
(popular/new). The page, sort, family filter and query live in the buttons' custom ids
(`lexicon:library:…`); buttons posted before the filter existed (`lexicon:lib:…`) still turn
pages, unfiltered."""

from __future__ import annotations

import io

import discord

from bot.app import Lexicon
from bot.discord_bot import LexiconBot
from bot.library import LibraryPage
from cogs.buttons import HowToButton, TryButton
from cogs.cards import family_words, provenance
from cogs.common import check_lookup
from cogs.persistent import PersistentButton
from storage.models import Embedding, Family

QUERY_MAX = 50  # keeps `lexicon:library:<page>:<sort>:<family>:<query>` under 100 characters
ORDERS = ("popular", "new")
# The number a page button keeps for its family filter (0: every family). Append new families;
# never reorder, or buttons already posted would filter to another family.
FILTERS: tuple[Family | None, ...] = (
    None,
    Family.SD1,
    Family.SD2,
    Family.SDXL,
    Family.TINY,
    Family.TINY_SDXL,
)


async def thumbnail(app: Lexicon, embedding: Embedding) -> bytes | None:
    """The first preview its training rendered, else the render queued when it was imported
    (once that is done), else None."""
    for job_id in (embedding.job_id, embedding.thumbnail_job_id):
        if job_id is not None:
            images = await app.storage.images.list_for_job(job_id)
            if images:
                return await app.storage.images.read_png(images[0])
    return None


def made_for(embedding: Embedding, model: str | None) -> str:
    """`for SD 1.x, trained on **sd15**` (the model when it was trained here), or `for SD 1.x,
    made with **v1-5** (says the file)` (the checkpoint an imported file names)."""
    origin = provenance(embedding, model)
    family = family_words(embedding.family)
    return f"for {family}" if origin is None else f"for {family}, {origin}"


def gallery_entry(embedding: Embedding, image: str | None, model: str | None) -> discord.Embed:
    lines = [embedding.description or "*No description yet.*"]
    lines.append(
        f"by <@{embedding.owner_id}> · {embedding.kind.value} · {embedding.use_count} uses · "
        f"created <t:{int(embedding.created_at.timestamp())}:R>"
    )
    lines.append(f"Made {made_for(embedding, model)}")
    lines.append(f"Write `<{embedding.name_folded}>`")
    entry = discord.Embed(
        title=embedding.name, description="\n".join(lines), colour=discord.Colour.blurple()
    )
    if image is not None:
        entry.set_thumbnail(url=f"attachment://{image}")
    return entry


async def library_page(
    app: Lexicon, query: str, page: int, guild_id: int | None, order: int = 0, family: int = 0
) -> tuple[str, list[discord.Embed], list[discord.File], discord.ui.View]:
    """(text, embeds, thumbnails, buttons) of one gallery page of the library `guild_id` sees;
    `family` is a number of `FILTERS` (0: every family)."""
    order = order if 0 <= order < len(ORDERS) else 0
    family = family if 0 <= family < len(FILTERS) else 0
    wanted = FILTERS[family]
    found = await app.library.browse(query, page, guild_id, ORDERS[order], wanted)
    text = _page_text(query, wanted, ORDERS[order], found)
    trained = await app.library.trained_on(found.items)
    embeds, files = [], []
    view = discord.ui.View(timeout=None)
    for row, embedding in enumerate(found.items):
        png = await thumbnail(app, embedding)
        name = f"thumb-{embedding.id}.png" if png is not None else None
        if png is not None and name is not None:
            files.append(discord.File(io.BytesIO(png), filename=name))
        embeds.append(gallery_entry(embedding, name, trained.get(embedding.id)))
        view.add_item(TryButton(embedding.id, label=f"Try {embedding.name}", row=row))
        view.add_item(HowToButton(embedding.id, label=f"Use {embedding.name}", row=row))
    nav = len(found.items)
    short = query[:QUERY_MAX]
    view.add_item(
        LibraryPageButton(
            max(0, found.page - 1),
            order,
            family,
            short,
            label="Prev",
            disabled=found.page <= 1,
            row=nav,
        )
    )
    view.add_item(
        LibraryPageButton(
            found.page + 1,
            order,
            family,
            short,
            label="Next",
            disabled=found.page >= found.pages,
            row=nav,
        )
    )
    other = 1 - order
    view.add_item(
        LibraryPageButton(1, other, family, short, label=f"Sort: {ORDERS[other]}", row=nav)
    )
    return text, embeds, files, view


def _page_text(query: str, family: Family | None, order: str, found: LibraryPage) -> str:
    """The line above a gallery page, or the sentence that says nothing matched (and, when only
    one family is shown, how to see the others)."""
    kept = f" for {family_words(family)}" if family is not None else ""
    if not found.items:
        if family is None:
            if query:
                return "Nothing shared matches that; leave out `query:` to see the whole library."
            return "Nothing is shared yet; `/embeddings share` puts one of your words here."
        wider = "leave out `model:` to see every family"
        if query:
            return f"Nothing shared{kept} matches that; {wider}."
        return f"Nothing is shared{kept} yet; {wider}."
    heading = "Shared library" + (f" — “{query}”" if query else "") + kept
    return f"{heading} · {order} first · page {found.page} of {found.pages} · {found.total} shared"


class LibraryPageButton(
    PersistentButton,
    action="library",
    fields=("page", "order", "family", "query"),
    text_field="query",
):
    """Turn to another page (or order) of a `/library` gallery, keeping its family filter."""

    async def pressed(self, interaction: discord.Interaction[LexiconBot]) -> None:
        check_lookup(interaction)
        family = self.value("family") if "family" in self.fields else 0
        text, embeds, files, view = await library_page(
            interaction.client.app,
            self.value("query"),
            self.value("page"),
            interaction.guild_id,
            self.value("order"),
            family,
        )
        await interaction.response.edit_message(
            content=text, embeds=embeds, attachments=files, view=view
        )


class OldLibraryPageButton(
    LibraryPageButton, action="lib", fields=("page", "order", "query"), text_field="query"
):
    """A page button posted before the family filter (`lexicon:lib:<page>:<sort>:<query>`):
    it turns pages of every family, and the page it shows carries today's buttons."""
