"""`lexicon run`: start the bot."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sync-global",
        action="store_true",
        help="sync slash commands globally (slow to propagate; do it once per release)",
    )


def main(args: argparse.Namespace) -> int:
    import aiohttp
    import discord

    from bot.cli import CommandError
    from bot.config import load_settings
    from bot.discord_bot import create_bot
    from bot.logging_setup import configure_logging
    from storage.errors import StorageError

    settings = load_settings()
    token = settings.require_discord_token()
    configure_logging(settings.log_level, secrets=[token])
    bot = create_bot(settings, sync_global=args.sync_global)
    try:
        bot.run(token, log_handler=None)
    except discord.LoginFailure:
        raise CommandError(
            "Discord refused DISCORD_TOKEN: reset the token in the developer portal "
            "(Bot → Reset Token) and set the new one."
        ) from None
    except discord.PrivilegedIntentsRequired:
        raise CommandError(
            "Discord refused an intent Lexicon asked for; this is a bug, please report it."
        ) from None
    except aiohttp.ClientConnectionError as error:
        raise CommandError(f"Could not reach Discord ({error}); check the network.") from None
    except StorageError as error:  # the database could not be opened in setup_hook
        raise CommandError(str(error)) from None
    return 0
