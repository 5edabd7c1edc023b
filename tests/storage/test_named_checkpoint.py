"""Migration 0008 and `named_checkpoint`: the checkpoint an imported file says it was trained
on is stored with the embedding, read back as written, and absent (NULL) when there is none."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from storage import Storage
from tests.storage.conftest import database_at, raw_connection

SHA = hashlib.sha256(b"vectors").hexdigest()

# What an older Lexicon left at schema 7: an imported and a trained embedding.
VERSION_7_ROWS = f"""
        INSERT INTO users (id, created_at) VALUES (1, 0);
        INSERT INTO jobs (id, user_id, guild_id, kind, params, created_at, model)
            VALUES (3, 1, 10, 'train', '{{}}', 0, 'sd15');
        INSERT INTO embeddings (id, owner_id, name, name_folded, kind, n_vectors, width, family,
                sha256, source, created_at, source_sha256)
            VALUES (5, 1, 'Zorb', 'zorb', 'positive', 2, 768, 'sd1', '{SHA}', 'imported', 1.5,
                '{SHA}');
        INSERT INTO embeddings (id, owner_id, name, name_folded, kind, n_vectors, width, family,
                sha256, source, created_at, job_id)
            VALUES (6, 1, 'Glim', 'glim', 'positive', 1, 768, 'sd1', '{SHA}', 'trained', 2.5, 3);
        """


async def test_migration_0008_keeps_old_rows_without_a_named_checkpoint(data_dir: Path) -> None:
    """Rows from schema 7 read back whole with no named checkpoint; trained_on still answers
    from the training job, and a new import can record one."""
    database_at(data_dir, 7, VERSION_7_ROWS)
    store = await Storage.open(data_dir)
    try:
        imported, trained = [await store.embeddings.get(i, 1) for i in (5, 6)]
        assert (imported.name, imported.source_sha256, imported.named_checkpoint) == (
            "Zorb",
            SHA,
            None,
        )
        assert (trained.name, trained.job_id, trained.named_checkpoint) == ("Glim", 3, None)
        assert await store.embeddings.trained_on([5, 6]) == {6: "sd15"}
        new = await store.embeddings.create(
            1,
            "xorb",
            b"other",
            n_vectors=1,
            width=768,
            family="sd1",
            source="imported",
            named_checkpoint="v1-5-pruned-emaonly",
        )
        assert new.named_checkpoint == "v1-5-pruned-emaonly"
    finally:
        await store.close()


async def test_a_named_checkpoint_round_trips_and_absent_stays_null(
    store: Storage, data_dir: Path
) -> None:
    """What `create` is given comes back from every read; without it the column is NULL."""
    common = {"n_vectors": 1, "width": 768, "family": "sd1", "source": "imported"}
    claim = "**v1-5** pruned"
    named = await store.embeddings.create(1, "named", b"1", named_checkpoint=claim, **common)
    await store.embeddings.create(1, "plain", b"2", shared=True, **common)
    assert named.named_checkpoint == claim
    assert (await store.embeddings.get(named.id, 1)).named_checkpoint == claim
    assert (await store.embeddings.get_by_name(1, "NAMED")).named_checkpoint == claim
    assert [e.named_checkpoint for e in await store.embeddings.list_owned(1)] == [claim, None]
    assert [e.named_checkpoint for e in await store.embeddings.list_shared()] == [None]
    connection = raw_connection(data_dir / "lexicon.sqlite3")
    stored = connection.execute(
        "SELECT name, named_checkpoint FROM embeddings ORDER BY id"
    ).fetchall()
    connection.close()
    assert stored == [("named", claim), ("plain", None)]


async def test_the_database_refuses_a_named_checkpoint_over_100_characters(
    store: Storage,
) -> None:
    """The column's CHECK is a last line behind the engine's cleaning: 101 characters, or an
    empty string, never reach a row."""
    common = {"n_vectors": 1, "width": 768, "family": "sd1", "source": "imported"}
    for bad in ("x" * 101, ""):
        with pytest.raises(sqlite3.IntegrityError):
            await store.embeddings.create(1, "toolong", b"1", named_checkpoint=bad, **common)
    assert await store.embeddings.list_owned(1) == []
    fits = await store.embeddings.create(1, "fits", b"1", named_checkpoint="x" * 100, **common)
    assert fits.named_checkpoint == "x" * 100
