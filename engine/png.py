"""PNG bytes with an A1111-style `parameters` text chunk, and its reader.

Existing SD tools (A1111's PNG Info, Civitai, ComfyUI importers) read generation settings from a
`parameters` chunk in A1111's layout: the prompt, an optional `Negative prompt:` line, then one line
of `Key: value` pairs. Values containing `,`, `:` or a newline are JSON-quoted, as A1111 does.
Pure Pillow/NumPy, no torch: the bot reads these back for Reroll.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata

import numpy as np
from PIL import Image, PngImagePlugin


def _version() -> str:
    try:
        return f"lexicon {metadata.version('lexicon-bot')}"
    except metadata.PackageNotFoundError:
        return "lexicon"


@dataclass(frozen=True)
class ImageParameters:
    """What made an image, in the terms A1111's infotext uses."""

    prompt: str
    negative: str
    steps: int
    sampler: str  # A1111 label, e.g. "DPM++ 2M Karras"
    cfg_scale: float
    seed: int
    width: int
    height: int
    model_hash: str = ""
    ti_hashes: Mapping[str, str] = field(default_factory=dict)  # name → short sha256
    version: str = field(default_factory=_version)


def _quote(value: str) -> str:
    if "," not in value and "\n" not in value and ":" not in value:
        return value
    return json.dumps(value, ensure_ascii=False)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else str(value)


def format_parameters(p: ImageParameters) -> str:
    """A1111's infotext: prompt, `Negative prompt: …`, then the settings line."""
    settings: list[tuple[str, str]] = [
        ("Steps", str(p.steps)),
        ("Sampler", p.sampler),
        ("CFG scale", _number(p.cfg_scale)),
        ("Seed", str(p.seed)),
        ("Size", f"{p.width}x{p.height}"),
    ]
    if p.model_hash:
        settings.append(("Model hash", p.model_hash))
    if p.ti_hashes:
        hashes = ", ".join(
            f"{name.replace(':', '').replace(',', '')}: {short}"
            for name, short in sorted(p.ti_hashes.items())
        )
        settings.append(("TI hashes", hashes))
    settings.append(("Version", p.version))
    lines = [p.prompt]
    if p.negative:
        lines.append(f"Negative prompt: {p.negative}")
    lines.append(", ".join(f"{key}: {_quote(value)}" for key, value in settings))
    return "\n".join(lines)


def encode_png(pixels: np.ndarray, parameters: str) -> bytes:
    """uint8 `[h, w, 3]` pixels → PNG bytes with `parameters` (tEXt, or iTXt if not Latin-1)."""
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", parameters)
    buffer = io.BytesIO()
    # zlib level 1: a 512x512 image encodes ~2x faster than at the default 6 and is only
    # ~0.1 % larger (generated images have little redundancy for zlib to find anyway).
    Image.fromarray(np.ascontiguousarray(pixels), mode="RGB").save(
        buffer, format="PNG", pnginfo=info, compress_level=1
    )
    return buffer.getvalue()


def read_parameters(png: bytes) -> str:
    """The `parameters` text of a PNG, or "" when it has none."""
    with Image.open(io.BytesIO(png)) as image:
        image.load()
        text = getattr(image, "text", {}) or {}
        return str(text.get("parameters", image.info.get("parameters", "")))
