"""Fixtures for tests that run the application core with a real worker process."""

from __future__ import annotations

import asyncio
import contextlib
import io
import multiprocessing
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bot.app import Lexicon
from bot.config import Settings
from bot.hub import JobUpdate
from bot.transport import LocalTransport
from engine import protocol
from engine.tiny import make_tiny_model


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny model for the whole session (building it takes seconds)."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"), seed=0)


@pytest.fixture(autouse=True)
def _no_operator_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("LEXICON_", "DISCORD_")):
            monkeypatch.delenv(name)


def worker_pid(transport: LocalTransport) -> int:
    """The pid of the transport's live worker: the one child process named after its worker id."""
    prefix = f"{transport.config.worker_id}-"
    pids = [c.pid for c in multiprocessing.active_children() if c.name.startswith(prefix)]
    assert len(pids) == 1 and pids[0] is not None, pids
    return pids[0]


def make_settings(data_dir: Path, model: Path | str, **overrides: Any) -> Settings:
    """Test settings on `model` (LEXICON_MODEL), or on `model_list` (LEXICON_MODELS) if given."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "device": "cpu",
        "allowed_sizes": ["64x64"],
        "default_steps": 4,
        "max_queued_per_user": 50,
        "lease_seconds": 10.0,
        "train_steps": 20,
        "train_slice_steps": 5,
        "checkpoint_every": 5,
        "torch_threads": 1,  # two cores shared by several processes: no oversubscription
    }
    if "model_list" not in overrides:
        values["model"] = str(model)
    values.update(overrides)
    return Settings(**values)


AppFactory = Callable[..., contextlib.AbstractAsyncContextManager[Lexicon]]


@pytest.fixture
def open_app(tmp_path: Path, tiny_model_path: Path) -> AppFactory:
    """`async with open_app(**settings) as app:` — a Lexicon with a live worker process."""

    @contextlib.asynccontextmanager
    async def factory(**overrides: Any) -> AsyncIterator[Lexicon]:
        settings = make_settings(tmp_path / "data", tiny_model_path, **overrides)
        app = await Lexicon.open(settings)
        try:
            await app.wait_for_worker(limit_seconds=180)
            yield app
        finally:
            await app.close()

    return factory


def photo_bytes(seed: int, side: int = 256) -> bytes:
    """A distinct, valid PNG photo (noise with a coloured square) of at least 256 px."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, size=(side, side, 3), dtype=np.uint8)
    pixels[side // 4 : side // 2, side // 4 : side // 2] = rng.integers(0, 255, size=3)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def three_photos(seed: int = 0) -> list[tuple[str, bytes]]:
    return [(f"photo{i}.png", photo_bytes(seed * 10 + i)) for i in range(3)]


@contextlib.asynccontextmanager
async def recording(app: Lexicon) -> AsyncIterator[list[JobUpdate]]:
    """Collect every job update published while the block runs."""
    seen: list[JobUpdate] = []
    with app.hub.subscribe() as updates:

        async def pump() -> None:
            while True:
                seen.append(await updates.get())

        task = asyncio.create_task(pump())
        try:
            yield seen
        finally:
            task.cancel()


async def until(condition: Callable[[], bool], limit: float = 120.0) -> None:
    """Poll a condition on job updates (they arrive on the event loop) until it holds."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


async def wait_all(app: Lexicon, job_ids: list[int], limit: float = 240.0) -> None:
    await asyncio.wait_for(asyncio.gather(*(app.wait_for_job(j) for j in job_ids)), limit)


class RecordingTransport:
    """A `Transport` with no worker behind it: events come from the test, batches are kept."""

    def __init__(self) -> None:
        self.events_in: asyncio.Queue[protocol.FromWorker] = asyncio.Queue()
        self.batches: list[list[int]] = []

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def submit(self, work: protocol.GenerateBatch | protocol.TrainJob) -> None:
        assert isinstance(work, protocol.GenerateBatch)
        self.batches.append([job.job_id for job in work.jobs])

    async def cancel(self, job_id: int) -> None:
        pass

    async def events(self) -> AsyncIterator[protocol.FromWorker]:
        while True:
            yield await self.events_in.get()
