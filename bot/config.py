"""Settings: one pydantic-settings model read from the environment and `.env`.

Every value an operator can set lives here, so there is exactly one place that says what the
knobs are, what they default to, and what a wrong value looks like. `load_settings()` turns
pydantic's multi-line validation report into one sentence per problem: the operator sees which
variable to set and what to put there, never a traceback.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from engine.worker_config import ModelSource

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
# A model's name, as members type it in `/imagine model:` and operators in LEXICON_MODELS.
MODEL_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}$")
_SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")

_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")
_SIZE_PATTERN = re.compile(r"^(\d{2,4})x(\d{2,4})$")
_MEMORY_PATTERN = re.compile(r"^(\d+(?:\.\d+)?)\s*(b|kib|mib|gib|tib|kb|mb|gb|tb)?$", re.IGNORECASE)
_MEMORY_UNITS = {
    **{unit: 1024**power for power, unit in enumerate(("b", "kib", "mib", "gib", "tib"))},
    **{unit: 1000**power for power, unit in enumerate(("", "kb", "mb", "gb", "tb"))},
}
_MIN_MODEL_MEMORY = 1024**2


class StartupError(Exception):
    """A configuration problem the operator must fix; its message is one sentence."""


class Settings(BaseSettings):
    """Lexicon's configuration. Field docs are what `README.md`'s table says."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    discord_token: SecretStr | None = Field(default=None, alias="DISCORD_TOKEN")
    model: str = Field(default=DEFAULT_MODEL, alias="LEXICON_MODEL", min_length=1)
    # Several checkpoints: `name=source` pairs; the first is the deployment's default model.
    model_list: Annotated[tuple[ModelSource, ...], NoDecode] = Field(
        default=(), alias="LEXICON_MODELS"
    )
    # The names of the models this worker holds (unset: every configured model).
    worker_model_names: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), alias="LEXICON_WORKER_MODELS"
    )
    # How much device memory the worker's models may take ("auto": on CUDA the free memory at
    # start less a quarter of the device, elsewhere no cap); past it the least recently used
    # model is evicted and loaded again when a job needs it.
    worker_model_memory: int | None = Field(default=None, alias="LEXICON_WORKER_MODEL_MEMORY")
    data_dir: Path = Field(default=Path("./data"), alias="LEXICON_DATA_DIR")
    device: str = Field(default="auto", alias="LEXICON_DEVICE")
    queue: str = Field(default="local", alias="LEXICON_QUEUE")
    dev_guild: int | None = Field(default=None, alias="LEXICON_DEV_GUILD")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", alias="LEXICON_LOG_LEVEL"
    )
    # Discord user ids of the operator's people: they moderate in every server and alone may
    # ban everywhere (a server's managers moderate only that server).
    owners: Annotated[frozenset[int], NoDecode] = Field(default=frozenset(), alias="LEXICON_OWNERS")

    # Limits. Each one is a promise to users ("at most N") and to the operator ("no more load
    # than this"), so each is a setting rather than a constant.
    max_queued_per_user: int = Field(default=5, ge=1, le=1000, alias="LEXICON_MAX_QUEUED_PER_USER")
    # Embeddings one member may keep (trained and imported, shared or not); trainings under way
    # count too. The operator's own imports are not counted against it.
    max_embeddings_per_user: int = Field(
        default=200, ge=1, le=100_000, alias="LEXICON_MAX_EMBEDDINGS_PER_USER"
    )
    # Commands that start GPU work (and imports) one member may use per minute (any 60 s
    # window), on top of the queue cap.
    rate_limit: int = Field(default=20, ge=1, le=10_000, alias="LEXICON_RATE_LIMIT")
    # Look-ups (/queue, lists, Info, library pages, /help) per member per minute: free in normal
    # use, a ceiling only against floods.
    lookup_rate_limit: int = Field(default=120, ge=1, le=100_000, alias="LEXICON_LOOKUP_RATE_LIMIT")
    max_photo_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1024, le=100 * 1024 * 1024, alias="LEXICON_MAX_PHOTO_BYTES"
    )
    max_photo_pixels: int = Field(
        default=40_000_000, ge=65_536, le=200_000_000, alias="LEXICON_MAX_PHOTO_PIXELS"
    )
    # Memory one photo may take to decode, predicted from its header (engine/photos.py), and how
    # many photos the bot decodes at once: together they bound what /train can cost the bot.
    max_photo_decode_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=16 * 1024 * 1024,
        le=4096 * 1024 * 1024,
        alias="LEXICON_MAX_PHOTO_DECODE_BYTES",
    )
    photo_decodes: int = Field(default=2, ge=1, le=16, alias="LEXICON_PHOTO_DECODES")
    max_embedding_bytes: int = Field(
        default=1024 * 1024, ge=1024, le=64 * 1024 * 1024, alias="LEXICON_MAX_EMBEDDING_BYTES"
    )
    max_steps: int = Field(default=50, ge=1, le=150, alias="LEXICON_MAX_STEPS")
    default_steps: int = Field(default=25, ge=1, le=150, alias="LEXICON_DEFAULT_STEPS")
    max_batch: int = Field(default=8, ge=1, le=64, alias="LEXICON_MAX_BATCH")
    allowed_sizes: Annotated[list[str], NoDecode] = Field(
        default=["512x512", "512x768", "768x512"], alias="LEXICON_ALLOWED_SIZES"
    )
    # Image tools: the strengths of Vary (subtle/strong) and of Upscale ×2's second pass, and
    # the longest side an upscale may produce (a 768x512 image needs 1536 to become 1536x1024).
    vary_subtle: float = Field(default=0.35, ge=0.05, le=1.0, alias="LEXICON_VARY_SUBTLE")
    vary_strong: float = Field(default=0.65, ge=0.05, le=1.0, alias="LEXICON_VARY_STRONG")
    upscale_strength: float = Field(default=0.5, ge=0.05, le=1.0, alias="LEXICON_UPSCALE_STRENGTH")
    max_upscale_side: int = Field(default=1024, ge=64, le=2048, alias="LEXICON_MAX_UPSCALE_SIDE")
    # The default recipe: 125 steps x batch 8 = 1,000 samples (docs/TRAINING.md).
    train_steps: int = Field(default=125, ge=1, le=20_000, alias="LEXICON_TRAIN_STEPS")
    train_batch: int = Field(default=8, ge=1, le=64, alias="LEXICON_TRAIN_BATCH")
    # torch.compile the UNet and VAE decoder (CUDA only, ignored on CPU). Compiled artefacts are
    # cached under the data dir: the first start on a machine compiles, later ones reuse them.
    compile: Literal["off", "default", "reduce-overhead", "max-autotune-no-cudagraphs"] = Field(
        default="default", alias="LEXICON_COMPILE"
    )
    # Record the UNet, VAE decode and training step as CUDA graphs (CUDA only; ~2-3x faster).
    cuda_graphs: bool = Field(default=True, alias="LEXICON_CUDA_GRAPHS")
    # A VAE that overflows in float16 (SDXL's) runs in bfloat16 on GPUs from Ampere on, as
    # ComfyUI runs it (twice as fast to decode, within a few 255ths); true: float32, as stock.
    vae_float32: bool = Field(default=False, alias="LEXICON_VAE_FLOAT32")
    metrics_port: int | None = Field(default=None, ge=1, le=65535, alias="LEXICON_METRICS_PORT")
    lease_seconds: float = Field(default=30.0, ge=2.0, le=3600.0, alias="LEXICON_LEASE_SECONDS")
    train_slice_steps: int = Field(default=10, ge=1, le=1000, alias="LEXICON_TRAIN_SLICE_STEPS")
    checkpoint_every: int = Field(default=50, ge=1, le=100_000, alias="LEXICON_CHECKPOINT_EVERY")
    # CPU threads torch may use in the worker (unset: torch's default, one per core).
    torch_threads: int | None = Field(default=None, ge=1, le=256, alias="LEXICON_TORCH_THREADS")
    # `standin` swaps the GPU engine for a fast torch-free stand-in (load and fault tests only).
    engine: Literal["diffusers", "standin"] = Field(default="diffusers", alias="LEXICON_ENGINE")

    @model_validator(mode="after")
    def _tiny_sizes(self) -> Settings:
        # The tiny models' native size is 64x64; 512x512 on them would be slow noise. Only when
        # the operator has not chosen sizes themselves.
        tiny = all(model.source in ("tiny", "tiny-sdxl") for model in self.models)
        if tiny and "allowed_sizes" not in self.model_fields_set:
            self.allowed_sizes = ["64x64", "128x128"]
        return self

    @model_validator(mode="after")
    def _one_way_to_name_models(self) -> Settings:
        if self.model_list and "model" in self.model_fields_set:
            raise ValueError(
                "LEXICON_MODEL and LEXICON_MODELS are both set: keep LEXICON_MODELS and "
                "remove LEXICON_MODEL (it is the one-model shorthand)"
            )
        names = [model.name for model in self.models]
        unknown = [name for name in self.worker_model_names if name not in names]
        if unknown:
            raise ValueError(
                f"LEXICON_WORKER_MODELS names {unknown[0]!r}, which is not a configured model; "
                f"use some of {', '.join(names)}"
            )
        return self

    _parse_models = field_validator("model_list", mode="before")(
        lambda value: _comma_separated(value, _model_sources)
    )
    _split_worker_models = field_validator("worker_model_names", mode="before")(
        lambda value: _comma_separated(value, tuple)
    )

    @field_validator("worker_model_memory", mode="before")
    @classmethod
    def _parse_memory(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.lower() in ("", "auto"):
            return None
        match = _MEMORY_PATTERN.match(text)
        if match is None:
            raise ValueError("use auto, or a size such as 20GiB, 512MiB or 8GB")
        size = int(float(match.group(1)) * _MEMORY_UNITS[(match.group(2) or "").lower()])
        if size < _MIN_MODEL_MEMORY:
            raise ValueError("give the models at least 1MiB, or use auto")
        return size

    @field_validator("cuda_graphs")
    @classmethod
    def _one_kind_of_graphs(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("compile") == "reduce-overhead":
            raise ValueError(
                "LEXICON_COMPILE=reduce-overhead records CUDA graphs of its own, "
                "so set LEXICON_CUDA_GRAPHS=false with it"
            )
        return value

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        value = value.strip().lower()
        if not _DEVICE_PATTERN.match(value):
            raise ValueError("use auto, cpu, cuda, cuda:N or mps")
        return value

    @field_validator("queue")
    @classmethod
    def _check_queue(cls, value: str) -> str:
        value = value.strip()
        if value != "local" and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("use local, or a Redis URL such as redis://host:6379/0")
        return value

    _split_owners = field_validator("owners", mode="before")(
        lambda value: _comma_separated(value, _owner_ids)
    )
    _split_sizes = field_validator("allowed_sizes", mode="before")(
        lambda value: _comma_separated(value, list)
    )

    @field_validator("allowed_sizes")
    @classmethod
    def _check_sizes(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("list at least one size such as 512x512")
        for size in value:
            match = _SIZE_PATTERN.match(size)
            if not match or any(int(side) % 8 for side in match.groups()):
                raise ValueError(f"{size!r} is not WIDTHxHEIGHT with both sides multiples of 8")
        return value

    @property
    def sizes(self) -> list[tuple[int, int]]:
        """The allowed sizes as (width, height) pairs, in the order the operator listed them."""
        return [(int(w), int(h)) for w, h in (s.split("x") for s in self.allowed_sizes)]

    @property
    def models(self) -> tuple[ModelSource, ...]:
        """Every configured model, the deployment default first (LEXICON_MODEL: just one)."""
        return self.model_list or (ModelSource(name_for_source(self.model), self.model),)

    @property
    def default_model(self) -> str:
        """The name of the deployment's default model (the first one configured)."""
        return self.models[0].name

    @property
    def worker_models(self) -> tuple[ModelSource, ...]:
        """The models a worker started with these settings holds (LEXICON_WORKER_MODELS)."""
        wanted = self.worker_model_names
        return tuple(m for m in self.models if not wanted or m.name in wanted)

    @property
    def database_path(self) -> Path:
        return self.data_dir / "lexicon.sqlite3"

    def require_discord_token(self) -> str:
        """The bot token, or a StartupError that tells the operator where to get one."""
        token = self.discord_token.get_secret_value().strip() if self.discord_token else ""
        if not token:
            raise StartupError(
                "DISCORD_TOKEN is not set: create a bot at "
                "https://discord.com/developers/applications (Bot → Reset Token) and put "
                "DISCORD_TOKEN=<token> in the environment or in .env."
            )
        return token


def name_for_source(source: str) -> str:
    """The name of the one model of LEXICON_MODEL: `tiny`, a file's stem or a folder's (or hub
    id's) last part, lower-cased and cleaned to the name rules."""
    path = Path(source)
    base = path.stem if path.suffix.lower() in _SINGLE_FILE_SUFFIXES else path.name
    cleaned = re.sub(r"[^a-z0-9._-]+", "-", base.lower()).lstrip("._-")[:32]
    return cleaned or "model"


def _comma_separated(value: object, parse: Callable[[list[str]], object]) -> object:
    """`parse` of the non-blank items of a comma-separated environment value; a value that is
    no string (a default, a value given in code) is left to the field's own type."""
    if not isinstance(value, str):
        return value
    return parse([part.strip() for part in value.split(",") if part.strip()])


def _model_sources(parts: list[str]) -> tuple[ModelSource, ...]:
    """`LEXICON_MODELS`' `name=source` items, each name well-formed and given once."""
    models: list[ModelSource] = []
    for part in parts:
        name, equals, source = (piece.strip() for piece in part.partition("="))
        if not equals or not source:
            raise ValueError(f"{part!r} is not name=source (for example sd15=/models/sd15)")
        if not MODEL_NAME_PATTERN.match(name):
            raise ValueError(
                f"in {part!r} the name {name!r} is not 1-32 lower-case letters, digits, "
                "dots, dashes or underscores starting with a letter or digit"
            )
        if any(model.name == name for model in models):
            raise ValueError(f"{part!r} repeats the name {name!r}; give each model its own")
        models.append(ModelSource(name, source))
    return tuple(models)


def _owner_ids(parts: list[str]) -> frozenset[int]:
    if not all(part.isdigit() for part in parts):
        raise ValueError("list Discord user ids (digits) separated by commas")
    return frozenset(int(part) for part in parts)


def _env_name(field_name: str) -> str:
    field = Settings.model_fields.get(field_name)
    return (field.alias if field is not None and field.alias else field_name).upper()


def load_settings(**overrides: object) -> Settings:
    """Read settings, turning a validation failure into a one-sentence StartupError."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        first = error.errors()[0]
        message = str(first["msg"]).removeprefix("Value error, ")
        if not first["loc"]:  # a check of several settings names them itself
            raise StartupError(f"{message}.") from None
        location = first["loc"][0]
        name = location if str(location).isupper() else _env_name(str(location))
        raise StartupError(f"{name} is invalid: {message}.") from None
    except SettingsError as error:  # a value pydantic-settings could not even parse
        raise StartupError(f"A setting could not be read: {error}.") from None
