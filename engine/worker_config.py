"""How a GPU worker is set up: which engine it builds and how its loop runs.

The bot builds these from its settings and hands them to a worker (across the spawn of the
embedded child, or to `lexicon worker`), so they live outside `engine.worker`: plain, picklable
and torch-free, the bot imports them without loading any worker code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelSource:
    """One configured model: the name members pick it by, and what it is loaded from (a hub
    id, a diffusers folder, a single file or `tiny`, as LEXICON_MODEL accepts)."""

    name: str
    source: str


@dataclass(frozen=True)
class EngineSpec:
    """Which engine a worker builds, and from what. Picklable, so it crosses the spawn."""

    kind: str  # "diffusers" (the real one) or "standin" (fast, torch-free, for tests)
    models: tuple[ModelSource, ...]  # one engine each, loaded as memory allows
    device: str
    data_dir: Path
    standin_step_seconds: float = 0.0
    standin_start_seconds: float = 0.0  # how long the stand-in takes to start a training
    torch_threads: int | None = None
    compile_mode: str = "off"
    cuda_graphs: bool = False
    vae_float32: bool = False  # LEXICON_VAE_FLOAT32: SDXL's VAE in float32, not bfloat16
    warm_up_batches: tuple[int, ...] = ()
    train_batch_size: int = 8
    # Bytes the models may take on the device (LEXICON_WORKER_MODEL_MEMORY); None: on CUDA the
    # free memory at start less a headroom, elsewhere no cap (engine.worker.local.memory_budget).
    model_memory: int | None = None


@dataclass(frozen=True)
class WorkerConfig:
    """How the worker loop runs: its id, batch size, training slices and report intervals."""

    worker_id: str
    max_batch: int = 8
    train_slice_steps: int = 10
    checkpoint_every: int = 50
    progress_interval: float = 1.0
    heartbeat_interval: float = 2.0


def warm_up_batch_sizes(max_batch: int) -> tuple[int, ...]:
    """Batch sizes recorded (CUDA graphs) or compiled before the first user waits: one request,
    two (training's previews), four, and a full batch."""
    return tuple(sorted({1, 2, min(4, max_batch), max_batch}))


class CannotWarm(Exception):
    """`lexicon warm` cannot build the compile cache here; the message is one sentence."""
