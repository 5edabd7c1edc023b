"""Prometheus metrics: queue depth, wait and run times, batch sizes, GPU memory, model switches.

The metrics are always collected (cheap counters in memory); they are served over HTTP only
when `LEXICON_METRICS_PORT` is set.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

QUEUE_DEPTH = Gauge("lexicon_queue_depth", "Jobs waiting in the queue")
WAIT_SECONDS = Histogram(
    "lexicon_wait_seconds",
    "Seconds from queued to started",
    ["kind"],
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
)
RUN_SECONDS = Histogram(
    "lexicon_run_seconds",
    "Seconds a job ran on a worker",
    ["kind"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
)
BATCH_SIZE = Histogram(
    "lexicon_batch_jobs", "Jobs per generate batch", buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32)
)
GPU_MEMORY_BYTES = Gauge(
    "lexicon_gpu_memory_bytes", "Peak GPU memory a worker reported", ["worker"]
)
# A worker holding more models than fit loads one in place of another (engine.worker.cache):
# how often, per model switched to, and how long each load took (a cost every ETA then shows).
MODEL_SWITCHES = Counter(
    "lexicon_model_switches", "Models a worker loaded in place of another", ["model"]
)
SWITCH_SECONDS = Histogram(
    "lexicon_model_switch_seconds",
    "Seconds a worker took to load a model it switched to",
    ["model"],
    buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300),
)


_serving: set[int] = set()


def serve(port: int) -> None:
    """Expose /metrics on the given port (a daemon thread); once per port per process."""
    if port not in _serving:
        start_http_server(port)
        _serving.add(port)
