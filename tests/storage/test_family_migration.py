"""Migration 0007: the tiny SDXL model's family can be stored. SQLite cannot widen a CHECK in
place, so the embeddings table is rebuilt; every row, column and index must survive it."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from storage import Storage
from storage.errors import NameTaken
from tests.storage.conftest import database_at

SHA = hashlib.sha256(b"vectors").hexdigest()


# What an older Lexicon left at schema 6: one shared, described, thumbnailed embedding.
VERSION_6_ROWS = f"""
        INSERT INTO users (id, created_at) VALUES (1, 0);
        INSERT INTO jobs (id, user_id, guild_id, kind, params, created_at)
            VALUES (3, 1, 10, 'generate', '{{}}', 0);
        INSERT INTO embeddings (id, owner_id, name, name_folded, kind, visibility, n_vectors,
                width, family, sha256, source, description, created_at, use_count,
                source_sha256, shared_guild_id, thumbnail_job_id)
            VALUES (5, 1, 'Zorb', 'zorb', 'negative', 'shared', 2, 32, 'tiny', '{SHA}',
                'imported', 'my cat', 1.5, 4, '{SHA}', 10, 3);
        """


async def test_migration_0007_keeps_every_embedding_and_accepts_tiny_sdxl(
    data_dir: Path,
) -> None:
    """The old row reads back whole, the unique names still hold, and a `tiny-sdxl`
    embedding can now be stored."""
    database_at(data_dir, 6, VERSION_6_ROWS)
    store = await Storage.open(data_dir)
    try:
        (old,) = await store.embeddings.list_owned(1)
        assert (old.id, old.name, old.kind.value, old.family.value) == (
            5,
            "Zorb",
            "negative",
            "tiny",
        )
        assert (old.is_shared, old.description, old.use_count) == (True, "my cat", 4)
        assert (old.shared_guild_id, old.thumbnail_job_id, old.source_sha256) == (10, 3, SHA)
        with pytest.raises(NameTaken):
            await store.embeddings.create(
                1, "zorb", b"other", n_vectors=1, width=32, family="tiny", source="imported"
            )
        new = await store.embeddings.create(
            1, "xorb", b"sdxl", n_vectors=1, width=96, family="tiny-sdxl", source="imported"
        )
        assert new.family.value == "tiny-sdxl"
    finally:
        await store.close()

    connection = sqlite3.connect(data_dir / "lexicon.sqlite3")
    indexes = {row[1] for row in connection.execute("PRAGMA index_list(embeddings)")}
    connection.close()
    assert {"embeddings_owner_name", "embeddings_shared_name", "embeddings_job"} <= indexes
    assert "embeddings_sha" in indexes
