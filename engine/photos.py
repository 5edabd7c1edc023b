"""Training-photo intake and preprocessing.

Intake runs before any GPU work, so a bad upload costs nothing but a sentence. Each rule checks
the cheapest evidence first: the byte count before decoding, the header's dimensions before the
pixels are decompressed (decompression bombs), `verify()` before `load()`. Every refusal is one
`PhotoError` sentence that names the photo by position and filename, because that is how the
user attached it.

Decisions:

- Formats are JPEG, PNG and WebP, decided by what Pillow decodes (`Image.open(formats=…)`), never
  by extension or content type. A JPEG with an MPO extension (what many phones write) is a JPEG:
  its primary image is used.
- Animated PNG/WebP are refused rather than silently trained on their first frame: the user sent
  something that moves and would not know which frame taught the word.
- EXIF orientation is applied; transparency is flattened on white (a cut-out on black teaches the
  model "dark background"); CMYK, palette, 16-bit and greyscale become 8-bit RGB.
- Duplicates are refused twice over: the same bytes (sha256) and the same decoded pixels (a PNG
  saved twice with different compression). Two JPEG encodings of one photo are not caught; they
  are harmless, merely a wasted slot.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MIN_PHOTOS = 3
MAX_PHOTOS = 5
DEFAULT_MAX_BYTES = 10 * 1024 * 1024  # Discord's default upload limit
DEFAULT_MAX_PIXELS = 40_000_000  # 40 MP: any phone photo passes, a bomb does not
DEFAULT_MIN_SIDE = 256

_FORMATS = ("JPEG", "PNG", "WEBP")
_UNREADABLE = "is not an image Lexicon can read; use JPEG, PNG or WebP."
_DAMAGED = "is damaged or incomplete; attach the original file again."
_WHITE = (255, 255, 255)


class PhotoError(ValueError):
    """A training photo (or the set of them) is unusable; the message is one sentence."""


@dataclass(frozen=True)
class Photo:
    """One accepted photo: 1-based position in the request, sha256 of its bytes, RGB pixels."""

    index: int
    sha256: str
    image: Image.Image
    filename: str = ""

    @property
    def label(self) -> str:
        return _label(self.index, self.filename)


def load_photos(
    photos: Sequence[bytes],
    filenames: Sequence[str] = (),
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = DEFAULT_MIN_SIDE,
    min_count: int = MIN_PHOTOS,
    max_count: int = MAX_PHOTOS,
) -> list[Photo]:
    """Check and decode a training request's photos, in order; raise `PhotoError` on the first
    problem. `filenames` (optional, same order) only make the messages friendlier."""
    if not min_count <= len(photos) <= max_count:
        raise PhotoError(
            f"Training needs {min_count} to {max_count} photos; {len(photos)} "
            f"{'was' if len(photos) == 1 else 'were'} attached."
        )
    names = [*filenames, *[""] * len(photos)][: len(photos)]
    accepted: list[Photo] = []
    seen_bytes: dict[str, Photo] = {}
    seen_pixels: dict[str, Photo] = {}
    for position, (data, name) in enumerate(zip(photos, names, strict=True), start=1):
        photo = load_photo(
            data,
            position,
            name,
            max_bytes=max_bytes,
            max_pixels=max_pixels,
            min_side=min_side,
        )
        earlier = seen_bytes.get(photo.sha256)
        if earlier is None:
            pixel_key = pixel_digest(photo.image)
            earlier = seen_pixels.get(pixel_key)
            seen_pixels.setdefault(pixel_key, photo)
        if earlier is not None:
            raise PhotoError(
                f"{photo.label} is the same picture as {earlier.label.lower()}; "
                "send different photos of the subject."
            )
        seen_bytes[photo.sha256] = photo
        accepted.append(photo)
    return accepted


def load_photo(
    data: bytes,
    index: int,
    filename: str = "",
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = DEFAULT_MIN_SIDE,
) -> Photo:
    """Check and decode one photo into 8-bit RGB (see the module docstring for the rules)."""
    label = _label(index, filename)
    if len(data) > max_bytes:
        raise PhotoError(
            f"{label} is {_mib(len(data))}, over the {_mib(max_bytes)} limit; send a smaller file."
        )
    if not data:
        raise PhotoError(f"{label} is empty; attach the photo again.")

    with _opened(data, label) as header:
        width, height = header.size
        if width * height > max_pixels:
            raise PhotoError(
                f"{label} is {width}×{height} pixels, over the {max_pixels / 1e6:g} megapixel "
                "limit; send a smaller image."
            )
        if min(width, height) < min_side:
            raise PhotoError(
                f"{label} is only {width}×{height} pixels; send photos at least "
                f"{min_side} pixels on the shorter side."
            )
        if header.format in ("PNG", "WEBP") and getattr(header, "is_animated", False):
            raise PhotoError(f"{label} is animated; send a still photo.")
        try:
            header.verify()
        except Exception:
            raise PhotoError(f"{label} {_DAMAGED}") from None

    with _opened(data, label) as image:
        try:
            image.load()
        except Exception:
            raise PhotoError(f"{label} {_DAMAGED}") from None
        try:
            upright = ImageOps.exif_transpose(image)
        except Exception:  # unreadable EXIF: the pixels are fine, keep them as stored
            upright = image
        rgb = to_rgb(upright)
    return Photo(index=index, sha256=hashlib.sha256(data).hexdigest(), image=rgb, filename=filename)


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB: alpha flattened on white, 16-bit scaled (not clipped), CMYK/palette converted."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit greyscale PNG. Pillow's own convert() clips at 255 instead of scaling.
        array = np.asarray(image, dtype=np.int64).clip(0, 65535)
        image = Image.fromarray(((array + 128) // 257).astype(np.uint8), mode="L")
    elif image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(array.clip(0, 255).round().astype(np.uint8), mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode != "RGB":
        return image.convert("RGB")
    return image.copy()


def pixel_digest(image: Image.Image) -> str:
    """A hash of decoded pixels and size, so re-encoded copies of one picture are caught."""
    digest = hashlib.sha256(f"{image.mode}:{image.size}".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def square_crop(image: Image.Image, size: int) -> Image.Image:
    """The centred square of `image`, resized to `size`×`size` with LANCZOS."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    box = (left, top, left + side, top + side)
    return image.resize((size, size), Image.Resampling.LANCZOS, box=box)


def photo_views(photos: Sequence[Photo], size: int, *, flip: bool = True) -> np.ndarray:
    """Training views as float32 `[views, 3, size, size]` in [-1, 1].

    Each photo gives its centred square and, with `flip`, its mirror image, in that order
    (photo 1, photo 1 mirrored, photo 2, …). Mirroring is the only augmentation: it doubles the
    views of 3–5 photos for free, and a subject's identity survives it (text in a photo does not,
    which is why it can be turned off).
    """
    views: list[np.ndarray] = []
    for photo in photos:
        square = np.asarray(square_crop(photo.image, size), dtype=np.float32)
        views.append(square)
        if flip:
            views.append(square[:, ::-1])
    stacked = np.stack(views).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(stacked / 127.5 - 1.0, dtype=np.float32)


class _opened:
    """`Image.open` restricted to our formats, with decoding failures turned into sentences."""

    def __init__(self, data: bytes, label: str) -> None:
        self._data = data
        self._label = label
        self._image: Image.Image | None = None

    def __enter__(self) -> Image.Image:
        with warnings.catch_warnings():
            # Above Pillow's own limit (89 MP) it warns; above twice that it raises. We check
            # the size ourselves right after opening, so both become our one sentence.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                self._image = Image.open(io.BytesIO(self._data), formats=_FORMATS)
            except (Image.DecompressionBombError, Image.DecompressionBombWarning):
                raise PhotoError(
                    f"{self._label} has too many pixels to be a photo; send a smaller image."
                ) from None
            except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
                raise PhotoError(f"{self._label} {_UNREADABLE}") from None
        return self._image

    def __exit__(self, *exc: object) -> None:
        if self._image is not None:
            self._image.close()


def _label(index: int, filename: str) -> str:
    return f"Photo {index} ({filename})" if filename else f"Photo {index}"


def _mib(size: int) -> str:
    if size < 1024 * 1024:
        return f"{size / 1024:.0f} KiB" if size >= 1024 else f"{size} bytes"
    return f"{size / (1024 * 1024):.1f} MiB"
