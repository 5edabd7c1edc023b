"""Start-up repair, consistency checks and online backups.

`sweep` repairs what a crash can leave behind: files no row names (an orphan, or a temp file cut
off mid-write) are removed, and an embedding whose file is missing is marked unusable instead of
crashing whoever uses it. `check` reports the same problems, SQLite's own integrity check, an
empty database and jobs left `running` with no live lease, without changing anything.
`backup_database` copies the live database through SQLite's online backup API, so the copy is
one consistent snapshot even while another process writes.

An empty database beside a files folder that holds files is a lost database, not a new one: the
sweep would delete every file as unreferenced. `refuse_empty_database` stops a start there and
names the way back (the backup); only a data dir with no files is initialised from nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from storage.clock import from_seconds, to_seconds, utc_now
from storage.db import Database, latest_version, restore_advice, translated
from storage.errors import DatabaseEmpty, StorageError
from storage.files import FileStore, Scan
from storage.models import FileKind
from storage.references import REFERENCES, FetchAll, referenced_hashes

# How to name, in a report, each kind of row that points at a missing file.
_DESCRIBE: dict[tuple[str, str], tuple[str, str]] = {
    ("embeddings", "sha256"): ("SELECT id, name FROM embeddings", "embedding #{0} '{1}'"),
    ("images", "sha256"): ("SELECT job_id, idx FROM images", "image {1} of job #{0}"),
    ("jobs", "preview_sha256"): ("SELECT id FROM jobs", "the progress preview of job #{0}"),
    ("job_photos", "sha256"): ("SELECT job_id, idx FROM job_photos", "photo {1} of job #{0}"),
    ("jobs", "checkpoint_sha256"): ("SELECT id FROM jobs", "the checkpoint of job #{0}"),
}


@dataclass(frozen=True, slots=True)
class MissingFile:
    kind: FileKind
    sha256: str
    referenced_by: tuple[str, ...]  # e.g. "embedding #4 'zorb'"

    def sentence(self) -> str:
        return (
            f"The {self.kind.value} file {self.sha256[:12]}… is missing "
            f"but {', '.join(self.referenced_by)} needs it."
        )


@dataclass(frozen=True, slots=True)
class SweepReport:
    removed_orphans: tuple[Path, ...] = ()
    removed_temp: tuple[Path, ...] = ()
    marked_unusable: tuple[int, ...] = ()  # embedding ids whose file is missing
    marked_usable: tuple[int, ...] = ()  # embedding ids whose file came back (a restore)
    missing: tuple[MissingFile, ...] = ()  # every row still pointing at a missing file
    foreign: tuple[Path, ...] = ()  # files storage did not write; left alone


def empty_database_problem(database: Path, stored_files: int) -> str:
    """The sentence for a database with no schema, by whether files say it was not new."""
    if stored_files:
        return (
            f"The database at {database} is missing or empty but the files folder holds "
            f"{stored_files} stored files, so the database was lost; {restore_advice(database)} "
            "(a start without it is refused, so nothing is deleted)."
        )
    return (
        f"The database at {database} is empty; start Lexicon to create its tables, or, if "
        f"Lexicon has run here before, {restore_advice(database)}."
    )


def count_stored_files(files: FileStore) -> int:
    """Every file under the store's root, temp and foreign ones included."""
    return sum(1 for path in files.root.rglob("*") if path.is_file())


async def refuse_empty_database(database: Path, files: FileStore) -> None:
    """For a database that is missing, empty or without schema: raise `DatabaseEmpty` when the
    store holds files (the database was lost, not new)."""
    stored_files = await asyncio.to_thread(count_stored_files, files)
    if stored_files:
        raise DatabaseEmpty(empty_database_problem(database, stored_files))


@dataclass(frozen=True, slots=True)
class StuckJob:
    job_id: int
    lease_owner: str
    lease_expired_at: float  # unix seconds

    def sentence(self) -> str:
        expired = from_seconds(self.lease_expired_at).strftime("%Y-%m-%d %H:%M:%S UTC")
        return (
            f"Job #{self.job_id} is marked running but the lease of its worker "
            f"{self.lease_owner} expired at {expired}; restart Lexicon to run it again."
        )


@dataclass(frozen=True, slots=True)
class CheckReport:
    database: Path
    schema_version: int
    integrity: tuple[str, ...]  # ("ok",) when SQLite finds nothing wrong
    foreign_key_violations: int = 0
    orphan_files: tuple[Path, ...] = ()
    temp_files: tuple[Path, ...] = ()
    missing_files: tuple[MissingFile, ...] = ()
    foreign_files: tuple[Path, ...] = ()
    stuck_jobs: tuple[StuckJob, ...] = ()
    stored_files: int = 0  # counted only for an empty database

    @property
    def problems(self) -> list[str]:
        """One sentence per problem; empty when everything is consistent."""
        found: list[str] = []
        if self.schema_version == 0:
            found.append(empty_database_problem(self.database, self.stored_files))
        elif self.schema_version != latest_version():
            found.append(
                f"The schema is at version {self.schema_version} but this Lexicon expects "
                f"{latest_version()}; start Lexicon once to migrate it."
            )
        found.extend(
            f"SQLite's integrity check says: {line}" for line in self.integrity if line != "ok"
        )
        if self.foreign_key_violations:
            found.append(f"{self.foreign_key_violations} rows point at rows that do not exist.")
        found.extend(f"{path} is a stored file that no row names." for path in self.orphan_files)
        found.extend(f"{path} is a leftover temp file." for path in self.temp_files)
        found.extend(missing.sentence() for missing in self.missing_files)
        found.extend(f"{path} is not a file Lexicon wrote." for path in self.foreign_files)
        found.extend(job.sentence() for job in self.stuck_jobs)
        return found


async def _missing(
    fetch_all: FetchAll, kind: FileKind, hashes: set[str]
) -> tuple[MissingFile, ...]:
    found: list[MissingFile] = []
    for sha in sorted(hashes):
        referenced_by: list[str] = []
        for table, column in REFERENCES[kind]:
            select, template = _DESCRIBE[(table, column)]
            rows = await fetch_all(f"{select} WHERE {column} = ?", (sha,))
            referenced_by.extend(template.format(*tuple(row)) for row in rows)
        found.append(MissingFile(kind, sha, tuple(referenced_by)))
    return tuple(found)


def _remove(paths: list[Path]) -> list[Path]:
    removed: list[Path] = []
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


async def sweep(db: Database, files: FileStore) -> SweepReport:
    """Remove unreferenced and temp files; mark embeddings whose file is missing unusable.

    Runs inside one write transaction: writers store files inside theirs, so while the sweep
    holds the lock no file can be "written but not yet committed" — even in another process.
    """
    orphans: list[Path] = []
    temp: list[Path] = []
    foreign: list[Path] = []
    missing: list[MissingFile] = []
    unusable: list[int] = []
    usable: list[int] = []
    async with db.transaction() as transaction:
        for kind in FileKind:
            scan: Scan = await asyncio.to_thread(files.scan, kind)
            referenced = await referenced_hashes(transaction.fetch_all, kind)
            orphan_paths = [path for sha, path in scan.files.items() if sha not in referenced]
            orphans += await asyncio.to_thread(_remove, orphan_paths)
            temp += await asyncio.to_thread(_remove, scan.temp)
            foreign += scan.foreign
            absent = referenced - scan.files.keys()
            missing += await _missing(transaction.fetch_all, kind, absent)
            if kind is FileKind.EMBEDDINGS:
                unusable += await _set_usable(transaction.fetch_all, absent, usable=False)
                present = referenced & scan.files.keys()
                usable += await _set_usable(transaction.fetch_all, present, usable=True)
    return SweepReport(
        removed_orphans=tuple(orphans),
        removed_temp=tuple(temp),
        marked_unusable=tuple(sorted(unusable)),
        marked_usable=tuple(sorted(usable)),
        missing=tuple(missing),
        foreign=tuple(foreign),
    )


async def _set_usable(fetch_all: FetchAll, hashes: set[str], *, usable: bool) -> list[int]:
    changed: list[int] = []
    for sha in sorted(hashes):
        rows = await fetch_all(
            "UPDATE embeddings SET usable = ? WHERE sha256 = ? AND usable = ? RETURNING id",
            (int(usable), sha, int(not usable)),
        )
        changed += [row[0] for row in rows]
    return changed


async def check(db: Database, files: FileStore) -> CheckReport:
    """SQLite's integrity check plus file/row consistency; reads only, changes nothing."""
    version = await db.schema_version()
    integrity = tuple(row[0] for row in await db.fetch_all("PRAGMA integrity_check"))
    violations = len(await db.fetch_all("PRAGMA foreign_key_check"))
    if version == 0:
        count = await asyncio.to_thread(count_stored_files, files)
        return CheckReport(db.path, version, integrity, violations, stored_files=count)
    if version != latest_version():
        return CheckReport(db.path, version, integrity, violations)
    orphans: list[Path] = []
    temp: list[Path] = []
    foreign: list[Path] = []
    missing: list[MissingFile] = []
    for kind in FileKind:
        scan = await asyncio.to_thread(files.scan, kind)
        referenced = await referenced_hashes(db.fetch_all, kind)
        orphans += [path for sha, path in scan.files.items() if sha not in referenced]
        temp += scan.temp
        foreign += scan.foreign
        missing += await _missing(db.fetch_all, kind, referenced - scan.files.keys())
    stuck = await db.fetch_all(
        "SELECT id, lease_owner, lease_expires_at FROM jobs "
        "WHERE state = 'running' AND lease_expires_at < ? ORDER BY id",
        (to_seconds(utc_now()),),
    )
    return CheckReport(
        database=db.path,
        schema_version=version,
        integrity=integrity,
        foreign_key_violations=violations,
        orphan_files=tuple(orphans),
        temp_files=tuple(temp),
        missing_files=tuple(missing),
        foreign_files=tuple(foreign),
        stuck_jobs=tuple(StuckJob(*row) for row in stuck),
    )


def backup_database(source: Path, destination: Path, busy_timeout: float = 5.0) -> None:
    """Copy the database at `source` to `destination` (which must not exist) consistently.

    The copy is taken in one backup step, so it is a single snapshot even while others write;
    it is written beside the destination, checked, switched to a single-file journal mode and
    only then linked into place, so `destination` never holds a partial copy.
    """
    if not source.is_file():
        raise StorageError(f"There is no database at {source} to back up.")
    if destination.exists():
        raise StorageError(f"{destination} already exists; choose a new path for the backup.")
    if not destination.parent.is_dir():
        raise StorageError(f"The folder {destination.parent} does not exist.")
    temp = destination.parent / f".{destination.name}.partial-{secrets.token_hex(4)}"
    try:
        with translated(source):
            _copy(source, temp, busy_timeout)
        try:
            os.link(temp, destination)
        except FileExistsError:
            raise StorageError(
                f"{destination} already exists; choose a new path for the backup."
            ) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    descriptor = os.open(destination.parent, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _copy(source: Path, temp: Path, busy_timeout: float) -> None:
    with (
        contextlib.closing(sqlite3.connect(source, timeout=busy_timeout)) as origin,
        contextlib.closing(sqlite3.connect(temp)) as copy,
    ):
        origin.backup(copy)  # pages=-1: every page in one step, one consistent snapshot
        copy.execute("PRAGMA journal_mode = DELETE")
        verdict = [row[0] for row in copy.execute("PRAGMA integrity_check")]
        if verdict != ["ok"]:
            raise StorageError(f"The backup copy failed its integrity check: {verdict[0]}.")
    with open(temp, "rb") as handle:
        os.fsync(handle.fileno())


async def backup(db: Database, destination: Path) -> None:
    """`backup_database` for an open database, off the event loop."""
    await asyncio.to_thread(backup_database, db.path, Path(destination))
