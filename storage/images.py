"""Images a generate job produced: one row per image, its PNG in the file store."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import datetime

from storage.clock import Clock, from_seconds, to_seconds, utc_now
from storage.db import Database, Transaction, from_row
from storage.errors import NotFound
from storage.files import FileStore
from storage.models import FileKind, Image, NewImage


def image_from_row(row: sqlite3.Row) -> Image:
    return from_row(
        Image,
        row,
        metadata=json.loads(row["metadata"]),
        created_at=from_seconds(row["created_at"]),
    )


async def insert_image(
    transaction: Transaction, files: FileStore, job_id: int, image: NewImage, now: datetime
) -> Image:
    """Store the PNG, then its row, inside the caller's transaction."""
    sha = await asyncio.to_thread(files.put, FileKind.IMAGES, image.png)
    row = await transaction.fetch_one(
        """
        INSERT INTO images (job_id, idx, seed, sha256, metadata, created_at)
        VALUES (?, ?, ?, ?, ?, ?) RETURNING *
        """,
        (job_id, image.idx, image.seed, sha, json.dumps(image.metadata), to_seconds(now)),
    )
    assert row is not None
    return image_from_row(row)


class ImageRepository:
    """Reading images back (`JobRepository.complete` stores them with the job's result)."""

    def __init__(self, db: Database, files: FileStore, clock: Clock = utc_now) -> None:
        self._db = db
        self._files = files
        self._clock = clock

    async def add(self, job_id: int, image: NewImage) -> Image:
        async with self._db.transaction() as transaction:
            return await insert_image(transaction, self._files, job_id, image, self._clock())

    async def get(self, job_id: int, idx: int) -> Image:
        row = await self._db.fetch_one(
            "SELECT * FROM images WHERE job_id = ? AND idx = ?", (job_id, idx)
        )
        if row is None:
            raise NotFound(f"Job #{job_id} has no image number {idx + 1}.")
        return image_from_row(row)

    async def find(self, sha256: str) -> Image:
        """The first stored image with these PNG bytes (by their sha256)."""
        row = await self._db.fetch_one(
            "SELECT * FROM images WHERE sha256 = ? ORDER BY job_id, idx LIMIT 1", (sha256,)
        )
        if row is None:
            raise NotFound("This PNG is not an image Lexicon stored here.")
        return image_from_row(row)

    async def list_for_job(self, job_id: int) -> list[Image]:
        rows = await self._db.fetch_all(
            "SELECT * FROM images WHERE job_id = ? ORDER BY idx", (job_id,)
        )
        return [image_from_row(row) for row in rows]

    async def read_png(self, image: Image) -> bytes:
        return await asyncio.to_thread(self._files.read, FileKind.IMAGES, image.sha256)
