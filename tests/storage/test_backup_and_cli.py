"""Online backups during writes, and the `lexicon db backup|check` commands."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from storage import Storage, StorageError, backup, backup_database
from storage.db import latest_version
from tests.storage.conftest import first_line, make_embedding, start_child

# Another process that keeps enqueueing jobs until it is killed.
WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from storage import Storage

    async def main():
        store = await Storage.open(sys.argv[1])
        count = 0
        while True:
            await store.jobs.enqueue(count % 3, "generate", {"prompt": "x" * 200, "n": count})
            count += 1
            if count == 20:
                print("ready", flush=True)

    asyncio.run(main())
    """
)


def _verdict(path: Path) -> tuple[list[str], int, int]:
    """(integrity_check lines, user_version, job count) of a database file."""
    with sqlite3.connect(path) as connection:
        lines = [row[0] for row in connection.execute("PRAGMA integrity_check")]
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        jobs = connection.execute("SELECT count(*) FROM jobs").fetchone()[0]
    return lines, version, jobs


def _live_jobs(data_dir: Path) -> int:
    with sqlite3.connect(data_dir / "lexicon.sqlite3") as connection:
        return int(connection.execute("SELECT count(*) FROM jobs").fetchone()[0])


@pytest.fixture
def writer(data_dir: Path) -> Iterator[subprocess.Popen[str]]:
    """A subprocess writing rows into the data dir's database for as long as the test runs."""
    process = start_child(WRITER, data_dir)
    assert first_line(process) == "ready"
    yield process
    process.kill()
    process.wait(timeout=30)


def test_backup_while_another_process_writes(
    data_dir: Path, tmp_path: Path, writer: subprocess.Popen[str]
) -> None:
    """A backup taken while another process inserts rows opens and passes integrity_check."""
    before = _live_jobs(data_dir)
    destination = tmp_path / "backup.sqlite3"
    backup_database(data_dir / "lexicon.sqlite3", destination)
    lines, version, jobs = _verdict(destination)
    assert lines == ["ok"] and version == latest_version()
    assert before <= jobs
    assert writer.poll() is None and _live_jobs(data_dir) > jobs  # the writer never stopped
    assert not any(p.name.startswith(".backup") for p in tmp_path.iterdir())


async def test_backup_during_concurrent_writes_in_process(store: Storage, tmp_path: Path) -> None:
    """`backup(db, path)` runs off the event loop while a writer task keeps committing."""
    stop = asyncio.Event()
    committed = asyncio.Condition()
    written = 0

    async def keep_writing() -> None:
        nonlocal written
        while not stop.is_set():
            await store.jobs.enqueue(1, "generate", {"n": written})
            async with committed:
                written += 1
                committed.notify_all()

    task = asyncio.create_task(keep_writing())
    async with committed:
        await committed.wait_for(lambda: written >= 10)
    await backup(store.db, tmp_path / "copy.sqlite3")
    at_backup = written
    async with committed:
        await committed.wait_for(lambda: written >= at_backup + 5)
    stop.set()
    await task
    lines, _, jobs = _verdict(tmp_path / "copy.sqlite3")
    assert lines == ["ok"] and 10 <= jobs <= at_backup + 1 < written


def test_backup_refuses_an_existing_path(data_dir: Path, tmp_path: Path) -> None:
    """An existing destination is never overwritten; the sentence says to pick another path."""
    asyncio.run(_make_database(data_dir))
    destination = tmp_path / "taken.sqlite3"
    destination.write_bytes(b"precious")
    with pytest.raises(StorageError, match="already exists; choose a new path"):
        backup_database(data_dir / "lexicon.sqlite3", destination)
    assert destination.read_bytes() == b"precious"


async def _make_database(data_dir: Path) -> Storage:
    store = await Storage.open(data_dir)
    await make_embedding(store, 1, "zorb", shared=True)
    await store.close()
    return store


Cli = Callable[..., subprocess.CompletedProcess[str]]


def test_cli_backup_during_writes_then_refuses_to_overwrite(
    cli: Cli, tmp_path: Path, writer: subprocess.Popen[str]
) -> None:
    """`lexicon db backup PATH` copies the live database; a second run to PATH is refused."""
    destination = tmp_path / "nightly.sqlite3"
    result = cli("db", "backup", str(destination))
    assert result.returncode == 0, result.stderr
    assert "Backed up" in result.stdout
    lines, version, jobs = _verdict(destination)
    assert lines == ["ok"] and version == latest_version() and jobs >= 20
    again = cli("db", "backup", str(destination))
    assert again.returncode == 1
    assert again.stderr.strip() == (
        f"lexicon db: {destination} already exists; choose a new path for the backup."
    )


def test_cli_check_reports_consistency_and_problems(cli: Cli, data_dir: Path) -> None:
    """`lexicon db check` exits 0 when consistent and 1, with one line per problem, when not."""
    store = asyncio.run(_make_database(data_dir))
    clean = cli("db", "check")
    assert clean.returncode == 0, clean.stderr
    assert "integrity ok" in clean.stdout
    orphan = store.files.put("images", b"a picture nobody owns")
    (embedding_file,) = store.files.scan("embeddings").files.values()
    embedding_file.unlink()
    broken = cli("db", "check")
    assert broken.returncode == 1
    assert "2 problem(s) found" in broken.stdout
    assert f"{store.files.path('images', orphan)} is a stored file that no row names." in (
        broken.stdout
    )
    assert "is missing but embedding #1 'zorb' needs it." in broken.stdout


def test_cli_check_without_a_database_says_where_it_looked(cli: Cli, data_dir: Path) -> None:
    """With no database in LEXICON_DATA_DIR, check fails with one sentence and creates nothing."""
    result = cli("db", "check")
    assert result.returncode == 1
    assert result.stderr.startswith("lexicon db: There is no database at ")
    assert result.stderr.count("\n") == 1
    assert not (data_dir / "lexicon.sqlite3").exists()
