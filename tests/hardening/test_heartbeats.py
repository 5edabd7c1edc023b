"""Heartbeats cover a job from the moment the worker receives it (issue 15, item 10).

A training that takes longer to start than the lease (a model warming up, photos decoding,
latents encoding) used to send no heartbeat, so its lease ran out, it was requeued, and after
three "interrupted" attempts it failed. Here it must succeed on its first attempt.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from bot.app import Lexicon, default_transport
from bot.hub import JobUpdate
from bot.services import TrainOptions
from bot.transport import LocalTransport
from storage.models import JobState
from tests.bot.conftest import recording, three_photos
from tests.hardening.conftest import standin_settings

LEASE_SECONDS = 2.0
START_SECONDS = 3 * LEASE_SECONDS


async def test_a_training_slower_to_start_than_its_lease_runs_once(tmp_path: Path) -> None:
    """A stand-in training that takes 3 leases to start succeeds on attempt 1, never requeued."""
    settings = standin_settings(
        tmp_path / "data", train_steps=10, train_slice_steps=5, lease_seconds=LEASE_SECONDS
    )
    transport = default_transport(settings)
    assert isinstance(transport, LocalTransport)
    transport.spec = dataclasses.replace(transport.spec, standin_start_seconds=START_SECONDS)
    transport.config = dataclasses.replace(transport.config, heartbeat_interval=0.3)
    app = await Lexicon.open(settings, transport)
    try:
        await app.wait_for_worker(120)
        async with recording(app) as updates:
            submitted = await app.train.submit(7, TrainOptions("slowstart", three_photos()))
            job = await asyncio.wait_for(app.wait_for_job(submitted.job.id), 60)
        assert job.state is JobState.SUCCEEDED, job.error
        assert job.attempts == 1
        kinds = [u.kind for u in updates if isinstance(u, JobUpdate) and u.job_id == job.id]
        assert "retry" not in kinds and kinds.count("started") == 1, kinds
    finally:
        await app.close()
