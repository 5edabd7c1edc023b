"""Images on their way to Discord: fitting the upload limit, and reading A1111 parameters.

A result is never dropped for being too large: it is re-encoded as WebP at decreasing quality,
then scaled down, until it fits. The A1111 `parameters` text travels along in the EXIF
UserComment (where A1111 itself puts it for JPEG/WebP), and the original PNG stays in storage.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from dataclasses import dataclass, field

from PIL import Image

from engine.png import read_parameters

_USER_COMMENT = 0x9286
_EXIF_IFD = 0x8769
_QUALITIES = (90, 80, 70, 60, 50, 40)
_MIN_SIDE = 64


@dataclass(frozen=True)
class Upload:
    """One file for a message: its name and bytes."""

    filename: str
    data: bytes


def fit_upload(upload: Upload, limit: int) -> Upload:
    """The upload itself when it fits in `limit` bytes, else a smaller re-encoding of it."""
    if len(upload.data) <= limit:
        return upload
    parameters = _parameters_or_empty(upload.data)
    with Image.open(io.BytesIO(upload.data)) as opened:
        image = opened.convert("RGB")
    stem = upload.filename.rsplit(".", 1)[0]
    scale = 1.0
    while True:
        frame = image
        if scale < 1.0:
            size = (
                max(_MIN_SIDE, int(image.width * scale)),
                max(_MIN_SIDE, int(image.height * scale)),
            )
            frame = image.resize(size, Image.Resampling.LANCZOS)
        for quality in _QUALITIES:
            data = _webp(frame, quality, parameters)
            if len(data) <= limit:
                return Upload(f"{stem}.webp", data)
        if frame.width <= _MIN_SIDE and frame.height <= _MIN_SIDE:
            return Upload(f"{stem}.webp", data)  # as small as it gets
        scale *= 0.7


def fit_uploads(uploads: list[Upload], limit: int) -> list[Upload]:
    """Fit several files into one message: each gets an equal share of the limit."""
    if not uploads:
        return []
    share = max(1, limit // len(uploads))
    return [fit_upload(upload, share) for upload in uploads]


def _webp(image: Image.Image, quality: int, parameters: str) -> bytes:
    buffer = io.BytesIO()
    exif = Image.Exif()
    if parameters:
        exif.get_ifd(_EXIF_IFD)[_USER_COMMENT] = b"UNICODE\0" + parameters.encode("utf-16-be")
    image.save(buffer, format="WEBP", quality=quality, method=4, exif=exif.tobytes())
    return buffer.getvalue()


def _parameters_or_empty(data: bytes) -> str:
    try:
        return read_parameters(data)
    except Exception:
        return ""


@dataclass(frozen=True)
class InfoText:
    """The parts of an A1111 `parameters` text that people look for."""

    prompt: str
    negative: str
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def seed(self) -> str | None:
        return self.settings.get("Seed")

    @property
    def embeddings(self) -> list[str]:
        """Embedding names: A1111's `TI hashes: name: hash, …` (or a plain `Embeddings` list)."""
        if "TI hashes" in self.settings:
            pairs = self.settings["TI hashes"].split(",")
            return [pair.split(":")[0].strip() for pair in pairs if pair.strip()]
        listed = self.settings.get("Embeddings", "")
        return [name.strip() for name in listed.split(",") if name.strip()]


_SETTING = re.compile(r'\s*([\w ]+):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')


def parse_parameters(text: str) -> InfoText:
    """Split A1111 infotext into prompt, negative prompt and the `Key: value` settings line."""
    lines = text.strip().split("\n")
    settings_line = lines[-1] if len(lines) > 1 and "Steps:" in lines[-1] else ""
    body = lines[:-1] if settings_line else lines
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    target = prompt_lines
    for line in body:
        if line.startswith("Negative prompt:"):
            target = negative_lines
            line = line.removeprefix("Negative prompt:").strip()
        target.append(line)
    settings: dict[str, str] = {}
    for match in _SETTING.finditer(settings_line):
        key, value = match.group(1).strip(), match.group(2).strip()
        if value.startswith('"'):
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(value)
        if key:
            settings[key] = value
    listed = re.search(r"(?:^|, )Embeddings: (.*)$", settings_line)
    if listed:  # the stand-in engine lists names unquoted at the end of the line
        settings["Embeddings"] = listed.group(1)
    return InfoText("\n".join(prompt_lines).strip(), "\n".join(negative_lines).strip(), settings)
