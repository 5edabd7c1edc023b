"""What crosses the boundary between the bot process and a GPU worker.

Plain frozen dataclasses of bytes, strings and numbers: no torch here, because the bot imports
this module and the bot never loads torch. A job carries everything the worker needs (prompt,
parameters, the embedding files it names, training photos), so workers keep no user state and a
job can be retried on any worker.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, cast

SAMPLERS = ("euler", "euler_a", "ddim", "dpmpp_2m", "dpmpp_2m_karras", "pndm")
DEFAULT_SAMPLER = "dpmpp_2m_karras"
TrainKind = Literal["object", "style", "face"]
TRAIN_KINDS: tuple[TrainKind, ...] = ("object", "style", "face")

# --- limits: the one place they are defined -------------------------------------------------
# The service refuses a request over any of these before it is stored, and the worker checks the
# same request against the same numbers before it touches the device. The operator narrows some
# of them further (`LEXICON_MAX_STEPS`, `LEXICON_ALLOWED_SIZES`).

MAX_PROMPT_CHARS = 1500  # per prompt; Discord's option limit is 6000
MAX_SEED = 2**32 - 1  # what A1111 and Civitai show; image i of a request uses seed + i
MAX_COUNT = 4  # images per request (one Discord message shows four comfortably)
MAX_STEPS = 150  # the engine's ceiling; LEXICON_MAX_STEPS is the operator's
MAX_GUIDANCE = 30.0
MIN_SIDE, MAX_SIDE = 64, 2048
MAX_VECTORS = 8
MAX_TRAIN_STEPS = 20_000
_INIT_WORD = re.compile(r"[A-Za-z][A-Za-z ]{0,31}")


class RequestError(ValueError):
    """A request outside the limits; the message is one sentence for the member."""


def check_sampler(name: str) -> str:
    """Return `name` if it is offered, else raise one sentence listing the valid names."""
    if name not in SAMPLERS:
        raise RequestError(
            f"Unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)} "
            f"(default {DEFAULT_SAMPLER})."
        )
    return name


def _check_text(label: str, text: str) -> None:
    if len(text) > MAX_PROMPT_CHARS:
        raise RequestError(
            f"The {label} is {len(text)} characters long; the most is {MAX_PROMPT_CHARS}."
        )
    if any(ord(c) < 32 and c not in "\n\t" for c in text):
        raise RequestError(f"The {label} contains control characters; remove them.")


@dataclass(frozen=True)
class EmbeddingPayload:
    """One embedding a request uses: the word as written in prompts, its file's hash and id.

    The bot resolves names to (name, sha256, id) and stores that; the scheduler attaches the
    file's bytes (`data`) just before it hands the job to a worker, so what is stored stays small
    and a file deleted meanwhile is noticed at dispatch.
    """

    name: str
    data: bytes  # a safetensors file in Lexicon's format ({"emb_params": float32[n, d]})
    sha256: str
    id: int | None = None  # the embedding's row, when it is a stored one


@dataclass(frozen=True)
class GenerateRequest:
    """One `/imagine`, validated: `count` images, image i seeded with `seed + i`.

    The one object that travels from the service to the worker: stored with the job
    (`to_params`), read back by the scheduler (`from_params`), checked again by the worker.
    """

    prompt: str
    seed: int
    steps: int
    guidance: float
    width: int
    height: int
    negative: str = ""
    embeddings: tuple[EmbeddingPayload, ...] = ()
    sampler: str = DEFAULT_SAMPLER
    count: int = 1

    @property
    def batch_key(self) -> str:
        """Requests with equal keys can share one UNet batch."""
        return f"{self.width}x{self.height}:{self.steps}:{self.sampler}"

    def check(self, *, max_steps: int = MAX_STEPS) -> None:
        """Refuse, in one sentence, anything outside the limits above."""
        if not self.prompt.strip():
            raise RequestError("The prompt is empty; describe the image you want.")
        _check_text("prompt", self.prompt)
        _check_text("negative prompt", self.negative)
        if not 1 <= self.count <= MAX_COUNT:
            raise RequestError(
                f"count must be between 1 and {MAX_COUNT}; you asked for {self.count}."
            )
        if not 1 <= self.steps <= min(max_steps, MAX_STEPS):
            raise RequestError(
                f"steps must be between 1 and {min(max_steps, MAX_STEPS)}; got {self.steps}."
            )
        if not (math.isfinite(self.guidance) and 0.0 <= self.guidance <= MAX_GUIDANCE):
            raise RequestError(
                f"guidance must be between 0 and {MAX_GUIDANCE:g}; got {self.guidance:g}."
            )
        if not 0 <= self.seed <= MAX_SEED:
            raise RequestError(f"seed must be between 0 and {MAX_SEED}; got {self.seed}.")
        for side, value in (("width", self.width), ("height", self.height)):
            if value % 8 or not MIN_SIDE <= value <= MAX_SIDE:
                raise RequestError(
                    f"The {side} {value} must be a multiple of 8 from {MIN_SIDE} to {MAX_SIDE}."
                )
        check_sampler(self.sampler)

    def to_params(self) -> dict[str, Any]:
        """The job row's JSON: everything but the embedding files' bytes."""
        return {
            "prompt": self.prompt,
            "negative": self.negative,
            "count": self.count,
            "steps": self.steps,
            "guidance": self.guidance,
            "seed": self.seed,
            "width": self.width,
            "height": self.height,
            "sampler": self.sampler,
            "embeddings": [
                {"id": e.id, "name": e.name, "sha256": e.sha256} for e in self.embeddings
            ],
        }

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> GenerateRequest:
        """Read back `to_params` (rows written before the rename say `scheduler`)."""
        return cls(
            prompt=str(params["prompt"]),
            negative=str(params.get("negative", "")),
            count=int(params["count"]),
            steps=int(params["steps"]),
            guidance=float(params["guidance"]),
            seed=int(params["seed"]),
            width=int(params["width"]),
            height=int(params["height"]),
            sampler=str(params.get("sampler", params.get("scheduler", DEFAULT_SAMPLER))),
            embeddings=tuple(
                EmbeddingPayload(str(e["name"]), b"", str(e["sha256"]), e.get("id"))
                for e in params.get("embeddings", ())
            ),
        )

    def with_files(self, read: Callable[[str], bytes]) -> GenerateRequest:
        """The same request with each embedding's file attached (`read(sha256)`)."""
        return replace(
            self, embeddings=tuple(replace(e, data=read(e.sha256)) for e in self.embeddings)
        )


@dataclass(frozen=True)
class GeneratedImage:
    """One rendered image: PNG bytes with an A1111 `parameters` chunk."""

    index: int
    seed: int
    png: bytes


@dataclass(frozen=True)
class TrainRequest:
    """One `/train`, validated: 3-5 photos become `n_vectors` new vectors named `name`.

    Stored with the job (`to_params`; the photos are files of their own) and read back by the
    scheduler, which attaches the photos (`with_photos`) when it hands the job to a worker.
    """

    name: str
    photos: tuple[bytes, ...] = ()
    kind: TrainKind = "object"
    init_word: str | None = None
    n_vectors: int = 1
    steps: int = 250
    seed: int = 0
    negative: bool = False
    share: bool = False  # put the finished embedding in the shared library
    extra_metadata: dict[str, str] = field(default_factory=dict)
    # Attachment filenames, same order as `photos`, so an intake error can say "Photo 2 (cat.png)".
    photo_names: tuple[str, ...] = ()

    def check(self) -> None:
        """Refuse, in one sentence, anything outside the limits above (photos are checked by
        `engine.photos`, the name by `storage.names`)."""
        if self.kind not in TRAIN_KINDS:
            raise RequestError(f"kind must be one of {', '.join(TRAIN_KINDS)}; got '{self.kind}'.")
        if not 1 <= self.n_vectors <= MAX_VECTORS:
            raise RequestError(
                f"vectors must be between 1 and {MAX_VECTORS}; got {self.n_vectors}."
            )
        if self.init_word is not None and not _INIT_WORD.fullmatch(self.init_word):
            raise RequestError("init_word must be one or two plain English words, like 'dog'.")
        if not 1 <= self.steps <= MAX_TRAIN_STEPS:
            raise RequestError(f"steps must be between 1 and {MAX_TRAIN_STEPS}; got {self.steps}.")

    def to_params(self) -> dict[str, Any]:
        """The job row's JSON: everything but the photos."""
        return {
            "name": self.name,
            "kind": self.kind,
            "init_word": self.init_word,
            "n_vectors": self.n_vectors,
            "steps": self.steps,
            "seed": self.seed,
            "negative": self.negative,
            "share": self.share,
        }

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> TrainRequest:
        init_word = params.get("init_word")
        return cls(
            name=str(params["name"]),
            kind=cast("TrainKind", str(params.get("kind", "object"))),
            init_word=None if init_word is None else str(init_word),
            n_vectors=int(params.get("n_vectors", 1)),
            steps=int(params["steps"]),
            seed=int(params["seed"]),
            negative=bool(params.get("negative", False)),
            share=bool(params.get("share", False)),
        )

    def with_photos(self, photos: tuple[bytes, ...]) -> TrainRequest:
        return replace(self, photos=photos)


@dataclass(frozen=True)
class Progress:
    """A progress report from a running job. `preview_png` is optional and small."""

    step: int
    total: int
    loss: float | None = None
    eta_seconds: float | None = None
    preview_png: bytes | None = None


# The example prompts a new word is shown with (previews rendered by the worker, and the card's
# "try these"), per kind; `{}` is the word. A negative word is shown as the negative prompt.
EXAMPLE_PROMPTS: dict[str, tuple[str, str, str]] = {
    "object": ("a photo of a {}", "a {} on a beach at sunset", "a watercolor painting of a {}"),
    "style": (
        "a painting of a house in the style of {}",
        "a portrait in the style of {}",
        "a city street at night in the style of {}",
    ),
    "face": ("a photo of {}", "a close-up portrait of {}", "{} as an astronaut, digital art"),
}


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
