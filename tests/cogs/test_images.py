"""Result images fit the upload limit and their parameters read back."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image as PILImage

from cogs.images import Upload, fit_upload, fit_uploads, parse_parameters
from engine.png import ImageParameters, encode_png, format_parameters

PARAMETERS = format_parameters(
    ImageParameters(
        prompt="a photo of zorb on a beach, (sunset:1.2)",
        negative="easyneg, blurry",
        steps=25,
        sampler="DPM++ 2M Karras",
        cfg_scale=7.5,
        seed=1234,
        width=512,
        height=512,
        model_hash="abcdef0123",
        ti_hashes={"zorb": "0123456789ab", "easyneg": "ba9876543210"},
        version="lexicon test",
    )
)


def _noise_png(side: int) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 255, size=(side, side, 3), dtype=np.uint8)
    return encode_png(pixels, PARAMETERS)


def test_a_png_under_the_limit_is_sent_as_it_is() -> None:
    """Nothing is re-encoded when it already fits."""
    upload = Upload("lexicon-1-0.png", _noise_png(64))
    assert fit_upload(upload, 10 * 1024 * 1024) is upload


def test_an_oversized_png_is_re_encoded_to_fit_and_keeps_its_parameters() -> None:
    """A 3 MB noise PNG against a 200 KiB limit becomes a WebP under it, parameters in EXIF."""
    big = Upload("lexicon-1-0.png", _noise_png(1024))
    assert len(big.data) > 3_000_000
    fitted = fit_upload(big, 200 * 1024)
    assert len(fitted.data) <= 200 * 1024
    assert fitted.filename == "lexicon-1-0.webp"
    with PILImage.open(io.BytesIO(fitted.data)) as image:
        assert image.format == "WEBP"
        comment = image.getexif().get_ifd(0x8769)[0x9286]
    assert comment.startswith(b"UNICODE\0")
    assert comment[8:].decode("utf-16-be") == PARAMETERS


def test_several_images_share_the_limit() -> None:
    """Four images in one message each fit a quarter of the limit; none is dropped."""
    uploads = [Upload(f"lexicon-1-{i}.png", _noise_png(512)) for i in range(4)]
    fitted = fit_uploads(uploads, 1024 * 1024)
    assert len(fitted) == 4
    assert sum(len(upload.data) for upload in fitted) <= 1024 * 1024


def test_a1111_parameters_are_parsed() -> None:
    """Prompt, negative, seed and embedding names come back out of A1111 infotext."""
    info = parse_parameters(PARAMETERS)
    assert info.prompt == "a photo of zorb on a beach, (sunset:1.2)"
    assert info.negative == "easyneg, blurry"
    assert info.seed == "1234"
    assert info.embeddings == ["easyneg", "zorb"]
    assert info.settings["Sampler"] == "DPM++ 2M Karras"
    assert info.settings["Size"] == "512x512"


def test_the_stand_in_engines_parameters_are_parsed() -> None:
    """The stand-in engine's unquoted `Embeddings:` list is read too."""
    text = (
        "a red cube\nNegative prompt: \nSteps: 4, Seed: 9, Size: 64x64, "
        "Model hash: standin0, Embeddings: zorb, easyneg"
    )
    info = parse_parameters(text)
    assert (info.prompt, info.negative, info.seed) == ("a red cube", "", "9")
    assert info.embeddings == ["zorb", "easyneg"]
