"""`lexicon db backup PATH` and `lexicon db check`.

Neither takes the data dir's lock: both only read (the backup through SQLite's online backup
API), so they work beside a running bot. A 0-byte database is reported without being opened,
because opening it would write a header into it. Storage is imported inside the functions so
`lexicon --help` never pays for it.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="db_action", metavar="ACTION", required=True)
    backup = actions.add_parser("backup", help="copy the live database consistently to PATH")
    backup.add_argument("path", help="where to write the backup (must not exist)")
    actions.add_parser("check", help="integrity check and file/row consistency report")


def main(args: argparse.Namespace) -> int:
    from bot.config import load_settings

    settings = load_settings()
    if args.db_action == "backup":
        return _backup(settings.database_path, Path(args.path).expanduser().resolve())
    return _check(settings.database_path, settings.data_dir)


def _backup(database_path: Path, destination: Path) -> int:
    """A consistent copy even while the bot writes (SQLite's online backup API)."""
    from bot.cli import CommandError
    from storage import StorageError, backup_database

    try:
        backup_database(database_path, destination)
    except StorageError as error:
        raise CommandError(str(error)) from None
    print(f"Backed up {database_path} to {destination}.")
    return 0


def _check(database_path: Path, data_dir: Path) -> int:
    """Report problems, one sentence each, and exit 1 if there are any; changes nothing."""
    import asyncio

    from bot.cli import CommandError
    from storage import Database, FileStore, StorageError, check, files_root
    from storage.maintenance import count_stored_files, empty_database_problem

    if not database_path.is_file():
        raise CommandError(
            f"There is no database at {database_path}; set LEXICON_DATA_DIR to the data folder "
            "or start Lexicon once to create it."
        )
    files = FileStore(files_root(data_dir))

    async def run() -> list[str]:
        async with await Database.open(database_path, migrate=False) as db:
            report = await check(db, files)
        return report.problems

    try:
        if database_path.stat().st_size == 0:
            problems = [empty_database_problem(database_path, count_stored_files(files))]
        else:
            problems = asyncio.run(run())
    except (StorageError, OSError) as error:
        raise CommandError(str(error)) from None
    if not problems:
        print(f"{database_path}: integrity ok; every row has its file and every file its row.")
        return 0
    print(f"{database_path}: {len(problems)} problem(s) found:")
    for problem in problems:
        print(f"  - {problem}")
    return 1
