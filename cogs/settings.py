"""`/settings`: a member's personal defaults for the options they leave out.

One command rather than a group, because Discord cannot run a group without a subcommand:
with no options it shows the defaults, with some it sets those, with `reset` it forgets them.
Every answer is private: a member's defaults are nobody else's business.
"""

from __future__ import annotations

from typing import Literal, get_args

import discord
from discord import app_commands

from bot.discord_bot import LexiconBot
from bot.services import ServiceError
from cogs.common import RateLimitedCog, offer_choices
from engine.jobs import MAX_COUNT, MAX_GUIDANCE, MAX_PROMPT_CHARS, MAX_STEPS, SAMPLERS
from storage.preferences import MemberDefaults

Sampler = Literal["euler", "euler_a", "ddim", "dpmpp_2m", "dpmpp_2m_karras", "pndm"]
assert get_args(Sampler) == SAMPLERS, "cogs.settings.Sampler and engine.jobs.SAMPLERS disagree"


def chosen(defaults: MemberDefaults) -> list[tuple[str, str]]:
    """The defaults the member set, as (label, value) pairs in /settings order."""
    pairs: list[tuple[str, str]] = []
    for label, value in (
        ("size", defaults.size),
        ("steps", defaults.steps),
        ("sampler", defaults.sampler),
        ("guidance", None if defaults.guidance is None else f"{defaults.guidance:g}"),
        ("count", defaults.count),
        ("negative prompt", defaults.negative if defaults.negative != "" else "(none)"),
        (
            "share new embeddings",
            None if defaults.share is None else "yes" * defaults.share or "no",
        ),
    ):
        if value is not None:
            pairs.append((label, str(value)))
    return pairs


def describe(defaults: MemberDefaults) -> str:
    """The member's defaults, one per line, or a sentence saying there are none."""
    if defaults.is_empty:
        return (
            "You have no personal defaults, so Lexicon's own apply. To set one, run `/settings` "
            "with that option, e.g. `/settings count: 2` or `/settings negative: blurry`."
        )
    lines = ["Your defaults for options you leave out:"]
    lines.extend(f"- {label}: {value}" for label, value in chosen(defaults))
    lines.append(
        "-# Run `/settings` with an option to change it; `/settings reset: True` forgets them all."
    )
    return "\n".join(lines)[:2000]


class Settings(RateLimitedCog):
    def __init__(self, bot: LexiconBot) -> None:
        self.bot = bot
        offer_choices(self.settings, "size", list(bot.settings.allowed_sizes))

    @app_commands.command(name="settings", description="Show or set your personal defaults")
    @app_commands.describe(
        size="Your default image size",
        steps="Your default denoising steps",
        sampler="Your default sampler",
        guidance="Your default CFG scale",
        count="How many images by default (1-4)",
        negative="Your default negative prompt (empty to clear)",
        share="Put new embeddings in the shared library by default",
        reset="Forget all your defaults",
    )
    async def settings(
        self,
        interaction: discord.Interaction[LexiconBot],
        size: str | None = None,
        steps: app_commands.Range[int, 1, MAX_STEPS] | None = None,
        sampler: Sampler | None = None,
        guidance: app_commands.Range[float, 0.0, MAX_GUIDANCE] | None = None,
        count: app_commands.Range[int, 1, MAX_COUNT] | None = None,
        negative: app_commands.Range[str, 0, MAX_PROMPT_CHARS] | None = None,
        share: bool | None = None,
        reset: bool = False,
    ) -> None:
        defaults = interaction.client.app.defaults
        user_id = interaction.user.id
        changes = {
            "size": size,
            "steps": steps,
            "sampler": sampler,
            "guidance": guidance,
            "count": count,
            "negative": negative,
            "share": share,
        }
        given = any(value is not None for value in changes.values())
        if reset and given:
            raise ServiceError("Use reset on its own; then set new defaults.")
        if reset:
            await defaults.reset(user_id)
            text = "Your defaults are forgotten; Lexicon's own apply again."
        elif given:
            text = describe(await defaults.update(user_id, **changes))
        else:
            text = describe(await defaults.show(user_id))
        await interaction.response.send_message(text, ephemeral=True)


async def setup(bot: LexiconBot) -> None:
    await bot.add_cog(Settings(bot))
