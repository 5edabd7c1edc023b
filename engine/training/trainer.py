"""Textual-inversion training: a few new vectors that become a word the base model understands.

Only the vectors are trained. The UNet, VAE and text encoder are the worker's one shared model:
frozen, never given gradients, never grown. Instead of adding a token to the tokenizer and a row
to the embedding matrix (diffusers' example), the placeholder's positions in the token-embedding
output are replaced by the vectors and the text transformer runs on that. The maths is the same —
the equivalence tests check loss, gradient and 20 AdamW steps against diffusers' formulation —
but the shared model is untouched, so `/imagine` can run between training slices.

SDXL (as diffusers' `textual_inversion_sdxl.py` formulates it): the new word has vectors in both
text encoders, each half initialised from the init word's token embedding in its encoder and
learned together. They are kept as one `[n, d_l + d_g]` tensor (the halves side by side, as
`EmbeddingFile.joined` holds them); AdamW works per coordinate, so that is the same optimisation
as two tensors. The UNet sees both encoders' penultimate states side by side, the pooled
projection of the second encoder's final state at the end-of-text token, and the size numbers
(original = target = the training size, crop (0, 0)). The result is a `{clip_l, clip_g}` file.

A run, in order (`Trainer.__init__`):

1. check the request and decode the photos (no GPU work before they pass);
2. tokenize every template once, with `n_vectors` placeholder slots;
3. encode each training view (photo and mirror) with the VAE once and cache the latents for the
   whole run. The latent is the posterior *mean*, scaled (`engine.model.scale_latents`):
   deterministic, so the cache's identity is a function of photos, model and size alone, and a
   resumed run sees the same data.
   The posterior's standard deviation in SD's VAE is far below the noise that training adds;
4. initialise the vectors from the init word's token embeddings, build AdamW over them alone;
5. restore a checkpoint if one was given.

Each step draws, from one seeded CPU `torch.Generator`: which photos (a fresh permutation per
batch, so every photo is seen equally), mirror or not, which template, timesteps and noise. On CPU
the whole run is deterministic; checkpoints store the generator so a resumed run continues the
same sequence and ends on the same vectors. The worker drives a run in slices (`run_steps`),
and checkpoints and cancels between them, so `/imagine` batches can run in between.

Precision: fp32 on CPU. On CUDA the frozen nets run under autocast in the model's half dtype
(bf16 when the model is fp32) while the vectors, AdamW state and loss stay fp32; with fp16 a
dynamic loss scale keeps the small gradients that reach the vectors from underflowing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F

from engine.embedding_files import write_embedding
from engine.encode import encode_embeds, run_text_encoders_sdxl, token_embeddings
from engine.jobs import Progress, TrainRequest, TrainResult, crosses_half
from engine.photos import Photo, load_photos
from engine.training.checkpoint import (
    CheckpointError,
    TrainCheckpoint,
    decode_checkpoint,
    encode_checkpoint,
)
from engine.training.components import TrainComponents, param_dtype
from engine.training.data import (
    PromptTable,
    TrainBatch,
    encode_views,
    initial_vectors,
    latent_identity,
    splice,
    tokenize_templates,
)
from engine.training.recipe import TrainRecipe, TrainRequestError
from engine.training.recording import RecordedStep
from engine.training.templates import DEFAULT_INIT_WORDS, templates_for

log = logging.getLogger("lexicon.training")

MAX_VECTORS = 8
LOSS_WINDOW = 10  # reported loss = mean of the last this-many step losses

Previewer = Callable[["Trainer"], Sequence[bytes]]  # PNG renders of the trained word
HalfwayPreviewer = Callable[["Trainer"], bytes]  # one quick PNG render of the word half trained


class Trainer:
    """One training run, advanced in slices (`run_steps`) so other work can run in between.

    Satisfies the worker's `TrainingRun` protocol: `step`, `total`, `run_steps(n) -> Progress`,
    `checkpoint() -> bytes`, `finish() -> TrainResult`.
    """

    def __init__(
        self,
        model: Any,
        request: TrainRequest,
        recipe: TrainRecipe | None = None,
        *,
        resume_from: bytes | None = None,
        previewer: Previewer | None = None,
        halfway_previewer: HalfwayPreviewer | None = None,
    ) -> None:
        self.parts = TrainComponents.from_model(model)
        self.request = request
        self.recipe = recipe or TrainRecipe()
        self.recipe.validate()
        self.total = int(self.recipe.steps or request.steps)
        self.previewer = previewer
        self.halfway_previewer = halfway_previewer
        self.init_word = request.init_word or DEFAULT_INIT_WORDS.get(request.kind, "object")
        self._check_request()

        # 1. Photos: decoded and checked before any GPU work.
        self.photos: list[Photo] = load_photos(
            request.photos,
            request.photo_names,
            max_bytes=self.recipe.max_photo_bytes,
            max_pixels=self.recipe.max_photo_pixels,
        )

        parts = self.parts
        for module in (parts.unet, parts.vae, *parts.text_encoders()):
            module.requires_grad_(False)  # already so for a LoadedModel; no weight gradients
        self.device = parts.device
        self.noise_scheduler = _ddpm(parts.scheduler_config)
        self.prediction_type = str(self.noise_scheduler.config.prediction_type)
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise TrainRequestError(
                f"Training supports epsilon and v-prediction models, not {self.prediction_type}."
            )
        self._amp_dtype = _amp_dtype(self.device, parts.dtype, self.recipe.mixed_precision)
        self._unet_dtype = param_dtype(parts.unet)
        compute_dtype = self._amp_dtype or self._unet_dtype

        # 2. Templates and the vectors' starting point (on SDXL: both encoders' halves).
        self.prompts = self._prompt_table()

        # 3. Latents of every view, once.
        size, flip = parts.native_size, self.recipe.flip
        self.latents = encode_views(
            parts.vae, self.photos, size, flip=flip, device=self.device, autocast=self._autocast()
        )
        self.latent_identity = latent_identity(parts.model_hash, size, flip, self.photos)
        # SDXL's size numbers (original size, crop corner, target size), made on the device once:
        # a step recorded as a CUDA graph may not copy from the host.
        self._time_ids = (
            torch.tensor([[size, size, 0, 0, size, size]], device=self.device)
            if parts.is_sdxl
            else None
        )

        # 4. The trainable vectors, optimizer and the run's one random generator.
        self._vectors = self.vectors_init.clone().to(self.device).requires_grad_(True)
        self.optimizer = torch.optim.AdamW(
            [self._vectors],
            lr=self.recipe.learning_rate,
            betas=self.recipe.betas,
            eps=self.recipe.eps,
            weight_decay=self.recipe.weight_decay,
        )
        self.generator = torch.Generator("cpu").manual_seed(int(request.seed))
        self.step = 0
        self.recent_losses: deque[float] = deque(maxlen=LOSS_WINDOW)
        self.loss_scale = 2.0**14 if compute_dtype == torch.float16 else 1.0
        self._seconds = 0.0
        self._steps_timed = 0
        self._recorded: RecordedStep | None = None

        # 5. Resume.
        if resume_from is not None:
            self._restore(decode_checkpoint(resume_from))

    def _prompt_table(self) -> PromptTable:
        """Sets `vectors_init` (each encoder's half from its own token table) and returns the
        templates tokenized by each tokenizer, on the device."""
        parts, request = self.parts, self.request
        templates = templates_for(request.kind)
        halves, tables = [], []
        encoders = [(parts.tokenizer, parts.text_encoder)]
        if parts.is_sdxl:
            encoders.append((parts.tokenizer_2, parts.text_encoder_2))
        for tokenizer, encoder in encoders:
            vectors, init_ids = initial_vectors(
                tokenizer, encoder, self.init_word, request.n_vectors
            )
            halves.append(vectors)
            tables.append(tokenize_templates(tokenizer, templates, request.n_vectors, init_ids))
        self.vectors_init = torch.cat(halves, dim=1)
        first = tables[0]
        if len(tables) > 1 and not torch.equal(tables[1].slots, first.slots):
            raise TrainRequestError("The two tokenizers split the templates differently.")
        second = tables[1].input_ids.to(self.device) if len(tables) > 1 else None
        return PromptTable(
            first.templates, first.input_ids.to(self.device), first.slots.to(self.device), second
        )

    # --- request --------------------------------------------------------------------------

    def _check_request(self) -> None:
        request = self.request
        if not request.name:
            raise TrainRequestError("The new word needs a name.")
        if not 1 <= request.n_vectors <= MAX_VECTORS:
            raise TrainRequestError(
                f"An embedding has 1 to {MAX_VECTORS} vectors; {request.n_vectors} were asked for."
            )
        if not 1 <= self.total <= self.recipe.max_steps:
            raise TrainRequestError(
                f"Training takes 1 to {self.recipe.max_steps} steps; {self.total} were asked for."
            )
        templates_for(request.kind)  # raises for an unknown kind

    # --- data -----------------------------------------------------------------------------

    def draw_batch(
        self, generator: torch.Generator | None = None, size: int | None = None
    ) -> TrainBatch:
        """The next step's random draws (from the run's generator unless one is given)."""
        g = generator or self.generator
        size = size or self.recipe.batch_size
        n_photos = len(self.photos)
        photos = torch.cat(
            [torch.randperm(n_photos, generator=g) for _ in range(math.ceil(size / n_photos))]
        )[:size]
        if self.recipe.flip:
            views = photos * 2 + torch.randint(0, 2, (size,), generator=g)
        else:
            views = photos
        templates = torch.randint(0, len(self.prompts.templates), (size,), generator=g)
        timesteps = torch.randint(
            0, int(self.noise_scheduler.config.num_train_timesteps), (size,), generator=g
        )
        noise = torch.randn((size, *self.latents.shape[1:]), generator=g)
        return TrainBatch(views, templates, timesteps, noise)

    # --- the objective --------------------------------------------------------------------

    def _autocast(self) -> AbstractContextManager[Any]:
        if self._amp_dtype is None:
            return nullcontext()
        # No cast cache: a recorded CUDA graph may not hold autocast's cached weight casts, and
        # each weight is cast once per step anyway.
        return torch.autocast(
            device_type=self.device.type, dtype=self._amp_dtype, cache_enabled=False
        )

    def conditioning(
        self, template_indices: torch.Tensor, vectors: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        """The UNet's conditioning for the chosen templates with `vectors` spliced in: hidden
        states, and on SDXL the added conditioning (pooled text embeds and size numbers)."""
        index = template_indices.to(self.device)
        ids, slots = self.prompts.input_ids[index], self.prompts.slots[index]
        parts = self.parts
        if self.prompts.input_ids_2 is None:
            embeds = token_embeddings(parts.text_encoder, ids)
            return encode_embeds(parts.text_encoder, splice(embeds, slots, vectors)), None
        states_l, states_g, pooled = run_text_encoders_sdxl(
            parts.text_encoder,
            parts.text_encoder_2,
            int(parts.tokenizer_2.eos_token_id),
            ids,
            self.prompts.input_ids_2[index],
            vectors[slots.clamp(min=0)],
            slots >= 0,
        )
        assert self._time_ids is not None
        added = {"text_embeds": pooled, "time_ids": self._time_ids.repeat(len(index), 1)}
        return torch.cat([states_l, states_g], dim=-1), added

    def predict(
        self,
        noisy: torch.Tensor,
        timesteps: torch.Tensor,
        template_indices: torch.Tensor,
        vectors: torch.Tensor,
    ) -> torch.Tensor:
        """The UNet's prediction for noisy latents, conditioned on the templates with `vectors`."""
        dtype = self._unet_dtype
        hidden, added = self.conditioning(template_indices, vectors)
        if added is not None:
            added = {key: value.to(dtype) for key, value in added.items()}
        return self.parts.unet(
            noisy.to(dtype), timesteps, hidden.to(dtype), added_cond_kwargs=added
        ).sample

    def target(
        self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, batch: TrainBatch
    ) -> torch.Tensor:
        """What the UNet should predict: the noise, or the velocity for v-prediction models."""
        if self.prediction_type == "v_prediction":
            return self.noise_scheduler.get_velocity(latents, noise, timesteps)
        return noise

    def loss_on_batch(self, batch: TrainBatch, vectors: torch.Tensor | None = None) -> torch.Tensor:
        """Noise-prediction MSE for one batch (differentiable w.r.t. `vectors`)."""
        vectors = self._vectors if vectors is None else vectors.to(self.device)
        latents = self.latents[batch.view_indices.to(self.device)]
        noise = batch.noise.to(self.device)
        timesteps = batch.timesteps.to(self.device)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        with self._autocast():
            prediction = self.predict(noisy, timesteps, batch.template_indices, vectors)
        target = self.target(latents, noise, timesteps, batch)
        return F.mse_loss(prediction.float(), target.float(), reduction="mean")

    def learning_rate_at(self, step: int) -> float:
        """The schedule: linear warm-up, then constant or cosine decay to zero."""
        base, warmup = self.recipe.learning_rate, self.recipe.warmup_steps
        if step < warmup:
            return base * (step + 1) / warmup
        if self.recipe.lr_schedule == "cosine":
            span = max(1, self.total - warmup)
            return base * 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / span)))
        return base

    def step_on_batch(self, batch: TrainBatch) -> float:
        """One AdamW update of the vectors on `batch`; returns the batch loss."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate_at(self.step)
        loss = self._loss_and_grad(batch)
        grad = self._vectors.grad
        assert grad is not None
        if self.loss_scale != 1.0:
            grad.div_(self.loss_scale)
            if not torch.isfinite(grad).all():  # fp16 overflow: skip this update, scale down
                self.loss_scale /= 2.0
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
                return float(loss.detach())
        value = float(loss.detach())
        if not math.isfinite(value):
            raise RuntimeError(f"Training diverged at step {self.step + 1} (loss {value}).")
        self.optimizer.step()
        self.step += 1
        return value

    def _loss_and_grad(self, batch: TrainBatch) -> torch.Tensor:
        """The batch loss, with its gradient × `loss_scale` left in `self._vectors.grad`."""
        if self.parts.graphs is None:
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.loss_on_batch(batch)
            (loss * self.loss_scale).backward()
            return loss.detach()
        if self._recorded is None:
            try:
                self._recorded = RecordedStep(
                    self.loss_on_batch,
                    self._vectors,
                    batch,
                    self.loss_scale,
                    self.parts.graphs.pool,
                )
            except Exception as error:  # correct but slower: this run's steps stay eager
                log.warning("training steps run eagerly: recording a CUDA graph failed (%s)", error)
                self.parts = replace(self.parts, graphs=None)
                return self._loss_and_grad(batch)
        return self._recorded.run(batch, self.loss_scale)

    # --- running --------------------------------------------------------------------------

    @property
    def vectors(self) -> torch.Tensor:
        """The current vectors, fp32 on CPU (a copy)."""
        return self._vectors.detach().to("cpu", torch.float32).clone()

    @property
    def done(self) -> bool:
        return self.step >= self.total

    @property
    def loss(self) -> float | None:
        """Mean of the last `LOSS_WINDOW` step losses (single steps are very noisy)."""
        return sum(self.recent_losses) / len(self.recent_losses) if self.recent_losses else None

    def eta_seconds(self) -> float | None:
        if not self._steps_timed:
            return None
        return self._seconds / self._steps_timed * (self.total - self.step)

    def progress(self) -> Progress:
        return Progress(self.step, self.total, self.loss, self.eta_seconds())

    def run_steps(self, n: int) -> Progress:
        """Run up to `n` steps (fewer at the end). The caller checkpoints and cancels between
        slices (`engine.worker`). The slice that crosses half of the steps carries one preview
        render (from `halfway_previewer`), so the member sees the word taking shape."""
        before = self.step
        for _ in range(max(0, min(n, self.total - self.step))):
            started = time.monotonic()
            batch = self.draw_batch()
            self.recent_losses.append(self.step_on_batch(batch))
            self._seconds += time.monotonic() - started
            self._steps_timed += 1
        progress = self.progress()
        if self.halfway_previewer is not None and crosses_half(before, self.step, self.total):
            try:
                progress = replace(progress, preview_png=self.halfway_previewer(self))
            except Exception:  # a preview is a courtesy; training goes on without it
                log.exception("the halfway preview of %s failed", self.request.name)
        return progress

    # --- checkpoints ----------------------------------------------------------------------

    def identity(self) -> dict[str, str]:
        """What a checkpoint must agree on to continue this run."""
        request = self.request
        return {
            "name": request.name,
            "kind": request.kind,
            "init_word": self.init_word,
            "n_vectors": str(request.n_vectors),
            "seed": str(request.seed),
            "total": str(self.total),
            "width": str(self.parts.width),
            "recipe": json.dumps(self.recipe.trajectory_fields(), sort_keys=True),
            "latents": self.latent_identity,
        }

    def checkpoint(self) -> bytes:
        """Everything needed to resume exactly, as bytes (see `engine.training.checkpoint`)."""
        state = self.optimizer.state.get(self._vectors, {})
        zeros = torch.zeros_like(self._vectors)
        return encode_checkpoint(
            TrainCheckpoint(
                step=self.step,
                vectors=self._vectors,
                exp_avg=state.get("exp_avg", zeros),
                exp_avg_sq=state.get("exp_avg_sq", zeros),
                optimizer_step=int(state["step"]) if "step" in state else 0,
                generator_state=self.generator.get_state(),
                identity=self.identity(),
                recent_losses=tuple(self.recent_losses),
                loss_scale=self.loss_scale,
            )
        )

    def _restore(self, saved: TrainCheckpoint) -> None:
        mine = self.identity()
        for key, value in mine.items():
            if saved.identity.get(key) != value:
                raise CheckpointError(
                    f"The checkpoint belongs to a different training run (its {key} differs); "
                    "start again without it."
                )
        if not 0 <= saved.step <= self.total or saved.vectors.shape != self._vectors.shape:
            raise CheckpointError("The checkpoint does not fit this training run.")
        with torch.no_grad():
            self._vectors.copy_(saved.vectors.to(self.device))
        if saved.optimizer_step > 0:
            state = self.optimizer.state_dict()
            state["state"] = {
                0: {
                    "step": torch.tensor(float(saved.optimizer_step)),
                    "exp_avg": saved.exp_avg.to(self.device),
                    "exp_avg_sq": saved.exp_avg_sq.to(self.device),
                }
            }
            self.optimizer.load_state_dict(state)
        self.generator.set_state(saved.generator_state)
        self.step = saved.step
        self.recent_losses = deque(saved.recent_losses, maxlen=LOSS_WINDOW)
        self.loss_scale = saved.loss_scale

    # --- output ---------------------------------------------------------------------------

    def embedding_bytes(self) -> bytes:
        """The vectors as Lexicon's embedding file, with the run's provenance as metadata: the
        checkpoint's name under A1111's key too, so an exported word says what it was trained
        on wherever it is imported (`claimed_checkpoint`)."""
        request, parts = self.request, self.parts
        extra = {
            **request.extra_metadata,
            "train_kind": request.kind,
            "init_word": self.init_word,
            "seed": str(request.seed),
            "batch_size": str(self.recipe.batch_size),
            "learning_rate": repr(self.recipe.learning_rate),
        }
        vectors, vectors_g = self.vectors, None
        if parts.is_sdxl:
            vectors, vectors_g = vectors[:, : parts.width_l], vectors[:, parts.width_l :]
        return write_embedding(
            vectors,
            vectors_g=vectors_g,
            name=request.name,
            kind="negative" if request.negative else "positive",
            family=parts.family,
            steps=self.step,
            base_model_hash=parts.model_hash,
            photo_hashes=[photo.sha256 for photo in self.photos],
            extra=extra,
            checkpoint=parts.model_name,
        )

    def finish(self) -> TrainResult:
        """The result: embedding file, its sha256 and preview renders (from `previewer`)."""
        previews: tuple[bytes, ...] = ()
        if self.previewer is not None:
            try:
                previews = tuple(self.previewer(self))
            except Exception:  # a preview is a courtesy; the trained word is the result
                log.exception("preview renders for %s failed", self.request.name)
        data = self.embedding_bytes()
        loss = self.loss
        return TrainResult(
            embedding=data,
            sha256=hashlib.sha256(data).hexdigest(),
            n_vectors=self.request.n_vectors,
            width=self.parts.width,
            family=self.parts.family,
            steps=self.step,
            final_loss=float("nan") if loss is None else loss,
            previews=previews,
        )


def _ddpm(scheduler_config: Any) -> Any:
    """DDPM with the model's own noise schedule, whatever sampler the pipeline shipped."""
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(dict(scheduler_config))


def _amp_dtype(device: torch.device, dtype: torch.dtype, enabled: bool) -> torch.dtype | None:
    if device.type != "cuda" or not enabled:
        return None
    return dtype if dtype in (torch.float16, torch.bfloat16) else torch.bfloat16
