"""`lexicon worker`: a standalone GPU worker serving a Redis queue (scale-out).

It reads the same settings as the bot for what concerns a worker — `LEXICON_MODEL`,
`LEXICON_ENGINE`, `LEXICON_DEVICE`, `LEXICON_MAX_BATCH`, `LEXICON_TORCH_THREADS`,
`LEXICON_COMPILE`, `LEXICON_CUDA_GRAPHS`, `LEXICON_VAE_FLOAT32`, `LEXICON_TRAIN_BATCH`, the
training slice and checkpoint settings,
`LEXICON_LEASE_SECONDS` (which sets how often it heartbeats) — and uses `LEXICON_DATA_DIR` only
for the model and compile caches: the bot alone owns the database and files.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import socket
import uuid
from urllib.parse import urlsplit

from bot.cli import CommandError

# `lexicon worker` turns its own process into a GPU worker. It names the worker module instead
# of importing it: nothing in `bot` imports `engine.worker`, and a bot process never loads it.
WORKER_MODULE = "engine.worker.redis"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--queue", help="Redis URL, e.g. redis://host:6379/0 (LEXICON_QUEUE)")
    parser.add_argument("--device", help="torch device, e.g. cuda:0 (LEXICON_DEVICE)")
    parser.add_argument("--max-batch", type=int, help="largest generate batch (LEXICON_MAX_BATCH)")


def main(args: argparse.Namespace) -> int:
    from bot.app import engine_spec, worker_config
    from bot.config import load_settings
    from bot.logging_setup import configure_logging
    from engine.redis_wire import QueueRefused, liveness_for

    overrides: dict[str, object] = {}
    if args.queue:
        overrides["queue"] = args.queue
    if args.device:
        overrides["device"] = args.device
    if args.max_batch is not None:
        overrides["max_batch"] = args.max_batch
    settings = load_settings(**overrides)
    if settings.queue == "local":
        raise CommandError(
            "a standalone worker needs a Redis queue: pass --queue redis://host:6379/0 "
            "or set LEXICON_QUEUE."
        )
    password = urlsplit(settings.queue).password
    configure_logging(settings.log_level, secrets=[password] if password else [])
    names = ", ".join(model.name for model in settings.worker_models)
    logging.getLogger("lexicon").info("worker: models %s on %s", names, settings.device)
    heartbeat, ttl = liveness_for(settings.lease_seconds)
    worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"
    config = worker_config(settings, worker_id, heartbeat_interval=heartbeat)
    serve = importlib.import_module(WORKER_MODULE).serve
    try:
        status: int = serve(settings.queue, engine_spec(settings), config, ttl=ttl)
    except QueueRefused as error:
        raise CommandError(str(error)) from None
    return status
