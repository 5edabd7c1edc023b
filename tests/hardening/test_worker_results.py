"""Results are taken only from the worker holding the lease, and checked (issue 15, item 12 b).

A report about a job from any other worker is ignored; a trained embedding that is not a valid
Lexicon file of the served model is refused like a bad import, and the training runs again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from bot.app import Lexicon, default_transport
from bot.services import ImagineOptions, TrainOptions
from bot.transport import LocalTransport
from engine.embedding_metadata import check_trained
from engine.jobs import GeneratedImage, TrainResult
from engine.protocol import GenerateDone, TrainDone
from storage.errors import LeaseLost
from storage.files import FileKind
from storage.models import Job, JobState
from tests.bot.conftest import three_photos
from tests.hardening.conftest import standin_settings


@asynccontextmanager
async def _app(tmp_path: Path, **spec: float) -> AsyncIterator[Lexicon]:
    settings = standin_settings(tmp_path / "data", train_steps=10, train_slice_steps=5)
    transport = default_transport(settings)
    assert isinstance(transport, LocalTransport)
    transport.spec = dataclasses.replace(transport.spec, **spec)
    app = await Lexicon.open(settings, transport)
    try:
        await app.wait_for_worker(120)
        yield app
    finally:
        await app.close()


async def _running(app: Lexicon, job_id: int) -> Job:
    for _ in range(600):
        job = await app.storage.jobs.get(job_id)
        if job.state is JobState.RUNNING and job.lease_owner:
            return job
        await asyncio.sleep(0.02)
    raise AssertionError("the job never started")


async def test_a_result_from_another_worker_is_ignored(tmp_path: Path) -> None:
    """A GenerateDone for the running attempt from a worker without the lease stores nothing."""
    async with _app(tmp_path, standin_step_seconds=0.3) as app:
        submitted = await app.imagine.submit(1, ImagineOptions("a red cube", seed=3, steps=6))
        job = await _running(app, submitted.job.id)
        forged = GeneratedImage(0, 3, b"\x89PNG forged")
        with pytest.raises(LeaseLost):  # the event loop logs it as a stale report and goes on
            await app.scheduler.handle(
                GenerateDone(job.id, job.attempts, (forged,), 0.1, worker_id="intruder")
            )
        assert (await app.storage.jobs.get(job.id)).state is JobState.RUNNING
        assert await app.storage.images.list_for_job(job.id) == []
        finished = await asyncio.wait_for(app.wait_for_job(job.id), 60)
        assert finished.state is JobState.SUCCEEDED and finished.attempts == 1
        images = await app.storage.images.list_for_job(job.id)
        assert len(images) == 1
        stored = app.storage.files.read(FileKind.IMAGES, images[0].sha256)
        assert stored != forged.png


async def test_a_damaged_trained_embedding_is_refused_and_trained_again(tmp_path: Path) -> None:
    """Junk TrainDone bytes from the lease holder are not stored; attempt 2 stores a valid file."""
    async with _app(tmp_path, standin_start_seconds=2.0) as app:
        submitted = await app.train.submit(5, TrainOptions("zorbify", three_photos()))
        job = await _running(app, submitted.job.id)
        junk = b"\x10\x00\x00\x00\x00\x00\x00\x00" + b'{"emb_params":1}' + b"\x00" * 128
        result = TrainResult(junk, hashlib.sha256(junk).hexdigest(), 1, 32, "tiny", 10, 0.1, ())
        assert job.lease_owner is not None
        await app.scheduler.handle(
            TrainDone(job.id, job.attempts, result, 1.0, worker_id=job.lease_owner)
        )
        assert await app.storage.embeddings.list_owned(5) == []
        retried = await app.storage.jobs.get(job.id)
        assert retried.state in (JobState.QUEUED, JobState.RUNNING) and "damaged" in (
            retried.error or ""
        )
        finished = await asyncio.wait_for(app.wait_for_job(job.id), 60)
        assert finished.state is JobState.SUCCEEDED and finished.attempts == 2
        (embedding,) = await app.storage.embeddings.list_owned(5)
        data = app.storage.files.read(FileKind.EMBEDDINGS, embedding.sha256)
        assert check_trained(data, n_vectors=1, family="tiny") == 32
