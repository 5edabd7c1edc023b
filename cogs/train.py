"""`/train`: teach Lexicon a new word from 3-5 photos (a textual-inversion embedding)."""

from __future__ import annotations

from typing import Literal

import discord
from discord import app_commands

from bot.discord_bot import LexiconBot
from bot.services import TrainOptions
from cogs.common import RateLimitedCog, model_choices, refuse_oversized
from cogs.errors import defer_public
from cogs.queueing import queue_options
from engine.jobs import MAX_VECTORS


class Train(RateLimitedCog):
    def __init__(self, bot: LexiconBot) -> None:
        self.bot = bot

    @app_commands.command(name="train", description="Teach Lexicon a new word from 3-5 photos")
    @app_commands.describe(
        name="The new word: lowercase letters, digits, - and _ (2-32 characters)",
        photo1="A photo of the subject",
        photo2="Another photo",
        photo3="Another photo",
        photo4="Another photo (optional)",
        photo5="Another photo (optional)",
        kind="What the photos show: an object, a style, or a face",
        init_word="A word close to the subject to start from, like 'dog'",
        vectors="How many vectors the word gets (1-8; more learns more, needs more photos)",
        share="Put it in the shared library when done (default: your /settings)",
        model="The model to train on; the word works with models of its family",
    )
    @app_commands.autocomplete(model=model_choices)
    async def train(
        self,
        interaction: discord.Interaction[LexiconBot],
        name: app_commands.Range[str, 2, 32],
        photo1: discord.Attachment,
        photo2: discord.Attachment,
        photo3: discord.Attachment,
        photo4: discord.Attachment | None = None,
        photo5: discord.Attachment | None = None,
        kind: Literal["object", "style", "face"] = "object",
        init_word: app_commands.Range[str, 1, 32] | None = None,
        vectors: app_commands.Range[int, 1, MAX_VECTORS] | None = None,
        share: bool | None = None,
        model: str | None = None,
    ) -> None:
        message_id = await defer_public(interaction)
        photos = [p for p in (photo1, photo2, photo3, photo4, photo5) if p is not None]
        refuse_oversized(photos, self.bot.settings.max_photo_bytes)
        files = [(photo.filename, await photo.read()) for photo in photos]
        options = TrainOptions(
            name, files, kind=kind, init_word=init_word, vectors=vectors, share=share, model=model
        )
        await queue_options(
            interaction, interaction.client.app.train.submit, options, message_id=message_id
        )


async def setup(bot: LexiconBot) -> None:
    await bot.add_cog(Train(bot))
