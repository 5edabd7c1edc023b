"""`/imagine`: render a prompt; stored embedding names (`<name>` or bare) may appear in it."""

from __future__ import annotations

import discord
from discord import app_commands

from bot.discord_bot import LexiconBot
from bot.services import MAX_SEED
from cogs.common import RateLimitedCog, offer_choices
from cogs.queueing import queue_imagine


class Imagine(RateLimitedCog):
    def __init__(self, bot: LexiconBot) -> None:
        self.bot = bot
        offer_choices(self.imagine, "size", list(bot.settings.allowed_sizes))

    @app_commands.command(name="imagine", description="Render a prompt; your embeddings work in it")
    @app_commands.describe(
        prompt="What to render; write <name> to use an embedding",
        negative="What to keep out of the image (embeddings work here too)",
        count="How many images (1-4)",
        steps="Denoising steps (more is slower)",
        guidance="How closely to follow the prompt (CFG scale)",
        seed="Seed for a repeatable image",
        size="Image size",
    )
    async def imagine(
        self,
        interaction: discord.Interaction[LexiconBot],
        prompt: app_commands.Range[str, 1, 1500],
        negative: app_commands.Range[str, 0, 1500] | None = None,
        count: app_commands.Range[int, 1, 4] = 1,
        steps: app_commands.Range[int, 1, 150] | None = None,
        guidance: app_commands.Range[float, 0.0, 30.0] = 7.5,
        seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
        size: str | None = None,
    ) -> None:
        await queue_imagine(
            interaction,
            prompt,
            negative=negative or "",
            count=count,
            steps=steps,
            guidance=guidance,
            seed=seed,
            size=size,
        )


async def setup(bot: LexiconBot) -> None:
    await bot.add_cog(Imagine(bot))
