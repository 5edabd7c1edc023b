"""The bot process is SIGKILLed while it writes the database and the file store: the next open
passes SQLite's integrity check, sweeps the debris and has every committed row."""

from __future__ import annotations

import asyncio
import random
import signal
import sys
from pathlib import Path

from storage.facade import Storage
from storage.maintenance import check
from storage.models import FileKind
from tests.conftest import REPO_ROOT, lexicon_env

KILLS = 6
SEED = 77


async def _write_then_kill(
    data_dir: Path, tmp_path: Path, rng: random.Random, run: int
) -> list[str]:
    """Run the writer, SIGKILL it after a random number of commits plus a random delay; return
    the commits it reported."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.hardening.db_writer",
        str(data_dir),
        str(run),
        cwd=REPO_ROOT,
        env=lexicon_env(tmp_path),
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    committed: list[str] = []
    wanted = rng.randint(2, 12)
    try:
        assert await asyncio.wait_for(process.stdout.readline(), 60) == b"open\n"
        while len(committed) < wanted:
            line = await asyncio.wait_for(process.stdout.readline(), 60)
            assert line, "the writer stopped by itself"
            committed.append(line.decode().strip())
        await asyncio.sleep(rng.uniform(0.0, 0.15))
    finally:
        process.send_signal(signal.SIGKILL)
        rest, _ = await process.communicate()
    committed += rest.decode().split("\n")
    return [line for line in committed if line]


async def test_bot_sigkill_while_writing_loses_no_committed_row(tmp_path: Path) -> None:
    """6 seeded kills mid-write: integrity ok, orphans and temp files swept, no commit lost."""
    rng = random.Random(SEED)
    data_dir = tmp_path / "data"
    committed: list[str] = []
    swept = 0
    for run in range(KILLS):
        committed += await _write_then_kill(data_dir, tmp_path, rng, run)
        storage = await Storage.open(data_dir)
        try:
            assert (await storage.db.fetch_all("PRAGMA integrity_check"))[0][0] == "ok"
            report = await storage.sweep()
            swept += len(report.removed_orphans) + len(report.removed_temp)
            after = await check(storage.db, storage.files)
            assert after.problems == []
            job_ids = {row[0] for row in await storage.db.fetch_all("SELECT id FROM jobs")}
            embedding_ids = {
                row[0] for row in await storage.db.fetch_all("SELECT id FROM embeddings")
            }
            for line in committed:
                kind, number = line.split()
                assert int(number) in (job_ids if kind == "job" else embedding_ids), line
            for job_id in job_ids:
                for sha in await storage.jobs.photos(job_id):
                    assert storage.files.exists(FileKind.PHOTOS, sha)
        finally:
            await storage.close()
    assert len(committed) >= 2 * KILLS
    assert swept >= 1  # some kill did leave a temp or unnamed file, and the sweep cleared it
    print(f"{len(committed)} commits survived {KILLS} kills; the sweeps removed {swept} files")
