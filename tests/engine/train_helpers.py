"""Helpers for the training tests: diffusers' reference formulation, distillation, renders.

Nothing here replaces torch or diffusers: the reference runs the real tokenizer, text encoder and
UNet the way diffusers' `textual_inversion.py` example does, on deep copies so the shared model
stays untouched.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from engine.encode import encode_embeds, token_embeddings
from engine.jobs import TrainRequest
from engine.training import Trainer, TrainRecipe
from engine.training.components import TrainComponents
from engine.training.data import TrainBatch, splice, tokenize_templates
from tests.engine import photo_files

TRAIN_SIZE = 32  # the tiny UNet is resolution-agnostic; 32 px images make CPU steps 4× cheaper


def small_parts(model: Any) -> TrainComponents:
    """The shared tiny model's components, trained at 32 px instead of its native 64."""
    return replace(TrainComponents.from_model(model), native_size=TRAIN_SIZE)


def distinct_photos(count: int = 3) -> tuple[bytes, ...]:
    return tuple(photo_files.png(seed=seed) for seed in range(count))


def request(**overrides: Any) -> TrainRequest:
    values: dict[str, Any] = {"name": "zorblat", "photos": distinct_photos(), "seed": 3}
    values.update(overrides)
    return TrainRequest(**values)


def planted_vectors(model: Any, n_vectors: int, seed: int) -> torch.Tensor:
    """Random vectors with the mean norm of the model's real token embeddings (on SDXL, each
    encoder's half with that encoder's norm, side by side)."""
    generator = torch.Generator().manual_seed(seed)
    halves = []
    for encoder in (model.text_encoder, getattr(model, "text_encoder_2", None)):
        if encoder is None:
            continue
        table = token_embeddings(encoder, torch.arange(49406)).detach()
        norm = table.norm(dim=1).mean()
        vectors = torch.randn(n_vectors, table.shape[1], generator=generator)
        halves.append(vectors / vectors.norm(dim=1, keepdim=True) * norm)
    return torch.cat(halves, dim=1)


class DistillationTrainer(Trainer):
    """The real trainer with one change: the target is the model's own noise prediction
    conditioned on planted vectors, so the best possible vectors are known (loss 0)."""

    def __init__(self, *args: Any, planted: torch.Tensor, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.planted = planted.to(self.device)

    def target(
        self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, batch: TrainBatch
    ) -> torch.Tensor:
        with torch.no_grad():
            noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
            return self.predict(noisy, timesteps, batch.template_indices, self.planted)


def held_out_loss(
    trainer: Trainer,
    vectors: torch.Tensor | None = None,
    *,
    samples: int = 64,
    seed: int = 10_000,
    batch_size: int = 16,
) -> float:
    """The objective on a fixed sample of draws that training never sees (mean over
    `samples`): the same `seed` gives the same photos, noise and timesteps for any vectors,
    so two vectors are compared on identical data (None: the trainer's current vectors)."""
    generator = torch.Generator("cpu").manual_seed(seed)
    total, counted = 0.0, 0
    with torch.no_grad():
        while counted < samples:
            batch = trainer.draw_batch(generator, batch_size)
            take = min(len(batch.timesteps), samples - counted)
            batch = TrainBatch(*(t[:take] for t in batch.tensors()))
            total += float(trainer.loss_on_batch(batch, vectors)) * take
            counted += take
    return total / samples


def distil(parts: TrainComponents, seed: int) -> tuple[DistillationTrainer, float]:
    """Train from 'cat' towards a planted vector (60 steps × 4); the trainer and the share of
    the held-out gap (init word → planted, where the loss is 0) that training closed."""
    planted = planted_vectors(parts, 1, seed=100 + seed)
    trainer = DistillationTrainer(
        parts,
        request(init_word="cat", steps=60, seed=seed),
        TrainRecipe(batch_size=4),
        planted=planted,
    )
    start = held_out_loss(trainer, trainer.vectors_init, samples=32)
    trainer.run_steps(trainer.total)
    end = held_out_loss(trainer, samples=32)
    assert held_out_loss(trainer, planted, samples=32) == 0.0
    print(f"seed {seed}: gap {start:.3g} → {end:.3g}, closed {1 - end / start:.1%}")
    return trainer, 1 - end / start


def render_photos(model: Any, planted: torch.Tensor, seeds: list[int]) -> tuple[bytes, ...]:
    """'Photos' of a planted concept: stock-pipeline renders of "a photo of a <planted>",
    upscaled to 256 px PNGs so that intake accepts them."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=model.vae,
        text_encoder=model.text_encoder,
        tokenizer=model.tokenizer,
        unet=model.unet,
        scheduler=DDIMScheduler.from_config(model.scheduler_config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    filler = model.tokenizer("a", add_special_tokens=False).input_ids
    table = tokenize_templates(model.tokenizer, ["a photo of a {}"], len(planted), filler)
    with torch.no_grad():
        embeds = token_embeddings(model.text_encoder, table.input_ids)
        hidden = encode_embeds(model.text_encoder, splice(embeds, table.slots, planted))
    photos = []
    for seed in seeds:
        image = pipe(
            prompt_embeds=hidden,
            num_inference_steps=8,
            guidance_scale=1.0,
            generator=torch.Generator().manual_seed(seed),
            height=64,
            width=64,
        ).images[0]
        buffer = io.BytesIO()
        image.resize((256, 256), Image.Resampling.LANCZOS).save(buffer, format="PNG")
        photos.append(buffer.getvalue())
    return tuple(photos)


# --------------------------------------------------------------------------------------------
# diffusers' example formulation


@dataclass
class Reference:
    """A copy of tokenizer + text encoder grown the diffusers-example way."""

    tokenizer: Any
    text_encoder: Any
    token_ids: list[int]
    placeholder: str  # what goes into templates: "<tok> <tok>_1 …"
    original: torch.Tensor  # the embedding matrix before training (to restore other rows)

    @property
    def matrix(self) -> torch.Tensor:
        return self.text_encoder.get_input_embeddings().weight

    def new_rows(self) -> torch.Tensor:
        return self.matrix.detach()[self.token_ids].clone()


def reference(model: Any, n_vectors: int, init_word: str) -> Reference:
    """add_tokens + resize_token_embeddings on copies; new rows ← the init word's embedding."""
    tokenizer = copy.deepcopy(model.tokenizer)
    text_encoder = copy.deepcopy(model.text_encoder)
    tokens = ["<lexref>", *[f"<lexref>_{i}" for i in range(1, n_vectors)]]
    assert tokenizer.add_tokens(tokens) == n_vectors
    text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    token_ids = tokenizer.convert_tokens_to_ids(tokens)
    (init_id,) = tokenizer.encode(init_word, add_special_tokens=False)
    matrix = text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        for token_id in token_ids:
            matrix[token_id] = matrix[init_id].clone()
    text_encoder.requires_grad_(False)
    matrix.requires_grad_(True)  # the whole matrix is trainable, as in the example
    return Reference(tokenizer, text_encoder, token_ids, " ".join(tokens), matrix.detach().clone())


def reference_ids(ref: Reference, trainer: Trainer, batch: TrainBatch) -> torch.Tensor:
    prompts = [
        trainer.prompts.templates[int(i)].format(ref.placeholder) for i in batch.template_indices
    ]
    return ref.tokenizer(
        prompts,
        padding="max_length",
        truncation=True,
        max_length=ref.tokenizer.model_max_length,
        return_tensors="pt",
    ).input_ids


def reference_loss(ref: Reference, trainer: Trainer, batch: TrainBatch) -> torch.Tensor:
    """The example's loss: text_encoder(input_ids) → UNet → MSE against the noise."""
    latents = trainer.latents[batch.view_indices]
    noisy = trainer.noise_scheduler.add_noise(latents, batch.noise, batch.timesteps)
    hidden = ref.text_encoder(reference_ids(ref, trainer, batch))[0]
    prediction = trainer.parts.unet(noisy, batch.timesteps, hidden).sample
    return F.mse_loss(prediction.float(), batch.noise.float(), reduction="mean")


def reference_adamw(ref: Reference, recipe: TrainRecipe) -> torch.optim.AdamW:
    return torch.optim.AdamW(
        ref.text_encoder.get_input_embeddings().parameters(),
        lr=recipe.learning_rate,
        betas=recipe.betas,
        eps=recipe.eps,
        weight_decay=recipe.weight_decay,
    )


def reference_step(
    ref: Reference, optimizer: torch.optim.Optimizer, trainer: Trainer, batch: TrainBatch
) -> None:
    """One example step: AdamW over the whole matrix, then every other row restored."""
    optimizer.zero_grad()
    reference_loss(ref, trainer, batch).backward()
    optimizer.step()
    keep = torch.ones(ref.matrix.shape[0], dtype=torch.bool)
    keep[min(ref.token_ids) : max(ref.token_ids) + 1] = False
    with torch.no_grad():
        ref.matrix[keep] = ref.original[keep]


def run_in_slices(
    trainer: Trainer, slice_steps: int, on_checkpoint: Callable[[int, bytes], None]
) -> None:
    """Drive `trainer` to the end the way `engine.worker` does: `run_steps` in slices of
    `slice_steps`, with `on_checkpoint(step, bytes)` after every slice but the last."""
    while trainer.step < trainer.total:
        trainer.run_steps(slice_steps)
        if trainer.step < trainer.total:
            on_checkpoint(trainer.step, trainer.checkpoint())


# --------------------------------------------------------------------------------------------
# The kill-and-resume case, shared by the test and its child process

RESUME_RECIPE = TrainRecipe(batch_size=1)
RESUME_STEPS = 60
RESUME_SLICE = 10  # steps per slice; a checkpoint follows every slice but the last


def resume_request() -> TrainRequest:
    return request(n_vectors=2, steps=RESUME_STEPS, seed=11, init_word="dog")


def train_until_killed(data_dir: str, checkpoint_path: str) -> None:
    """Child-process entry: train, writing each checkpoint atomically to `checkpoint_path`."""
    import os
    from pathlib import Path

    from engine.model import load_model

    torch.set_num_threads(1)
    model = load_model("tiny", "cpu", data_dir=Path(data_dir))

    def save(step: int, data: bytes) -> None:
        scratch = f"{checkpoint_path}.{step}.partial"
        with open(scratch, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(scratch, checkpoint_path)

    trainer = Trainer(small_parts(model), resume_request(), RESUME_RECIPE)
    run_in_slices(trainer, RESUME_SLICE, save)
    Path(f"{checkpoint_path}.finished").write_text("the run was not killed in time")
