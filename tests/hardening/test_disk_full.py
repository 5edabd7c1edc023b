"""Disk full while a file or a row is written: a sentence, no row without its file, no partial
file, and a scheduler that carries on once there is space again.

Two faults: ENOSPC at the file store's write (its `open` replaced), and SQLite's own
SQLITE_FULL, raised by SQLite itself when the writer connection's `PRAGMA max_page_count` is
held at the database's size and its free pages are used up — the error a full disk gives.
"""

from __future__ import annotations

import asyncio
import builtins
import errno
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import storage.files
from bot.config import Settings
from storage.db import Database
from storage.errors import StorageFull
from storage.maintenance import check
from storage.models import FileKind, JobState
from tests.e2e.conftest import photo_options, refusal
from tests.hardening import hostile_files as hostile
from tests.hardening.conftest import stored, stored_files
from tests.simulation import Simulation, simulated

FULL_SENTENCE = "Lexicon's disk is full, so nothing was saved; try again later."
LONG_PROMPT = "a red cube on a blue table, " * 50  # a job row that cannot fit in a page's slack
# Finished, delivered rows of the CLI user: they fill the jobs table's last page and the free
# pages, and nothing ever dispatches or delivers them.
_FILLER = (
    "INSERT INTO jobs (user_id, kind, state, params, delivered, created_at, finished_at) "
    "VALUES (0, 'generate', 'cancelled', json_quote(hex(zeroblob(?))), 1, 0, 0)"
)


class _FullDisk:
    """A file that takes the first half of what is written, then fails with ENOSPC."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def write(self, data: bytes) -> int:
        self._handle.write(data[: len(data) // 2])
        self._handle.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()


FillDisk = Callable[..., list[Path]]


@pytest.fixture
def fill_disk(monkeypatch: pytest.MonkeyPatch) -> FillDisk:
    """`fill_disk(kind, after=n)`: the file store's writes of `kind` fail half-way from the
    (n+1)-th on; returns the list of paths it cut short."""

    def install(kind: FileKind, after: int = 0) -> list[Path]:
        cut: list[Path] = []
        seen = [0]

        def full_open(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            handle = builtins.open(path, mode, *args, **kwargs)  # noqa: SIM115 (returned)
            if kind.value in Path(path).parts and ("w" in mode or "x" in mode):
                seen[0] += 1
                if seen[0] > after:
                    cut.append(Path(path))
                    return _FullDisk(handle)
            return handle

        monkeypatch.setattr(storage.files, "open", full_open, raising=False)
        return cut

    return install


async def test_disk_full_while_an_imported_embedding_is_written(
    sim: Simulation, fill_disk: FillDisk
) -> None:
    """/embeddings import on a full disk: one sentence, no row, no partial or temp file."""
    cut = fill_disk(FileKind.EMBEDDINGS)
    alice = sim.member("alice")
    before = await stored(sim.app)
    result = await alice.slash(
        sim.channel,
        "embeddings import",
        file=("w.safetensors", hostile.good_embedding()),
        name="zorb",
    )
    assert refusal(result) == (
        "Lexicon could not save the embedding (no space left on device), so nothing was "
        "stored; try again later."
    )
    assert len(cut) == 1 and not cut[0].exists()  # the half-written temp file was removed
    assert await stored(sim.app) == before


async def test_disk_full_while_a_trained_embedding_is_stored(
    sim: Simulation, fill_disk: FillDisk
) -> None:
    """The store call a finished training makes: it raises, and leaves no row and no file."""
    cut = fill_disk(FileKind.EMBEDDINGS)
    with pytest.raises(OSError) as raised:
        await sim.app.storage.embeddings.create(
            1,
            "zorb",
            hostile.good_embedding(),
            n_vectors=2,
            width=32,
            family="tiny",
            source="trained",
        )
    assert raised.value.errno == errno.ENOSPC
    assert len(cut) == 1 and not cut[0].exists()
    assert (await stored(sim.app)).embeddings == 0
    assert stored_files(sim.settings.data_dir) == frozenset()


async def test_disk_full_while_training_photos_are_stored(
    sim: Simulation, fill_disk: FillDisk
) -> None:
    """The disk fills after the first photo: a sentence, no job; the sweep clears the rest."""
    cut = fill_disk(FileKind.PHOTOS, after=1)
    alice = sim.member("alice")
    result = await alice.slash(sim.channel, "train", name="zorb", **photo_options())
    assert refusal(result) == (
        "Lexicon could not save the photos (no space left on device), so nothing was stored; "
        "try again later."
    )
    assert len(cut) == 1 and not cut[0].exists()
    after = await stored(sim.app)
    assert (after.jobs, after.embeddings) == (0, 0)
    assert not [name for name in after.files if ".tmp-" in name]  # nothing partial
    report = await sim.app.storage.sweep()  # what the next start-up does
    assert len(report.removed_orphans) == len(after.files) <= 1
    assert (await check(sim.app.storage.db, sim.app.storage.files)).problems == []


async def fill_database(db: Database) -> None:
    """From now on the database cannot grow: SQLITE_FULL for any write that needs a page."""
    async with db.transaction() as transaction:
        await transaction.execute("INSERT OR IGNORE INTO users (id, created_at) VALUES (0, 0)")
        pages = await transaction.fetch_value("PRAGMA page_count")
        await transaction.fetch_all(f"PRAGMA max_page_count = {pages}")
    size = 4096
    while size:
        try:
            async with db.transaction() as transaction:
                await transaction.execute(_FILLER, (size,))
        except StorageFull:
            size //= 2


async def free_database(db: Database) -> None:
    """Space again: the page limit back to SQLite's default."""
    async with db.transaction() as transaction:
        await transaction.fetch_all("PRAGMA max_page_count = 4294967294")


def scheduler_alive(sim: Simulation) -> bool:
    """Every loop of the scheduler (dispatch, leases, events) is still running."""
    tasks = sim.app.scheduler._tasks  # the loops themselves, not a proxy for them
    return len(tasks) == 3 and not any(task.done() for task in tasks)


async def test_database_full_while_jobs_are_queued(settings: Settings) -> None:
    """SQLITE_FULL while two jobs are queued: the member reads one sentence, the scheduler
    lives, and once there is space every queued job and a new one run to success."""
    async with simulated(settings, standin_step_seconds=0.25) as sim:
        alice, bob, carol = sim.member("alice"), sim.member("bob"), sim.member("carol")
        for member in (alice, bob):
            await member.slash(sim.channel, "imagine", prompt="a red cube")
        queued = [await sim.latest_job(member) for member in (alice, bob)]
        await fill_database(sim.app.storage.db)

        refused = await carol.slash(sim.channel, "imagine", prompt=LONG_PROMPT)
        assert refusal(refused) == FULL_SENTENCE
        assert await sim.app.storage.jobs.list_for_user(carol.id, states=None) == []
        await asyncio.sleep(3 * sim.app.scheduler.lease_seconds / 3)  # the loops meet the fault
        assert scheduler_alive(sim)

        await free_database(sim.app.storage.db)
        for job in queued:
            done = await sim.job_done(job.id, limit=90)
            assert done.state is JobState.SUCCEEDED, done.error
        await carol.slash(sim.channel, "imagine", prompt=LONG_PROMPT)
        assert (await sim.job_done(carol)).state is JobState.SUCCEEDED
        assert scheduler_alive(sim)
        assert (await check(sim.app.storage.db, sim.app.storage.files)).problems == []


async def test_scheduler_loops_survive_any_exception(
    sim: Simulation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug-like error (not a StorageError) in dispatch and in the lease check is logged and
    retried: the loops live on and the member's job still runs."""
    jobs = sim.app.storage.jobs
    failures = {"fair_order": 2, "requeue_expired_leases": 2}

    def failing(name: str) -> Callable[..., Any]:
        real = getattr(jobs, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            if failures[name]:
                failures[name] -= 1
                raise RuntimeError(f"{name} broke")
            return await real(*args, **kwargs)

        return call

    for name in failures:
        monkeypatch.setattr(jobs, name, failing(name))
    alice = sim.member("alice")
    await alice.slash(sim.channel, "imagine", prompt="a red cube")
    assert (await sim.job_done(alice, limit=60)).state is JobState.SUCCEEDED
    await sim.until(lambda: not any(failures.values()), limit=60, what="both faults to fire")
    assert scheduler_alive(sim)
