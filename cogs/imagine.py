"""`/imagine`: render a prompt; stored embedding names (`<name>` or bare) may appear in it."""

from __future__ import annotations

import dataclasses
import re

import discord
from discord import app_commands

from bot.discord_bot import LexiconBot
from bot.services import ImagineOptions
from cogs.cards import labelled
from cogs.common import RateLimitedCog, model_choices, offer_choices, refuse_oversized
from cogs.errors import defer_public
from cogs.queueing import queue_imagine, queue_options
from engine.jobs import (
    MAX_COUNT,
    MAX_GUIDANCE,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    MAX_STEPS,
    MAX_STRENGTH,
    MIN_STRENGTH,
)

_LAST_WORD = re.compile(r"<?([A-Za-z0-9_-]*)$")
CHOICE_MAX = 100  # Discord's limit on an autocomplete choice's name and value


async def prompt_choices(
    interaction: discord.Interaction[LexiconBot], current: str
) -> list[app_commands.Choice[str]]:
    """Autocomplete: the prompt so far with its last word completed to a `<name>` the member
    may use (their own first, then this server's shared ones) that fits the model picked in
    `model:` (else the server's default)."""
    match = _LAST_WORD.search(current)
    assert match is not None  # the pattern matches the empty tail too
    head = current[: match.start()]
    app = interaction.client.app
    picked = getattr(interaction.namespace, "model", None)
    words = await app.library.usable(
        interaction.user.id,
        match.group(1),
        limit=25,
        guild_id=interaction.guild_id,
        family=await app.imagine.family_for(interaction.guild_id, picked),
    )
    choices = []
    for word in words:
        prompt = f"{head}<{word.name_folded}>"
        if len(prompt) <= CHOICE_MAX:
            choices.append(app_commands.Choice(name=labelled(prompt, word), value=prompt))
    return choices


class Imagine(RateLimitedCog):
    def __init__(self, bot: LexiconBot) -> None:
        self.bot = bot
        offer_choices(self.imagine, "size", list(bot.settings.allowed_sizes))

    @app_commands.command(name="imagine", description="Render a prompt; your embeddings work in it")
    @app_commands.describe(
        prompt="What to render; write <name> to use an embedding (see /help)",
        negative="What to keep out of the image (embeddings work here too)",
        count="How many images (1-4)",
        steps="Denoising steps (more is slower)",
        guidance="How closely to follow the prompt (CFG scale)",
        seed="Seed for a repeatable image",
        size="Image size",
        image="A picture to start from (image-to-image)",
        strength="How far to move away from that picture (0.05-1, default 0.75)",
        model="Which model renders it (default: this server's)",
    )
    @app_commands.autocomplete(prompt=prompt_choices, model=model_choices)
    async def imagine(
        self,
        interaction: discord.Interaction[LexiconBot],
        prompt: app_commands.Range[str, 1, MAX_PROMPT_CHARS],
        negative: app_commands.Range[str, 0, MAX_PROMPT_CHARS] | None = None,
        count: app_commands.Range[int, 1, MAX_COUNT] | None = None,
        steps: app_commands.Range[int, 1, MAX_STEPS] | None = None,
        guidance: app_commands.Range[float, 0.0, MAX_GUIDANCE] | None = None,
        seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
        size: str | None = None,
        image: discord.Attachment | None = None,
        strength: app_commands.Range[float, MIN_STRENGTH, MAX_STRENGTH] | None = None,
        model: str | None = None,
    ) -> None:
        options = ImagineOptions(
            prompt,
            negative=negative,
            count=count,
            steps=steps,
            guidance=guidance,
            seed=seed,
            size=size,
            strength=strength,
            model=model,
        )
        if image is None:
            await queue_imagine(interaction, options)
            return
        # Like /train: acknowledge first (a download can outlast Discord's 3 s), refuse an
        # oversized file by its announced size before reading a byte.
        message_id = await defer_public(interaction)
        refuse_oversized([image], self.bot.settings.max_photo_bytes)
        with_image = dataclasses.replace(
            options, image=await image.read(), image_name=image.filename
        )
        await queue_options(
            interaction, interaction.client.app.imagine.submit, with_image, message_id=message_id
        )


async def setup(bot: LexiconBot) -> None:
    await bot.add_cog(Imagine(bot))
