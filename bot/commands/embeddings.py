"""`lexicon embeddings list|import|export|share`."""

from __future__ import annotations

import argparse

from bot.cli import NotBuiltError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="list a user's embeddings")
    listing.add_argument("--user", type=int, default=0)
    imported = actions.add_parser("import", help="import an embedding file")
    imported.add_argument("file", help=".safetensors, .pt or .bin embedding file")
    imported.add_argument("--name", required=True)
    imported.add_argument("--negative", action="store_true", help="a negative embedding")
    imported.add_argument("--shared", action="store_true", help="share it in the library")
    imported.add_argument("--user", type=int, default=0)
    exported = actions.add_parser("export", help="write an embedding to a .safetensors file")
    exported.add_argument("name")
    exported.add_argument("--out", required=True)
    exported.add_argument("--user", type=int, default=0)
    shared = actions.add_parser("share", help="share an embedding in the library")
    shared.add_argument("name")
    shared.add_argument("--user", type=int, default=0)


def main(args: argparse.Namespace) -> int:
    raise NotBuiltError("embedding commands are not built yet (issue: Engine I).")
