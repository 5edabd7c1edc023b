"""`DiffusersEngine`: the real engine behind the worker loop (`engine.worker.Engine`).

It holds the one loaded model and adapts `engine.generate` and `engine.training.Trainer` to the
worker's protocol: user-input errors become `UserInputError` (the job fails with that sentence,
no retry), cancellation becomes `engine.errors.Cancelled`, and live previews are handed to the
step callback one PNG per request.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from engine import generate as generation
from engine.embedding_files import EmbeddingFileError
from engine.errors import Cancelled
from engine.jobs import EmbeddingPayload, GeneratedImage, GenerateRequest, TrainRequest
from engine.model import LoadedModel, load_model
from engine.photos import PhotoError
from engine.training import CheckpointError, Trainer, TrainRecipe, TrainRequestError
from engine.worker import StepCallback, UserInputError

log = logging.getLogger("lexicon.engine")

PREVIEW_EVERY = 5
PREVIEW_STEPS = 20
PREVIEW_PROMPTS = ("a photo of {}", "a close-up photo of {}")


class DiffusersEngine:
    def __init__(self, model: LoadedModel, recipe: TrainRecipe | None = None) -> None:
        self.model = model
        self.recipe = recipe or TrainRecipe()
        self.device = str(model.device)
        self.family = model.family
        self.model_hash = model.model_hash

    @classmethod
    def load(
        cls, spec: str, device: str, data_dir: Path, recipe: TrainRecipe | None = None
    ) -> DiffusersEngine:
        return cls(load_model(spec, device=device, data_dir=data_dir), recipe)

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
            )
        except (generation.Cancelled, Cancelled):
            raise Cancelled from None
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
                )
            except CheckpointError as error:
                # A checkpoint from another recipe or model: correct, but slower, to start over.
                log.warning("ignoring checkpoint of %s: %s", request.name, error)
                return Trainer(self.model, request, self.recipe, previewer=self._previews)
        except (PhotoError, TrainRequestError) as error:
            raise UserInputError(str(error)) from None

    def _previews(self, trainer: Trainer) -> list[bytes]:
        """Two small renders of the new word, seeded, at the model's native size."""
        data = trainer.embedding_bytes()
        name = trainer.request.name.lower()
        payload = EmbeddingPayload(name, data, "")
        side = self.model.native_size
        requests = [
            GenerateRequest(
                prompt=template.format(name),
                seed=index,
                steps=PREVIEW_STEPS,
                guidance=7.5,
                width=side,
                height=side,
                embeddings=(payload,),
            )
            for index, template in enumerate(PREVIEW_PROMPTS)
        ]
        images = generation.generate(self.model, requests)
        return [batch[0].png for batch in images]
