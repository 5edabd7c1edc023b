"""A Lexicon embedding file without its owner's private training metadata — torch-free.

A trained embedding records where it came from: the sha256 of each training photo and the seed
(`engine.training`). That belongs to the owner; when someone else exports a shared embedding the
bot (which never imports torch) rewrites only the safetensors header, leaving the tensor bytes
as they are, so the vectors are exactly the owner's.
"""

from __future__ import annotations

import json
import struct

PRIVATE_METADATA = ("photo_hashes", "seed")


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
