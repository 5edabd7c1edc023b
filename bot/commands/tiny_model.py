"""`lexicon make-tiny-model DIR [--seed N]`."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", metavar="DIR", help="folder to write the diffusers model into")
    parser.add_argument("--seed", type=int, default=0, help="weights seed (default 0)")


def main(args: argparse.Namespace) -> int:
    from engine.tiny import make_tiny_model

    folder = make_tiny_model(Path(args.folder), seed=args.seed)
    print(f"wrote the tiny model to {folder}")
    return 0
