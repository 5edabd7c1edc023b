"""A process killed between writing a file and committing its row."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from storage import Storage
from storage.files import sha256_of
from tests.conftest import REPO_ROOT
from tests.storage.conftest import raw_connection

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
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(data_dir)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        announced = child.stdout.readline().strip()
        assert announced == sha256_of(DOOMED_BYTES), child.stderr.read() if child.stderr else ""
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
