"""A fast stand-in engine without torch, for load and fault tests of everything around the GPU.

It honours the same contract as the real engine — per-step callbacks, cancellation, training in
slices with checkpoints and exact resume, embedding files in Lexicon's format — but its "images"
are flat colours derived from the prompt and seed, and its "training" is a deterministic walk.
`step_seconds` makes it as slow as a real GPU would be when a test needs time to pass, and
`start_seconds` as slow to start a training as a real one that warms the model, decodes photos
and encodes latents first.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Sequence

import numpy as np
from PIL import Image, PngImagePlugin
from safetensors.numpy import save as save_safetensors

from engine.engine_api import StepCallback, UserInputError
from engine.errors import Cancelled
from engine.jobs import (
    GeneratedImage,
    GenerateRequest,
    Progress,
    TrainRequest,
    TrainResult,
    crosses_half,
)

STANDIN_WIDTH = 32


def _colour(*parts: object) -> tuple[int, int, int]:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return digest[0], digest[1], digest[2]


class StandInTraining:
    def __init__(self, request: TrainRequest, resume_from: bytes | None, step_seconds: float):
        if not 3 <= len(request.photos) <= 5:
            raise UserInputError(f"Training needs 3 to 5 photos; got {len(request.photos)}.")
        self.request = request
        self.step_seconds = step_seconds
        self._step = 0
        self._vector = np.zeros((request.n_vectors, STANDIN_WIDTH), dtype=np.float32)
        if resume_from is not None:
            state = json.loads(resume_from)
            self._step = int(state["step"])
            self._vector = np.asarray(state["vector"], dtype=np.float32)

    @property
    def step(self) -> int:
        return self._step

    @property
    def total(self) -> int:
        return self.request.steps

    def run_steps(self, n: int) -> Progress:
        before = self._step
        for _ in range(n):
            time.sleep(self.step_seconds)
            self._step += 1
            self._vector += np.float32(1.0 / self.total)
        halfway = crosses_half(before, self._step, self.total)
        preview = _flat_png(_colour(self.request.name, 0), side=32) if halfway else None
        return Progress(self._step, self.total, loss=1.0 / (1 + self._step), preview_png=preview)

    def checkpoint(self) -> bytes:
        return json.dumps({"step": self._step, "vector": self._vector.tolist()}).encode()

    def finish(self) -> TrainResult:
        metadata = {"name": self.request.name, "family": "tiny", "steps": str(self._step)}
        data = save_safetensors({"emb_params": self._vector}, metadata=metadata)
        return TrainResult(
            embedding=data,
            sha256=hashlib.sha256(data).hexdigest(),
            n_vectors=self.request.n_vectors,
            width=STANDIN_WIDTH,
            family="tiny",
            steps=self._step,
            final_loss=1.0 / (1 + self._step),
            previews=tuple(_flat_png(_colour(self.request.name, index)) for index in range(3)),
        )


class StandInEngine:
    device = "cpu"
    family = "tiny"
    width = STANDIN_WIDTH
    model_hash = "standin0"

    def __init__(self, step_seconds: float = 0.0, start_seconds: float = 0.0) -> None:
        self.step_seconds = step_seconds
        self.start_seconds = start_seconds

    def generate(
        self, requests: Sequence[GenerateRequest], on_step: StepCallback
    ) -> list[list[GeneratedImage]]:
        for request in requests:
            if not 1 <= request.count <= 4:
                raise UserInputError(f"count must be 1 to 4; got {request.count}.")
        steps = requests[0].denoise_steps
        for step in range(1, steps + 1):
            time.sleep(self.step_seconds)
            if on_step(step, steps, None):
                raise Cancelled
        return [
            [self._image(request, index) for index in range(request.count)] for request in requests
        ]

    def _image(self, request: GenerateRequest, index: int) -> GeneratedImage:
        seed = request.seed + index
        size = (request.out_width, request.out_height)
        image = Image.new("RGB", size, _colour(request.prompt, seed))
        info = PngImagePlugin.PngInfo()
        names = ", ".join(e.name for e in request.embeddings)
        info.add_text(
            "parameters",
            f"{request.prompt}\nNegative prompt: {request.negative}\n"
            f"Steps: {request.steps}, Seed: {seed}, Size: {request.width}x{request.height}, "
            f"Model hash: {self.model_hash}, Embeddings: {names}"
            + (f", Denoising strength: {request.strength}" if request.is_img2img else ""),
        )
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", pnginfo=info)
        return GeneratedImage(index=index, seed=seed, png=buffer.getvalue())

    def start_training(self, request: TrainRequest, resume_from: bytes | None) -> StandInTraining:
        time.sleep(self.start_seconds)
        return StandInTraining(request, resume_from, self.step_seconds)

    def close(self) -> None:
        pass

    def peak_memory_bytes(self) -> int:
        return 0


def _flat_png(colour: tuple[int, int, int], side: int = 64) -> bytes:
    """A flat-colour PNG: the stand-in's preview of a trained word."""
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), colour).save(buffer, format="PNG")
    return buffer.getvalue()
