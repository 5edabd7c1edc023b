"""Vary and Upscale on an SDXL image, as a member presses them: in a deployment serving the tiny
SD 1.x and the tiny SDXL model on the real engine, both buttons render on SDXL and the result
messages carry the images and their A1111 parameters."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from PIL import Image

from cogs.images import parse_parameters
from engine.png import read_parameters
from tests.bot.conftest import make_settings
from tests.simulation import simulated


async def test_vary_and_upscale_an_image_rendered_on_tiny_sdxl(tmp_path: Path) -> None:
    """An image made with model:xl (tiny-sdxl) next to sd (tiny): Vary (subtle) renders a new
    64x64 image from it on xl at strength 0.35, Upscale ×2 a 128x128 one with its seed, each
    result message naming its source and its PNG recording A1111's keys and the model."""
    settings = make_settings(
        tmp_path / "data", "", model_list="sd=tiny,xl=tiny-sdxl", default_steps=6
    )
    async with simulated(settings) as sim:
        alice = sim.member("alice")
        made = await alice.slash(
            sim.channel, "imagine", prompt="a red cube on a beach", seed=7, model="xl"
        )
        source = await sim.job_done(alice, limit=600)
        assert (source.state.value, source.model) == ("succeeded", "xl"), source.error
        message = made.response
        assert message is not None
        original = await sim.channel_message(message.id).attachments[0].read()

        varied = await alice.click(message, label="Vary (subtle)")
        vary_job = await sim.job_done(alice, limit=600)
        assert (vary_job.state.value, vary_job.model) == ("succeeded", "xl"), vary_job.error
        assert vary_job.params["init_image"] == hashlib.sha256(original).hexdigest()
        assert vary_job.params["strength"] == 0.35 and vary_job.params["seed"] != 7
        assert varied.response is not None
        assert "· 6 steps · 64x64 · strength 0.35" in varied.response.content
        (attachment,) = varied.response.attachments
        png = await attachment.read()
        assert Image.open(io.BytesIO(png)).size == (64, 64) and png != original
        text = read_parameters(png)
        assert ", Denoising strength: 0.35, " in text and "Model: tiny-sdxl" in text
        assert parse_parameters(text).seed == str(vary_job.params["seed"])

        upscaled = await alice.click(message, label="Upscale ×2")
        upscale_job = await sim.job_done(alice, limit=600)
        assert (upscale_job.state.value, upscale_job.model) == ("succeeded", "xl")
        assert (upscale_job.params["hires_steps"], upscale_job.params["seed"]) == (6, 7)
        assert upscaled.response is not None
        assert upscaled.response.content.split("\n")[1] == (
            f"×2 upscale of image 1 of job #{source.id} · seed 7 · 6 steps · 128x128 · strength 0.5"
        )
        (attachment,) = upscaled.response.attachments
        png = await attachment.read()
        assert Image.open(io.BytesIO(png)).size == (128, 128)
        text = read_parameters(png)
        assert "Size: 64x64, " in text and "Model: tiny-sdxl" in text
        assert ", Denoising strength: 0.5, Hires upscale: 2, Hires steps: 6, " in text
