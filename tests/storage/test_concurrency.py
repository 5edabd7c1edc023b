"""Many writers at once: the database and the file store stay consistent."""

from __future__ import annotations

import asyncio
from pathlib import Path

from storage import Actor, NameTaken, Storage
from tests.storage.conftest import is_reserved_word, make_embedding, raw_connection

TASKS = 50
OWNERS = 5


async def _life_of_one_embedding(store: Storage, index: int) -> bool:
    """Create `e<index>`, share every other one, delete every fourth, and try for 'clash'.

    Returns whether this task won the race for the shared name 'clash'.
    """
    owner = index % OWNERS
    actor = Actor(owner, guild_id=1)
    # Seven distinct contents for fifty embeddings: files are shared between rows.
    data = f"content {index % 7}".encode()
    created = await make_embedding(store, owner, f"e{index:02d}", data=data)
    await asyncio.sleep(0)
    if index % 2 == 0:
        await store.embeddings.share(actor, created.id)
    await asyncio.sleep(0)
    if index % 4 == 0:
        await store.embeddings.delete(actor, created.id)
    try:
        await make_embedding(store, owner, "clash", shared=True, data=f"clash {index}".encode())
    except NameTaken:
        return False
    return True


async def test_fifty_concurrent_tasks_leave_a_consistent_store(data_dir: Path) -> None:
    """50 tasks on two connections create, share and delete; counts, names and files agree."""
    first = await Storage.open(data_dir, is_reserved_word=is_reserved_word)
    second = await Storage.open(data_dir, is_reserved_word=is_reserved_word)
    try:
        stores = (first, second)
        wins = await asyncio.gather(
            *(_life_of_one_embedding(stores[i % 2], i) for i in range(TASKS))
        )
        deleted = len(range(0, TASKS, 4))
        shared = len(range(0, TASKS, 2)) - deleted
        assert sum(wins) == 1
        with raw_connection(first.db.path) as connection:
            rows = connection.execute(
                "SELECT owner_id, name_folded, visibility, sha256 FROM embeddings"
            ).fetchall()
        assert len(rows) == TASKS - deleted + 1
        assert sum(1 for row in rows if row[2] == "shared") == shared + 1
        assert len({(owner, name) for owner, name, _, _ in rows}) == len(rows)
        shared_names = [name for _, name, visibility, _ in rows if visibility == "shared"]
        assert len(set(shared_names)) == len(shared_names)
        on_disk = first.files.scan("embeddings")
        assert set(on_disk.files) == {row[3] for row in rows}  # no orphans, none missing
        assert on_disk.temp == [] and on_disk.foreign == []
        report = await first.sweep()
        assert report.removed_orphans == () and report.missing == ()
    finally:
        await first.close()
        await second.close()
