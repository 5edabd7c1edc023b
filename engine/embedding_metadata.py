"""Lexicon embedding files as the bot sees them: checked and rewritten without torch.

`check_trained` validates what a GPU worker returns as a trained embedding before the bot stores
it, from the safetensors header alone (8 bytes of length, then JSON naming each tensor's dtype,
shape and byte range): Lexicon's layout, `{"emb_params": float32[n, d]}` — for the two-encoder
(SDXL) families the pair `{"clip_l": float32[n, d_l], "clip_g": float32[n, d_g]}` — with the
expected vector count, the family's width(s), and exactly as many bytes as those shapes need.

A trained embedding records where it came from: the sha256 of each training photo and the seed
(`engine.training`). That belongs to the owner; when someone else exports a shared embedding the
bot (which never imports torch) rewrites only the safetensors header, leaving the tensor bytes
as they are, so the vectors are exactly the owner's.
"""

from __future__ import annotations

import json
import struct
from typing import Any

PRIVATE_METADATA = ("photo_hashes", "seed")
SDXL_WIDTHS = (768, 1280)
SDXL_WIDTH = sum(SDXL_WIDTHS)  # what `EmbeddingFile.width` says for an SDXL pair
# (clip_l, clip_g) widths → family of the two-encoder models: SDXL and the tiny SDXL test model.
FAMILY_BY_PAIR = {SDXL_WIDTHS: "sdxl", (32, 64): "tiny-sdxl"}
PAIR_BY_FAMILY = {family: pair for pair, family in FAMILY_BY_PAIR.items()}

# Text-encoder width → base-model family. SDXL is recognised by its key pair, not one width.
FAMILY_BY_WIDTH = {768: "sd1", 1024: "sd2", SDXL_WIDTH: "sdxl", 32: "tiny"}
# Family → the width `EmbeddingFile.width` has for it (two-encoder families: the halves added).
WIDTH_BY_FAMILY = {family: width for width, family in FAMILY_BY_WIDTH.items()} | {
    family: sum(pair) for family, pair in PAIR_BY_FAMILY.items()
}
# How a family is named in messages (the bot's refusals and the engine's alike).
FAMILY_LABELS = {
    "sd1": "SD 1.x",
    "sd2": "SD 2.x",
    "sdxl": "SDXL",
    "tiny": "the tiny test model",
    "tiny-sdxl": "the tiny SDXL test model",
}
MAX_HEADER_BYTES = 64 * 1024  # Lexicon's header is a few hundred bytes of shape and metadata


class NotLexiconEmbedding(ValueError):
    """Bytes that are not a trained embedding in Lexicon's format; the message says why."""


def check_trained(data: bytes, *, n_vectors: int, family: str) -> int:
    """The width of `data`, a trained embedding of `n_vectors` vectors for a `family` model (an
    SDXL pair's halves added); NotLexiconEmbedding if it is anything else (see the module
    docstring)."""
    if len(data) < 8:
        raise NotLexiconEmbedding("it is shorter than a safetensors header")
    (length,) = struct.unpack("<Q", data[:8])
    if length > min(MAX_HEADER_BYTES, len(data) - 8):
        raise NotLexiconEmbedding(f"its header claims {length} bytes")
    try:
        header = json.loads(data[8 : 8 + length])
    except (ValueError, RecursionError):
        raise NotLexiconEmbedding("its header is not JSON") from None
    if not isinstance(header, dict):
        raise NotLexiconEmbedding("its header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    expected = _expected_widths(family)
    if set(header) != set(expected) or not all(isinstance(t, dict) for t in header.values()):
        wanted = " and ".join(expected)
        raise NotLexiconEmbedding(f"it holds {sorted(header)[:4]}, not the tensors {wanted}")
    end = 0  # the tensors must tile the data section, in the order their offsets give
    for name, tensor in sorted(header.items(), key=lambda item: _start(item[1])):
        shape: Any = tensor.get("shape")
        offsets: Any = tensor.get("data_offsets")
        if tensor.get("dtype") != "F32" or not _ints(shape, 2) or not _ints(offsets, 2):
            raise NotLexiconEmbedding(f"{name} is not a float32 matrix")
        rows, width = shape
        if rows != n_vectors or width != expected[name]:
            raise NotLexiconEmbedding(
                f"{name} is {rows}x{width}, not {n_vectors} vectors of a {family} model"
            )
        size = rows * width * 4
        if offsets != [end, end + size]:
            raise NotLexiconEmbedding("its tensor bytes do not match the shape its header gives")
        end += size
    if len(data) != 8 + length + end:
        raise NotLexiconEmbedding("its tensor bytes do not match the shape its header gives")
    if not isinstance(metadata, dict) or metadata.get("family", family) != family:
        raise NotLexiconEmbedding("its metadata names another model family")
    return sum(width for width in expected.values() if width is not None)


def _expected_widths(family: str) -> dict[str, int | None]:
    """Tensor name → width in a trained file of `family` (None: the family is unknown)."""
    pair = PAIR_BY_FAMILY.get(family)
    if pair is not None:
        return {"clip_l": pair[0], "clip_g": pair[1]}
    return {"emb_params": WIDTH_BY_FAMILY.get(family)}


def _start(tensor: Any) -> int:
    """A header entry's first data offset, for ordering (-1 where it has none)."""
    offsets: Any = tensor.get("data_offsets") if isinstance(tensor, dict) else None
    return int(offsets[0]) if _ints(offsets, 2) else -1


def _ints(value: object, count: int) -> bool:
    return (
        isinstance(value, list)
        and len(value) == count
        and all(type(item) is int and item >= 0 for item in value)
    )


def without_private_metadata(data: bytes) -> bytes:
    """`data` (a safetensors file) with the PRIVATE_METADATA keys dropped from its header."""
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    metadata = header.get("__metadata__") or {}
    if not any(key in metadata for key in PRIVATE_METADATA):
        return data
    header["__metadata__"] = {k: v for k, v in metadata.items() if k not in PRIVATE_METADATA}
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # safetensors pads its header to 8 bytes
    return struct.pack("<Q", len(encoded)) + encoded + data[8 + length :]
