"""A page of the shared library, and the Prev/Next buttons that turn it (state in the custom id)."""

from __future__ import annotations

import discord

from bot.app import Lexicon
from bot.discord_bot import LexiconBot
from cogs.persistent import PersistentButton

QUERY_MAX = 50  # keeps `lexicon:lib:<page>:<query>` under Discord's 100-character custom id


async def library_page(
    app: Lexicon, query: str, page: int, guild_id: int | None
) -> tuple[discord.Embed, discord.ui.View]:
    """A page of the library `guild_id` sees, with Prev/Next."""
    found = await app.library.browse(query, page, guild_id)
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
    view.add_item(
        LibraryPageButton(
            max(0, found.page - 1), query[:QUERY_MAX], label="Prev", disabled=found.page <= 1
        )
    )
    view.add_item(
        LibraryPageButton(
            found.page + 1, query[:QUERY_MAX], label="Next", disabled=found.page >= found.pages
        )
    )
    return embed, view


class LibraryPageButton(
    PersistentButton, action="lib", fields=("page", "query"), text_field="query"
):
    """Turn to another page of a `/library` listing (state in the custom id)."""

    async def pressed(self, interaction: discord.Interaction[LexiconBot]) -> None:
        await self._turn(interaction)

    async def _turn(self, interaction: discord.Interaction[LexiconBot]) -> None:
        embed, view = await library_page(
            interaction.client.app, self.value("query"), self.value("page"), interaction.guild_id
        )
        await interaction.response.edit_message(embed=embed, view=view)
