"""`lexicon train PHOTO… --name NAME`: train an embedding offline, stored as the bot would."""

from __future__ import annotations

import argparse

from bot.cli import NotBuiltError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("photos", nargs="+", metavar="PHOTO", help="3 to 5 photos of the concept")
    parser.add_argument("--name", required=True, help="the new word, e.g. zorb")
    parser.add_argument("--kind", choices=["object", "style", "face"], default="object")
    parser.add_argument("--init-word", help="word the vectors start from (default: by kind)")
    parser.add_argument("--vectors", type=int, help="number of vectors, 1-8")
    parser.add_argument("--steps", type=int, help="training steps (default LEXICON_TRAIN_STEPS)")
    parser.add_argument("--user", type=int, default=0, help="owner's Discord user id (default 0)")
    parser.add_argument("--shared", action="store_true", help="share it in the library")


def main(args: argparse.Namespace) -> int:
    raise NotBuiltError("training is not built yet (issue: Engine II).")
