"""`/help`: a short guide for a new member — training a word, the ways to write it, negative
embeddings, sharing and the limits — with examples they can copy."""

from __future__ import annotations

import discord
from discord import app_commands

from bot.discord_bot import LexiconBot
from cogs.common import LookupCog
from engine.jobs import MAX_COUNT


def guide(bot: LexiconBot, max_queued: int) -> discord.Embed:
    """The guide, with `max_queued`: the jobs a member may have waiting where they asked."""
    settings = bot.settings
    embed = discord.Embed(
        title="Lexicon: teach the image model new words",
        description=(
            "Train a word from a few photos of your dog, your art style or your face, then use "
            "it in any prompt."
        ),
        colour=discord.Colour.blurple(),
    )
    embed.add_field(
        name="1. Train a word",
        value=(
            "`/train name: zorb photo1 photo2 photo3` — 3 to 5 photos of one subject. Pick "
            "`kind: style` for an art style or `kind: face` for a person. When it is done you "
            "get a card with example images."
        ),
        inline=False,
    )
    embed.add_field(
        name="2. Use it — three ways",
        value=(
            "`/imagine prompt: a photo of <zorb> on a beach` — `<zorb>` always means your word.\n"
            "`/imagine prompt: zorb in the snow` — a bare word works too.\n"
            "`/imagine prompt: (zorb:1.3) astronaut` — a weight makes it stronger (or weaker "
            "below 1). Start typing `<` in the prompt to pick from your words."
        ),
        inline=False,
    )
    embed.add_field(
        name="Negative embeddings",
        value=(
            "Some words (like EasyNegative) keep things *out* of images: put them in the "
            "`negative` option. `/embeddings import file: easynegative.safetensors name: "
            "easyneg negative: True` adds one."
        ),
        inline=False,
    )
    embed.add_field(
        name="Sharing",
        value=(
            "Your words are private until you press **Share** or run `/embeddings share`. "
            "`/library` shows everyone's shared words with **Try** and **Use**; "
            "`/embeddings describe` tells others what yours is."
        ),
        inline=False,
    )
    if len(settings.models) > 1:
        names = ", ".join(f"**{model.name}**" for model in settings.models)
        embed.add_field(
            name="Models",
            value=(
                f"This server runs several image models: {names}. Pick one with `model:` on "
                "`/imagine` and `/train`. A word works with models of the kind it was trained "
                "for (SD 1.x or SDXL); the bot tells you when it doesn't fit."
            ),
            inline=False,
        )
    embed.add_field(
        name="Limits",
        value=(
            f"{max_queued} jobs waiting at a time, {settings.rate_limit} "
            f"images or trainings a minute, up to {MAX_COUNT} images per prompt, "
            f"{settings.max_embeddings_per_user} words of your own. `/queue` shows your jobs; "
            "`/cancel` stops the running one."
        ),
        inline=False,
    )
    return embed


class Help(LookupCog):
    def __init__(self, bot: LexiconBot) -> None:
        self.bot = bot

    @app_commands.command(name="help", description="How to train and use words, with examples")
    async def help(self, interaction: discord.Interaction[LexiconBot]) -> None:
        max_queued = await self.bot.app.imagine.checks.max_active(interaction.guild_id)
        await interaction.response.send_message(embed=guide(self.bot, max_queued), ephemeral=True)


async def setup(bot: LexiconBot) -> None:
    await bot.add_cog(Help(bot))
