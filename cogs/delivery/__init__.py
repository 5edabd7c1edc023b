"""Delivery of job progress and results to Discord (see `_cog` for how)."""

from __future__ import annotations

from bot.discord_bot import LexiconBot
from cogs.delivery._cog import EDIT_INTERVAL, DeliveryCog

__all__ = ["EDIT_INTERVAL", "DeliveryCog", "setup"]


async def setup(bot: LexiconBot) -> None:
    await bot.add_cog(DeliveryCog(bot))
