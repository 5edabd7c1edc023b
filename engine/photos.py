"""Training-photo intake and preprocessing.

Intake runs before any GPU work, so a bad upload costs nothing but a sentence. Each rule checks
the cheapest evidence first: the byte count before decoding, the header's dimensions before the
pixels are decompressed (decompression bombs), `verify()` before `load()`. Every refusal is one
`PhotoError` sentence that names the photo by position and filename, because that is how the
user attached it.

Decoding a stranger's file costs memory and CPU time that the header predicts, so both are
bounded before a pixel is decoded (docs/RELIABILITY.md has the measured figures):

- Memory: pixels × the bytes per pixel Pillow holds while decoding and shrinking that kind of
  file (`decode_cost`: 16-bit, alpha and palette expand; WebP holds libwebp's canvas and a copy
  of it besides the image) must stay under `DEFAULT_MAX_DECODE_BYTES`. A WebP's canvas is
  allocated when Pillow opens it, so its size is read from the RIFF header before that.
- CPU: every scan of a progressive JPEG walks all of its coefficients again, so a file that
  repeats one small scan thousands of times decodes for minutes; more than `MAX_JPEG_SCANS`
  scans is refused after counting them in the byte stream.
- Right after decoding, the picture is shrunk to what training can use (`NORMAL_SIDE` on the
  shorter side, at most `MAX_ASPECT`:1); a big JPEG is decoded at 1/2–1/8 scale with `draft()`
  so its full-size pixels never exist. `normalise_photos` re-encodes that result as PNG: the
  bot stores it, so the worker never decodes a stranger's original file.

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
import math
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
# Pillow's bytes held while decoding and shrinking one photo: a 40 MP 8-bit RGB PNG passes
# (160 MiB), a 40 MP RGBA or palette-with-transparency PNG or a 23 MP WebP does not.
DEFAULT_MAX_DECODE_BYTES = 256 * 1024 * 1024
# libjpeg's progressive script writes 10 scans (6 for greyscale); optimisers stay near that.
MAX_JPEG_SCANS = 16
NORMAL_SIDE = 1024  # the shorter side training may use: SDXL's native size, the largest
MAX_ASPECT = 4  # a longer side past 4× the shorter one lies outside every centred crop

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
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES,
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
            max_decode_bytes=max_decode_bytes,
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


def normalise_photos(
    photos: Sequence[bytes],
    filenames: Sequence[str] = (),
    **limits: int,
) -> list[bytes]:
    """`load_photos`, then each accepted photo as the PNG of its shrunk 8-bit RGB pixels: what
    is stored and trained on, so the hostile original is decoded once, here."""
    return [encode_png(photo.image) for photo in load_photos(photos, filenames, **limits)]


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def load_photo(
    data: bytes,
    index: int,
    filename: str = "",
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES,
    min_side: int = DEFAULT_MIN_SIDE,
) -> Photo:
    """Check and decode one photo into 8-bit RGB, shrunk to what training can use (see the
    module docstring for the rules)."""
    label = _label(index, filename)
    if len(data) > max_bytes:
        raise PhotoError(
            f"{label} is {_mib(len(data))}, over the {_mib(max_bytes)} limit; send a smaller file."
        )
    if not data:
        raise PhotoError(f"{label} is empty; attach the photo again.")

    def check_size(size: tuple[int, int], mode: str, fmt: str, progressive: bool = False) -> None:
        width, height = size
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
        cost = decode_cost(size, mode, fmt, progressive=progressive)
        if cost > max_decode_bytes:
            raise PhotoError(
                f"{label} would take {_mib(cost)} of memory to read ({width}×{height} {fmt} "
                f"in {mode} mode), over the {_mib(max_decode_bytes)} limit; send it as a JPEG "
                "or a smaller image."
            )

    canvas = _webp_canvas(data)
    if canvas is not None:  # Pillow allocates this canvas as it opens the file
        check_size(canvas, "RGBA", "WEBP")
    with _opened(data, label) as header:
        check_size(
            header.size, header.mode, header.format or "", bool(header.info.get("progressive"))
        )
        if header.format in ("PNG", "WEBP") and getattr(header, "is_animated", False):
            raise PhotoError(f"{label} is animated; send a still photo.")
        if header.format in ("JPEG", "MPO") and jpeg_scans(data) > MAX_JPEG_SCANS:
            raise PhotoError(
                f"{label} has more than {MAX_JPEG_SCANS} progressive scans, which no camera "
                "writes; save it again as an ordinary JPEG."
            )
        try:
            header.verify()
        except Exception:
            raise PhotoError(f"{label} {_DAMAGED}") from None

    with _opened(data, label) as image:
        if image.format in ("JPEG", "MPO"):
            scale = _draft_scale(image.size)
            image.draft(None, (image.size[0] // scale, image.size[1] // scale))
        try:
            image.load()
        except Exception:
            raise PhotoError(f"{label} {_DAMAGED}") from None
        shrunk = _shrink(image)
        try:
            upright = ImageOps.exif_transpose(shrunk)
        except Exception:  # unreadable EXIF: the pixels are fine, keep them as stored
            upright = shrunk
        rgb = to_rgb(upright)
    return Photo(index=index, sha256=hashlib.sha256(data).hexdigest(), image=rgb, filename=filename)


def decode_cost(size: tuple[int, int], mode: str, fmt: str, *, progressive: bool = False) -> int:
    """Bytes Pillow holds at once to decode a photo and shrink it, from its header alone.

    Per pixel: the decoded frame (1, 2 or 4 bytes: Pillow keeps RGB in 4), the copy that
    widening makes (palette, 1-bit and 16-bit cannot be resampled) or premultiplying alpha
    makes, and half the widest form for the resampling passes. A JPEG decodes at its draft
    scale, but a progressive one keeps every full-size coefficient (2 bytes per band) between
    scans. A WebP holds libwebp's canvas and the frame bytes Pillow copies out of it, and
    may have alpha. Measured peaks stay within this plus ~20 MiB (docs/RELIABILITY.md).
    """
    pixels = size[0] * size[1]
    if fmt == "WEBP":
        return pixels * (4 + 4 + 4 + 4 + 2)
    if fmt in ("JPEG", "MPO"):
        scale = _draft_scale(size)
        coefficients = pixels * 2 * Image.getmodebands(mode) if progressive else 0
        return coefficients + math.ceil(size[0] / scale) * math.ceil(size[1] / scale) * (4 + 2)
    per_pixel = {"1": 1 + 1 + 1, "L": 1 + 1, "P": 1 + 4 + 4 + 2}.get(mode)
    if per_pixel is None:
        if mode.startswith("I;16"):
            per_pixel = 2 + 4 + 2
        elif mode in ("LA", "PA", "RGBA"):
            per_pixel = 4 + 4 + 2
        else:
            per_pixel = 4 + 2
    return pixels * per_pixel


def jpeg_scans(data: bytes) -> int:
    """How many scans (SOS segments) the first image of a JPEG has, counted up to one past
    `MAX_JPEG_SCANS`, by walking its segments and skipping each scan's entropy-coded data."""
    scans, at, end = 0, 2, len(data)
    while at + 4 <= end and data[at] == 0xFF and scans <= MAX_JPEG_SCANS:
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte before a marker
            at += 1
            continue
        if marker == 0xD9:  # end of image: an MPO's next images are not decoded
            break
        at += 2 + int.from_bytes(data[at + 2 : at + 4], "big")
        if marker != 0xDA:
            continue
        scans += 1
        while True:  # entropy-coded data ends at the first 0xFF that is not 0xFF00 or RSTn
            at = data.find(b"\xff", at)
            if at < 0 or at + 1 >= end:
                return scans
            follower = data[at + 1]
            if follower == 0x00 or 0xD0 <= follower <= 0xD7:
                at += 2
            elif follower == 0xFF:
                at += 1
            else:
                break
    return scans


def _webp_canvas(data: bytes) -> tuple[int, int] | None:
    """A WebP's canvas size from its RIFF header (lossy, lossless or extended), or None."""
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP" or len(data) < 30:
        return None
    chunk = data[12:16]
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        return (
            int.from_bytes(data[26:28], "little") & 0x3FFF,
            int.from_bytes(data[28:30], "little") & 0x3FFF,
        )
    if chunk == b"VP8X":
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    if chunk == b"VP8L" and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _draft_scale(size: tuple[int, int]) -> int:
    """The 1/1, 1/2, 1/4 or 1/8 scale a JPEG decodes at: the smallest that keeps its shorter
    side at least `NORMAL_SIDE` (what `draft()` picks when asked for `size // scale`)."""
    return next(scale for scale in (8, 4, 2, 1) if min(size) // scale >= NORMAL_SIDE or scale == 1)


def _shrink(image: Image.Image) -> Image.Image:
    """`image` scaled (never up) to `NORMAL_SIDE` on its shorter side, its longer side cut
    (centred) to `MAX_ASPECT` times that; unchanged when it already fits."""
    width, height = image.size
    short = min(width, height)
    keep_w, keep_h = min(width, short * MAX_ASPECT), min(height, short * MAX_ASPECT)
    scale = min(1.0, NORMAL_SIDE / short)
    if scale == 1.0 and (keep_w, keep_h) == (width, height):
        return image
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode == "1":
        image = image.convert("L")
    elif image.mode.startswith("I;16"):
        image = image.convert("I")
    left, top = (width - keep_w) // 2, (height - keep_h) // 2
    target = (max(1, round(keep_w * scale)), max(1, round(keep_h * scale)))
    box = (left, top, left + keep_w, top + keep_h)
    return image.resize(target, Image.Resampling.LANCZOS, box=box, reducing_gap=2.0)


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
