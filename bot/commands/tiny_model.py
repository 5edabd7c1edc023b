"""`lexicon make-tiny-model DIR [--seed N] [--family sd1|sdxl]`."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

# The tiny model is built with torch and diffusers, which the bot process never loads; this
# command's own process does, so it names the module instead of importing it (as `lexicon
# worker` does).
TINY_MODULE = "engine.tiny"
FAMILIES = ("sd1", "sdxl")  # engine.tiny.TINY_FAMILIES, named here without importing it


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", metavar="DIR", help="folder to write the diffusers model into")
    parser.add_argument("--seed", type=int, default=0, help="weights seed (default 0)")
    parser.add_argument(
        "--family",
        choices=FAMILIES,
        default="sd1",
        help="SD 1.x (default) or SDXL structure",
    )


def main(args: argparse.Namespace) -> int:
    make_tiny_model = importlib.import_module(TINY_MODULE).make_tiny_model
    folder: Path = make_tiny_model(Path(args.folder), seed=args.seed, family=args.family)
    label = "tiny SDXL model" if args.family == "sdxl" else "tiny model"
    print(f"wrote the {label} to {folder}")
    return 0
