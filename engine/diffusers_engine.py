"""`DiffusersEngine`: the real engine behind the worker loop (`engine.worker.loop.Engine`).

It holds the one loaded model and adapts `engine.generate` and `engine.training.Trainer` to the
worker's protocol: user-input errors become `UserInputError` (the job fails with that sentence,
no retry), cancellation becomes `engine.errors.Cancelled`, and live previews are handed to the
step callback one PNG per request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from engine import generate as generation
from engine.embedding_files import EmbeddingFileError
from engine.engine_api import StepCallback, UserInputError
from engine.jobs import GeneratedImage, GenerateRequest, TrainRequest
from engine.model import LoadedModel, load_model
from engine.photos import PhotoError
from engine.speed import CompileMode, apply_speedups, is_compiled
from engine.training import (
    CheckpointError,
    Trainer,
    TrainRecipe,
    TrainRequestError,
    render_halfway,
    render_previews,
)

log = logging.getLogger("lexicon.engine")

PREVIEW_EVERY = 5  # steps
PREVIEW_AFTER = 2.0  # seconds: a batch done sooner sends no previews (Discord shows 1 edit / 2 s)


class DiffusersEngine:
    def __init__(self, model: LoadedModel, recipe: TrainRecipe | None = None) -> None:
        self.model = model
        self.recipe = recipe or TrainRecipe()
        self.device = str(model.device)
        self.family = model.family
        self.width = model.hidden_size
        self.model_hash = model.model_hash

    @classmethod
    def load(
        cls,
        spec: str,
        device: str,
        data_dir: Path,
        recipe: TrainRecipe | None = None,
        compile_mode: CompileMode = "off",
        cuda_graphs: bool = False,
        warm_up_batches: Sequence[int] = (),
        vae_float32: bool = False,
    ) -> DiffusersEngine:
        model = load_model(spec, device=device, data_dir=data_dir, vae_float32=vae_float32)
        engine = cls(model, recipe)
        cache = apply_speedups(engine.model, compile_mode, cuda_graphs, data_dir=data_dir)
        compiled = is_compiled(engine.model)
        if (compiled or engine.model.graphs is not None) and warm_up_batches:
            # The stance is global: an earlier model's load (a worker holding several) left it
            # at `eager_on_recompile`, under which this model's shapes would run uncompiled.
            # Its warm-up compiles them under the default stance (restored after an error too).
            with torch.compiler.set_stance("default"):
                seconds = engine.warm_up(warm_up_batches)
            log.info("warmed up for batches %s in %.1f s", tuple(warm_up_batches), seconds)
        if cache is not None:
            cache.save()  # after the warm-up: every shape the worker serves is in it
        if compiled:
            # Compiling a new shape stops the worker for about a minute (docs/BENCHMARKS.md).
            # From here on a shape the warm-up did not compile (another size, a long prompt, a
            # big batch) runs eagerly — still as a CUDA graph — and everyone else keeps moving.
            # For every model the worker holds: a later model's warm-up compiles its own shapes
            # (above), and a model loaded again after an eviction finds its kernels in the
            # compile cache (`cache`), so re-loading costs seconds, not a compile.
            torch.compiler.set_stance("eager_on_recompile")
            log.info("shapes not compiled during warm-up run eagerly from now on")
        return engine

    def generate(
        self, requests: Sequence[GenerateRequest], on_step: StepCallback
    ) -> list[list[GeneratedImage]]:
        latest: list[bytes] | None = None

        def keep_previews(_step: int, _total: int, pngs: list[bytes]) -> None:
            nonlocal latest
            latest = pngs

        def step(step: int, total: int, _latents: object) -> bool:
            nonlocal latest
            previews, latest = latest, None
            return on_step(step, total, previews)

        try:
            return generation.generate(
                self.model,
                requests,
                on_step=step,
                preview_every=PREVIEW_EVERY,
                on_preview=keep_previews,
                preview_after=PREVIEW_AFTER,
            )
        except (generation.InvalidRequest, EmbeddingFileError) as error:
            raise UserInputError(str(error)) from None

    def start_training(self, request: TrainRequest, resume_from: bytes | None) -> Trainer:
        try:
            try:
                return Trainer(
                    self.model,
                    request,
                    self.recipe,
                    resume_from=resume_from,
                    previewer=self._previews,
                    halfway_previewer=self._halfway_preview,
                )
            except CheckpointError as error:
                # A checkpoint from another recipe or model: correct, but slower, to start over.
                log.warning("ignoring checkpoint of %s: %s", request.name, error)
                return Trainer(
                    self.model,
                    request,
                    self.recipe,
                    previewer=self._previews,
                    halfway_previewer=self._halfway_preview,
                )
        except (PhotoError, TrainRequestError) as error:
            raise UserInputError(str(error)) from None

    def peak_memory_bytes(self) -> int:
        if self.model.device.type != "cuda":
            return 0
        return int(torch.cuda.max_memory_allocated(self.model.device))

    def close(self) -> None:
        # The PNG encoder threads must be gone before interpreter shutdown: left running, they
        # made the worker abort at exit ("terminate called without an active exception"). They
        # are the process's: another engine's next render starts them again.
        generation.close_png_pool()

    def _previews(self, trainer: Trainer) -> list[bytes]:
        return render_previews(self.model, trainer)

    def _halfway_preview(self, trainer: Trainer) -> bytes:
        return render_halfway(self.model, trainer)

    def warm_up(self, batch_sizes: Sequence[int]) -> float:
        """Render once at each batch size at the native size, so the compiled kernels and CUDA
        graphs of those shapes exist before the first user waits on them; seconds. Each shape's
        progress is logged (a cold compile takes minutes). A graph that cannot be recorded here
        stops the worker (`GraphCaptureError`) rather than run slow."""
        started = time.perf_counter()
        side = self.model.native_size
        graphs = self.model.graphs
        doing = "compiling UNet and VAE decoder" if is_compiled(self.model) else "recording"
        if graphs is not None:
            graphs.set_strict(True)
        try:
            for index, size in enumerate(batch_sizes, start=1):
                log.info(
                    "warm-up: %s for batch %d (%d of %d)…", doing, size, index, len(batch_sizes)
                )
                shape_started = time.perf_counter()
                requests = [GenerateRequest("warm-up", i, 2, 7.5, side, side) for i in range(size)]
                generation.generate(self.model, requests)
                log.info(
                    "warm-up: batch %d ready in %.1f s (%.1f s so far)",
                    size,
                    time.perf_counter() - shape_started,
                    time.perf_counter() - started,
                )
        finally:
            if graphs is not None:
                graphs.set_strict(False)
        return time.perf_counter() - started
