"""Photo intake and preprocessing: every rule against a real file, good and bad."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from engine.photos import PhotoError, load_photo, load_photos, photo_views, square_crop
from tests.engine import photo_files as files


def test_text_file_named_png_is_refused_by_name() -> None:
    """A text file with a .png name is refused with a sentence naming the photo."""
    with pytest.raises(PhotoError) as error:
        load_photos([files.png(1), b"definitely not a picture\n", files.png(2)], ["a", "cat.png"])
    assert str(error.value) == (
        "Photo 2 (cat.png) is not an image Lexicon can read; use JPEG, PNG or WebP."
    )


def test_gif_is_refused_even_though_pillow_reads_it() -> None:
    """Only JPEG, PNG and WebP are accepted, decided by decoding, not by the name."""
    gif = files.encode(files.gradient(300, 300), "GIF")
    with pytest.raises(PhotoError, match=r"Photo 1 \(photo\.jpg\) is not an image"):
        load_photo(gif, 1, "photo.jpg")


@pytest.mark.parametrize("count", [2, 6])
def test_photo_count_outside_three_to_five_is_refused(count: int) -> None:
    """Two and six photos are both refused before any is decoded."""
    photos = [files.png(seed=s) for s in range(count)]
    with pytest.raises(PhotoError, match=f"3 to 5 photos; {count} were attached"):
        load_photos(photos)


def test_three_and_five_photos_are_accepted_in_order() -> None:
    """Three and five distinct photos pass, keep their order and 1-based positions."""
    for count in (3, 5):
        photos = load_photos([files.jpeg(seed=s) for s in range(count)])
        assert [p.index for p in photos] == list(range(1, count + 1))
        assert all(p.image.mode == "RGB" and p.image.size == (320, 256) for p in photos)


def test_decompression_bomb_png_is_refused_before_decoding() -> None:
    """A 20000×20000 PNG of a few hundred KB is refused without allocating its pixels."""
    bomb = files.bilevel_png(20_000, 20_000)
    assert len(bomb) < 1_000_000
    with pytest.raises(PhotoError, match=r"Photo 3 \(bomb\.png\) has too many pixels"):
        load_photo(bomb, 3, "bomb.png")


def test_photo_over_pixel_limit_is_refused_with_its_size() -> None:
    """An 8000×8000 PNG (64 MP) is over the 40 MP default; the limit is a parameter."""
    big = files.bilevel_png(8000, 8000)
    with pytest.raises(PhotoError, match=r"8000×8000 pixels, over the 40 megapixel limit"):
        load_photo(big, 1, "big.png")
    assert load_photo(big, 1, "big.png", max_pixels=70_000_000).image.size == (1024, 1024)


def test_small_photo_is_refused() -> None:
    """A 64×64 photo is below the 256-pixel shortest side."""
    with pytest.raises(PhotoError, match=r"Photo 1 \(tiny\.png\) is only 64×64 pixels"):
        load_photo(files.png(size=(64, 64)), 1, "tiny.png")


def test_same_bytes_twice_is_refused() -> None:
    """The same file attached twice is refused, naming both photos."""
    photo = files.jpeg(seed=4)
    with pytest.raises(PhotoError) as error:
        load_photos([photo, files.jpeg(seed=5), photo], ["a.jpg", "b.jpg", "c.jpg"])
    assert str(error.value).startswith("Photo 3 (c.jpg) is the same picture as photo 1 (a.jpg)")


def test_same_pixels_in_different_files_is_refused() -> None:
    """A PNG re-saved with other compression (different bytes, same pixels) is a duplicate."""
    image = files.gradient(seed=6)
    fast, small = files.encode(image, "PNG", compress_level=1), files.encode(image, "PNG")
    assert fast != small
    with pytest.raises(PhotoError, match="Photo 2 is the same picture as photo 1"):
        load_photos([fast, small, files.png(seed=7)])


def test_truncated_jpeg_is_refused() -> None:
    """A JPEG cut short (an interrupted upload) is refused as damaged."""
    cut = files.jpeg(seed=8)[:-400]
    with pytest.raises(PhotoError, match=r"Photo 2 \(cut\.jpg\) is damaged or incomplete"):
        load_photo(cut, 2, "cut.jpg")


def test_oversized_file_is_refused_before_decoding() -> None:
    """A real 10.3 MiB PNG is over the 10 MiB default; the check needs no decoding."""
    heavy = files.noise_png(1900, 1900)
    assert len(heavy) > 10 * 1024 * 1024
    with pytest.raises(PhotoError, match=r"is 10\.3 MiB, over the 10\.0 MiB limit"):
        load_photo(heavy, 1, "heavy.png")
    with pytest.raises(PhotoError, match="is 104 bytes, over the 50 bytes limit"):
        load_photo(b"\x89PNG" + b"\0" * 100, 1, max_bytes=50)


def test_exif_rotated_jpeg_is_turned_upright() -> None:
    """Orientation 6 is applied: a stored 320×256 photo becomes 256×320, rotated clockwise."""
    photo = load_photo(files.exif_rotated_jpeg(), 1)
    assert photo.image.size == (256, 320)
    stored = np.asarray(files.gradient(320, 256, seed=3), dtype=np.int16)
    upright = np.asarray(photo.image, dtype=np.int16)
    expected = np.rot90(stored, k=-1)  # clockwise
    assert np.abs(upright - expected).mean() < 3


@pytest.mark.parametrize(
    ("photo", "pixels"),
    [
        # Transparent pixels become white, opaque ones keep their colour.
        (files.rgba_png, {(10, 10): (255, 255, 255), (200, 10): (255, 0, 0)}),
        # 16-bit grey 65535 → 255 and 32896 → 128 (Pillow's convert would clip both to 255).
        (files.png16, {(5, 5): (255, 255, 255), (5, 200): (128, 128, 128)}),
    ],
    ids=["rgba-flattened-on-white", "16-bit-scaled-not-clipped"],
)
def test_png_modes_become_8_bit_rgb(
    photo: Callable[[], bytes], pixels: dict[tuple[int, int], tuple[int, int, int]]
) -> None:
    """RGBA is flattened on white and 16-bit grey is scaled to 8 bits, into plain RGB."""
    image = load_photo(photo(), 1).image
    assert image.mode == "RGB"
    assert {xy: image.getpixel(xy) for xy in pixels} == pixels


def test_cmyk_jpeg_is_converted_to_rgb() -> None:
    """A CMYK JPEG of pure cyan decodes to RGB cyan."""
    image = load_photo(files.cmyk_jpeg(), 1).image
    assert image.mode == "RGB"
    red, green, blue = image.getpixel((128, 128))  # type: ignore[misc]
    assert red < 10 and green > 245 and blue > 245


def test_webp_is_accepted() -> None:
    """A lossless WebP decodes to the exact pixels that were encoded."""
    image = load_photo(files.webp(), 1).image
    assert np.array_equal(np.asarray(image), np.asarray(files.gradient(300, 260, seed=5)))


def test_animated_webp_is_refused() -> None:
    """Animated images are refused (documented choice), not trained on one frame."""
    with pytest.raises(PhotoError, match=r"Photo 1 \(moving\.webp\) is animated"):
        load_photo(files.animated_webp(), 1, "moving.webp")


def test_phone_mpo_jpeg_is_accepted_as_its_primary_image() -> None:
    """A multi-picture JPEG (MPO, as phones write) is a JPEG; its first image is used."""
    image = load_photo(files.mpo(), 1).image
    expected = np.asarray(files.gradient(256, 256, seed=8), dtype=np.int16)
    assert np.abs(np.asarray(image, dtype=np.int16) - expected).mean() < 3


def test_photo_views_are_centre_crops_and_mirrors_in_range() -> None:
    """Each photo gives its centred square and its mirror image, as float32 in [-1, 1]."""
    photos = load_photos([files.png(seed=s, size=(400, 300)) for s in range(3)])
    views = photo_views(photos, 64)
    assert views.shape == (6, 3, 64, 64) and views.dtype == np.float32
    assert views.min() >= -1.0 and views.max() <= 1.0
    assert np.array_equal(views[1], views[0][:, :, ::-1])
    square = np.asarray(square_crop(photos[2].image, 64), dtype=np.float32) / 127.5 - 1
    assert np.allclose(views[4], square.transpose(2, 0, 1))
    assert photo_views(photos, 32, flip=False).shape == (3, 3, 32, 32)
