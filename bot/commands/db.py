"""`lexicon db backup PATH` and `lexicon db check`."""

from __future__ import annotations

import argparse

from bot.cli import NotBuiltError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="db_action", metavar="ACTION", required=True)
    backup = actions.add_parser("backup", help="copy the live database consistently to PATH")
    backup.add_argument("path", help="where to write the backup (must not exist)")
    actions.add_parser("check", help="integrity check and file/row consistency report")


def main(args: argparse.Namespace) -> int:
    raise NotBuiltError("database commands are not built yet (issue: Storage).")
