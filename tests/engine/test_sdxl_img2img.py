"""SDXL image-to-image, variations and the upscale's second pass equal stock
`StableDiffusionXLImg2ImgPipeline` (tiny random SDXL, CPU fp32).

Same seed, image and strength, with and without a `clip_l`/`clip_g` embedding, per sampler, within
1/255; batched requests equal each one alone; the PNG records A1111's img2img and Hires keys.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from engine.generate import generate
from engine.jobs import GenerateRequest
from engine.model import LoadedModel, load_model
from engine.png import read_parameters
from tests.engine.render_helpers import (
    beach_request,
    load_sdxl_embeddings,
    picture,
    png_bytes,
    sdxl_embedding,
    stock_img2img_images,
    worst,
    worst_batched,
    worst_variation,
)

STEPS = 6
SAMPLERS = ("euler", "euler_a", "dpmpp_2m")
XORB, XORB_HALVES = sdxl_embedding("xorb", 2, 41)
START = png_bytes(picture(64, 64))
BASE = beach_request(
    seed=5,
    steps=STEPS,
    prompt="a photo of xorb on a beach",
    negative="blurry",
    guidance=5.0,
    embeddings=(XORB,),
    init_image=START,
    init_sha256=hashlib.sha256(START).hexdigest(),
    strength=0.5,
)


def _request(*, with_embedding: bool = True, **changes: Any) -> GenerateRequest:
    """BASE with `changes`; without the embedding, a prompt that names none."""
    if not with_embedding:
        changes |= {"prompt": "a red house on a hill", "embeddings": ()}
    return dataclasses.replace(BASE, **changes)


@pytest.fixture(scope="module")
def stock(tiny_sdxl_dir: Path) -> Any:
    """Stock StableDiffusionXLImg2ImgPipeline of the tiny SDXL folder (base: no aesthetic
    score), with xorb loaded into both encoders the diffusers way."""
    from diffusers import StableDiffusionXLImg2ImgPipeline

    pipe = StableDiffusionXLImg2ImgPipeline.from_pretrained(
        tiny_sdxl_dir, add_watermarker=False, requires_aesthetics_score=False
    )
    pipe.set_progress_bar_config(disable=True)
    load_sdxl_embeddings(pipe, {"xorb": XORB_HALVES})
    return pipe


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("strength", [0.5, 0.75])
@pytest.mark.parametrize("with_embedding", [True, False])
def test_sdxl_img2img_equals_stock_pipeline(
    tiny_sdxl_model: LoadedModel, stock: Any, sampler: str, strength: float, with_embedding: bool
) -> None:
    """Each seeded SDXL image-to-image render equals stock's within 1/255, embedding or not."""
    request = _request(with_embedding=with_embedding, sampler=sampler, strength=strength, count=2)
    ours = generate(tiny_sdxl_model, [request])[0]
    assert [image.seed for image in ours] == [5, 6]
    expected = stock_img2img_images(stock, tiny_sdxl_model, request, picture(64, 64))
    assert worst(ours, expected) <= 1


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("with_embedding", [True, False])
def test_sdxl_variation_equals_stock_img2img(
    tiny_sdxl_model: LoadedModel, stock: Any, sampler: str, with_embedding: bool
) -> None:
    """Vary (subtle 0.35, strong 0.65) of a rendered SDXL image — as the bot builds it: same
    prompt, new seed, the PNG as the start — equals stock SDXL img2img given that PNG."""
    source = _request(
        with_embedding=with_embedding,
        sampler=sampler,
        init_image=b"",
        init_sha256="",
        strength=0.0,
    )
    assert worst_variation(stock, tiny_sdxl_model, source) <= 1


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("with_embedding", [True, False])
def test_sdxl_upscale_second_pass_equals_stock_img2img(
    tiny_sdxl_model: LoadedModel, stock: Any, sampler: str, with_embedding: bool
) -> None:
    """The SDXL upscale is stock SDXL img2img of the image enlarged ×2 with PIL's Lanczos, at
    128x128 — its size numbers those of the enlarged image, as stock's."""
    request = _request(with_embedding=with_embedding, sampler=sampler, hires_steps=STEPS)
    ours = generate(tiny_sdxl_model, [request])[0]
    assert Image.open(io.BytesIO(ours[0].png)).size == (128, 128)
    enlarged = picture(64, 64).resize((128, 128), Image.Resampling.LANCZOS)
    assert worst(ours, stock_img2img_images(stock, tiny_sdxl_model, request, enlarged)) <= 1


def test_sdxl_img2img_batch_equals_each_alone(tiny_sdxl_model: LoadedModel) -> None:
    """SDXL img2img requests with different images, seeds, prompts and guidance batch
    invariantly."""
    other = png_bytes(picture(64, 64).transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    requests = [
        _request(sampler="euler_a", seed=1, count=2),
        _request(
            with_embedding=False,
            sampler="euler_a",
            seed=2,
            negative="",
            init_image=other,
            init_sha256=hashlib.sha256(other).hexdigest(),
        ),
        _request(sampler="euler_a", seed=3, guidance=1.0),
    ]
    assert worst_batched(tiny_sdxl_model, requests) <= 1


def test_sdxl_png_records_denoising_strength_and_hires_keys(
    tiny_sdxl_model: LoadedModel,
) -> None:
    """SDXL img2img writes `Denoising strength`; the upscale adds A1111's Hires keys."""
    plain = read_parameters(generate(tiny_sdxl_model, [_request()])[0][0].png)
    assert ", Denoising strength: 0.5, " in plain and "Hires" not in plain
    upscale = read_parameters(generate(tiny_sdxl_model, [_request(hires_steps=4)])[0][0].png)
    assert "Size: 64x64, " in upscale and "Model: tiny-sdxl" in upscale
    assert (
        ", Denoising strength: 0.5, Hires upscale: 2, Hires steps: 4, Hires upscaler: Lanczos, "
        in upscale
    )


def test_sdxl_img2img_in_float16_encodes_with_the_upcast_vae(
    engine_data_dir: Path, tiny_sdxl_dir: Path
) -> None:
    """In float16 the SDXL VAE stays float32 (`force_upcast`): the starting image is encoded in
    float32 and the render equals stock SDXL img2img in float16 (which upcasts to encode)."""
    from diffusers import StableDiffusionXLImg2ImgPipeline

    half = load_model("tiny-sdxl", "cpu", data_dir=engine_data_dir, dtype=torch.float16)
    assert (half.dtype, next(half.vae.parameters()).dtype) == (torch.float16, torch.float32)
    request = _request(with_embedding=False, steps=4)
    ours = generate(half, [request])[0]
    pipe = StableDiffusionXLImg2ImgPipeline.from_pretrained(
        tiny_sdxl_dir, torch_dtype=torch.float16, add_watermarker=False
    )
    pipe.set_progress_bar_config(disable=True)
    assert worst(ours, stock_img2img_images(pipe, half, request, picture(64, 64))) <= 1
