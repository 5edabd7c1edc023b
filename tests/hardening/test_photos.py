"""Hostile training photos through `/train`: each gets one private sentence and stores nothing."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
import simcord
from PIL import Image

from bot.services import ServiceError, TrainOptions
from engine.photos import load_photos, normalise_photos
from tests.bot.conftest import photo_bytes, three_photos
from tests.e2e.conftest import photo_options
from tests.hardening import hostile_files as hostile
from tests.hardening.conftest import (
    NOTHING,
    record_downloads,
    refused_leaving_nothing,
    standin_settings,
    stored,
)
from tests.simulation import Simulation, simulated

PhotoCase = tuple[str, Callable[[], bytes], str]

# (filename, bytes, the sentence) for a bad photo attached as photo 2 of /train.
BAD_PHOTOS: dict[str, PhotoCase] = {
    "text-named-png": (
        "cat.png",
        lambda: b"This is not a picture, it is a text file named cat.png.\n" * 20,
        "Photo 2 (cat.png) is not an image Lexicon can read; use JPEG, PNG or WebP.",
    ),
    "html-named-jpg": (
        "dog.jpg",
        lambda: b"<!doctype html><script>alert(1)</script>",
        "Photo 2 (dog.jpg) is not an image Lexicon can read; use JPEG, PNG or WebP.",
    ),
    "truncated-jpeg": (
        "cut.jpg",
        hostile.truncated_jpeg,
        "Photo 2 (cut.jpg) is damaged or incomplete; attach the original file again.",
    ),
    "decompression-bomb": (
        "bomb.png",
        hostile.bomb_png,
        "Photo 2 (bomb.png) has too many pixels to be a photo; send a smaller image.",
    ),
    "48-megapixels": (
        "huge.png",
        hostile.big_png,
        "Photo 2 (huge.png) is 8000×6000 pixels, over the 40 megapixel limit; "
        "send a smaller image.",
    ),
    "animated-gif": (
        "dance.gif",
        hostile.animated_gif,
        "Photo 2 (dance.gif) is not an image Lexicon can read; use JPEG, PNG or WebP.",
    ),
    "animated-png": (
        "dance.png",
        hostile.animated_png,
        "Photo 2 (dance.png) is animated; send a still photo.",
    ),
    "empty-file": (
        "empty.png",
        lambda: b"",
        "Photo 2 (empty.png) is empty; attach the photo again.",
    ),
    "too-small": (
        "icon.png",
        hostile.tiny_png,
        "Photo 2 (icon.png) is only 100×80 pixels; send photos at least 256 pixels on the "
        "shorter side.",
    ),
    "same-photo-twice": (
        "again.png",
        lambda: three_photos(0)[0][1],
        "Photo 2 (again.png) is the same picture as photo 1 (photo0.png); "
        "send different photos of the subject.",
    ),
}


@pytest.mark.parametrize("case", BAD_PHOTOS.values(), ids=BAD_PHOTOS.keys())
async def test_a_bad_photo_is_refused_and_nothing_is_stored(
    sim: Simulation, case: PhotoCase
) -> None:
    """A fake, broken, bomb, animated, empty, tiny or duplicate photo: one sentence, no rows."""
    filename, make, sentence = case
    options = photo_options() | {"photo2": (filename, make())}
    assert await refused_leaving_nothing(sim, "train", name="zorb", **options) == sentence


async def test_a_40_mib_attachment_is_refused_before_it_is_downloaded(
    sim: Simulation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 40 MiB photo is refused by its announced size; the CDN is never asked for it."""
    fetched = record_downloads(sim, monkeypatch)
    options = photo_options() | {"photo3": ("raw.png", b"\x89PNG" + b"\0" * (40 * 1024 * 1024))}
    assert await refused_leaving_nothing(sim, "train", name="zorb", **options) == (
        "Photo 3 (raw.png) is 40.0 MiB, over the 10.0 MiB limit; send a smaller file."
    )
    assert fetched == []


async def test_two_photos_never_reach_the_bot_and_the_service_refuses_them(
    sim: Simulation,
) -> None:
    """/train needs photo3 (Discord refuses); two photos through the service get a sentence."""
    alice = sim.member("alice")
    with pytest.raises(simcord.OptionError, match="photo3"):
        await alice.slash(sim.channel, "train", name="zorb", **photo_options(count=2))
    with pytest.raises(ServiceError) as refused:
        await sim.app.train.submit(alice.id, TrainOptions("zorb", three_photos()[:2]))
    assert str(refused.value) == "Training needs 3 to 5 photos; 2 were attached."
    assert await stored(sim.app) == NOTHING


async def test_six_photos_are_refused_by_the_service(sim: Simulation) -> None:
    """The command offers five photo options; a sixth photo sent another way is refused."""
    six = [(f"p{i}.png", photo_bytes(40 + i)) for i in range(6)]
    with pytest.raises(ServiceError) as refused:
        await sim.app.train.submit(7, TrainOptions("zorb", six))
    assert str(refused.value) == "Training needs 3 to 5 photos; 6 were attached."
    assert await stored(sim.app) == NOTHING


async def test_cmyk_and_16_bit_photos_are_accepted_and_read_correctly(sim: Simulation) -> None:
    """CMYK JPEG and 16-bit PNG train a word; what is stored is their right 8-bit RGB, as PNG."""
    cmyk, grey16 = hostile.cmyk_jpeg_picture(), hostile.png16_picture()
    alice = sim.member("alice")
    options = photo_options() | {"photo1": ("cmyk.jpg", cmyk), "photo2": ("deep.png", grey16)}
    result = await alice.slash(sim.channel, "train", name="zorb", **options)
    assert "Queued" in result.response.content
    job = await sim.job_done(alice)
    assert job.state.value == "succeeded"
    (embedding,) = await sim.app.storage.embeddings.list_owned(alice.id)
    assert embedding.name == "zorb" and embedding.usable
    stored_photos = [
        sim.app.storage.files.read("photos", sha)
        for sha in await sim.app.storage.jobs.photos(job.id)
    ]
    # Stored is what the bot decoded, as PNG: the worker never decodes the upload itself.
    uploads = [data for _, data in options.values()]
    assert stored_photos == normalise_photos(uploads)
    assert [Image.open(io.BytesIO(data)).format for data in stored_photos] == ["PNG"] * 3

    first, second, _ = load_photos(stored_photos, ["cmyk.jpg", "deep.png", "p.png"])
    assert first.image.mode == "RGB" and second.image.mode == "RGB"
    cyan = np.asarray(first.image)[128, 40].astype(int)
    yellow = np.asarray(first.image)[128, 280].astype(int)
    assert abs(cyan - [0, 255, 255]).max() <= 8, cyan
    assert abs(yellow - [255, 255, 0]).max() <= 8, yellow
    grey = np.asarray(second.image)
    assert (grey[:128] == 255).all() and (grey[128:] == 128).all()  # scaled, not clipped


async def test_an_oversized_photo_is_refused_by_the_service_without_decoding(
    tmp_path,
) -> None:
    """Bytes over the limit that reach the service another way are refused by size first."""
    settings = standin_settings(tmp_path / "data", max_photo_bytes=256 * 1024)
    async with simulated(settings) as sim:
        photos = [*three_photos()[:2], ("bomb.png", hostile.bomb_png() + b"\0" * (300 * 1024))]
        with pytest.raises(ServiceError) as refused:
            await sim.app.train.submit(3, TrainOptions("zorb", photos))
        assert str(refused.value).startswith("Photo 3 (bomb.png) is ")
        assert str(refused.value).endswith("over the 256 KiB limit; send a smaller file.")
        assert await stored(sim.app) == NOTHING
