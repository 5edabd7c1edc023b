"""The GPU worker is SIGKILLed at random moments: every job still finishes exactly once."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import signal
from pathlib import Path

from bot.app import Lexicon, default_transport
from bot.services import ImagineOptions, TrainOptions
from bot.transport import LocalTransport
from storage.maintenance import check
from storage.models import JobKind, JobState
from tests.bot.conftest import three_photos, worker_pid
from tests.hardening.conftest import standin_settings

RUNS = 20
SEED = 1010
STEP_SECONDS = 0.01  # the stand-in engine's time per step: a run's work takes ~0.3 s


async def _open(data_dir: Path) -> tuple[Lexicon, LocalTransport]:
    # Kills are noticed through the pipe, never through leases: the default 30 s lease means
    # an attempt above 2 is a job handed out twice, not a loaded machine's late heartbeat.
    settings = standin_settings(data_dir, train_steps=20, train_slice_steps=5, checkpoint_every=5)
    transport = default_transport(settings)
    assert isinstance(transport, LocalTransport)
    transport.spec = dataclasses.replace(transport.spec, standin_step_seconds=STEP_SECONDS)
    transport.restart_delay = 0.05
    app = await Lexicon.open(settings, transport)
    await app.wait_for_worker(120)
    return app, transport


async def test_worker_sigkill_at_random_points_loses_and_repeats_nothing(tmp_path: Path) -> None:
    """20 seeded kills (queued, batching, mid-step, checkpointing, reporting): all jobs succeed."""
    rng = random.Random(SEED)
    app, transport = await _open(tmp_path / "data")
    kills_while_running = reruns = 0
    try:
        for run in range(RUNS):
            users = [run * 10 + offset for offset in range(4)]
            jobs = [
                (
                    await app.imagine.submit(
                        user, ImagineOptions(f"a cube {run}", seed=user, steps=8, count=2)
                    )
                ).job
                for user in users[:3]
            ]
            photos = [(name, data) for name, data in three_photos(seed=run)]
            jobs.append((await app.train.submit(users[3], TrainOptions(f"word{run}", photos))).job)
            await asyncio.sleep(rng.uniform(0.0, 0.35))
            running = await app.storage.jobs.list_for_user(users[3], states=[JobState.RUNNING])
            kills_while_running += bool(running)
            os.kill(worker_pid(transport), signal.SIGKILL)
            finished = await asyncio.wait_for(
                asyncio.gather(*(app.wait_for_job(job.id) for job in jobs)), 60
            )
            for job in finished:
                assert job.state is JobState.SUCCEEDED, (run, job.id, job.error)
                assert job.attempts <= 2, (run, job.id, job.attempts)
                reruns += job.attempts - 1
                images = await app.storage.images.list_for_job(job.id)
                if job.kind is JobKind.GENERATE:
                    assert sorted(i.idx for i in images) == [0, 1]  # no image lost or doubled
            embeddings = await app.storage.embeddings.list_owned(users[3])
            assert [e.name for e in embeddings] == [f"word{run}"]  # trained exactly once
            await app.wait_for_worker(60)
        assert kills_while_running >= RUNS // 2  # the seed does hit running training
        # and the killed work did run again (fewer on a loaded machine, whose worker takes
        # longer to claim its first jobs before the kill)
        assert reruns >= RUNS // 2
        report = await check(app.storage.db, app.storage.files)
        assert not report.temp_files and not report.missing_files, report.problems
        assert report.integrity == ("ok",)
    finally:
        await app.close()
