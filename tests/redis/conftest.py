"""A real redis-server on loopback, standalone worker processes and a bot core that uses them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from bot.app import Lexicon
from bot.hub import JobUpdate
from bot.redis_transport import RedisTransport
from storage.models import JobState
from tests.bot.conftest import (  # noqa: F401 - fixtures and helpers shared with the bot tests
    _no_operator_env,
    make_settings,
    recording,
    tiny_model_path,
    until,
    wait_all,
)
from tests.conftest import REPO_ROOT, lexicon_env

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
LEASE_SECONDS = 8.0  # workers beat every 0.53 s and are declared lost 2.7 s after their last


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class RedisServer:
    """One redis-server without persistence: a restart loses everything, as the worst case."""

    directory: Path
    port: int = field(default_factory=_free_port)
    process: subprocess.Popen[bytes] | None = None
    password: str | None = None  # started with --requirepass when set

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.directory),
                "--save", "",
                "--appendonly", "no",
                "--logfile", str(self.directory / "redis.log"),
                *(["--requirepass", self.password] if self.password else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port, password=self.password, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.02)
        client.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown, no save."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, password=self.password)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory)
    server.start()
    try:
        yield server
    finally:
        server.kill()


# --- worker processes ---------------------------------------------------------------------

_STANDIN_WORKER = """
import logging, sys
from pathlib import Path
sys.path.insert(0, {root!r})
logging.basicConfig(level=logging.INFO, format="%(asctime)s {worker_id} %(name)s: %(message)s")
from engine.redis_wire import liveness_for
from engine.worker.redis import serve
from engine.worker_config import EngineSpec, ModelSource, WorkerConfig
heartbeat, ttl = liveness_for({lease!r})
models = tuple(ModelSource(name, "standin") for name in {models!r})
spec = EngineSpec("standin", models, "cpu", Path({data!r}), standin_step_seconds={step!r},
                  standin_start_seconds={start!r})
config = WorkerConfig({worker_id!r}, max_batch={max_batch!r}, train_slice_steps=5,
                      checkpoint_every=5, heartbeat_interval=heartbeat)
sys.exit(serve({url!r}, spec, config, ttl=ttl))
"""


@dataclass
class WorkerProcess:
    worker_id: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self, signum: int = signal.SIGKILL) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signum)

    def wait(self, limit: float = 60.0) -> int:
        return self.process.wait(limit)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class Workers:
    """Starts worker processes for a test and makes sure none outlives it."""

    def __init__(self, redis_server: RedisServer, tmp_path: Path) -> None:
        self.redis = redis_server
        self.tmp_path = tmp_path
        self.started: list[WorkerProcess] = []

    def standin(
        self,
        worker_id: str,
        *,
        step_seconds: float = 0.0,
        max_batch: int = 8,
        start_seconds: float = 0.0,
        models: tuple[str, ...] = ("standin",),
    ) -> WorkerProcess:
        """A worker with the stand-in engine (one per model name in `models`), started through
        `engine.worker.redis.serve`."""
        script = _STANDIN_WORKER.format(
            models=models,
            root=str(REPO_ROOT),
            worker_id=worker_id,
            lease=LEASE_SECONDS,
            data=str(self.tmp_path / "worker-data"),
            step=step_seconds,
            start=start_seconds,
            max_batch=max_batch,
            url=self.redis.url,
        )
        return self._spawn(worker_id, [sys.executable, "-c", script], dict(os.environ))

    def standins(self, count: int, *, step_seconds: float, max_batch: int = 8) -> None:
        """`count` stand-in workers alike, named w0, w1, …"""
        for index in range(count):
            self.standin(f"w{index}", step_seconds=step_seconds, max_batch=max_batch)

    def cli(self, name: str, model: Path, *extra: str) -> WorkerProcess:
        """A real `lexicon worker --queue …` with the tiny model, one torch thread."""
        env = lexicon_env(
            self.tmp_path / name,
            LEXICON_MODEL=str(model),
            LEXICON_DEVICE="cpu",
            LEXICON_TORCH_THREADS="1",
            LEXICON_LEASE_SECONDS=str(LEASE_SECONDS),
            LEXICON_TRAIN_SLICE_STEPS="5",
        )
        command = [sys.executable, "-m", "bot", "worker", "--queue", self.redis.url, *extra]
        return self._spawn(name, command, env)

    def cli_holding(self, name: str, models: str, holds: str) -> WorkerProcess:
        """A real `lexicon worker --queue …` of a deployment of several models (`models`, as in
        LEXICON_MODELS) that holds only `holds` (LEXICON_WORKER_MODELS), one torch thread."""
        env = lexicon_env(
            self.tmp_path / name,
            LEXICON_MODELS=models,
            LEXICON_WORKER_MODELS=holds,
            LEXICON_DEVICE="cpu",
            LEXICON_TORCH_THREADS="1",
            LEXICON_LEASE_SECONDS=str(LEASE_SECONDS),
        )
        command = [sys.executable, "-m", "bot", "worker", "--queue", self.redis.url]
        return self._spawn(name, command, env)

    def _spawn(self, name: str, command: list[str], env: dict[str, str]) -> WorkerProcess:
        log_path = self.tmp_path / f"{name}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                command, cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT
            )
        worker = WorkerProcess(name, process, log_path)
        self.started.append(worker)
        return worker

    def stop_all(self) -> None:
        for worker in self.started:
            worker.kill(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.wait(10)


@pytest.fixture
def workers(redis_server: RedisServer, tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(redis_server, tmp_path)
    try:
        yield pool
    finally:
        pool.stop_all()


# --- the bot side -------------------------------------------------------------------------


def redis_transport(url: str, **overrides: Any) -> RedisTransport:
    values: dict[str, Any] = {
        "check_interval": 0.2,
        "reclaim_idle_seconds": 4.0,
        "reconnect_grace": 5.0,
        "models": ("standin",),  # the configured model of the stand-in workers
    }
    values.update(overrides)
    return RedisTransport(url, **values)


@contextlib.asynccontextmanager
async def open_bot(
    data_dir: Path, url: str, model: Path | str = "standin", **overrides: Any
) -> AsyncIterator[Lexicon]:
    """A bot core on `data_dir` whose scheduler talks to workers through Redis."""
    values: dict[str, Any] = {"lease_seconds": LEASE_SECONDS, "max_queued_per_user": 100}
    if model == "standin":
        values["engine"] = "standin"
    values.update(overrides)
    transport_options = values.pop("transport_options", {})
    settings = make_settings(data_dir, model, queue=url, **values)
    transport_options.setdefault("models", tuple(model.name for model in settings.models))
    app = await Lexicon.open(settings, redis_transport(url, **transport_options))
    try:
        yield app
    finally:
        await app.close()


async def until_async(condition: Callable[[], Any], limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit
    while not await condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def assert_each_finished_once(
    app: Lexicon, job_ids: list[int], updates: list[JobUpdate], images_per_job: int = 1
) -> None:
    """Every job succeeded, has its images once, and was reported succeeded exactly once."""
    lost = []
    for job_id in job_ids:
        job = await app.storage.jobs.get(job_id)
        images = await app.storage.images.list_for_job(job_id)
        if job.state is not JobState.SUCCEEDED or len(images) != images_per_job:
            lost.append((job_id, job.state.value, len(images), job.error))
    assert lost == []
    succeeded = [u.job_id for u in updates if u.kind == "succeeded" and u.job_id in job_ids]
    assert sorted(succeeded) == sorted(job_ids)


def redis_leftovers(client: redis.Redis) -> dict[str, int]:
    """What a finished run left in Redis: work entries, payloads, results, pending reads."""
    streams = list(client.scan_iter("lexicon:work:*"))  # one per slot kind and model
    left = {
        "work": sum(client.xlen(stream) for stream in streams),
        "pending": sum(int(client.xpending(stream, "workers")["pending"]) for stream in streams),
        "events": client.xlen("lexicon:events:bot"),
        "payloads": len(list(client.scan_iter("lexicon:payload:*"))),
    }
    return {name: count for name, count in left.items() if count}


async def assert_redis_clean(client: redis.Redis, limit: float = 5.0) -> None:
    """Nothing of a finished run stays in Redis (acknowledgements are flushed within 0.5 s)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if not redis_leftovers(client):
            return
        await asyncio.sleep(0.1)
    assert redis_leftovers(client) == {}


def observe_events(app: Lexicon) -> list[Any]:
    """Every event the scheduler handles, in order (the scheduler still handles each)."""
    seen: list[Any] = []
    handle = app.scheduler.handle

    async def recording_handle(event: Any) -> None:
        seen.append(event)
        await handle(event)

    app.scheduler.handle = recording_handle  # type: ignore[method-assign]
    return seen
