"""An SDXL-family VAE whose config gives `latents_mean` and `latents_std` (as some fine-tunes'
do) scales latents as stock does: text-to-image and image-to-image equal stock
`StableDiffusionXLPipeline` / `StableDiffusionXLImg2ImgPipeline` within 1/255 (tiny random SDXL,
CPU fp32), and the trainer scales its photos' latents the same way."""

from __future__ import annotations

import hashlib
import json
import shutil
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.generate import generate
from engine.model import LoadedModel, load_model
from engine.photos import Photo
from engine.schedulers import make_scheduler
from engine.training.data import encode_views
from tests.engine.render_helpers import (
    beach_request,
    picture,
    pixels,
    png_bytes,
    stock_img2img_images,
    stock_pixels,
    worst,
)

MEAN = [0.4, -0.3, 0.2, -0.1]
STD = [1.5, 0.7, 1.2, 0.9]
START = png_bytes(picture(64, 64))


@pytest.fixture(scope="module")
def statistics_dir(tiny_sdxl_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SDXL folder, its VAE config given per-channel latents mean and std."""
    folder = tmp_path_factory.mktemp("sdxl-statistics") / "model"
    shutil.copytree(tiny_sdxl_dir, folder)
    config_file = folder / "vae" / "config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps(config | {"latents_mean": MEAN, "latents_std": STD}))
    return folder


@pytest.fixture(scope="module")
def statistics_model(statistics_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    data_dir = tmp_path_factory.mktemp("statistics-data")
    model = load_model(str(statistics_dir), "cpu", data_dir=data_dir)
    assert list(model.vae.config.latents_mean) == MEAN
    return model


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m"])
def test_text_to_image_equals_stock_with_the_vae_statistics(
    statistics_model: LoadedModel, statistics_dir: Path, tiny_sdxl_model: LoadedModel, sampler: str
) -> None:
    """Decoding unscales with the statistics, as stock does; without them the image differs."""
    from diffusers import StableDiffusionXLPipeline

    request = beach_request(
        seed=4, steps=6, guidance=5.0, prompt="a red house", embeddings=(), sampler=sampler
    )
    ours = pixels(generate(statistics_model, [request])[0][0].png)
    stock = StableDiffusionXLPipeline.from_pretrained(statistics_dir, add_watermarker=False)
    stock.set_progress_bar_config(disable=True)
    stock.scheduler = make_scheduler(sampler, statistics_model.scheduler_config)
    assert np.abs(ours - stock_pixels(stock, request, 0, None)).max() <= 1
    without = pixels(generate(tiny_sdxl_model, [request])[0][0].png)
    assert np.abs(ours - without).max() > 20  # the statistics were used, not ignored


def test_image_to_image_equals_stock_with_the_vae_statistics(
    statistics_model: LoadedModel, statistics_dir: Path
) -> None:
    """The start is encoded and scaled with the statistics, as stock's img2img scales it."""
    from diffusers import StableDiffusionXLImg2ImgPipeline

    request = beach_request(
        seed=4,
        steps=6,
        guidance=5.0,
        prompt="a red house",
        embeddings=(),
        init_image=START,
        init_sha256=hashlib.sha256(START).hexdigest(),
        strength=0.6,
    )
    stock = StableDiffusionXLImg2ImgPipeline.from_pretrained(
        statistics_dir, add_watermarker=False, requires_aesthetics_score=False
    )
    stock.set_progress_bar_config(disable=True)
    ours = generate(statistics_model, [request])[0]
    assert worst(ours, stock_img2img_images(stock, statistics_model, request, picture(64, 64))) <= 1


def test_training_latents_are_scaled_with_the_vae_statistics(
    statistics_model: LoadedModel, tiny_sdxl_model: LoadedModel
) -> None:
    """The trainer's photo latents are the plain VAE's, shifted and scaled per channel by the
    statistics: the UNet learns on the latents that image-to-image starts from."""
    photo = Photo(1, "0" * 64, picture(64, 64))

    def latents(model: LoadedModel) -> torch.Tensor:
        return encode_views(
            model.vae, [photo], 64, flip=False, device=model.device, autocast=nullcontext()
        )

    scaling = tiny_sdxl_model.vae.config.scaling_factor
    mean, std = torch.tensor(MEAN).view(1, 4, 1, 1), torch.tensor(STD).view(1, 4, 1, 1)
    expected = (latents(tiny_sdxl_model) - mean * scaling) / std
    torch.testing.assert_close(latents(statistics_model), expected, rtol=1e-5, atol=1e-5)
