"""The optional Prometheus endpoint, and the metrics the scheduler records."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from pathlib import Path

from prometheus_client import REGISTRY

from bot.app import Lexicon
from bot.hub import JobHub
from bot.scheduler import Scheduler
from bot.services import ImagineOptions
from engine import protocol
from storage import Storage
from tests.bot.conftest import RecordingTransport, make_settings


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_metrics_endpoint_reports_queue_batches_and_times(tmp_path: Path) -> None:
    """With LEXICON_METRICS_PORT set, /metrics shows queue depth, batches, wait and run times."""
    port = _free_port()
    settings = make_settings(tmp_path / "data", "standin", engine="standin", metrics_port=port)
    app = await Lexicon.open(settings)
    try:
        await app.wait_for_worker(limit_seconds=60)
        job = (await app.imagine.submit(1, ImagineOptions("a cat"))).job
        await app.wait_for_job(job.id)
        url = f"http://127.0.0.1:{port}/metrics"
        text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())
    finally:
        await app.close()
    body = text.decode()
    for name in (
        "lexicon_queue_depth",
        "lexicon_batch_jobs_count",
        'lexicon_wait_seconds_count{kind="generate"}',
        'lexicon_run_seconds_count{kind="generate"}',
    ):
        assert name in body, name
    batches = next(
        line for line in body.splitlines() if line.startswith("lexicon_batch_jobs_count")
    )
    assert float(batches.split()[-1]) >= 1


def _switch_samples(model: str) -> tuple[float, float, float]:
    """(switches, switch seconds summed, switches timed) recorded so far for `model`."""
    labels = {"model": model}
    return (
        REGISTRY.get_sample_value("lexicon_model_switches_total", labels) or 0.0,
        REGISTRY.get_sample_value("lexicon_model_switch_seconds_sum", labels) or 0.0,
        REGISTRY.get_sample_value("lexicon_model_switch_seconds_count", labels) or 0.0,
    )


async def test_model_switches_are_counted_and_timed_per_model(tmp_path: Path) -> None:
    """Each switch a worker reports counts for the model it loaded, with its seconds when they
    are believable; a report naming a model the worker does not hold counts nothing."""
    before = {model: _switch_samples(model) for model in ("m1", "m2", "zz")}
    async with await Storage.open(tmp_path / "data") as store:
        scheduler = Scheduler(
            store.jobs, store.embeddings, store.files, RecordingTransport(), JobHub()
        )
        held = tuple(
            protocol.ModelHeld(name, "tiny", 32, "h", resident=name == "m1", switch_seconds=1.0)
            for name in ("m1", "m2")
        )
        await scheduler.handle(protocol.WorkerReady("w", "cpu", 8, held))
        for event in (
            protocol.ModelSwitched("w", "m2", 3.5, ("m2",)),
            protocol.ModelSwitched("w", "m1", 1.5, ("m1",)),
            protocol.ModelSwitched("w", "m2", 2.5, ("m2",)),
            protocol.ModelSwitched("w", "m1", float("nan"), ("m1",)),  # counted, not timed
            protocol.ModelSwitched("w", "zz", 1.0, ("zz",)),  # not a model it holds
        ):
            await scheduler.handle(event)
    added = {
        model: tuple(
            now - then for now, then in zip(_switch_samples(model), before[model], strict=True)
        )
        for model in before
    }
    assert added == {"m1": (2.0, 1.5, 1.0), "m2": (2.0, 6.0, 2.0), "zz": (0.0, 0.0, 0.0)}
