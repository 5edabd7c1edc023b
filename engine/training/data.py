"""What a training step sees: the prompts with their placeholder slots, the vectors' starting
point, the cached latents of the photos and one step's random draws.

Kept apart from the trainer so the prompt and latent formats (which the equivalence tests check
against diffusers' example) change in one place, independently of the optimisation loop.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch

from engine.encode import token_embeddings
from engine.model import scale_latents
from engine.photos import Photo, photo_views
from engine.training.components import param_dtype
from engine.training.recipe import TrainRequestError

# Unchanged since the VAE's latent statistics were applied: latents of VAEs without them (every
# checkpoint trained before) are bit-identical, and a new name would orphan their checkpoints.
LATENT_METHOD = "posterior-mean"


@dataclass(frozen=True)
class TrainBatch:
    """One step's random draws, on CPU: which view, which template, timesteps and noise."""

    view_indices: torch.Tensor  # long [B]
    template_indices: torch.Tensor  # long [B]
    timesteps: torch.Tensor  # long [B]
    noise: torch.Tensor  # float32 [B, C, h, w]

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """The four draws in field order (`TrainBatch(*batch.tensors())` rebuilds the batch)."""
        return (self.view_indices, self.template_indices, self.timesteps, self.noise)


# --------------------------------------------------------------------------------------------
# Prompts with spliced vectors


def splice(embeds: torch.Tensor, slots: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """Replace the placeholder positions of `embeds` `[B, L, d]` by `vectors` `[n, d]`.

    `slots` `[B, L]` holds, per position, which vector goes there (0…n-1) or -1 for a normal
    token. Gradients reach `vectors` through the gather; nothing else is differentiable.
    """
    chosen = vectors.to(embeds.dtype)[slots.clamp(min=0)]
    return torch.where((slots >= 0).unsqueeze(-1), chosen, embeds)


@dataclass(frozen=True)
class PromptTable:
    """Every template tokenized once: ids `[T, L]` and placeholder slots `[T, L]`; on SDXL also
    the second tokenizer's ids (its own padding), with the same slots."""

    templates: tuple[str, ...]
    input_ids: torch.Tensor
    slots: torch.Tensor
    input_ids_2: torch.Tensor | None = None


def tokenize_templates(
    tokenizer: Any, templates: Sequence[str], n_vectors: int, filler_ids: Sequence[int]
) -> PromptTable:
    """Token ids for each template with `n_vectors` placeholder positions where `{}` stands.

    Text around `{}` is tokenized on its own: CLIP splits words before BPE, so this is exactly
    how the tokenizer would split the full prompt. Placeholder positions get `filler_ids` (the
    init word's ids); they are replaced before the transformer sees them.
    """
    length = int(tokenizer.model_max_length)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    rows, slot_rows = [], []
    for template in templates:
        before, after = template.split("{}")
        head = _words(tokenizer, before)
        tail = _words(tokenizer, after)
        ids = [bos, *head]
        slots = [-1] * len(ids)
        for k in range(n_vectors):
            ids.append(filler_ids[k % len(filler_ids)])
            slots.append(k)
        ids += [*tail, eos]
        slots += [-1] * (len(tail) + 1)
        if len(ids) > length:
            raise TrainRequestError(
                f"The template {template!r} is too long for {n_vectors} vectors."
            )
        ids += [pad] * (length - len(ids))
        slots += [-1] * (length - len(slots))
        rows.append(ids)
        slot_rows.append(slots)
    return PromptTable(
        templates=tuple(templates),
        input_ids=torch.tensor(rows, dtype=torch.long),
        slots=torch.tensor(slot_rows, dtype=torch.long),
    )


def _words(tokenizer: Any, text: str) -> list[int]:
    text = text.strip()
    return list(tokenizer(text, add_special_tokens=False).input_ids) if text else []


def initial_vectors(
    tokenizer: Any, text_encoder: Any, init_word: str, n_vectors: int
) -> tuple[torch.Tensor, list[int]]:
    """`n_vectors` copies of the init word's token embeddings, cycled; and those token ids."""
    ids = _words(tokenizer, init_word)
    if not ids:
        raise TrainRequestError(f"The init word {init_word!r} has no tokens; choose a real word.")
    table = token_embeddings(text_encoder, torch.tensor(ids, device=_device_of(text_encoder)))
    rows = [table[k % len(ids)] for k in range(n_vectors)]
    return torch.stack(rows).detach().to("cpu", torch.float32).clone(), ids


def _device_of(module: Any) -> torch.device:
    return next(module.parameters()).device


# --------------------------------------------------------------------------------------------
# Latents of the training views, encoded once per run


def encode_views(
    vae: Any,
    photos: Sequence[Photo],
    size: int,
    *,
    flip: bool,
    device: torch.device,
    autocast: AbstractContextManager[Any],
) -> torch.Tensor:
    """The VAE's posterior mean of every view (photo, then its mirror when `flip`), scaled into
    the UNet's latent space as image-to-image scales its start (`engine.model.scale_latents`),
    fp32 on `device`."""
    pixels = torch.from_numpy(photo_views(photos, size, flip=flip))
    chunks = []
    with torch.no_grad(), autocast:
        for chunk in pixels.split(4):
            chunk = chunk.to(device, dtype=param_dtype(vae))
            chunks.append(vae.encode(chunk).latent_dist.mean.float())
    latents = scale_latents(vae, torch.cat(chunks))
    if not torch.isfinite(latents).all():
        raise RuntimeError(
            "The VAE returned non-finite latents (fp16 overflow); load the model in bf16."
        )
    return latents


def latent_identity(model_hash: str, size: int, flip: bool, photos: Sequence[Photo]) -> str:
    """What the cached latents are a function of: photos, model, size, method, flips."""
    digest = hashlib.sha256()
    for part in (LATENT_METHOD, model_hash, str(size), str(flip), *(p.sha256 for p in photos)):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()
