"""Migration 0009: the `users` columns nothing used are gone, and every user row, with its
operator ban, comes through."""

from __future__ import annotations

from pathlib import Path

from storage import Storage
from tests.storage.conftest import database_at, raw_connection

# What an older Lexicon left at schema 8: two members, one banned by the operator.
VERSION_8_ROWS = """
        INSERT INTO users (id, display_name, max_queued_jobs, max_embeddings, banned, created_at)
            VALUES (1, 'ann', 3, 10, 0, 1.5), (2, '', NULL, NULL, 1, 2.5);
        """


async def test_migration_0009_drops_the_unused_columns_and_keeps_every_user(
    data_dir: Path,
) -> None:
    database_at(data_dir, 8, VERSION_8_ROWS)
    store = await Storage.open(data_dir)
    try:
        assert not await store.users.is_banned(1)
        assert await store.users.is_banned(2)
    finally:
        await store.close()
    connection = raw_connection(data_dir / "lexicon.sqlite3")
    try:
        columns = [row[1] for row in connection.execute("PRAGMA table_info(users)")]
        rows = connection.execute("SELECT id, banned, created_at FROM users ORDER BY id").fetchall()
    finally:
        connection.close()
    assert columns == ["id", "banned", "created_at"]
    assert rows == [(1, 0, 1.5), (2, 1, 2.5)]
