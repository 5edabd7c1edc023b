"""Services: what a user can ask for, checked and stored, independent of Discord.

The cogs and the CLI call these; they validate everything (one sentence per refusal, nothing
stored for a refused request: bans and the server's blocked words first), resolve embedding
names in a prompt to the embeddings this user may use there (their own first, then the server's
library), queue the job and return at once with its place in the queue. Nothing here waits for
the GPU.
"""

from __future__ import annotations

import asyncio
import dataclasses
import difflib
import functools
import logging
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from bot.config import Settings
from bot.hub import JobHub, JobUpdate
from bot.scheduler import Scheduler
from engine.jobs import (
    DEFAULT_SAMPLER,
    MAX_SEED,
    EmbeddingPayload,
    GenerateRequest,
    RequestError,
    TrainKind,
    TrainRequest,
)
from engine.photos import PhotoError, normalise_photos
from engine.vocabulary import is_single_token, reads_as_words
from storage.embeddings import SHARE_FROM_A_SERVER, EmbeddingRepository
from storage.errors import NotFound
from storage.guilds import GuildSettingsRepository
from storage.jobs import JobRepository, over_quota
from storage.models import Delivery, Embedding, Job, JobKind
from storage.names import NameRules, fold_for_lookup
from storage.users import UserRepository

GUILD_MAX_QUEUED = "max_queued_per_user"  # the key of `GuildSettings.limits` managers may set

_EXPLICIT_NAME = re.compile(r"<([^<>\s]{1,64})>")
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{1,31}")


NAME_RULES = NameRules(is_reserved_word=is_single_token, reads_as_words=reads_as_words)
BANNED = "You are not allowed to use Lexicon."

log = logging.getLogger("lexicon.services")


class ServiceError(Exception):
    """A refusal; the message is one sentence for the user."""


def disk_failure(what: str, error: OSError) -> ServiceError:
    """The sentence for a file the store could not write (disk full, read-only, …): nothing was
    stored, because the store writes files before the row that names them commits."""
    log.error("could not store %s: %s", what, error)
    reason = (error.strerror or "a disk error").lower()
    return ServiceError(
        f"Lexicon could not save the {what} ({reason}), so nothing was stored; try again later."
    )


@dataclass(frozen=True)
class ImagineOptions:
    """What a member asked `/imagine` for; None means "the default" (the operator's)."""

    prompt: str
    negative: str = ""
    count: int = 1
    steps: int | None = None
    guidance: float = 7.5
    seed: int | None = None
    size: str | None = None  # "WIDTHxHEIGHT", one of LEXICON_ALLOWED_SIZES
    sampler: str | None = None

    @classmethod
    def again(cls, request: GenerateRequest) -> ImagineOptions:
        """The options behind `request`, with a new seed: a reroll."""
        return cls(
            prompt=request.prompt,
            negative=request.negative,
            steps=request.steps,
            guidance=request.guidance,
            size=f"{request.width}x{request.height}",
            sampler=request.sampler,
        )


@dataclass(frozen=True)
class TrainOptions:
    """What a member asked `/train` for; `photos` are (filename, bytes) in the order attached."""

    name: str
    photos: Sequence[tuple[str, bytes]]
    kind: TrainKind = "object"
    init_word: str | None = None
    vectors: int | None = None
    share: bool = False
    negative: bool = False
    steps: int | None = None


@dataclass(frozen=True)
class Submitted:
    job: Job
    position: int | None
    eta_seconds: float | None


def embedding_names_in(text: str) -> tuple[set[str], set[str]]:
    """(names written as `<name>`, bare words that could be names) in a prompt."""
    explicit = {m.group(1) for m in _EXPLICIT_NAME.finditer(text)}
    bare = {m.group(0) for m in _WORD.finditer(_EXPLICIT_NAME.sub(" ", text))}
    return explicit, bare


def _blocked_word(text: str, blocked: Sequence[str]) -> str | None:
    lowered = text.lower()
    for word in blocked:
        if re.search(rf"(?<![a-z0-9]){re.escape(word.lower())}(?![a-z0-9])", lowered):
            return word
    return None


class _Checks:
    """Checks shared by every service that queues work."""

    def __init__(
        self,
        settings: Settings,
        users: UserRepository,
        guilds: GuildSettingsRepository,
        jobs: JobRepository,
    ) -> None:
        self.settings = settings
        self.users = users
        self.guilds = guilds
        self.jobs = jobs

    async def allowed(self, user_id: int, guild_id: int | None) -> None:
        """Refuse a user banned everywhere or on `guild_id`."""
        if await self.users.is_banned(user_id, guild_id):
            raise ServiceError(BANNED)

    async def blocked_words(self, guild_id: int | None) -> tuple[str, ...]:
        if guild_id is None:
            return ()
        return (await self.guilds.get(guild_id)).blocked_words

    async def refuse_blocked(self, guild_id: int | None, *texts: str) -> None:
        blocked = await self.blocked_words(guild_id)
        for text in texts:
            word = _blocked_word(text, blocked)
            if word is not None:
                raise ServiceError(f"'{word}' is blocked on this server; remove it and try again.")

    async def max_active(self, user_id: int, guild_id: int | None = None) -> int:
        """The user's own override, else the server's limit, else the operator's default."""
        user = await self.users.get_or_create(user_id)
        if user.max_queued_jobs is not None:
            return user.max_queued_jobs
        if guild_id is not None:
            limit = (await self.guilds.get(guild_id)).limits.get(GUILD_MAX_QUEUED)
            if limit is not None:
                return limit
        return self.settings.max_queued_per_user


class _QueueingService:
    """What both job-queueing services hold."""

    def __init__(
        self,
        settings: Settings,
        checks: _Checks,
        embeddings: EmbeddingRepository,
        scheduler: Scheduler,
        hub: JobHub,
    ) -> None:
        self.settings = settings
        self.checks = checks
        self.embeddings = embeddings
        self.scheduler = scheduler
        self.hub = hub


class ImagineService(_QueueingService):
    async def submit(
        self,
        user_id: int,
        options: ImagineOptions,
        *,
        guild_id: int | None = None,
        delivery: Delivery | None = None,
    ) -> Submitted:
        await self.checks.allowed(user_id, guild_id)
        request = await self.build_request(user_id, options, guild_id=guild_id)
        job = await self.checks.jobs.enqueue(
            user_id,
            JobKind.GENERATE,
            request.to_params(),
            guild_id=guild_id,
            batch_key=request.batch_key,
            delivery=delivery,
            max_active=await self.checks.max_active(user_id, guild_id),
        )
        return await _queued(job, self.scheduler, self.hub)

    async def build_request(
        self, user_id: int, options: ImagineOptions, *, guild_id: int | None
    ) -> GenerateRequest:
        """Fill in the defaults, check every limit, resolve the embeddings the prompt names."""
        settings = self.settings
        size = options.size or settings.allowed_sizes[0]
        if size not in settings.allowed_sizes:
            raise ServiceError(
                f"size {size} is not offered here; choose one of "
                f"{', '.join(settings.allowed_sizes)}."
            )
        width, height = (int(side) for side in size.split("x"))
        request = GenerateRequest(
            prompt=options.prompt.strip(),
            negative=options.negative.strip(),
            count=options.count,
            steps=settings.default_steps if options.steps is None else options.steps,
            guidance=options.guidance,
            seed=secrets.randbelow(MAX_SEED + 1) if options.seed is None else options.seed,
            width=width,
            height=height,
            sampler=options.sampler or DEFAULT_SAMPLER,
        )
        try:
            request.check(max_steps=settings.max_steps)
        except RequestError as error:
            raise ServiceError(str(error)) from None
        negative = request.negative
        await self.checks.refuse_blocked(guild_id, request.prompt, negative)
        if guild_id is not None:
            default_negative = (await self.checks.guilds.get(guild_id)).default_negative_prompt
            if default_negative and default_negative not in negative:
                negative = f"{negative}, {default_negative}" if negative else default_negative
        used = await self.resolve_names(user_id, guild_id, request.prompt, negative)
        return dataclasses.replace(
            request,
            negative=negative,
            embeddings=tuple(
                EmbeddingPayload(e.name_folded, b"", e.sha256, e.id, e.source_sha256 or "")
                for e in used
            ),
        )

    async def resolve_names(
        self, user_id: int, guild_id: int | None, *texts: str
    ) -> list[Embedding]:
        """The embeddings a prompt names in `guild_id` (the user's own, that server's library,
        the operator's); `<unknown>` is refused with a suggestion."""
        explicit: set[str] = set()
        bare: set[str] = set()
        for text in texts:
            e, b = embedding_names_in(text)
            explicit |= e
            bare |= b
        found = await self.embeddings.resolve(user_id, explicit | bare, guild_id)
        for name in sorted(explicit):
            folded = fold_for_lookup(name)
            if folded is None or folded not in found:
                raise ServiceError(await self._unknown_name_sentence(user_id, guild_id, name))
        unusable = [e.name for e in found.values() if not e.usable]
        if unusable:
            raise ServiceError(
                f"The embedding '{unusable[0]}' cannot be used: its file is missing."
            )
        return sorted(found.values(), key=lambda e: e.name_folded)

    async def _unknown_name_sentence(self, user_id: int, guild_id: int | None, name: str) -> str:
        known = [e.name_folded for e in await self.embeddings.list_owned(user_id)]
        shared = await self.embeddings.list_shared(limit=500, guild_id=guild_id)
        known += [e.name_folded for e in shared]
        close = difflib.get_close_matches(name.lower(), known, n=1, cutoff=0.6)
        hint = f" Did you mean <{close[0]}>?" if close else ""
        return f"You have no embedding called <{name}> and none is shared under that name.{hint}"


class TrainService(_QueueingService):
    @functools.cached_property
    def decodes(self) -> asyncio.Semaphore:
        """Photo decodes at once: each holds at most `max_photo_decode_bytes`, and the rest of
        the default thread pool stays free for everyone else's work."""
        return asyncio.Semaphore(self.settings.photo_decodes)

    async def submit(
        self,
        user_id: int,
        options: TrainOptions,
        *,
        guild_id: int | None = None,
        delivery: Delivery | None = None,
    ) -> Submitted:
        """Check and queue a training; nothing is stored for a refused one."""
        await self.checks.allowed(user_id, guild_id)
        await self.checks.refuse_blocked(guild_id, options.name)
        checked = NAME_RULES.check(options.name)
        if options.share:
            if guild_id is None:
                raise ServiceError(SHARE_FROM_A_SERVER)
            NAME_RULES.check_shareable(checked)
        await self.refuse_taken(user_id, checked.folded, options.share, guild_id)
        request = TrainRequest(
            name=checked.display,
            kind=options.kind,
            init_word=options.init_word,
            n_vectors=1 if options.vectors is None else options.vectors,
            steps=self.settings.train_steps if options.steps is None else options.steps,
            seed=secrets.randbelow(2**31),
            share=options.share,
            negative=options.negative,
        )
        try:
            request.check()
        except RequestError as error:
            raise ServiceError(str(error)) from None
        max_active = await self.checks.max_active(user_id, guild_id)
        active = await self.checks.jobs.active_count(user_id)
        if active >= max_active:  # refused before the photos cost a decode; enqueue rechecks
            raise over_quota(active)
        stored = await self.check_photos(options.photos)
        try:
            job = await self.checks.jobs.enqueue(
                user_id,
                JobKind.TRAIN,
                request.to_params(),
                guild_id=guild_id,
                delivery=delivery,
                photos=stored,
                max_active=max_active,
            )
        except OSError as error:
            raise disk_failure("photos", error) from None
        return await _queued(job, self.scheduler, self.hub)

    async def refuse_taken(
        self, user_id: int, folded: str, share: bool, guild_id: int | None
    ) -> None:
        try:
            await self.embeddings.get_owned_by_name(user_id, folded)
        except NotFound:
            pass
        else:
            raise ServiceError(f"You already have an embedding called '{folded}'.")
        if share:
            try:
                found = await self.embeddings.get_shared_by_name(folded, guild_id)
            except NotFound:
                return
            if found.shared_guild_id != guild_id:
                return  # the operator's library: this server's own entry may shadow it
            raise ServiceError(f"The shared library already has an embedding called '{folded}'.")

    async def check_photos(self, photos: Sequence[tuple[str, bytes]]) -> list[bytes]:
        """Decode every photo now, so a bad one is refused before anything is stored; what to
        store is each photo's normalised PNG, so the worker never decodes the original."""
        settings = self.settings
        try:
            async with self.decodes:
                return await asyncio.to_thread(
                    normalise_photos,
                    [data for _, data in photos],
                    filenames=[filename for filename, _ in photos],
                    max_bytes=settings.max_photo_bytes,
                    max_pixels=settings.max_photo_pixels,
                    max_decode_bytes=settings.max_photo_decode_bytes,
                )
        except PhotoError as error:
            raise ServiceError(str(error)) from None


async def _queued(job: Job, scheduler: Scheduler, hub: JobHub) -> Submitted:
    scheduler.wake()
    hub.publish(JobUpdate(job.id, job.user_id, "queued"))
    position = await scheduler.jobs.queue_position(job.id)
    eta = await scheduler.estimate_start(job)
    return Submitted(job, position, eta)
