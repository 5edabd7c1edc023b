"""PNG parameters chunk in A1111's layout, and previews."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from engine.png import (
    ImageParameters,
    close_deflate_pool,
    encode_png,
    format_parameters,
    read_parameters,
)
from engine.previews import SD1_LATENT_RGB, latents_to_rgb, preview_png


def _parameters(**changes: object) -> ImageParameters:
    values: dict[str, object] = {
        "prompt": "a (zorb:1.2), oil painting",
        "negative": "blurry",
        "steps": 25,
        "sampler": "DPM++ 2M Karras",
        "cfg_scale": 7.5,
        "seed": 1,
        "width": 512,
        "height": 512,
        "model_hash": "abcd1234ef",
        "model_name": "v1-5-pruned",
        "ti_hashes": {"zorb": "1a2b3c4d5e6f", "easyneg": "0f0f0f0f0f0f"},
        "version": "lexicon 0.1.0",
    }
    values.update(changes)
    return ImageParameters(**values)  # type: ignore[arg-type]


def test_parameters_follow_a1111_infotext() -> None:
    """Prompt, negative line, then quoted settings exactly as A1111 writes them."""
    assert format_parameters(_parameters()) == (
        "a (zorb:1.2), oil painting\n"
        "Negative prompt: blurry\n"
        "Steps: 25, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 1, Size: 512x512, "
        "Model hash: abcd1234ef, Model: v1-5-pruned, "
        'TI hashes: "easyneg: 0f0f0f0f0f0f, zorb: 1a2b3c4d5e6f", Version: lexicon 0.1.0'
    )


def test_empty_negative_and_no_embeddings_are_omitted() -> None:
    """Without a negative, embeddings or a checkpoint hash, those parts are left out; CFG 7.0
    prints as 7."""
    text = format_parameters(
        _parameters(negative="", ti_hashes={}, cfg_scale=7.0, model_hash="", model_name="tiny")
    )
    assert text == (
        "a (zorb:1.2), oil painting\n"
        "Steps: 25, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1, Size: 512x512, "
        "Model: tiny, Version: lexicon 0.1.0"
    )


def test_png_round_trips_pixels_and_parameters() -> None:
    """encode_png keeps the pixels exactly and read_parameters returns the text, even non-Latin."""
    pixels = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    text = format_parameters(_parameters(prompt="un château, 猫"))
    png = encode_png(pixels, text)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), pixels)
    assert read_parameters(png) == text
    assert read_parameters(encode_png(pixels, "plain")) == "plain"


def test_large_png_is_one_valid_stream_of_parallel_segments() -> None:
    """Images big enough to be deflated in several parallel segments still decode exactly, with
    a valid checksum chain (Pillow verifies CRCs, zlib the Adler-32), and stay compressed."""
    rng = np.random.default_rng(1)
    for height, width in ((512, 512), (768, 512), (131, 977), (1, 1)):
        y, x = np.mgrid[0:height, 0:width]
        smooth = np.stack([x % 256, y % 256, (x + y) % 256], axis=-1).astype(np.uint8)
        for pixels in (smooth, rng.integers(0, 256, (height, width, 3), dtype=np.uint8)):
            png = encode_png(pixels, "a photo")
            with Image.open(io.BytesIO(png)) as image:
                image.verify()
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), pixels)
            assert read_parameters(png) == "a photo"
        if height * width >= 512 * 512:  # the Up filter finds the gradient's redundancy
            assert len(encode_png(smooth, "")) < smooth.nbytes / 4


def test_encoding_after_the_deflate_threads_stopped_starts_them_again() -> None:
    """An engine's close stops the deflate threads; a later PNG (another engine of the same
    process) starts new ones rather than fail."""
    pixels = np.random.default_rng(2).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    encode_png(pixels, "")
    close_deflate_pool()
    assert not [t for t in threading.enumerate() if t.name.startswith("deflate")]
    png = encode_png(pixels, "again")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), pixels)
    assert read_parameters(png) == "again"


def test_encode_png_refuses_what_is_not_rgb8() -> None:
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((4, 4, 4), dtype=np.uint8), "")


def test_png_without_parameters_reads_empty() -> None:
    """A PNG from elsewhere has no parameters: the reader returns an empty string."""
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="PNG")
    assert read_parameters(buffer.getvalue()) == ""


def test_preview_is_the_linear_latent_projection() -> None:
    """Each preview pixel is the SD 1.x 4×3 projection of its latent, mapped from [-1, 1]."""
    latents = torch.zeros(4, 8, 8)
    latents[0, 0, 0] = 1.0
    rgb = latents_to_rgb(latents)
    expected = [round((v + 1) * 127.5) for v in SD1_LATENT_RGB[0]]
    assert rgb.shape == (8, 8, 3) and rgb.dtype == torch.uint8
    assert rgb[0, 0].tolist() == expected and rgb[1, 1].tolist() == [128, 128, 128]
    image = Image.open(io.BytesIO(preview_png(latents)))
    assert image.size == (64, 64)
