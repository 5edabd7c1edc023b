"""Hostile uploads, built in memory: fake and broken photos, poisoned embedding files."""

from __future__ import annotations

import io
import json
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from safetensors.numpy import save as save_numpy

from tests.engine.photo_files import bilevel_png, encode, flat_png, gradient, jpeg, png


def truncated_jpeg() -> bytes:
    """A real JPEG cut off in the middle of its scan data."""
    data = jpeg(seed=11, size=(320, 256))
    return data[: len(data) // 2]


def bomb_png() -> bytes:
    """20000×20000 (400 MP) in well under a megabyte."""
    return bilevel_png(20_000, 20_000)


def big_png() -> bytes:
    """8000×6000 (48 MP): under Pillow's own bomb limit, over Lexicon's 40 MP."""
    return bilevel_png(8000, 6000)


def animated_gif() -> bytes:
    frames = [gradient(256, 256, seed=s).convert("P") for s in (1, 2)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)


def animated_png() -> bytes:
    frames = [gradient(256, 256, seed=s) for s in (3, 4)]
    return encode(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=100)


def tiny_png() -> bytes:
    return png(seed=12, size=(100, 80))


def cmyk_jpeg_picture() -> bytes:
    """A 320×256 CMYK JPEG: left half pure cyan, right half pure yellow."""
    image = Image.new("CMYK", (320, 256), (255, 0, 0, 0))
    image.paste((0, 0, 255, 0), (160, 0, 320, 256))
    return encode(image, "JPEG", quality=95)


def png16_picture() -> bytes:
    """A 320×256 16-bit greyscale PNG: top half 65535 (white), bottom half 32896 (grey 128)."""
    pixels = np.full((256, 320), 65535, dtype=np.uint16)
    pixels[128:] = 32896
    return encode(Image.fromarray(pixels), "PNG")


def deep_png(colour_type: int, bit_depth: int = 16, palette: bytes = b"") -> bytes:
    """8000×5000 (40 MP, at the pixel limit) of one colour in a few hundred KB: a 16-bit,
    alpha or palette PNG, which Pillow expands to 2–4 bytes a pixel and more while converting."""
    return flat_png(8000, 5000, bit_depth=bit_depth, colour_type=colour_type, palette=palette)


def palette_png() -> bytes:
    """A 40 MP palette PNG with a transparent entry: widened to RGBA to be read."""
    return deep_png(3, bit_depth=8, palette=bytes(range(256)) * 3)


def huge_webp() -> bytes:
    """A lossless WebP of 8000×5000 (40 MP) in a few dozen bytes."""
    return encode(Image.new("RGB", (8000, 5000), (10, 200, 30)), "WEBP", lossless=True, method=0)


def scan_bomb_jpeg(repeats: int = 1000) -> bytes:
    """A 6000×6000 progressive JPEG whose last scan is repeated `repeats` times before EOI:
    each repeat is ~60 bytes but makes the decoder walk all 36 MP of coefficients again."""
    data = encode(Image.new("RGB", (6000, 6000), (120, 130, 140)), "JPEG", progressive=True)
    last_scan = data[data.rfind(b"\xff\xda") : -2]
    return data[:-2] + last_scan * repeats + b"\xff\xd9"


# --- embedding files -----------------------------------------------------------------------


class _WritesAFile:
    """Unpickling this runs `open(path, 'w').write(...)`: what a malicious .pt file does."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (exec, (f"open({str(self.path)!r}, 'w').write('owned')",))


def pickle_that_writes(path: Path) -> bytes:
    """An A1111-shaped .pt (protocol-2 pickle) whose vector is a file-writing payload."""
    payload = {"string_to_param": {"*": _WritesAFile(path)}, "name": "evil"}
    return pickle.dumps(payload, protocol=2)


def torch_zip_that_writes(path: Path) -> bytes:
    """The same payload in torch's zip container (what `torch.save` writes since 1.6)."""
    import torch

    buffer = io.BytesIO()
    torch.save({"emb_params": _WritesAFile(path)}, buffer)
    return buffer.getvalue()


def safetensors_file(array: np.ndarray, key: str = "emb_params") -> bytes:
    return save_numpy({key: array})


def wrong_dtype() -> bytes:
    return safetensors_file(np.zeros((1, 32), dtype=np.int32))


def float64_vectors() -> bytes:
    return safetensors_file(np.zeros((1, 32), dtype=np.float64))


def wrong_shape() -> bytes:
    return safetensors_file(np.zeros((2, 3, 32), dtype=np.float32))


def too_many_vectors() -> bytes:
    return safetensors_file(np.zeros((100, 32), dtype=np.float32))


def nan_vectors() -> bytes:
    values = np.ones((2, 32), dtype=np.float32)
    values[1, 7] = np.nan
    return safetensors_file(values)


def inf_vectors() -> bytes:
    values = np.ones((1, 32), dtype=np.float32)
    values[0, 0] = np.inf
    return safetensors_file(values)


def sd2_width() -> bytes:
    return safetensors_file(np.full((1, 1024), 0.01, dtype=np.float32))


def sd1_width() -> bytes:
    return safetensors_file(np.full((1, 768), 0.01, dtype=np.float32))


def lying_header() -> bytes:
    """A safetensors header whose tensor claims more bytes than the file holds."""
    header = json.dumps(
        {"emb_params": {"dtype": "F32", "shape": [1000, 32], "data_offsets": [0, 128000]}}
    ).encode()
    return struct.pack("<Q", len(header)) + header + b"\0" * 128


def two_tensors() -> bytes:
    return save_numpy(
        {"a": np.zeros((1, 32), dtype=np.float32), "b": np.zeros((1, 32), dtype=np.float32)}
    )


def good_embedding() -> bytes:
    return safetensors_file(np.full((2, 32), 0.05, dtype=np.float32))


# --- zip bombs in torch's .pt container ------------------------------------------------------


class _Storage:
    """A storage `torch.load` will read from the zip entry `archive/data/<key>`."""

    def __init__(self, key: str, floats: int) -> None:
        self.key, self.floats = key, floats


class _Vectors:
    """Unpickles as a `[2, 32]` view at the start of `storage`, as `torch.save` writes it."""

    def __init__(self, storage: _Storage) -> None:
        self.storage = storage

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        import collections

        import torch

        rebuild = torch._utils._rebuild_tensor_v2
        return (rebuild, (self.storage, 0, (2, 32), (32, 1), False, collections.OrderedDict()))


class _TorchPickler(pickle.Pickler):
    def persistent_id(self, obj: object) -> object:
        if isinstance(obj, _Storage):
            import torch

            return ("storage", torch.FloatStorage, obj.key, "cpu", obj.floats)
        return None


def _zeros_deflated(size: int) -> tuple[bytes, int]:
    """`size` zero bytes as raw deflate, and their CRC-32, without holding them in memory."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(1024 * 1024)
    parts, crc, left = [], 0, size
    while left:
        piece = chunk[: min(left, len(chunk))]
        parts.append(compressor.compress(piece))
        crc = zlib.crc32(piece, crc)
        left -= len(piece)
    parts.append(compressor.flush())
    return b"".join(parts), crc


def _zip(entries: list[tuple[str, bytes, int, int, int]], aliases: dict[str, str]) -> bytes:
    """A zip of (name, stored bytes, crc, uncompressed size, method) entries, written by hand
    so that each `aliases` name gets a central-directory entry pointing at another entry's
    local data: the overlapping-entries trick."""
    local, central, offsets = bytearray(), bytearray(), {}
    for name, payload, crc, size, method in entries:
        offsets[name] = (len(local), payload, crc, size, method)
        raw = name.encode()
        local += struct.pack(
            "<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0, crc, len(payload), size, len(raw), 0
        )
        local += raw + payload
    for name, target in [*((n, n) for n, *_ in entries), *aliases.items()]:
        offset, payload, crc, size, method = offsets[target]
        raw = name.encode()
        central += struct.pack(
            "<IHHHHHHIIIHHHHHII",
            0x02014B50,
            20,
            20,
            0,
            method,
            0,
            0,
            crc,
            len(payload),
            size,
            len(raw),
            0,
            0,
            0,
            0,
            0,
            offset,
        )
        central += raw
    count = len(entries) + len(aliases)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, len(central), len(local), 0)
    return bytes(local + central + end)


def zip_bomb_pt(inflated: int, storages: int = 1, overlap: bool = False) -> bytes:
    """An A1111-shaped .pt whose storage entries inflate to `inflated` bytes each, while the
    vectors are a small [2, 32] view: `torch.load` inflates everything, then the file passes.

    With `overlap`, every storage after the first is a central-directory alias of the first
    entry's compressed bytes, so the file stays small however many storages it names.
    """
    keys = [_Storage(str(i), inflated // 4) for i in range(storages)]
    buffer = io.BytesIO()
    payload = {"string_to_param": {"*": _Vectors(keys[0])}, "name": "bomb", "step": 1}
    payload["extra"] = [_Vectors(s) for s in keys[1:]]  # type: ignore[assignment]
    _TorchPickler(buffer, protocol=2).dump(payload)
    pickled = buffer.getvalue()
    zeros, crc = _zeros_deflated(inflated)
    entries = [
        ("archive/data.pkl", pickled, zlib.crc32(pickled), len(pickled), 0),
        ("archive/byteorder", b"little", zlib.crc32(b"little"), 6, 0),
        ("archive/version", b"3", zlib.crc32(b"3"), 1, 0),
    ]
    aliases = {}
    for storage in keys:
        name = f"archive/data/{storage.key}"
        if overlap and storage is not keys[0]:
            aliases[name] = "archive/data/0"
        else:
            entries.append((name, zeros, crc, inflated, 8))
    return _zip(entries, aliases)


def a1111_pt(
    value: float = 0.05, n_vectors: int = 2, width: int = 32, checkpoint: str | None = None
) -> bytes:
    """A plain A1111 `.pt` (what its trainer saves), for imports that should succeed; with
    `checkpoint`, naming the checkpoint it was trained on as A1111 does."""
    import torch

    buffer = io.BytesIO()
    vectors = torch.full((n_vectors, width), value)
    layout: dict[str, object] = {"string_to_token": {"*": 265}, "string_to_param": {"*": vectors}}
    if checkpoint is not None:
        layout |= {"sd_checkpoint": "e1441589", "sd_checkpoint_name": checkpoint}
    torch.save(layout, buffer)
    return buffer.getvalue()
