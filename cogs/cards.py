"""The embedding card in plain language, how to use a word, and the technical details behind
the card's Info button."""

from __future__ import annotations

import discord

from bot.app import Lexicon
from engine.embedding_metadata import FAMILY_LABELS
from engine.jobs import EXAMPLE_PROMPTS, GenerateRequest
from storage.errors import NotFound
from storage.models import Embedding, EmbeddingKind, Family

KIND_WORDS = {
    "object": "an object",
    "style": "a style",
    "face": "a face",
}


def family_words(family: Family) -> str:
    """The family in plain words: "SD 1.x", "SDXL", "the tiny test model"."""
    return FAMILY_LABELS.get(family.value, family.value)


def named_checkpoint(embedding: Embedding) -> str | None:
    """The checkpoint an imported file says it was trained on, escaped for Discord (it is the
    file author's text), or None when the file names none."""
    if embedding.named_checkpoint is None:
        return None
    return discord.utils.escape_mentions(discord.utils.escape_markdown(embedding.named_checkpoint))


def provenance(embedding: Embedding, model: str | None) -> str | None:
    """`trained on **sd15**` (`model`: the one it was trained on here), else `made with
    **v1-5-pruned-emaonly** (says the file)` for an import whose file names its checkpoint,
    else None."""
    if model is not None:
        return f"trained on **{model}**"
    shown = named_checkpoint(embedding)
    return None if shown is None else f"made with **{shown}** (says the file)"


def labelled(text: str, embedding: Embedding, limit: int = 100) -> str:
    """An autocomplete choice's shown name: `text · SD 1.x`, or `text` alone where the family
    would push it past Discord's 100 characters."""
    shown = f"{text} · {family_words(embedding.family)}"
    return shown if len(shown) <= limit else text


def describe_kind(embedding: Embedding, kind: str | None) -> str:
    """What the word is, in words: "a style", "a negative embedding", …"""
    if embedding.kind is EmbeddingKind.NEGATIVE:
        return "a negative embedding (it keeps things out of images)"
    return KIND_WORDS.get(kind or "", "a concept")


def example_prompts(embedding: Embedding, kind: str | None) -> list[str]:
    """Three prompts that show the word off (as /imagine options for a negative one)."""
    name = f"<{embedding.name_folded}>"
    if embedding.kind is EmbeddingKind.NEGATIVE:
        return [
            f"prompt: a photo of a cat · negative: {name}",
            f"prompt: a portrait of a knight · negative: {name}",
            f"prompt: a bowl of fruit · negative: {name}",
        ]
    return [template.format(name) for template in EXAMPLE_PROMPTS.get(kind or "", ())] or [
        f"a photo of {name}"
    ]


def embedding_card(
    embedding: Embedding,
    *,
    kind: str | None = None,
    images: list[str] | None = None,
    model: str | None = None,
) -> list[discord.Embed]:
    """The card: what it is, whose, how to use it, the family it is made for (and the model it
    was trained on, when given, else the checkpoint an imported file names), and example
    prompts (each with its image when `images` names attachments, in order)."""
    where = "in the shared library" if embedding.is_shared else "private to its owner"
    lines = [
        f"**{embedding.name}** is {describe_kind(embedding, kind)}, by <@{embedding.owner_id}>, "
        f"{where}; used {embedding.use_count} times.",
    ]
    if embedding.description:
        lines.append(f"> {embedding.description}")
    lines.append(usage_line(embedding))
    origin = provenance(embedding, model)
    trained = ":" if origin is None else f"; {origin},"
    lines.append(
        f"Made for {family_words(embedding.family)}{trained} it works with any model of that "
        "family."
    )
    examples = example_prompts(embedding, kind)
    lines.append("**Try these**\n" + "\n".join(f"{i}. `{p}`" for i, p in enumerate(examples, 1)))
    card = discord.Embed(
        title=embedding.name, description="\n".join(lines), colour=discord.Colour.blurple()
    )
    card.timestamp = embedding.created_at
    embeds = [card]
    for number, (prompt, image) in enumerate(zip(examples, images or [], strict=False), 1):
        example = discord.Embed(description=f"{number}. `{prompt}`", colour=card.colour)
        example.set_image(url=f"attachment://{image}")
        embeds.append(example)
    return embeds


def usage_line(embedding: Embedding) -> str:
    name = embedding.name_folded
    if embedding.kind is EmbeddingKind.NEGATIVE:
        return f"Put `{name}` in `/imagine`'s **negative** option."
    return f"Write `<{name}>` in an `/imagine` prompt (or `{name}`, or `({name}:1.2)` for more)."


def how_to_use(embedding: Embedding, kind: str | None) -> str:
    """The private answer of **How to use**: the three ways to write the word, with examples."""
    name = embedding.name_folded
    examples = "\n".join(f"• `/imagine {p}`" for p in example_prompts(embedding, kind))
    if embedding.kind is EmbeddingKind.NEGATIVE:
        return (
            f"**How to use {embedding.name}**\nIt is a negative embedding: put `{name}` in the "
            f"**negative** option, and it steers images away from what it learned.\n{examples}"
        )
    return (
        f"**How to use {embedding.name}**\n"
        f"• `<{name}>` — the sure way: always this embedding.\n"
        f"• `{name}` — a bare word works too, when it is yours or shared.\n"
        f"• `({name}:1.3)` — stronger; `({name}:0.7)` weaker.\n"
        f"For example:\n{examples}"
    )


def technical_details(
    embedding: Embedding,
    *,
    steps: object = None,
    final_loss: object = None,
    model: str | None = None,
) -> str:
    """What the card's **Info** shows: the numbers people who know textual inversion ask, and
    the model it was trained on (when it was trained here; else the checkpoint an imported file
    names)."""
    lines = [
        f"**{embedding.name}** · {embedding.kind.value} embedding · {embedding.source.value}",
        f"Vectors {embedding.n_vectors} × {embedding.width} · "
        f"model family {embedding.family.value}",
    ]
    checkpoint = named_checkpoint(embedding)
    if model is not None:
        lines.append(f"Trained on model {model}")
    elif checkpoint is not None:
        lines.append(f"Made with checkpoint {checkpoint} (says the file)")
    if steps is not None:
        lines.append(f"Training steps {steps}")
    if isinstance(final_loss, float):
        lines.append(f"Final loss {final_loss:.4f}")
    lines.append(f"File sha256 `{embedding.sha256}`")
    return "\n".join(lines)


async def embeddings_line(app: Lexicon, request: GenerateRequest, viewer_id: int) -> str:
    """`**Embeddings** `zorb` by @alice, …`: what the result used and whose each one is."""
    parts = []
    for payload in request.embeddings:
        try:
            if payload.id is None:
                raise NotFound(payload.name)
            embedding = await app.storage.embeddings.get(payload.id, viewer_id)
        except NotFound:
            parts.append(f"`{payload.name}` (since removed)")
        else:
            parts.append(f"`{payload.name}` by <@{embedding.owner_id}>")
    return "**Embeddings** " + (", ".join(parts) if parts else "none")
