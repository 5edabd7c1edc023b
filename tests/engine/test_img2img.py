"""Image-to-image, variations and the upscale's second pass equal stock
`StableDiffusionImg2ImgPipeline`.

Same seed, image and strength, with and without embeddings, per sampler; batched requests equal
each one alone; the PNG records A1111's `Denoising strength` and `Hires …` keys.
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

from engine.generate import InvalidRequest, generate
from engine.jobs import GenerateRequest, RequestError
from engine.model import LoadedModel
from engine.png import read_parameters
from tests.engine.render_helpers import (
    ZORB,
    beach_request,
    picture,
    png_bytes,
    stock_img2img_images,
    worst,
    worst_batched,
    worst_variation,
)

STEPS = 10
SAMPLERS = ("euler_a", "ddim", "dpmpp_2m_karras", "euler")


START = png_bytes(picture(64, 64))


BASE = beach_request(
    seed=11,
    steps=STEPS,
    negative="blurry",
    init_sha256=hashlib.sha256(START).hexdigest(),
    init_image=START,
    strength=0.6,
)


def _request(**changes: Any) -> GenerateRequest:
    return dataclasses.replace(BASE, **changes)


@pytest.fixture(scope="module")
def stock_img2img(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Stock StableDiffusionImg2ImgPipeline of the tiny model with zorb loaded as stock does."""
    from diffusers import StableDiffusionImg2ImgPipeline

    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(
        tiny_model_dir, safety_checker=None, requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    path = tmp_path_factory.mktemp("img2img-embeddings") / "zorb.safetensors"
    path.write_bytes(ZORB.data)
    pipe.load_textual_inversion(str(path), token="zorb")
    return pipe


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("with_embedding", [True, False])
def test_img2img_equals_stock_pipeline(
    tiny_model: LoadedModel, stock_img2img: Any, sampler: str, with_embedding: bool
) -> None:
    """Each seeded image-to-image render equals stock's within 1/255, embeddings or not."""
    changes: dict[str, Any] = {"sampler": sampler, "count": 2}
    if not with_embedding:
        changes |= {"prompt": "a red house on a hill", "embeddings": ()}
    request = _request(**changes)
    ours = generate(tiny_model, [request])[0]
    assert [image.seed for image in ours] == [11, 12]
    expected = stock_img2img_images(stock_img2img, tiny_model, request, picture(64, 64))
    assert worst(ours, expected) <= 1


@pytest.mark.parametrize("sampler", ("euler_a", "ddim", "dpmpp_2m"))
@pytest.mark.parametrize("with_embedding", [True, False])
def test_upscale_second_pass_equals_stock_img2img(
    tiny_model: LoadedModel, stock_img2img: Any, sampler: str, with_embedding: bool
) -> None:
    """The upscale is stock img2img of the image enlarged ×2 with PIL's Lanczos, at 128x128."""
    changes: dict[str, Any] = {"sampler": sampler, "hires_steps": 6, "strength": 0.5}
    if not with_embedding:
        changes |= {"prompt": "a red house on a hill", "embeddings": ()}
    request = _request(**changes)
    ours = generate(tiny_model, [request])[0]
    assert Image.open(io.BytesIO(ours[0].png)).size == (128, 128)
    enlarged = picture(64, 64).resize((128, 128), Image.Resampling.LANCZOS)
    assert worst(ours, stock_img2img_images(stock_img2img, tiny_model, request, enlarged)) <= 1


@pytest.mark.parametrize("sampler", ("euler_a", "ddim", "dpmpp_2m_karras"))
@pytest.mark.parametrize("with_embedding", [True, False])
def test_variation_equals_stock_img2img(
    tiny_model: LoadedModel, stock_img2img: Any, sampler: str, with_embedding: bool
) -> None:
    """Vary (subtle 0.35, strong 0.65) of a rendered image — same prompt, new seed, the PNG as
    the start — equals stock img2img given that PNG, within 1/255."""
    changes: dict[str, Any] = {"sampler": sampler}
    if not with_embedding:
        changes |= {"prompt": "a red house on a hill", "embeddings": ()}
    source = _request(**changes, init_sha256="", init_image=b"", strength=0.0)
    assert worst_variation(stock_img2img, tiny_model, source) <= 1


def test_starting_image_of_another_size_is_resized_first(
    tiny_model: LoadedModel, stock_img2img: Any
) -> None:
    """A 96x80 start for a 64x64 request equals stock given the Lanczos-resized image."""
    other = png_bytes(picture(96, 80))
    request = _request(init_image=other, init_sha256=hashlib.sha256(other).hexdigest())
    ours = generate(tiny_model, [request])[0]
    resized = picture(96, 80).resize((64, 64), Image.Resampling.LANCZOS)
    assert worst(ours, stock_img2img_images(stock_img2img, tiny_model, request, resized)) <= 1


def test_img2img_batch_equals_each_alone(tiny_model: LoadedModel) -> None:
    """Three img2img requests with different images, seeds and prompts batch invariantly."""
    other = png_bytes(picture(64, 64).transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    requests = [
        _request(sampler="euler_a", seed=1, count=2),
        _request(
            sampler="euler_a",
            seed=2,
            prompt="a red house",
            embeddings=(),
            init_image=other,
            init_sha256=hashlib.sha256(other).hexdigest(),
        ),
        _request(sampler="euler_a", seed=3, guidance=1.0),
    ]
    assert worst_batched(tiny_model, requests) <= 1


def test_callback_counts_only_the_denoised_steps(tiny_model: LoadedModel) -> None:
    """Strength 0.6 of 10 steps runs int(10 × 0.6) = 6 UNet steps."""
    seen: list[tuple[int, int]] = []
    generate(tiny_model, [_request()], on_step=lambda step, total, _: seen.append((step, total)))
    assert seen == [(step, 6) for step in range(1, 7)]


def test_batch_key_separates_strength_size_and_kind() -> None:
    """Different strengths, upscales and text-to-image never share a batch; equal ones do."""
    plain = GenerateRequest(prompt="x", seed=1, steps=STEPS, guidance=7.5, width=128, height=128)
    keys = {
        _request().batch_key,
        _request(strength=0.7).batch_key,
        _request(hires_steps=STEPS).batch_key,
        plain.batch_key,
    }
    assert len(keys) == 4
    assert _request(hires_steps=STEPS).batch_key == _request(width=128, height=128).batch_key


def test_png_records_denoising_strength_and_hires_keys(tiny_model: LoadedModel) -> None:
    """img2img writes `Denoising strength`; the upscale adds A1111's Hires keys, base size."""
    plain = read_parameters(generate(tiny_model, [_request()])[0][0].png)
    assert ", Denoising strength: 0.6, " in plain
    assert "Hires" not in plain
    upscale = read_parameters(
        generate(tiny_model, [_request(hires_steps=4, strength=0.5)])[0][0].png
    )
    assert "Steps: 10, " in upscale and "Size: 64x64, " in upscale
    assert (
        ", Denoising strength: 0.5, Hires upscale: 2, Hires steps: 4, Hires upscaler: Lanczos, "
        in upscale
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"strength": 0.01}, "strength must be between 0.05 and 1"),
        ({"strength": 1.5}, "strength must be between 0.05 and 1"),
        ({"strength": float("nan")}, "strength must be between"),
        ({"strength": 0.05, "steps": 10}, "strength 0.05 changes nothing"),
        ({"width": 1536, "height": 1024, "hires_steps": 5}, "upscaled image would be 3072x2048"),
        ({"hires_steps": 151}, "Hires steps must be between 1 and 150"),
        ({"init_sha256": "", "init_image": b""}, "need a starting image"),
        ({"init_sha256": "0" * 64}, "does not match its hash"),
        (
            {"init_image": b"not a png", "init_sha256": hashlib.sha256(b"not a png").hexdigest()},
            "cannot be read",
        ),
    ],
)
def test_bad_img2img_requests_are_refused(
    tiny_model: LoadedModel, changes: dict[str, Any], message: str
) -> None:
    """Strength, step, size, hash and image problems are one sentence before any step."""
    with pytest.raises((InvalidRequest, RequestError), match=message):
        generate(tiny_model, [_request(**changes)], on_step=_never)


def _never(step: int, total: int, latents: torch.Tensor) -> None:
    raise AssertionError("validation must fail before the first step")


def test_params_round_trip_keeps_the_image_sha_not_its_bytes() -> None:
    """`to_params` stores the image's sha256, strength and hires steps; text-to-image rows
    carry no image keys at all."""
    request = _request(hires_steps=7)
    params = request.to_params()
    assert params["init_image"] == request.init_sha256 and "init_bytes" not in params
    back = GenerateRequest.from_params(params).with_files(lambda sha: ZORB.data, START)
    assert back == request
    assert (
        "init_image"
        not in dataclasses.replace(
            request, init_sha256="", init_image=b"", strength=0.0, hires_steps=0
        ).to_params()
    )
