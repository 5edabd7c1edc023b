"""What the worker loop needs from an engine, and what an engine may tell it.

The loop (`engine.worker.loop`) drives any `Engine`: the real one (`engine.diffusers_engine`)
or the stand-in (`engine.standin`). Both implement this protocol and neither imports the worker,
so the worker package depends on the engines and never the other way round. Torch-free.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from engine.jobs import GeneratedImage, GenerateRequest, Progress, TrainRequest, TrainResult

# Called by the engine after each denoising step with (step, total, one preview PNG per request
# when previews were rendered at this step, else None); returns True to cancel the batch.
StepCallback = Callable[[int, int, list[bytes] | None], bool]


class UserInputError(ValueError):
    """The request itself is bad (retrying cannot help); the message is for the user."""


class TrainingRun(Protocol):
    """One training job, advanced in slices."""

    @property
    def step(self) -> int: ...

    @property
    def total(self) -> int: ...

    def run_steps(self, n: int) -> Progress: ...

    def checkpoint(self) -> bytes: ...

    def finish(self) -> TrainResult: ...


class Engine(Protocol):
    """What the worker loop needs from the model side."""

    device: str
    family: str
    width: int  # the text encoder's hidden size: an embedding's vectors must be this wide
    model_hash: str

    def generate(
        self, requests: Sequence[GenerateRequest], on_step: StepCallback
    ) -> list[list[GeneratedImage]]: ...

    def start_training(self, request: TrainRequest, resume_from: bytes | None) -> TrainingRun: ...

    def close(self) -> None:
        """Release threads and memory before the process exits."""
        ...

    def peak_memory_bytes(self) -> int:
        """Peak accelerator memory allocated so far (0 where there is none)."""
        ...
