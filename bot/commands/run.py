"""`lexicon run`: start the bot."""

from __future__ import annotations

import argparse

from bot.cli import NotBuiltError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sync-global",
        action="store_true",
        help="sync slash commands globally (slow to propagate; do it once per release)",
    )


def main(args: argparse.Namespace) -> int:
    from bot.config import load_settings

    settings = load_settings()
    settings.require_discord_token()
    raise NotBuiltError("the Discord bot is not built yet (issue: Discord).")
