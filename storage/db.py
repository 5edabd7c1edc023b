"""The SQLite connection: WAL, one writer path, numbered migrations.

Two aiosqlite connections per process. Every write goes through `Database.transaction()`, which
takes an in-process `asyncio.Lock` (so tasks sharing the connection never interleave
transactions) and then `BEGIN IMMEDIATE` (so other processes wait for the file's write lock up
to the busy timeout instead of failing half-way through). Reads outside a transaction use a
second, query-only connection, so they see committed data only — never another task's
half-finished transaction.

This is also the boundary where SQLite's own errors end: a full disk, an I/O error, a read-only
or damaged file leave here as `StorageError` subclasses with one sentence (`translated`), so no
caller ever has to know `sqlite3` — only constraint errors, which are bugs or handled by the
repository that caused them, pass through.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import aiosqlite

from storage.errors import (
    DatabaseCorrupt,
    DatabaseReadOnly,
    SchemaTooNew,
    StorageBusy,
    StorageError,
    StorageFull,
    StorageUnavailable,
)

Params = Sequence[Any]
DEFAULT_BUSY_TIMEOUT = 5.0

_MIGRATION_NAME = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    def statements(self) -> list[str]:
        """The script cut into complete statements (sqlite3 knows where triggers end)."""
        statements: list[str] = []
        pending = ""
        for line in self.sql.splitlines(keepends=True):
            pending += line
            if sqlite3.complete_statement(pending):
                statements.append(pending.strip())
                pending = ""
        if pending.strip() and not all(
            part.strip().startswith("--") or not part.strip() for part in pending.splitlines()
        ):
            raise ValueError(f"migration {self.name} ends with an unfinished statement")
        return statements


Model = TypeVar("Model")


def from_row(model: type[Model], row: sqlite3.Row, **converted: Any) -> Model:
    """A storage model from its table's row: each field is the column of the same name (tables
    and models are named alike on purpose), except the fields given `converted` (enums, times,
    JSON, booleans)."""
    names = [field.name for field in dataclasses.fields(model)]  # type: ignore[arg-type]
    return model(**{name: row[name] for name in names if name not in converted}, **converted)


@cache
def migrations() -> tuple[Migration, ...]:
    """The migrations shipped in `storage/migrations`, numbered 1, 2, … without gaps."""
    folder = resources.files("storage").joinpath("migrations")
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _MIGRATION_NAME.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda migration: migration.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError("storage/migrations must be numbered 0001, 0002, … without gaps")
    return tuple(found)


def latest_version() -> int:
    return len(migrations())


def restore_advice(database: Path) -> str:
    """How to get a lost or damaged database back, for the end of a sentence."""
    return f"stop Lexicon and copy your latest `lexicon db backup` file over {database}"


def storage_error(error: sqlite3.Error, path: Path) -> StorageError | None:
    """The one-sentence `StorageError` for a failure of the disk or the file itself, or None
    for an error in how the database is used (a constraint, a bug)."""
    code = (getattr(error, "sqlite_errorcode", 0) or 0) & 0xFF
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return StorageBusy(
            f"The database at {path} stayed locked by another process for longer than the busy "
            "timeout; try again."
        )
    if code == sqlite3.SQLITE_FULL:
        return StorageFull("Lexicon's disk is full, so nothing was saved; try again later.")
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return DatabaseCorrupt(
            f"The database at {path} is damaged ({error}); {restore_advice(path)}."
        )
    if code in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM):
        return DatabaseReadOnly(
            f"The database at {path} cannot be written ({error}); give Lexicon's user write "
            "access to it and its folder, then start again."
        )
    if code in (sqlite3.SQLITE_IOERR, sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_PROTOCOL):
        return StorageUnavailable(
            f"Lexicon could not read or write its database ({error}), so nothing was saved; "
            "try again later."
        )
    return None


@contextlib.contextmanager
def translated(path: Path) -> Iterator[None]:
    """Turn SQLite's disk and file failures inside the block into `storage_error`'s sentence."""
    try:
        yield
    except sqlite3.Error as error:
        replacement = storage_error(error, path)
        if replacement is None:
            raise
        raise replacement from error


class AsyncClosing(abc.ABC):
    """`async with` for what has an async `close()`: the block gets the object, then closes it."""

    __slots__ = ()

    @abc.abstractmethod
    async def close(self) -> None:
        """Release what opening took."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


class Queries(abc.ABC):
    """The reads a transaction and the database share: one row or one value from `fetch_all`."""

    @abc.abstractmethod
    async def fetch_all(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        """Rows of the query."""

    async def fetch_one(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None

    async def fetch_value(self, sql: str, params: Params = ()) -> Any:
        row = await self.fetch_one(sql, params)
        return None if row is None else row[0]


class Transaction(Queries):
    """One `BEGIN IMMEDIATE … COMMIT` on the writer connection; see `Database.transaction`."""

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._connection = connection
        self._after_commit: list[Callable[[], object]] = []

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement and return how many rows it changed."""
        cursor = await self._connection.execute(sql, params)
        count = cursor.rowcount
        await cursor.close()
        return count

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        cursor = await self._connection.executemany(sql, rows)
        await cursor.close()

    async def insert(self, sql: str, params: Params = ()) -> int:
        """Run an INSERT and return the new rowid."""
        cursor = await self._connection.execute(sql, params)
        rowid = cursor.lastrowid
        await cursor.close()
        if rowid is None:
            raise RuntimeError("INSERT produced no rowid")
        return rowid

    async def fetch_all(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        """Rows of a SELECT, or of a statement with RETURNING."""
        return list(await self._connection.execute_fetchall(sql, params))

    def after_commit(self, callback: Callable[[], object]) -> None:
        """Run `callback` once this transaction has committed (never if it rolls back)."""
        self._after_commit.append(callback)


class Database(AsyncClosing, Queries):
    """An open Lexicon database. Use `await Database.open(path)` or `async with`."""

    def __init__(
        self, path: Path, writer: aiosqlite.Connection, reader: aiosqlite.Connection
    ) -> None:
        self.path = path
        self._writer = writer
        self._reader = reader
        self._write_lock = asyncio.Lock()
        self._closed = False
        self._holder: asyncio.Task[Any] | None = None

    @classmethod
    async def open(
        cls,
        path: Path | str,
        *,
        migrate: bool = True,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
    ) -> Database:
        """Open (creating if needed) the database at `path` and bring its schema up to date.

        With `migrate=False` the schema is left as found (for `lexicon db check`), but a schema
        newer than this code is refused either way.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with translated(path):
            writer = await _connect(path, busy_timeout)
            reader: aiosqlite.Connection | None = None
            try:
                await _execute(writer, "PRAGMA journal_mode = WAL")
                await _check_not_too_new(writer, path)
                reader = await _connect(path, busy_timeout)
                await _execute(reader, "PRAGMA query_only = ON")
            except BaseException:
                await writer.close()
                if reader is not None:
                    await reader.close()
                raise
        database = cls(path, writer, reader)
        if migrate:
            try:
                await database.migrate()
            except BaseException:
                await database.close()
                raise
        return database

    async def migrate(self) -> None:
        """Bring the schema up to date (a no-op when it is); `open` does this unless told not to."""
        async with self._write_lock:
            with translated(self.path):
                await _migrate(self._writer, self.path)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        async with self._write_lock:
            await self._reader.close()
            await self._writer.close()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """`BEGIN IMMEDIATE`; commit when the block ends, roll back if it raises.

        Commit and rollback are shielded from cancellation so a cancelled task never leaves the
        connection inside an open transaction. Transactions do not nest.
        """
        task = asyncio.current_task()
        if task is not None and self._holder is task:
            raise RuntimeError("storage transactions do not nest; pass the open one down")
        async with self._write_lock:
            with translated(self.path):
                self._holder = task
                try:
                    await _execute(self._writer, "BEGIN IMMEDIATE")
                    transaction = Transaction(self._writer)
                    try:
                        yield transaction
                    except BaseException:
                        await _rollback(self._writer)
                        raise
                    try:
                        await asyncio.shield(_execute(self._writer, "COMMIT"))
                    except sqlite3.Error:
                        await _rollback(self._writer)
                        raise
                finally:
                    self._holder = None
        for callback in transaction._after_commit:
            callback()

    async def fetch_all(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        """Rows of a read-only query, from committed data."""
        with translated(self.path):
            return list(await self._reader.execute_fetchall(sql, params))

    async def schema_version(self) -> int:
        return int(await self.fetch_value("PRAGMA user_version"))


async def _connect(path: Path, busy_timeout: float) -> aiosqlite.Connection:
    connection = await aiosqlite.connect(path, timeout=busy_timeout, isolation_level=None)
    connection.row_factory = sqlite3.Row
    try:
        await _execute(connection, f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        await _execute(connection, "PRAGMA foreign_keys = ON")
        await _execute(connection, "PRAGMA synchronous = NORMAL")
    except BaseException:
        await connection.close()
        raise
    return connection


async def _execute(connection: aiosqlite.Connection, sql: str) -> None:
    cursor = await connection.execute(sql)
    await cursor.close()


async def _rollback(connection: aiosqlite.Connection) -> None:
    """Roll back if a transaction is still open. SQLite ends one itself on some errors (a full
    disk), and a ROLLBACK then would raise "no transaction is active" over the real error."""
    if connection.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            await asyncio.shield(_execute(connection, "ROLLBACK"))


async def _user_version(connection: aiosqlite.Connection) -> int:
    rows = list(await connection.execute_fetchall("PRAGMA user_version"))
    return int(rows[0][0])


async def _check_not_too_new(connection: aiosqlite.Connection, path: Path) -> None:
    version = await _user_version(connection)
    if version > latest_version():
        raise SchemaTooNew(
            f"The database at {path} is at schema version {version} but this Lexicon knows "
            f"only up to {latest_version()}; upgrade Lexicon or restore a backup."
        )


async def _migrate(connection: aiosqlite.Connection, path: Path) -> None:
    """Apply each missing migration in its own transaction; a no-op when up to date."""
    for migration in migrations():
        if await _user_version(connection) >= migration.version:
            continue
        await _execute(connection, "BEGIN IMMEDIATE")
        try:
            # Another process may have migrated while this one waited for the lock.
            await _check_not_too_new(connection, path)
            if await _user_version(connection) < migration.version:
                for statement in migration.statements():
                    await _execute(connection, statement)
                await _execute(connection, f"PRAGMA user_version = {migration.version}")
        except BaseException as error:
            await _rollback(connection)
            if isinstance(error, sqlite3.Error):
                raise StorageError(
                    f"Migration {migration.name} failed on {path} ({error}); the database was "
                    f"left at schema version {migration.version - 1}."
                ) from error
            raise
        await asyncio.shield(_execute(connection, "COMMIT"))
