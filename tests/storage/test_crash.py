"""A process killed between writing a file and committing its row."""

from __future__ import annotations

import asyncio
import os
import signal
import textwrap
from pathlib import Path

from storage import Storage
from storage.files import sha256_of
from tests.storage.conftest import first_line, raw_connection, start_child

DOOMED_BYTES = b"vectors that never get a row"

# The real create path, with FileStore.put patched to announce the stored file and then hang:
# the file is on disk, the row is written but not committed, the write lock is held.
CHILD = textwrap.dedent(
    """
    import asyncio, sys, time
    from storage import Storage
    from storage.files import FileStore

    original_put = FileStore.put

    def put_then_hang(self, kind, data):
        sha = original_put(self, kind, data)
        print(sha, flush=True)
        time.sleep(600)
        return sha

    FileStore.put = put_then_hang

    async def main():
        store = await Storage.open(sys.argv[1])
        await store.embeddings.create(
            7, "doomed", DATA, n_vectors=1, width=768, family="sd1", source="trained"
        )

    asyncio.run(main())
    """
).replace("DATA", repr(DOOMED_BYTES))


def test_sigkill_before_commit_leaves_an_orphan_file_that_sweep_removes(data_dir: Path) -> None:
    """After SIGKILL mid-create there is no row without a file, and the sweep removes the file."""
    child = start_child(CHILD, data_dir)
    try:
        announced = first_line(child)
        assert announced == sha256_of(DOOMED_BYTES)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    asyncio.run(_restart_and_sweep(data_dir, announced))


async def _restart_and_sweep(data_dir: Path, announced: str) -> None:
    """What the next start sees: the file, no row; the sweep then removes the file."""
    store = await Storage.open(data_dir)
    try:
        assert store.files.exists("embeddings", announced)
        with raw_connection(store.db.path) as connection:
            assert connection.execute("SELECT count(*) FROM embeddings").fetchone()[0] == 0
        report = await store.sweep()
        assert report.removed_orphans == (store.files.path("embeddings", announced),)
        assert report.missing == () and report.marked_unusable == ()
        assert not store.files.exists("embeddings", announced)
        # The dead process's write lock is gone: the next writer proceeds normally.
        created = await store.embeddings.create(
            7, "doomed", DOOMED_BYTES, n_vectors=1, width=768, family="sd1", source="trained"
        )
        assert store.files.read("embeddings", created.sha256) == DOOMED_BYTES
    finally:
        await store.close()
