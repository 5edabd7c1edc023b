"""What crosses the boundary between the bot process and a GPU worker.

Plain frozen dataclasses of bytes, strings and numbers: no torch here, because the bot imports
this module and the bot never loads torch. A job carries everything the worker needs (prompt,
parameters, the embedding files it names, training photos), so workers keep no user state and a
job can be retried on any worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

SCHEDULERS = ("euler", "euler_a", "ddim", "dpmpp_2m", "dpmpp_2m_karras", "pndm")
DEFAULT_SCHEDULER = "dpmpp_2m_karras"
TrainKind = Literal["object", "style", "face"]


@dataclass(frozen=True)
class EmbeddingPayload:
    """One embedding a request may use: the word as written in prompts, and its file."""

    name: str
    data: bytes  # a safetensors file in Lexicon's format ({"emb_params": float32[n, d]})
    sha256: str
    # sha256 of the file the member imported (A1111's `TI hashes`); "" = that of `data`
    source_sha256: str = ""


@dataclass(frozen=True)
class GenerateRequest:
    """One `/imagine`: `count` images, image i seeded with `seed + i`."""

    prompt: str
    seed: int
    steps: int
    guidance: float
    width: int
    height: int
    negative: str = ""
    embeddings: tuple[EmbeddingPayload, ...] = ()
    scheduler: str = DEFAULT_SCHEDULER
    count: int = 1

    @property
    def batch_key(self) -> tuple[int, int, int, str]:
        """Requests with equal keys can share one UNet batch."""
        return (self.width, self.height, self.steps, self.scheduler)


@dataclass(frozen=True)
class GeneratedImage:
    """One rendered image: PNG bytes with an A1111 `parameters` chunk."""

    index: int
    seed: int
    png: bytes


@dataclass(frozen=True)
class TrainRequest:
    """One `/train`: 3-5 photos become `n_vectors` new vectors named `name`."""

    name: str
    photos: tuple[bytes, ...]
    kind: TrainKind = "object"
    init_word: str | None = None
    n_vectors: int = 1
    steps: int = 250
    seed: int = 0
    negative: bool = False
    extra_metadata: dict[str, str] = field(default_factory=dict)
    # Attachment filenames, same order as `photos`, so an intake error can say "Photo 2 (cat.png)".
    photo_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Progress:
    """A progress report from a running job. `preview_png` is optional and small."""

    step: int
    total: int
    loss: float | None = None
    eta_seconds: float | None = None
    preview_png: bytes | None = None


@dataclass(frozen=True)
class TrainResult:
    """A finished training: the embedding file (Lexicon's format) and preview renders."""

    embedding: bytes
    sha256: str
    n_vectors: int
    width: int
    family: str
    steps: int
    final_loss: float
    previews: tuple[bytes, ...] = ()
