"""The database file itself gone wrong: emptied, damaged, read-only, or shared by two Lexicons.

Each case goes through the real CLI in a subprocess (`python -m bot …` on the stand-in engine)
or through `Lexicon.open`, the bot's start-up path. What is promised: one sentence and exit
status 1, never a traceback; an empty database beside stored files is never "repaired" into
an empty store; and one data dir has one app core.

Tests run as root, where a 0444 file is still writable. The read-only child therefore drops
CAP_DAC_OVERRIDE from its capability bounding set before `exec` (the capability that lets root
ignore file modes), so SQLite really meets a file it may not write.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.app import Lexicon
from storage.errors import AlreadyRunning, DatabaseCorrupt, DatabaseEmpty
from storage.facade import Storage
from storage.maintenance import check
from storage.models import JobKind
from tests.bot.conftest import photo_bytes
from tests.conftest import lexicon_env, run_lexicon
from tests.e2e.conftest import standin_settings
from tests.hardening import hostile_files as hostile
from tests.hardening.conftest import stored_files

STANDIN = {
    "LEXICON_ENGINE": "standin",
    "LEXICON_MODEL": "standin",
    "LEXICON_ALLOWED_SIZES": "64x64",
    "LEXICON_TORCH_THREADS": "1",
}
PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE = 1

# Holds the app core of a data dir (as a running bot does) until its stdin closes.
HOLDER = textwrap.dedent(
    """
    import asyncio, sys
    from bot.app import Lexicon
    from bot.config import load_settings

    async def main():
        async with await Lexicon.open(load_settings(), start_worker=False):
            print("ready", flush=True)
            await asyncio.to_thread(sys.stdin.read)

    asyncio.run(main())
    """
)


def _drop_root_file_override() -> None:
    """In the child, before exec: root keeps every right but writing files it may not write."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def _cli(tmp_path: Path, *args: str, read_only: bool = False) -> subprocess.CompletedProcess[str]:
    preexec = _drop_root_file_override if read_only else None
    return run_lexicon(list(args), tmp_path, preexec_fn=preexec, **STANDIN)


def _refused(result: subprocess.CompletedProcess[str], command: str) -> str:
    """The one line the CLI printed, checked to be a clean refusal."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"lexicon {command}: "), result.stderr
    return lines[0].removeprefix(f"lexicon {command}: ")


async def _data_dir_with_an_embedding(data_dir: Path) -> frozenset[str]:
    """A data dir that has been used: one embedding row and its file; returns the files."""
    async with await Storage.open(data_dir) as storage:
        await storage.embeddings.create(
            0, "zorb", hostile.good_embedding(), n_vectors=2, width=32, family="tiny",
            source="imported",
        )  # fmt: skip
    files = stored_files(data_dir)
    assert len(files) == 1
    return files


def _empty_the_database(data_dir: Path) -> Path:
    database = data_dir / "lexicon.sqlite3"
    database.write_bytes(b"")
    for suffix in ("-wal", "-shm"):
        database.with_name(database.name + suffix).unlink(missing_ok=True)
    return database


def _photo_args(tmp_path: Path) -> list[str]:
    paths = []
    for index in range(3):
        path = tmp_path / f"p{index}.png"
        path.write_bytes(photo_bytes(index))
        paths.append(str(path))
    return paths


# --- item 6: an emptied database ---------------------------------------------------------------


async def test_start_on_an_emptied_database_refuses_and_keeps_every_file(tmp_path: Path) -> None:
    """A 0-byte database beside stored files: the start refuses, naming the backup, and deletes
    nothing; `db check` says the same without touching the 0-byte file."""
    data_dir = tmp_path / "data"
    files = await _data_dir_with_an_embedding(data_dir)
    database = _empty_the_database(data_dir)
    with pytest.raises(DatabaseEmpty) as refused:
        await Lexicon.open(standin_settings(data_dir), start_worker=False)
    assert str(refused.value) == (
        f"The database at {database} is missing or empty but the files folder holds 1 stored "
        "files, so the database was lost; stop Lexicon and copy your latest `lexicon db backup` "
        f"file over {database} (a start without it is refused, so nothing is deleted)."
    )
    assert stored_files(data_dir) == files
    assert _refused(_cli(tmp_path, "embeddings", "list"), "embeddings") == str(refused.value)
    checked = _cli(tmp_path, "db", "check")
    assert checked.returncode == 1 and "Traceback" not in checked.stderr
    assert checked.stdout.splitlines()[1:] == [f"  - {refused.value}"]
    assert "start Lexicon once" not in checked.stdout
    assert database.stat().st_size == 0 and stored_files(data_dir) == files


async def test_a_new_or_emptied_data_dir_without_files_starts(tmp_path: Path) -> None:
    """No files to lose: a brand-new data dir and a 0-byte database both initialise."""
    for data_dir in (tmp_path / "new", tmp_path / "emptied"):
        if data_dir.name == "emptied":
            data_dir.mkdir()
            _empty_the_database(data_dir)
        async with await Lexicon.open(standin_settings(data_dir), start_worker=False) as app:
            assert (await check(app.storage.db, app.storage.files)).problems == []


async def test_check_reports_jobs_running_with_no_live_lease(tmp_path: Path) -> None:
    """A job left `running` after its lease expired is a problem `check` names."""
    async with await Storage.open(tmp_path / "data") as storage:
        job = await storage.jobs.enqueue(1, JobKind.GENERATE, {"prompt": "x"})
        await storage.jobs.claim_ids([job.id], "gone-worker", lease_seconds=0.001)
        report = await check(storage.db, storage.files)
    assert len(report.problems) == 1
    assert report.problems[0].startswith(
        f"Job #{job.id} is marked running but the lease of its worker gone-worker expired at "
    )
    assert report.problems[0].endswith("; restart Lexicon to run it again.")


# --- item 11: one app core per data dir -------------------------------------------------------


@pytest.fixture
def running_lexicon(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding this data dir's app core, as a running bot does."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER],
        cwd=tmp_path,
        env=lexicon_env(tmp_path, **STANDIN),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready", process.communicate()[1]
    yield process
    process.kill()
    process.communicate(timeout=30)


def test_a_second_lexicon_on_a_data_dir_refuses(
    tmp_path: Path, running_lexicon: subprocess.Popen[str]
) -> None:
    """`lexicon imagine` beside a running one refuses in one sentence and queues nothing;
    `db check` and `db backup` still work; once the holder is killed, the CLI runs."""
    refused = _refused(_cli(tmp_path, "imagine", "a red cube"), "imagine")
    assert refused == (
        f"Lexicon is already running on this data folder (pid {running_lexicon.pid}); stop it "
        "first or use a different LEXICON_DATA_DIR."
    )
    assert _refused(_cli(tmp_path, "embeddings", "list"), "embeddings") == refused
    checked = _cli(tmp_path, "db", "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    backed_up = _cli(tmp_path, "db", "backup", str(tmp_path / "copy.sqlite3"))
    assert backed_up.returncode == 0, backed_up.stderr
    running_lexicon.send_signal(signal.SIGKILL)  # the kernel releases the lock of the dead
    running_lexicon.communicate(timeout=30)
    listed = _cli(tmp_path, "embeddings", "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout == "user 0 has no embeddings\n"


async def test_the_lock_is_released_on_close(tmp_path: Path) -> None:
    """In one process: a second open refuses while the first is open, and succeeds after."""
    settings = standin_settings(tmp_path / "data")
    first = await Lexicon.open(settings, start_worker=False)
    with pytest.raises(AlreadyRunning):
        await Lexicon.open(settings, start_worker=False)
    await first.close()
    async with await Lexicon.open(settings, start_worker=False):
        pass


# --- item 13: a damaged or read-only database ---------------------------------------------------


async def test_a_damaged_database_is_one_sentence_everywhere(tmp_path: Path) -> None:
    """Random bytes as the database: every CLI command and the bot's start say one sentence."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    database = data_dir / "lexicon.sqlite3"
    database.write_bytes(os.urandom(64 * 1024))
    sentence = (
        f"The database at {database} is damaged (file is not a database); stop Lexicon and "
        f"copy your latest `lexicon db backup` file over {database}."
    )
    with pytest.raises(DatabaseCorrupt) as refused:
        await Lexicon.open(standin_settings(data_dir), start_worker=False)
    assert str(refused.value) == sentence
    commands = {
        "db": [["db", "check"], ["db", "backup", str(tmp_path / "copy.sqlite3")]],
        "embeddings": [["embeddings", "list"]],
        "imagine": [["imagine", "a red cube"]],
        "train": [["train", *_photo_args(tmp_path), "--name", "zorb"]],
    }
    for command, calls in commands.items():
        for args in calls:
            assert _refused(_cli(tmp_path, *args), command) == sentence, args
    assert not (tmp_path / "copy.sqlite3").exists()


async def test_a_read_only_database_is_one_sentence(tmp_path: Path) -> None:
    """A database its process may not write: the commands that write refuse in one sentence;
    `db check` still reads it."""
    data_dir = tmp_path / "data"
    await _data_dir_with_an_embedding(data_dir)
    database = data_dir / "lexicon.sqlite3"
    database.chmod(0o444)
    sentence = (
        f"The database at {database} cannot be written (attempt to write a readonly "
        "database); give Lexicon's user write access to it and its folder, then start again."
    )
    assert _refused(_cli(tmp_path, "embeddings", "list", read_only=True), "embeddings") == sentence
    imagined = _cli(tmp_path, "imagine", "a red cube", read_only=True)
    assert _refused(imagined, "imagine") == sentence
    checked = _cli(tmp_path, "db", "check", read_only=True)
    assert "Traceback" not in checked.stderr
    assert checked.returncode == 0, checked.stdout + checked.stderr
