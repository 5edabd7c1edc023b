"""A page of the shared library, and the Prev/Next buttons that turn it (state in the custom id)."""

from __future__ import annotations

import re
from typing import Any

import discord

from bot.app import Lexicon
from cogs._common import lexicon_bot
from cogs._flows import guarded

QUERY_MAX = 50  # keeps `lexicon:lib:<page>:<query>` under Discord's 100-character custom id


async def library_page(
    app: Lexicon, query: str, page: int
) -> tuple[discord.Embed, discord.ui.View]:
    found = await app.library.browse(query, page)
    title = "Shared library" + (f" — “{query}”" if query else "")
    embed = discord.Embed(title=title, colour=discord.Colour.blurple())
    if not found.items:
        embed.description = "Nothing shared matches that." if query else "Nothing is shared yet."
    for embedding in found.items:
        created = int(embedding.created_at.timestamp())
        embed.add_field(
            name=embedding.name,
            value=(
                f"by <@{embedding.owner_id}> · {embedding.kind.value} · "
                f"{embedding.use_count} uses · created <t:{created}:R>"
            ),
            inline=False,
        )
    embed.set_footer(text=f"page {found.page} of {found.pages} · {found.total} shared")
    view = discord.ui.View(timeout=None)
    view.add_item(LibraryPageButton(found.page - 1, query, "Prev", disabled=found.page <= 1))
    view.add_item(
        LibraryPageButton(found.page + 1, query, "Next", disabled=found.page >= found.pages)
    )
    return embed, view


class LibraryPageButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"lexicon:lib:(?P<page>[0-9]{1,6}):(?P<query>.{0,50})",
):
    """Turn to another page of a `/library` listing."""

    def __init__(self, page: int, query: str, label: str = "Next", *, disabled: bool = False):
        page = max(0, page)
        super().__init__(
            discord.ui.Button(
                label=label,
                style=discord.ButtonStyle.secondary,
                custom_id=f"lexicon:lib:{page}:{query[:QUERY_MAX]}",
                disabled=disabled,
            )
        )
        self.page, self.query = page, query[:QUERY_MAX]

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str]
    ) -> LibraryPageButton:
        return cls(int(match["page"]), match["query"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await guarded(interaction, self._turn(interaction))

    async def _turn(self, interaction: discord.Interaction[Any]) -> None:
        embed, view = await library_page(lexicon_bot(interaction).app, self.query, self.page)
        await interaction.response.edit_message(embed=embed, view=view)
