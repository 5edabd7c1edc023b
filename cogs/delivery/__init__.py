"""Delivery of job progress and results to Discord (see `_cog` for how)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cogs.delivery._cog import EDIT_INTERVAL, Delivery

if TYPE_CHECKING:
    from bot.discord_bot import LexiconBot

__all__ = ["EDIT_INTERVAL", "Delivery", "setup"]


async def setup(bot: LexiconBot) -> None:
    await bot.add_cog(Delivery(bot))
