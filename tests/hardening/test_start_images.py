"""Hostile starting images through `/imagine image:`: the same intake as training photos, so
each gets one private sentence and nothing (no job, no file) is stored."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.hardening import hostile_files as hostile
from tests.hardening.conftest import record_downloads, refused_leaving_nothing
from tests.simulation import Simulation

# (filename, bytes, the start of the sentence after "Photo 1 (filename) ")
BAD_IMAGES: dict[str, tuple[str, Callable[[], bytes], str]] = {
    "text-named-png": ("cat.png", lambda: b"not a picture\n" * 20, "is not an image Lexicon"),
    "html-named-jpg": ("dog.jpg", lambda: b"<!doctype html><script>", "is not an image Lexicon"),
    "truncated-jpeg": ("cut.jpg", hostile.truncated_jpeg, "is damaged or incomplete"),
    "decompression-bomb": ("bomb.png", hostile.bomb_png, "has too many pixels"),
    "48-megapixels": ("huge.png", hostile.big_png, "is 8000×6000 pixels, over the 40"),
    "animated-gif": ("dance.gif", hostile.animated_gif, "is not an image Lexicon"),
    "animated-png": ("dance.png", hostile.animated_png, "is animated; send a still photo."),
    "empty-file": ("empty.png", lambda: b"", "is empty"),
    "16-bit-rgba-png": ("deep.png", lambda: hostile.deep_png(6), "would take 381.5 MiB of memory"),
    "16-bit-grey-png": ("grey.png", lambda: hostile.deep_png(0), "would take 305.2 MiB of memory"),
    "8-bit-rgba-png": (
        "alpha.png",
        lambda: hostile.deep_png(6, bit_depth=8),
        "would take 381.5 MiB of memory",
    ),
    "palette-png": ("pal.png", hostile.palette_png, "would take 419.6 MiB of memory"),
    "40-mp-webp": ("big.webp", hostile.huge_webp, "would take 686.6 MiB of memory"),
    "scan-bomb-jpeg": ("scans.jpg", hostile.scan_bomb_jpeg, "has more than 16 progressive"),
}


@pytest.mark.parametrize("case", BAD_IMAGES.values(), ids=BAD_IMAGES.keys())
async def test_a_hostile_starting_image_is_refused_and_nothing_is_stored(
    sim: Simulation, case: tuple[str, Callable[[], bytes], str]
) -> None:
    """Fake, broken, bomb, animated, empty or too costly to decode: one sentence, no rows."""
    filename, make, start = case
    sentence = await refused_leaving_nothing(
        sim, "imagine", prompt="a red cube", image=(filename, make()), strength=0.5
    )
    assert sentence.startswith(f"Photo 1 ({filename}) {start}"), sentence
    assert sentence.count(".") >= 1 and "\n" not in sentence


async def test_an_oversized_starting_image_is_refused_before_it_is_downloaded(
    sim: Simulation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 40 MiB image is refused by its announced size; the CDN is never asked for it."""
    fetched = record_downloads(sim, monkeypatch)
    big = ("raw.png", b"\x89PNG" + b"\0" * (40 * 1024 * 1024))
    assert await refused_leaving_nothing(sim, "imagine", prompt="a red cube", image=big) == (
        "Photo 1 (raw.png) is 40.0 MiB, over the 10.0 MiB limit; send a smaller file."
    )
    assert fetched == []
