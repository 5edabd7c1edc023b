"""Fixtures for storage tests: a real SQLite file and file store under tmp_path, no mocks."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Collection
from pathlib import Path

import pytest

from storage import Embedding, Job, JobKind, Storage
from tests.conftest import REPO_ROOT

RESERVED = frozenset({"cat", "dog", "photo"})


COMMON = frozenset({"highres", "bokeh"})


def database_at(data_dir: Path, version: int, rows: str) -> None:
    """A database file at schema `version` (migrations 1…version applied as they shipped),
    holding the rows that the `rows` script inserts: what an older Lexicon left behind."""
    from storage.db import migrations

    data_dir.mkdir(parents=True)
    connection = sqlite3.connect(data_dir / "lexicon.sqlite3")
    for migration in migrations()[:version]:
        for statement in migration.statements():
            connection.execute(statement)
    connection.executescript(f"PRAGMA user_version = {version};\n{rows}")
    connection.commit()
    connection.close()


def is_reserved_word(word: str) -> bool:
    """A stand-in for the tokenizer's vocabulary check."""
    return word in RESERVED


def reads_as_words(word: str) -> bool:
    """A stand-in for the tokenizer's check of shared names."""
    return word in COMMON


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
async def store(data_dir: Path) -> AsyncIterator[Storage]:
    opened = await Storage.open(
        data_dir, is_reserved_word=is_reserved_word, reads_as_words=reads_as_words
    )
    try:
        yield opened
    finally:
        await opened.close()


async def make_embedding(
    store: Storage,
    owner_id: int,
    name: str,
    *,
    shared: bool = False,
    guild_id: int | None = None,
    data: bytes | None = None,
) -> Embedding:
    """An embedding with a small fake file (storage never looks inside it); a shared one goes
    to `guild_id`'s library (None: the operator's)."""
    return await store.embeddings.create(
        owner_id,
        name,
        data if data is not None else f"vectors of {owner_id}/{name}".encode(),
        n_vectors=1,
        width=768,
        family="sd1",
        source="trained",
        shared=shared,
        shared_guild_id=guild_id,
    )


async def claim_next(
    store: Storage,
    worker_id: str,
    lease_seconds: float = 60,
    kinds: Collection[JobKind | str] | None = None,
) -> Job | None:
    """Lease the fairly-next queued job as the scheduler does: `fair_order`, then `claim_ids`."""
    candidates = await store.jobs.fair_order(limit=1, kinds=kinds)
    claimed = await store.jobs.claim_ids([job.id for job in candidates], worker_id, lease_seconds)
    return claimed[0] if claimed else None


def stored_hashes(store: Storage, kind: str = "embeddings") -> set[str]:
    """The sha256s of the files really on disk for one kind."""
    return set(store.files.scan(kind).files)


def raw_connection(path: Path) -> sqlite3.Connection:
    """A plain sqlite3 connection, to look at the database from outside storage."""
    return sqlite3.connect(path)


def start_child(script: str, data_dir: Path) -> subprocess.Popen[str]:
    """Run `script` in another Python process on `data_dir` (its `sys.argv[1]`), output piped."""
    return subprocess.Popen(
        [sys.executable, "-c", script, str(data_dir)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def first_line(child: subprocess.Popen[str]) -> str:
    """The first line the child prints; fails with the child's errors if it prints none."""
    assert child.stdout is not None and child.stderr is not None
    line = child.stdout.readline().strip()
    assert line, child.stderr.read()
    return line
