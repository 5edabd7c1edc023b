"""The embedding card: one embed that says what an embedding is and whose it is."""

from __future__ import annotations

import discord

from storage.models import Embedding


def embedding_card(
    embedding: Embedding, *, final_loss: object = None, steps: object = None
) -> discord.Embed:
    """The embedding card: name, vectors, family and the rest people ask about."""
    embed = discord.Embed(title=embedding.name, colour=discord.Colour.blurple())
    embed.add_field(name="Vectors", value=str(embedding.n_vectors))
    embed.add_field(name="Family", value=embedding.family.value)
    embed.add_field(name="Kind", value=embedding.kind.value)
    embed.add_field(name="Shared", value="yes" if embedding.is_shared else "no")
    embed.add_field(name="Uses", value=str(embedding.use_count))
    embed.add_field(name="Owner", value=f"<@{embedding.owner_id}>")
    if steps is not None:
        embed.add_field(name="Steps", value=str(steps))
    if isinstance(final_loss, float):
        embed.add_field(name="Final loss", value=f"{final_loss:.4f}")
    embed.set_footer(text=f"{embedding.source.value} · sha256 {embedding.sha256[:12]}")
    embed.timestamp = embedding.created_at
    return embed
