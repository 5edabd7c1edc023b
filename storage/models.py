"""The rows storage hands out: frozen dataclasses and the enums their columns may hold.

Callers never see a `sqlite3.Row`; every value here is already typed (aware datetimes, enums,
decoded JSON), so the layers above never parse a column.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class EmbeddingKind(StrEnum):
    POSITIVE = "positive"  # adds a concept when named in a prompt
    NEGATIVE = "negative"  # meant for the negative prompt (EasyNegative-style)


class Visibility(StrEnum):
    PRIVATE = "private"  # seen and used by its owner only
    SHARED = "shared"  # listed in the library; anyone may use it, only the owner may change it


class Family(StrEnum):
    SD1 = "sd1"
    SD2 = "sd2"
    SDXL = "sdxl"
    TINY = "tiny"  # the tiny random test model
    TINY_SDXL = "tiny-sdxl"  # its SDXL sibling


class EmbeddingSource(StrEnum):
    TRAINED = "trained"
    IMPORTED = "imported"


class JobKind(StrEnum):
    GENERATE = "generate"
    TRAIN = "train"


class JobState(StrEnum):
    QUEUED = "queued"  # waiting for the scheduler; also where a retried job goes back to
    RUNNING = "running"  # claimed by a worker that holds a lease and must keep heartbeating
    SUCCEEDED = "succeeded"  # final: result (and images) stored
    FAILED = "failed"  # final: error holds the sentence for the user; no attempts left
    CANCELLED = "cancelled"  # final: the owner or a manager cancelled it

    @property
    def is_final(self) -> bool:
        return self in FINAL_JOB_STATES


FINAL_JOB_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


class FileKind(StrEnum):
    """The folders of the content-addressed file store, each with its file extension."""

    EMBEDDINGS = "embeddings"
    IMAGES = "images"
    PHOTOS = "photos"
    CHECKPOINTS = "checkpoints"

    @property
    def suffix(self) -> str:
        return _SUFFIXES[self]


_SUFFIXES = {
    FileKind.EMBEDDINGS: ".safetensors",
    FileKind.IMAGES: ".png",
    FileKind.PHOTOS: ".img",
    FileKind.CHECKPOINTS: ".safetensors",
}


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asks for a change. `is_manager` means "manages the server the request came from";
    `guild_id` is that server (None for a direct message, and for the operator's CLI, where a
    manager acts everywhere). `is_owner`: one of the operator's `LEXICON_OWNERS`, who act
    everywhere from any server."""

    user_id: int
    is_manager: bool = False
    guild_id: int | None = None
    is_owner: bool = False

    @property
    def acts_everywhere(self) -> bool:
        """The operator: an owner, or a manager with no server (the CLI)."""
        return self.is_owner or (self.is_manager and self.guild_id is None)

    def manages(self, guild_id: int | None) -> bool:
        """May moderate what belongs to `guild_id` (None: the operator's, everywhere)."""
        if self.acts_everywhere:
            return True
        return self.is_manager and guild_id is not None and guild_id == self.guild_id


@dataclass(frozen=True, slots=True)
class Embedding:
    id: int
    owner_id: int
    name: str  # as the owner wrote it (ASCII, maybe with capitals)
    name_folded: str  # what prompts match and uniqueness is checked on
    kind: EmbeddingKind
    visibility: Visibility
    n_vectors: int
    width: int
    family: Family
    sha256: str
    source: EmbeddingSource
    description: str
    created_at: datetime
    use_count: int
    usable: bool  # False when its file is missing; the row is kept so the owner can see why
    job_id: int | None  # the training job that produced it, if any
    # sha256 of the file the member imported, before it was rewritten; None when `sha256` is it
    source_sha256: str | None = None
    # The server whose library holds it when shared; None: the operator's library (every server).
    shared_guild_id: int | None = None
    # The job that rendered its thumbnail when it has no training (an import); None: none queued
    thumbnail_job_id: int | None = None
    # The checkpoint an imported file says it was trained on: the file's claim, unverified, at
    # most 100 printable characters; None when it names none or the embedding was trained here.
    named_checkpoint: str | None = None

    @property
    def is_shared(self) -> bool:
        return self.visibility is Visibility.SHARED


@dataclass(frozen=True, slots=True)
class JobProgress:
    step: int
    total: int
    eta_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    user_id: int
    guild_id: int | None
    kind: JobKind
    state: JobState
    params: Mapping[str, Any]
    batch_key: str | None  # jobs with equal keys may share one GPU batch
    attempts: int
    max_attempts: int
    lease_owner: str | None
    lease_expires_at: datetime | None
    progress: JobProgress | None
    error: str | None
    result: Mapping[str, Any] | None
    checkpoint_sha256: str | None
    channel_id: int | None
    message_id: int | None
    interaction_token: str | None = field(repr=False)
    token_expires_at: datetime | None
    delivered: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    model: str | None = None  # the configured model's name; None: the deployment's default

    @property
    def is_final(self) -> bool:
        return self.state.is_final


@dataclass(frozen=True, slots=True)
class Delivery:
    """The Discord ids needed to deliver a job's result, even after a restart."""

    channel_id: int | None = None
    message_id: int | None = None
    interaction_token: str | None = field(default=None, repr=False)
    token_expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class NewImage:
    """An image a worker returned, not yet stored."""

    idx: int
    seed: int
    png: bytes = field(repr=False)
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Image:
    job_id: int
    idx: int
    seed: int
    sha256: str
    metadata: Mapping[str, Any]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class GuildSettings:
    guild_id: int
    limits: Mapping[str, int] = field(default_factory=dict)  # overrides of the server defaults
    blocked_words: tuple[str, ...] = ()
    allowed_channel_ids: tuple[int, ...] = ()  # empty: every channel
    default_negative_prompt: str = ""
    default_model: str | None = None  # a configured model's name; None: the deployment's
