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

from engine.prompt import CHUNK_TOKENS, min_chunks

SAMPLERS = ("euler", "euler_a", "ddim", "dpmpp_2m", "dpmpp_2m_karras", "pndm")
DEFAULT_SAMPLER = "dpmpp_2m_karras"
TrainKind = Literal["object", "style", "face"]
TRAIN_KINDS: tuple[TrainKind, ...] = ("object", "style", "face")

# --- limits: the one place they are defined -------------------------------------------------
# The service refuses a request over any of these before it is stored, and the worker checks the
# same request against the same numbers before it touches the device. The operator narrows some
# of them further (`LEXICON_MAX_STEPS`, `LEXICON_ALLOWED_SIZES`).

MAX_PROMPT_CHARS = 1500  # per prompt; Discord's option limit is 6000
# 75-token chunks per prompt (600 tokens, embedding vectors included). Every chunk of any prompt
# in a batch is cross-attended by every image's UNet rows, so this bounds what one request can
# cost its batch-mates (docs/RELIABILITY.md). The service refuses what it can count without the
# tokenizer (`engine.prompt.min_chunks`); the worker counts exactly (`engine.generate`).
MAX_CHUNKS = 8
MAX_SEED = 2**32 - 1  # what A1111 and Civitai show; image i of a request uses seed + i
MAX_COUNT = 4  # images per request (one Discord message shows four comfortably)
MAX_STEPS = 150  # the engine's ceiling; LEXICON_MAX_STEPS is the operator's
MAX_GUIDANCE = 30.0
MIN_SIDE, MAX_SIDE = 64, 2048
MAX_VECTORS = 8
MAX_TRAIN_STEPS = 20_000
# Image-to-image: how far the starting image is noised (1 = all the way), A1111's range floor.
MIN_STRENGTH, MAX_STRENGTH = 0.05, 1.0
DEFAULT_STRENGTH = 0.75  # A1111's img2img default
DEFAULT_GUIDANCE = 7.5
HIRES_SCALE = 2  # "Upscale": the image enlarged this many times, then denoised again
HIRES_UPSCALER = "Lanczos"  # A1111's name for the pixel upscaler used (PIL's Lanczos)
# The starting image travels in the job (normalised PNG, at most 1024 on its shorter side and
# 4:1, so a few MiB); anything bigger is not what the bot stored.
MAX_INIT_IMAGE_BYTES = 32 * 1024 * 1024
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


def too_many_chunks(label: str) -> RequestError:
    """The one sentence for a prompt over `MAX_CHUNKS`, from the service or the worker."""
    return RequestError(
        f"The {label} is longer than {MAX_CHUNKS} chunks of {CHUNK_TOKENS} tokens (each BREAK "
        "starts a chunk and each embedding takes one token per vector); shorten it."
    )


def _check_text(label: str, text: str) -> None:
    if len(text) > MAX_PROMPT_CHARS:
        raise RequestError(
            f"The {label} is {len(text)} characters long; the most is {MAX_PROMPT_CHARS}."
        )
    if any(ord(c) < 32 and c not in "\n\t" for c in text):
        raise RequestError(f"The {label} contains control characters; remove them.")
    if min_chunks(text) > MAX_CHUNKS:
        raise too_many_chunks(label)


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
    # sha256 of the file the member imported (A1111's `TI hashes`); "" = that of `data`
    source_sha256: str = ""


def _model_params(model: str) -> dict[str, str]:
    """A job row's model key: absent for the default of rows written before models had names."""
    return {"model": model} if model else {}


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
    # Image-to-image: the starting image (a PNG the bot normalised; attached at dispatch like
    # the embedding files, stored as its sha256), and how far it is noised.
    init_sha256: str = ""  # "" = text-to-image
    init_image: bytes = b""
    strength: float = 0.0
    # "Hires. fix" (Upscale): > 0 means the starting image is enlarged ×HIRES_SCALE and denoised
    # with these steps; `steps`, `width` and `height` stay the first pass's, as A1111 records.
    hires_steps: int = 0
    # The configured model's name; "" = the deployment's default (rows queued before names).
    model: str = ""

    @property
    def is_img2img(self) -> bool:
        return bool(self.init_sha256)

    @property
    def scale(self) -> int:
        return HIRES_SCALE if self.hires_steps else 1

    @property
    def out_width(self) -> int:
        """The rendered image's width (twice `width` for an upscale)."""
        return self.width * self.scale

    @property
    def out_height(self) -> int:
        return self.height * self.scale

    @property
    def run_steps(self) -> int:
        """The scheduler's step count for this render (`hires_steps` for an upscale)."""
        return self.hires_steps or self.steps

    @property
    def denoise_steps(self) -> int:
        """UNet steps actually run: image-to-image skips the first `1 - strength` of them
        (diffusers' `get_timesteps`, A1111's default)."""
        if not self.is_img2img:
            return self.steps
        return min(int(self.run_steps * self.strength), self.run_steps)

    @property
    def batch_key(self) -> str:
        """Requests with equal keys can share one UNet batch."""
        key = f"{self.out_width}x{self.out_height}:{self.run_steps}:{self.sampler}"
        return f"{key}:img2img:{self.strength!r}" if self.is_img2img else key

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
        self._check_image(max_steps)

    def _check_image(self, max_steps: int) -> None:
        if not self.is_img2img:
            if self.strength or self.hires_steps or self.init_image:
                raise RequestError("Strength and upscaling need a starting image; attach one.")
            return
        if not (math.isfinite(self.strength) and MIN_STRENGTH <= self.strength <= MAX_STRENGTH):
            raise RequestError(
                f"strength must be between {MIN_STRENGTH:g} and {MAX_STRENGTH:g}; "
                f"got {self.strength:g}."
            )
        if self.hires_steps and not 1 <= self.hires_steps <= min(max_steps, MAX_STEPS):
            raise RequestError(
                f"Hires steps must be between 1 and {min(max_steps, MAX_STEPS)}; "
                f"got {self.hires_steps}."
            )
        if self.denoise_steps < 1:
            raise RequestError(
                f"With {self.run_steps} steps, strength {self.strength:g} changes nothing; "
                "raise the steps or the strength."
            )
        if max(self.out_width, self.out_height) > MAX_SIDE:
            raise RequestError(
                f"The upscaled image would be {self.out_width}x{self.out_height}, over "
                f"{MAX_SIDE} pixels on a side; upscale a smaller image."
            )
        if len(self.init_image) > MAX_INIT_IMAGE_BYTES:
            raise RequestError("The starting image is too large; attach a smaller one.")

    def to_params(self) -> dict[str, Any]:
        """The job row's JSON: everything but the embedding files' and starting image's bytes
        (a text-to-image row carries no image keys, as before image-to-image existed)."""
        image = (
            {
                "init_image": self.init_sha256,
                "strength": self.strength,
                "hires_steps": self.hires_steps,
            }
            if self.is_img2img
            else {}
        )
        return (
            image
            | _model_params(self.model)
            | {
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
                    {"id": e.id, "name": e.name, "sha256": e.sha256}
                    | ({"source_sha256": e.source_sha256} if e.source_sha256 else {})
                    for e in self.embeddings
                ],
            }
        )

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
                EmbeddingPayload(
                    str(e["name"]),
                    b"",
                    str(e["sha256"]),
                    e.get("id"),
                    str(e.get("source_sha256", "")),  # absent in jobs queued before it was kept
                )
                for e in params.get("embeddings", ())
            ),
            init_sha256=str(params.get("init_image", "")),
            strength=float(params.get("strength", 0.0)),
            hires_steps=int(params.get("hires_steps", 0)),
            model=str(params.get("model", "")),
        )

    def with_files(self, read: Callable[[str], bytes], init_image: bytes = b"") -> GenerateRequest:
        """The same request with each embedding's file attached (`read(sha256)`) and its
        starting image's bytes."""
        return replace(
            self,
            embeddings=tuple(replace(e, data=read(e.sha256)) for e in self.embeddings),
            init_image=init_image,
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
    # The configured model to train on; "" = the deployment's default (rows queued before names).
    model: str = ""

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
        return _model_params(self.model) | {
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
            model=str(params.get("model", "")),
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


def crosses_half(before: int, after: int, total: int) -> bool:
    """True for the one training slice (steps `before` → `after`) that reaches half of the
    run's steps, short of the last: it carries the halfway preview."""
    half = max(1, total // 2)
    return before < half <= after < total


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
