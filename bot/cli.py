"""The `lexicon` command line (also `python -m bot`).

The parser is built from plain argparse and each subcommand's code is imported only when that
subcommand runs, so `lexicon --help` answers instantly and never loads discord.py or torch.
Every failure an operator can cause ends as one sentence on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from bot.config import StartupError

EXIT_USAGE = 2
EXIT_NOT_BUILT = 3


class CommandError(Exception):
    """A failure the user caused or can fix; its message is one sentence."""


class NotBuiltError(CommandError):
    """The subcommand exists in the contract but is not implemented yet."""


# name -> (one-line help, "module:function" that receives the parsed args)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("start the Discord bot (and, by default, its local GPU worker)", "bot.commands.run"),
    "worker": ("start a standalone GPU worker that serves a Redis queue", "bot.commands.worker"),
    "train": ("train an embedding from 3-5 photos, as the bot would", "bot.commands.train"),
    "imagine": ("render a prompt to PNG files, offline, as the bot would", "bot.commands.imagine"),
    "upscale": ("upscale a PNG this Lexicon made ×2 (A1111's Hires. fix)", "bot.commands.upscale"),
    "embeddings": ("list, import, export and share stored embeddings", "bot.commands.embeddings"),
    "make-tiny-model": (
        "write the tiny random test model (SD 1.x or SDXL) to a folder",
        "bot.commands.tiny_model",
    ),
    "db": ("back up or check the database and its files", "bot.commands.db"),
    "warm": (
        "compile the GPU worker's kernels into the cache ahead of its start",
        "bot.commands.warm",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lexicon",
        description="Lexicon: teach Stable Diffusion new words from Discord.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, module_name) in SUBCOMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(_module=module_name)
        module = importlib.import_module(module_name)
        module.add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    module = importlib.import_module(args._module)
    try:
        result = module.main(args)
    except NotBuiltError as error:
        print(f"lexicon {args.command}: {error}", file=sys.stderr)
        return EXIT_NOT_BUILT
    except (CommandError, StartupError) as error:
        print(f"lexicon {args.command}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"lexicon {args.command}: interrupted.", file=sys.stderr)
        return 130
    return int(result or 0)
