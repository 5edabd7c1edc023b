"""Services: what a user can ask for, checked and stored, independent of Discord.

The cogs and the CLI call these; they validate everything (one sentence per refusal, nothing
stored for a refused request), resolve embedding names in a prompt to the embeddings this user
may use (their own first, then shared ones), queue the job and return at once with its place in
the queue. Nothing here waits for the GPU.
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
from engine.vocabulary import is_single_token
from storage.embeddings import EmbeddingRepository
from storage.errors import NotFound
from storage.guilds import GuildSettingsRepository
from storage.jobs import JobRepository, over_quota
from storage.models import Delivery, Embedding, EmbeddingKind, Job, JobKind
from storage.names import EmbeddingName, fold_for_lookup, parse_name
from storage.users import UserRepository

GUILD_MAX_QUEUED = "max_queued_per_user"  # the key of `GuildSettings.limits` managers may set

_EXPLICIT_NAME = re.compile(r"<([^<>\s]{1,64})>")
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{1,31}")


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
    # The embeddings the request this one repeats used (a button): any the new member cannot
    # use is named in a note instead of being dropped silently.
    expected: tuple[str, ...] = ()

    @classmethod
    def again(cls, request: GenerateRequest) -> ImagineOptions:
        """The options behind `request`, with a new seed for every image: a reroll."""
        return cls(
            prompt=request.prompt,
            negative=request.negative,
            count=request.count,
            steps=request.steps,
            guidance=request.guidance,
            size=f"{request.width}x{request.height}",
            sampler=request.sampler,
            expected=tuple(e.name for e in request.embeddings),
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

    @property
    def notes(self) -> tuple[str, ...]:
        """One-line notes on what Lexicon changed or could not use in the request."""
        return job_notes(self.job)


NOTES_KEY = "notes"  # in a generate job's params: the notes its messages show


def job_notes(job: Job) -> tuple[str, ...]:
    return tuple(str(note) for note in job.params.get(NOTES_KEY, ()))


_MADE_UP_ENDINGS = ("zo", "ix", "ora", "ek", "umi", "-1", "-2", "-3")


async def checked_name(embeddings: EmbeddingRepository, user_id: int, raw: str) -> EmbeddingName:
    """A valid new name, or a refusal; a word the model already knows is refused with a
    made-up name that is free for this member (not theirs, not shared, not a known word)."""
    name = parse_name(raw)
    if not is_single_token(name.folded):
        return name
    for ending in _MADE_UP_ENDINGS:
        candidate = f"{name.folded}{ending}"[:32]
        if is_single_token(candidate) or await _taken(embeddings, user_id, candidate):
            continue
        raise ServiceError(
            f"'{name.folded}' is already a word the model knows, so it cannot be a new one; "
            f"try '{candidate}' instead."
        )
    raise ServiceError(
        f"'{name.folded}' is already a word the model knows; pick a made-up word instead."
    )


async def _taken(embeddings: EmbeddingRepository, user_id: int, folded: str) -> bool:
    if await embeddings.resolve(user_id, [folded]):
        return True
    try:
        await embeddings.get_shared_by_name(folded)
    except NotFound:
        return False
    return True


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

    async def allowed(self, user_id: int) -> None:
        if await self.users.is_banned(user_id):
            raise ServiceError("You are not allowed to use Lexicon.")

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
        await self.checks.allowed(user_id)
        request = await self.build_request(user_id, options, guild_id=guild_id)
        notes = await self.notes(user_id, options, request, guild_id=guild_id)
        job = await self.checks.jobs.enqueue(
            user_id,
            JobKind.GENERATE,
            {**request.to_params(), NOTES_KEY: notes},
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
        used = await self.resolve_names(user_id, request.prompt, negative)
        prompt, negative = _move_negative_embeddings(request.prompt, negative, used)
        return dataclasses.replace(
            request,
            prompt=prompt,
            negative=negative,
            embeddings=tuple(EmbeddingPayload(e.name_folded, b"", e.sha256, e.id) for e in used),
        )

    async def notes(
        self,
        user_id: int,
        options: ImagineOptions,
        request: GenerateRequest,
        *,
        guild_id: int | None,
    ) -> list[str]:
        """What the member should know about how their prompt was read: embeddings moved to
        the negative prompt, the server's default negative, words that are still training, and
        embeddings of a repeated request that this member cannot use."""
        notes: list[str] = []
        used = {e.name for e in request.embeddings}
        explicit, bare = embedding_names_in(options.prompt)
        written = {f for f in map(fold_for_lookup, explicit | bare) if f is not None}
        for name in sorted(used & written):
            if _mentions(options.prompt, name) and not _mentions(request.prompt, name):
                notes.append(
                    f"`{name}` is a negative embedding, so it was moved to the negative prompt."
                )
        if guild_id is not None:
            default_negative = (await self.checks.guilds.get(guild_id)).default_negative_prompt
            if default_negative and default_negative not in options.negative:
                notes.append(f"This server adds `{default_negative}` to every negative prompt.")
        training = await self._training_names(user_id)
        for name in sorted((written - used) & training.keys()):
            notes.append(
                f"`{name}` is still training (job #{training[name]}), so it was read as a plain "
                "word; try again when it is done."
            )
        for name in sorted(set(options.expected) - used):
            notes.append(
                f"`{name}` was left out: this was made with your own embeddings, and that one "
                "is private to its owner."
            )
        return notes

    async def _training_names(self, user_id: int) -> dict[str, int]:
        """Folded name → job id of this member's waiting or running trainings."""
        jobs = await self.checks.jobs.list_for_user(user_id)
        return {
            fold_for_lookup(TrainRequest.from_params(job.params).name) or "": job.id
            for job in jobs
            if job.kind is JobKind.TRAIN
        }

    async def resolve_names(self, user_id: int, *texts: str) -> list[Embedding]:
        """The embeddings a prompt names; `<unknown>` is refused with a suggestion."""
        explicit: set[str] = set()
        bare: set[str] = set()
        for text in texts:
            e, b = embedding_names_in(text)
            explicit |= e
            bare |= b
        found = await self.embeddings.resolve(user_id, explicit | bare)
        for name in sorted(explicit):
            folded = fold_for_lookup(name)
            if folded is None or folded not in found:
                raise ServiceError(await self._unknown_name_sentence(user_id, name))
        unusable = [e.name for e in found.values() if not e.usable]
        if unusable:
            raise ServiceError(
                f"The embedding '{unusable[0]}' cannot be used: its file is missing."
            )
        return sorted(found.values(), key=lambda e: e.name_folded)

    async def _unknown_name_sentence(self, user_id: int, name: str) -> str:
        known = [e.name_folded for e in await self.embeddings.list_owned(user_id)]
        known += [e.name_folded for e in await self.embeddings.list_shared(limit=500)]
        close = difflib.get_close_matches(name.lower(), known, n=1, cutoff=0.6)
        hint = (
            f" Did you mean <{close[0]}>?"
            if close
            else " See `/embeddings list` and `/library` for the names you can use."
        )
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
        await self.checks.allowed(user_id)
        await self.checks.refuse_blocked(guild_id, options.name)
        checked = await checked_name(self.embeddings, user_id, options.name)
        await self.refuse_taken(user_id, checked.folded, options.share)
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

    async def refuse_taken(self, user_id: int, folded: str, share: bool) -> None:
        try:
            await self.embeddings.get_owned_by_name(user_id, folded)
        except NotFound:
            pass
        else:
            raise ServiceError(f"You already have an embedding called '{folded}'.")
        if share:
            try:
                await self.embeddings.get_shared_by_name(folded)
            except NotFound:
                return
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


def _mentions(text: str, name: str) -> bool:
    explicit, bare = embedding_names_in(text)
    return any(fold_for_lookup(word) == name for word in explicit | bare)


def _move_negative_embeddings(
    prompt: str, negative: str, used: Sequence[Embedding]
) -> tuple[str, str]:
    """A negative embedding written in the positive prompt belongs in the negative one: take
    it out of the prompt (as `<name>`, a bare word or a weighted `(name:1.2)`) and add it
    there, once."""
    for embedding in used:
        if embedding.kind is not EmbeddingKind.NEGATIVE:
            continue
        name = re.escape(embedding.name_folded)
        pattern = re.compile(
            rf"\(\s*<?{name}>?\s*(?::[0-9.]+)?\s*\)|<{name}>|(?<![A-Za-z0-9_-]){name}(?![A-Za-z0-9_-])",
            re.IGNORECASE,
        )
        if pattern.search(prompt) is None:
            continue
        prompt = re.sub(r"\s*,(\s*,)+", ",", pattern.sub("", prompt)).strip(" ,")
        if not _mentions(negative, embedding.name_folded):
            negative = f"{negative}, {embedding.name_folded}" if negative else embedding.name_folded
    return prompt, negative


async def _queued(job: Job, scheduler: Scheduler, hub: JobHub) -> Submitted:
    scheduler.wake()
    hub.publish(JobUpdate(job.id, job.user_id, "queued"))
    position = await scheduler.jobs.queue_position(job.id)
    eta = await scheduler.estimate_start(job)
    return Submitted(job, position, eta)
