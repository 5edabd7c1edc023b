"""Connection settings, migrations and transactions of `storage.db.Database`."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from storage import Database, SchemaTooNew, StorageBusy
from storage.db import latest_version, migrations


def _schema(path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(path) as connection:
        return connection.execute(
            "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name"
        ).fetchall()


async def test_migrations_create_every_table_from_an_empty_file(tmp_path: Path) -> None:
    """Opening a new file applies all migrations and records the version in user_version."""
    path = tmp_path / "new.sqlite3"
    async with await Database.open(path) as db:
        assert await db.schema_version() == latest_version() == len(migrations())
        tables = {row[0] for row in await db.fetch_all("SELECT name FROM sqlite_master")}
    assert {"users", "embeddings", "jobs", "images", "guild_settings", "job_photos"} <= tables


async def test_reopening_is_a_no_op(tmp_path: Path) -> None:
    """A second open leaves the schema and version exactly as the first left them."""
    path = tmp_path / "again.sqlite3"
    async with await Database.open(path):
        pass
    before = _schema(path)
    async with await Database.open(path) as db:
        assert await db.schema_version() == latest_version()
    assert _schema(path) == before


async def test_tables_are_strict(tmp_path: Path) -> None:
    """Every table is STRICT, so a wrong type is an error rather than silently stored."""
    path = tmp_path / "strict.sqlite3"
    async with await Database.open(path) as db:
        rows = await db.fetch_all("PRAGMA table_list")
        ours = [row for row in rows if not row["name"].startswith("sqlite_")]
        assert ours and all(row["strict"] == 1 for row in ours)
        with pytest.raises(sqlite3.IntegrityError):
            async with db.transaction() as transaction:
                await transaction.execute(
                    "INSERT INTO users (id, created_at) VALUES (?, ?)", ("not a number", 0.0)
                )


async def test_a_newer_schema_is_refused_with_one_sentence(tmp_path: Path) -> None:
    """A database from a newer Lexicon is refused, naming both versions and what to do."""
    path = tmp_path / "future.sqlite3"
    future = latest_version() + 1
    with sqlite3.connect(path) as connection:
        connection.execute(f"PRAGMA user_version = {future}")
    with pytest.raises(SchemaTooNew) as caught:
        await Database.open(path)
    assert str(caught.value) == (
        f"The database at {path} is at schema version {future} but this Lexicon knows only up "
        f"to {latest_version()}; upgrade Lexicon or restore a backup."
    )
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == future


async def test_connections_use_wal_normal_sync_foreign_keys_and_busy_timeout(
    tmp_path: Path,
) -> None:
    """Both connections run with WAL, synchronous=NORMAL, foreign keys and a 5 s busy timeout."""
    async with await Database.open(tmp_path / "pragmas.sqlite3") as db:
        assert await db.fetch_value("PRAGMA journal_mode") == "wal"
        assert await db.fetch_value("PRAGMA foreign_keys") == 1
        assert await db.fetch_value("PRAGMA synchronous") == 1  # NORMAL
        assert await db.fetch_value("PRAGMA busy_timeout") == 5000
        async with db.transaction() as transaction:
            assert await transaction.fetch_value("PRAGMA foreign_keys") == 1
            assert await transaction.fetch_value("PRAGMA synchronous") == 1
            with pytest.raises(sqlite3.IntegrityError):
                await transaction.execute(
                    "INSERT INTO embeddings (owner_id, name, name_folded, kind, n_vectors, "
                    "width, family, sha256, source, created_at) "
                    "VALUES (999, 'zorb', 'zorb', 'positive', 1, 768, 'sd1', ?, 'trained', 0)",
                    ("a" * 64,),
                )


async def test_a_failing_block_rolls_back(tmp_path: Path) -> None:
    """An exception inside `transaction()` undoes everything the block wrote."""
    async with await Database.open(tmp_path / "rollback.sqlite3") as db:
        with pytest.raises(RuntimeError, match="boom"):
            async with db.transaction() as transaction:
                await transaction.execute("INSERT INTO users (id, created_at) VALUES (1, 0)")
                raise RuntimeError("boom")
        assert await db.fetch_value("SELECT count(*) FROM users") == 0


async def test_reads_outside_a_transaction_never_see_uncommitted_writes(tmp_path: Path) -> None:
    """The read connection sees only committed rows, not a transaction still in progress."""
    async with await Database.open(tmp_path / "isolation.sqlite3") as db:
        async with db.transaction() as transaction:
            await transaction.execute("INSERT INTO users (id, created_at) VALUES (1, 0)")
            assert await db.fetch_value("SELECT count(*) FROM users") == 0
        assert await db.fetch_value("SELECT count(*) FROM users") == 1


async def test_concurrent_tasks_never_interleave_transactions(tmp_path: Path) -> None:
    """Twenty read-modify-write transactions on one connection lose no update."""
    async with await Database.open(tmp_path / "counter.sqlite3") as db:
        async with db.transaction() as transaction:
            await transaction.execute("INSERT INTO users (id, created_at) VALUES (1, 0)")

        async def increment() -> None:
            async with db.transaction() as transaction:
                value = await transaction.fetch_value("SELECT created_at FROM users")
                await asyncio.sleep(0)
                await transaction.execute("UPDATE users SET created_at = ?", (value + 1,))

        await asyncio.gather(*(increment() for _ in range(20)))
        assert await db.fetch_value("SELECT created_at FROM users") == 20


async def test_nested_transactions_are_refused(tmp_path: Path) -> None:
    """Opening a transaction inside another in the same task fails fast instead of hanging."""
    async with await Database.open(tmp_path / "nested.sqlite3") as db, db.transaction():
        with pytest.raises(RuntimeError, match="do not nest"):
            async with db.transaction():
                pass


async def test_a_lock_held_by_another_process_ends_in_storage_busy(tmp_path: Path) -> None:
    """When another connection keeps the write lock past the busy timeout, StorageBusy says so."""
    path = tmp_path / "busy.sqlite3"
    async with await Database.open(path, busy_timeout=0.2) as db:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StorageBusy, match="stayed locked"):
                async with db.transaction():
                    pass
        finally:
            other.execute("ROLLBACK")
            other.close()
        async with db.transaction() as transaction:
            await transaction.execute("INSERT INTO users (id, created_at) VALUES (1, 0)")
        assert await db.fetch_value("SELECT count(*) FROM users") == 1
