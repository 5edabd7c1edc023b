"""The optional Prometheus endpoint."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from pathlib import Path

from bot.app import Lexicon
from bot.services import ImagineOptions
from tests.bot.conftest import make_settings


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
