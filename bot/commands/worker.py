"""`lexicon worker`: a standalone GPU worker serving a Redis queue (scale-out)."""

from __future__ import annotations

import argparse

from bot.cli import NotBuiltError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--queue", help="Redis URL, e.g. redis://host:6379/0 (LEXICON_QUEUE)")
    parser.add_argument("--device", help="torch device, e.g. cuda:0 (LEXICON_DEVICE)")
    parser.add_argument("--max-batch", type=int, help="largest generate batch (LEXICON_MAX_BATCH)")


def main(args: argparse.Namespace) -> int:
    raise NotBuiltError("standalone Redis workers are not built yet (issue: Scale-out).")
