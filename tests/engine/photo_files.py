"""Real image files, good and bad, for the photo-intake tests (built in memory, no fixtures)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def gradient(width: int = 320, height: int = 256, seed: int = 0) -> Image.Image:
    """A distinctive RGB picture: smooth gradients plus a seeded coloured block."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack(
        [x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], axis=-1
    ).astype(np.uint8)
    top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
    pixels[top : top + height // 4, left : left + width // 4] = rng.integers(0, 256, 3)
    return Image.fromarray(pixels, mode="RGB")


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png(seed: int = 0, size: tuple[int, int] = (320, 256)) -> bytes:
    return encode(gradient(*size, seed=seed), "PNG")


def jpeg(seed: int = 0, size: tuple[int, int] = (320, 256)) -> bytes:
    return encode(gradient(*size, seed=seed), "JPEG", quality=90)


def _chunk(kind: bytes, payload: bytes) -> bytes:
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))


def bilevel_png(width: int, height: int) -> bytes:
    """A real, decodable all-black 1-bit PNG of any size, compressed without allocating it.

    Megapixels cost a few bytes each after compression, which is what makes a decompression
    bomb: 20000×20000 is 400 MP in well under a megabyte.
    """
    return flat_png(width, height, bit_depth=1, colour_type=0)


def flat_png(
    width: int, height: int, *, bit_depth: int, colour_type: int, palette: bytes = b""
) -> bytes:
    """A real PNG of one flat colour in any PNG pixel format (colour type 0 grey, 2 RGB,
    3 palette, 4 grey+alpha, 6 RGBA), compressed row by row without allocating its pixels.
    `palette` is the PLTE payload (and, for colour type 3, a fully transparent tRNS)."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour_type]
    row = b"\x00" * (1 + (width * channels * bit_depth + 7) // 8)  # filter byte + pixels
    compressor = zlib.compressobj(9)
    block = row * max(1, min(height, (1 << 20) // len(row)))
    rows_per_block = len(block) // len(row)
    parts = []
    remaining = height
    while remaining > 0:
        take = min(rows_per_block, remaining)
        parts.append(compressor.compress(block[: take * len(row)]))
        remaining -= take
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    colours = _chunk(b"PLTE", palette) + _chunk(b"tRNS", b"\x00") if palette else b""
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + colours
        + _chunk(b"IDAT", b"".join(parts))
        + _chunk(b"IEND", b"")
    )


def noise_png(width: int, height: int) -> bytes:
    """An incompressible RGB PNG (stored uncompressed): bytes ≈ 3 × pixels."""
    pixels = np.random.default_rng(7).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels, mode="RGB"), "PNG", compress_level=0)


def exif_rotated_jpeg() -> bytes:
    """A 320×256 JPEG stored sideways with EXIF orientation 6 (display rotated 90° clockwise)."""
    stored = gradient(320, 256, seed=3)
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(stored, "JPEG", quality=95, exif=exif.tobytes())


def rgba_png() -> bytes:
    """A 256×256 RGBA PNG whose left half is fully transparent red."""
    pixels = np.zeros((256, 256, 4), dtype=np.uint8)
    pixels[..., 0] = 255
    pixels[:, 128:, 3] = 255
    return encode(Image.fromarray(pixels, mode="RGBA"), "PNG")


def cmyk_jpeg() -> bytes:
    """A 256×256 CMYK JPEG of pure cyan."""
    return encode(Image.new("CMYK", (256, 256), (255, 0, 0, 0)), "JPEG", quality=95)


def png16() -> bytes:
    """A 256×256 16-bit greyscale PNG: top half 65535 (white), bottom half 32896 (mid-grey)."""
    pixels = np.full((256, 256), 65535, dtype=np.uint16)
    pixels[128:] = 32896
    return encode(Image.fromarray(pixels), "PNG")


def webp() -> bytes:
    return encode(gradient(300, 260, seed=5), "WEBP", lossless=True)


def animated_webp() -> bytes:
    frames = [gradient(256, 256, seed=s) for s in (1, 2)]
    return encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100)


def mpo() -> bytes:
    """A two-image MPO, the JPEG variant many phone cameras write."""
    frames = [gradient(256, 256, seed=s) for s in (8, 9)]
    return encode(frames[0], "MPO", save_all=True, append_images=frames[1:])
