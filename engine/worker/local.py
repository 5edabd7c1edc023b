"""Entry point of the embedded GPU worker: a child process of the bot, spoken to over a pipe.

Only the spawned child imports this module (`bot.transport` names it by its module name), and
the engines, with them torch, are imported by `build_engines` only: one engine per model the
worker holds. The Redis worker builds its engines here too, and so does `lexicon warm` (`warm`),
which starts them only to fill the compile cache under the data dir ahead of the first worker
start.
"""

from __future__ import annotations

import logging
import os
import time
from multiprocessing.connection import Connection
from pathlib import Path

from engine.engine_api import Engine
from engine.protocol import FromWorker, Shutdown, ToWorker, WorkerLost
from engine.worker.loop import Worker
from engine.worker_config import CannotWarm, EngineSpec, WorkerConfig


def build_engines(spec: EngineSpec) -> dict[str, Engine]:
    """One engine per model of `spec`, by name, in the order configured; if one cannot load,
    those already loaded are closed."""
    engines: dict[str, Engine] = {}
    try:
        for model in spec.models:
            engines[model.name] = build_engine(spec, model.source)
    except BaseException:
        close_engines(engines)
        raise
    return engines


def close_engines(engines: dict[str, Engine]) -> None:
    for engine in engines.values():
        engine.close()


def build_engine(spec: EngineSpec, source: str) -> Engine:
    if spec.kind == "standin":
        from engine.standin import StandInEngine

        return StandInEngine(spec.standin_step_seconds, spec.standin_start_seconds)
    if spec.torch_threads:
        import torch

        torch.set_num_threads(spec.torch_threads)
    from engine.diffusers_engine import DiffusersEngine
    from engine.training import TrainRecipe

    return DiffusersEngine.load(
        source,
        spec.device,
        spec.data_dir,
        recipe=TrainRecipe(batch_size=spec.train_batch_size),
        compile_mode=spec.compile_mode,  # type: ignore[arg-type]
        cuda_graphs=spec.cuda_graphs,
        warm_up_batches=spec.warm_up_batches,
    )


def warm(spec: EngineSpec) -> tuple[Path, float]:
    """Start the engine as a worker would — load, compile, warm up, save the compile cache —
    and stop it; (the cache folder, seconds). `CannotWarm` when there is nothing to compile."""
    quiet_libraries()
    from engine.model import ModelLoadError, resolve_device
    from engine.speed import CompileCache

    started = time.perf_counter()
    try:
        device = resolve_device(spec.device)
        if device.type != "cuda":
            raise CannotWarm(
                f"compiling needs a CUDA GPU and LEXICON_DEVICE resolves to {device} here, so "
                "there is nothing to warm; run lexicon warm on the GPU worker's machine."
            )
        engines = build_engines(spec)
    except ModelLoadError as error:
        raise CannotWarm(str(error)) from None
    close_engines(engines)
    return CompileCache.for_device(spec.data_dir, device).folder, time.perf_counter() - started


class PipeChannel:
    """A `Channel` over one end of a multiprocessing pipe. A closed pipe means: shut down."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def send(self, message: FromWorker) -> None:
        self.connection.send(message)

    def poll(self, timeout: float) -> ToWorker | None:
        try:
            if not self.connection.poll(timeout):
                return None
            message: ToWorker = self.connection.recv()
            return message
        except (EOFError, OSError):
            return Shutdown()


def quiet_libraries() -> None:
    """Keep the libraries' progress bars and advice out of an operator's terminal and logs."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")


def child_main(connection: Connection, spec: EngineSpec, config: WorkerConfig) -> None:
    """Run in the spawned child: load the engines once, then serve until told to stop."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(levelname)s: %(message)s")
    quiet_libraries()
    channel = PipeChannel(connection)
    try:
        engines = build_engines(spec)
    except Exception as error:  # report why, in one sentence, then exit
        channel.send(WorkerLost(config.worker_id, f"the GPU worker could not start: {error}"))
        raise SystemExit(1) from None
    try:
        Worker(engines, channel, config).run()
    finally:
        close_engines(engines)
