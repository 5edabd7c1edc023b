"""Entry point of the embedded GPU worker: a child process of the bot, spoken to over a pipe.

Only the spawned child imports this module (`bot.transport` names it by its module name), and
the engines, with them torch, are imported by `model_cache` only: the worker's models under its
memory budget (`engine.worker.cache`). The Redis worker builds its models here too, and so does
`lexicon warm` (`warm`), which starts them only to fill the compile cache under the data dir
ahead of the first worker start.
"""

from __future__ import annotations

import logging
import os
import time
from multiprocessing.connection import Connection
from pathlib import Path

from engine.engine_api import Engine
from engine.protocol import FromWorker, Shutdown, ToWorker, WorkerLost
from engine.worker.cache import Loaded, ModelCache
from engine.worker.loop import Worker
from engine.worker_config import CannotWarm, EngineSpec, WorkerConfig

# On CUDA without LEXICON_WORKER_MODEL_MEMORY: the share of the device's memory left free for
# activations, CUDA graph pools of other shapes and training when the models' budget is set.
CUDA_HEADROOM = 0.25
# What a stand-in model counts against LEXICON_WORKER_MODEL_MEMORY: 1MiB fits one, so load tests
# can exercise eviction without torch.
STANDIN_BYTES = 1024**2


def model_cache(spec: EngineSpec) -> ModelCache:
    """The worker's models under its memory budget (`memory_budget`), each loaded once at
    start — the first configured stay resident — and loaded again on demand after eviction."""
    sources = {model.name: model.source for model in spec.models}
    budget = memory_budget(spec)
    if spec.kind == "standin":

        def standin(_name: str) -> Loaded:
            return Loaded(build_engine(spec, ""), STANDIN_BYTES)

        cache = ModelCache(tuple(sources), standin, budget=budget)
    else:
        import torch

        from engine.model import resolve_device

        device = resolve_device(spec.device)

        def load(name: str) -> Loaded:
            if device.type != "cuda":
                engine = build_engine(spec, sources[name])
                return Loaded(engine, _weight_bytes(engine))
            torch.cuda.synchronize(device)
            torch.cuda.empty_cache()
            before = torch.cuda.memory_reserved(device)
            engine = build_engine(spec, sources[name])
            torch.cuda.synchronize(device)
            torch.cuda.empty_cache()
            return Loaded(engine, max(0, torch.cuda.memory_reserved(device) - before))

        cache = ModelCache(tuple(sources), load, budget=budget, release=_release_memory)
    cache.start()
    return cache


def memory_budget(spec: EngineSpec) -> int | None:
    """Bytes the models may take: LEXICON_WORKER_MODEL_MEMORY when set; else, on CUDA, the free
    memory at start less CUDA_HEADROOM of the device for activations and training; else no cap."""
    if spec.model_memory is not None:
        return spec.model_memory
    if spec.kind == "standin":
        return None
    import torch

    from engine.model import resolve_device

    device = resolve_device(spec.device)
    if device.type != "cuda":
        return None
    free, total = torch.cuda.mem_get_info(device)
    return max(0, int(free - CUDA_HEADROOM * total))


def _weight_bytes(engine: Engine) -> int:
    """The bytes of a CPU engine's weights: what its load kept."""
    model = getattr(engine, "model", None)
    modules = (
        getattr(model, part, None) for part in ("text_encoder", "text_encoder_2", "unet", "vae")
    )
    return sum(
        tensor.numel() * tensor.element_size()
        for module in modules
        if module is not None
        for tensor in (*module.parameters(), *module.buffers())
    )


def _release_memory() -> None:
    """After an eviction: collect the dropped engine and return its CUDA memory to the device."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


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
        vae_float32=spec.vae_float32,
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
        model_cache(spec).close()
    except ModelLoadError as error:
        raise CannotWarm(str(error)) from None
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
    """Run in the spawned child: load the models (as memory allows), then serve until told to
    stop."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(levelname)s: %(message)s")
    quiet_libraries()
    channel = PipeChannel(connection)
    try:
        models = model_cache(spec)
    except Exception as error:  # report why, in one sentence, then exit
        channel.send(WorkerLost(config.worker_id, f"the GPU worker could not start: {error}"))
        raise SystemExit(1) from None
    try:
        Worker(models, channel, config).run()
    finally:
        models.close()
