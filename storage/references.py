"""Which columns name which kind of stored file — the one map that deletion and the sweep share.

A stored file may be named by several rows (equal content is stored once), so a file is removed
only when no column listed here names it any more. Removal happens inside the write transaction
that dropped the last reference, while the write lock keeps every other writer out, because
writers store files inside their own transactions too: no writer can be between "file exists"
and "row committed" while the file is being removed.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable

from storage.db import Params, Transaction
from storage.files import FileStore
from storage.models import FileKind

REFERENCES: dict[FileKind, tuple[tuple[str, str], ...]] = {
    FileKind.EMBEDDINGS: (("embeddings", "sha256"),),
    # `jobs.preview_sha256` is no longer written; rows of older versions keep their preview
    # referenced until the job ends and clears it.
    FileKind.IMAGES: (("images", "sha256"), ("jobs", "preview_sha256")),
    FileKind.PHOTOS: (("job_photos", "sha256"),),
    FileKind.CHECKPOINTS: (("jobs", "checkpoint_sha256"),),
}

FetchAll = Callable[[str, Params], Awaitable[list[sqlite3.Row]]]


async def referenced_hashes(fetch_all: FetchAll, kind: FileKind) -> set[str]:
    """Every sha256 of `kind` that some row names."""
    hashes: set[str] = set()
    for table, column in REFERENCES[kind]:
        rows = await fetch_all(
            f"SELECT DISTINCT {column} FROM {table} WHERE {column} IS NOT NULL", ()
        )
        hashes.update(row[0] for row in rows)
    return hashes


async def is_referenced(transaction: Transaction, kind: FileKind, sha: str) -> bool:
    for table, column in REFERENCES[kind]:
        if await transaction.fetch_value(
            f"SELECT 1 FROM {table} WHERE {column} = ? LIMIT 1", (sha,)
        ):
            return True
    return False


async def remove_if_unreferenced(
    transaction: Transaction, files: FileStore, kind: FileKind, sha: str | None
) -> bool:
    """Delete the file once its last reference is gone; call after the row change, before commit.

    If the commit then failed, the row would point at a missing file; the start-up sweep marks
    such a row unusable rather than crashing, so the rare failure stays visible and recoverable.
    """
    if sha is None or await is_referenced(transaction, kind, sha):
        return False
    return await asyncio.to_thread(files.remove, kind, sha)
