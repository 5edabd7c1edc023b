"""Helpers for the rendering tests (text-to-image and image-to-image): random embeddings for the
tiny models (SD 1.x and SDXL), one beach prompt to vary, a starting picture, and pixels to compare
with stock diffusers."""

from __future__ import annotations

import dataclasses
import hashlib
import io
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save as save_safetensors

from engine.embedding_files import write_embedding
from engine.generate import generate
from engine.jobs import EmbeddingPayload, GeneratedImage, GenerateRequest
from engine.model import LoadedModel
from engine.schedulers import make_scheduler


def random_embedding(name: str, n: int, seed: int) -> EmbeddingPayload:
    """An embedding `name` of `n` random (seeded) vectors of the tiny model's width."""
    vectors = torch.randn(n, 32, generator=torch.Generator().manual_seed(seed)) * 2
    data = write_embedding(vectors, name=name, kind="positive", family="tiny")
    return EmbeddingPayload(name=name, data=data, sha256=hashlib.sha256(data).hexdigest())


ZORB = random_embedding("zorb", 2, 1)
SDXL_WIDTHS = (32, 64)  # the tiny SDXL model's clip_l and clip_g widths


def sdxl_embedding(
    name: str, n: int, seed: int
) -> tuple[EmbeddingPayload, dict[str, torch.Tensor]]:
    """An A1111/ComfyUI-style SDXL file `{clip_l, clip_g}` of `n` random vectors, and its halves."""
    generator = torch.Generator().manual_seed(seed)
    halves = {
        key: torch.randn(n, w, generator=generator)
        for key, w in zip(("clip_l", "clip_g"), SDXL_WIDTHS, strict=True)
    }
    data = save_safetensors(halves)
    return EmbeddingPayload(name=name, data=data, sha256=hashlib.sha256(data).hexdigest()), halves


def load_sdxl_embeddings(pipe: Any, named: dict[str, dict[str, torch.Tensor]]) -> None:
    """Load each SDXL embedding's halves into a stock SDXL pipeline, the diffusers way: `clip_g`
    into the second encoder, `clip_l` into the first."""
    for name, halves in named.items():
        pipe.load_textual_inversion(
            halves["clip_g"],
            token=name,
            text_encoder=pipe.text_encoder_2,
            tokenizer=pipe.tokenizer_2,
        )
        pipe.load_textual_inversion(
            halves["clip_l"], token=name, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer
        )


def beach_request(*, seed: int, steps: int, **fields: Any) -> GenerateRequest:
    """A 64×64 "a photo of zorb on a beach" at CFG 7.5 with zorb; `fields` set the rest."""
    base = GenerateRequest(
        prompt="a photo of zorb on a beach",
        seed=seed,
        steps=steps,
        guidance=7.5,
        width=64,
        height=64,
        embeddings=(ZORB,),
    )
    return dataclasses.replace(base, **fields)


def pixels(png: bytes) -> np.ndarray:
    """A PNG's RGB values as signed integers, ready to subtract."""
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def stock_pixels(
    pipe: Any, request: GenerateRequest, index: int, negative: str | None, **options: Any
) -> np.ndarray:
    """Image `index` of `request` as a stock pipeline renders it alone (seeded `seed + index`),
    as signed integers like `pixels`. `options` add to or replace the text-to-image arguments
    (an image-to-image pipeline's `image` and `strength`, say); None leaves one out."""
    arguments = {
        "negative_prompt": negative,
        "num_inference_steps": request.steps,
        "guidance_scale": request.guidance,
        "height": request.height,
        "width": request.width,
        "generator": torch.Generator("cpu").manual_seed(request.seed + index),
        "output_type": "np",
    }
    chosen = {key: value for key, value in (arguments | options).items() if value is not None}
    reference = pipe(request.prompt, **chosen).images[0]
    return (reference * 255).round().astype(np.int16)


def picture(width: int, height: int) -> Image.Image:
    """A starting image with gradients and a block, so the encoder sees structure."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // width, y * 255 // height, (x + y) * 127 // (width + height)], -1)
    rgb[height // 4 : height // 2, width // 4 : width // 2] = (240, 30, 60)
    return Image.fromarray(rgb.astype(np.uint8))


def png_bytes(image: Image.Image) -> bytes:
    """`image` as PNG bytes, a request's `init_image`."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def stock_img2img_images(
    pipe: Any, model: LoadedModel, request: GenerateRequest, image: Image.Image
) -> list[np.ndarray]:
    """Every image of an image-to-image `request` as a stock img2img pipeline (SD 1.x or SDXL)
    renders it alone from `image`, with the request's sampler, strength and steps."""
    pipe.scheduler = make_scheduler(request.sampler, model.scheduler_config)
    return [
        stock_pixels(
            pipe,
            request,
            i,
            request.negative or None,  # "" is stock's default: None (zeros on SDXL)
            image=image,
            strength=request.strength,
            num_inference_steps=request.run_steps,
            height=None,  # image-to-image takes the size of its image
            width=None,
        )
        for i in range(request.count)
    ]


def worst(ours: list[GeneratedImage], expected: list[np.ndarray]) -> int:
    """The largest pixel difference between our images and the expected ones."""
    return max(
        int(np.abs(pixels(image.png) - reference).max())
        for image, reference in zip(ours, expected, strict=True)
    )


def worst_variation(pipe: Any, model: LoadedModel, source: GenerateRequest) -> int:
    """Render text-to-image `source`, then Vary it as the bot does (subtle 0.35 and strong 0.65:
    same prompt, new seed, the PNG as the start); the largest difference of the variations from
    a stock img2img pipeline given that PNG."""
    rendered = generate(model, [source])[0][0].png
    start = Image.open(io.BytesIO(rendered)).convert("RGB")
    differences = []
    for strength in (0.35, 0.65):
        varied = dataclasses.replace(
            source,
            seed=90,
            init_image=rendered,
            init_sha256=hashlib.sha256(rendered).hexdigest(),
            strength=strength,
        )
        ours = generate(model, [varied])[0]
        differences.append(worst(ours, stock_img2img_images(pipe, model, varied, start)))
    return max(differences)


def worst_batched(model: LoadedModel, requests: list[GenerateRequest]) -> int:
    """Render `requests` (one batch key) together and each alone; the largest difference."""
    assert len({r.batch_key for r in requests}) == 1
    together = generate(model, requests)
    return max(
        worst(batched, [pixels(image.png) for image in generate(model, [request])[0]])
        for request, batched in zip(requests, together, strict=True)
    )
