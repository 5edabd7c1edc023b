"""`lexicon warm`: compile the worker's kernels ahead of its first start.

A worker compiles its UNet and VAE decoder for each batch size it serves, which takes minutes
the first time on a machine; the result is cached under `LEXICON_DATA_DIR` (per torch version
and GPU model) and later starts load it in seconds. This command runs that first, slow start on
its own — same settings, same warm-up — so an operator can pay it before users are waiting
(after installing, or after upgrading torch or the GPU driver).
"""

from __future__ import annotations

import argparse
import importlib

from bot.cli import CommandError
from engine.worker_config import CannotWarm

# The warm-up loads torch and the engine, which the bot process never does: this command's own
# process does, so it names the worker module instead of importing it (as `lexicon worker` does).
WARM_MODULE = "engine.worker.local"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", help="torch device, e.g. cuda:0 (LEXICON_DEVICE)")
    parser.add_argument(
        "--max-batch", type=int, help="largest generate batch to compile for (LEXICON_MAX_BATCH)"
    )


def main(args: argparse.Namespace) -> int:
    from bot.app import engine_spec
    from bot.config import load_settings
    from bot.logging_setup import configure_logging

    overrides: dict[str, object] = {}
    if args.device:
        overrides["device"] = args.device
    if args.max_batch is not None:
        overrides["max_batch"] = args.max_batch
    settings = load_settings(**overrides)
    if settings.engine != "diffusers":
        raise CommandError(
            f"LEXICON_ENGINE={settings.engine} compiles nothing; unset it to warm the real engine."
        )
    if settings.compile == "off":
        raise CommandError(
            "LEXICON_COMPILE is off, so there is nothing to compile; set LEXICON_COMPILE=default "
            "to build the cache."
        )
    configure_logging(settings.log_level)
    spec = engine_spec(settings)
    try:
        folder, seconds = importlib.import_module(WARM_MODULE).warm(spec)
    except CannotWarm as error:
        raise CommandError(str(error)) from None
    print(
        f"compiled and warmed up for batches {', '.join(map(str, spec.warm_up_batches))} "
        f"in {seconds:.1f} s; the cache is in {folder}"
    )
    return 0
