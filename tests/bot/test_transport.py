"""The embedded transport: a real spawned worker process, spoken to over a pipe."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from bot.transport import LocalTransport
from engine.jobs import GenerateRequest, TrainRequest
from engine.protocol import (
    GenerateBatch,
    GenerateDone,
    GenerateJob,
    JobCancelled,
    SlotFree,
    TrainDone,
    TrainJob,
    WorkerLost,
    WorkerReady,
)
from engine.worker_config import EngineSpec, ModelSource, WorkerConfig
from tests.bot.conftest import worker_pid


def _transport(tmp_path: Path, step_seconds: float = 0.0) -> LocalTransport:
    models = (ModelSource("standin", "standin"),)
    spec = EngineSpec("standin", models, "cpu", tmp_path, standin_step_seconds=step_seconds)
    return LocalTransport(spec, WorkerConfig("test", train_slice_steps=5), restart_delay=0.1)


async def _next(transport: LocalTransport, kind: type, limit: float = 60.0):
    async def wait():
        async for event in transport.events():
            if isinstance(event, kind):
                return event

    return await asyncio.wait_for(wait(), limit)


def _request(prompt: str, seed: int = 1) -> GenerateRequest:
    return GenerateRequest(prompt, seed, steps=4, guidance=7.0, width=64, height=64, count=2)


async def test_batch_round_trip(tmp_path: Path) -> None:
    """A batch goes to the child and each job's images come back."""
    transport = _transport(tmp_path)
    await transport.start()
    try:
        ready = await _next(transport, WorkerReady)
        assert ready.models[0].family == "tiny"
        jobs = (GenerateJob(1, 1, _request("a")), GenerateJob(2, 1, _request("b")))
        await transport.submit(GenerateBatch(jobs))
        done = [await _next(transport, GenerateDone), await _next(transport, GenerateDone)]
        assert sorted(d.job_id for d in done) == [1, 2]
        assert all(len(d.images) == 2 and d.images[0].png.startswith(b"\x89PNG") for d in done)
    finally:
        await transport.close()


async def test_training_and_cancel(tmp_path: Path) -> None:
    """Training finishes with an embedding file; a cancelled job reports cancelled."""
    transport = _transport(tmp_path, step_seconds=0.01)
    await transport.start()
    try:
        await _next(transport, WorkerReady)
        photos = (b"a", b"b", b"c")
        await transport.submit(TrainJob(7, 1, TrainRequest("zorb", photos, steps=12)))
        done = await _next(transport, TrainDone)
        assert done.job_id == 7 and done.result.steps == 12
        await transport.submit(GenerateBatch((GenerateJob(9, 1, _request("slow")),)))
        await transport.cancel(9)
        cancelled = await _next(transport, JobCancelled)
        assert cancelled.job_id == 9
    finally:
        await transport.close()


async def test_killed_worker_is_reported_and_restarted(tmp_path: Path) -> None:
    """SIGKILL of the child yields WorkerLost, then a fresh worker comes up."""
    transport = _transport(tmp_path)
    await transport.start()
    try:
        first = await _next(transport, WorkerReady)
        pid = worker_pid(transport)
        os.kill(pid, signal.SIGKILL)
        lost = await _next(transport, WorkerLost)
        assert lost.worker_id == first.worker_id and "died" in lost.reason
        second = await _next(transport, WorkerReady)
        assert second.worker_id != first.worker_id
        assert worker_pid(transport) != pid
        free = await _next(transport, SlotFree)
        assert free.worker_id == second.worker_id
    finally:
        await transport.close()


async def test_worker_that_cannot_start_says_why(tmp_path: Path) -> None:
    """A worker whose engine fails to load is not restarted in a loop; the reason is kept."""
    models = (ModelSource("missing", str(tmp_path / "no-such-model")),)
    spec = EngineSpec("diffusers", models, "cpu", tmp_path)
    transport = LocalTransport(spec, WorkerConfig("bad"), restart_delay=0.1)
    await transport.start()
    try:
        lost = await _next(transport, WorkerLost, limit=120)
        assert "could not start" in lost.reason
        await asyncio.sleep(0.5)
        assert transport.startup_error == lost.reason
    finally:
        await transport.close()
