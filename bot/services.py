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
import hashlib
import logging
import math
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from bot.config import Settings
from bot.hub import JobHub, JobUpdate
from bot.scheduler import Scheduler, Standing
from engine.embedding_metadata import FAMILY_LABELS
from engine.jobs import (
    DEFAULT_GUIDANCE,
    DEFAULT_SAMPLER,
    DEFAULT_STRENGTH,
    HIRES_SCALE,
    MAX_SEED,
    MIN_SIDE,
    EmbeddingPayload,
    GenerateRequest,
    RequestError,
    TrainKind,
    TrainRequest,
)
from engine.photos import PhotoError, normalise_photos
from engine.png import png_size
from engine.vocabulary import is_single_token, reads_as_words
from storage.embeddings import SHARE_FROM_A_SERVER, EmbeddingRepository, too_many_embeddings
from storage.errors import EmbeddingNotFound, NotFound
from storage.guilds import GuildSettingsRepository
from storage.images import ImageRepository
from storage.jobs import JobRepository, over_quota
from storage.models import Delivery, Embedding, EmbeddingKind, Job, JobKind, JobState
from storage.names import EmbeddingName, NameRules, fold_for_lookup, parse_name
from storage.preferences import MemberDefaults, PreferenceRepository
from storage.users import UserRepository

GUILD_MAX_QUEUED = "max_queued_per_user"  # the key of `GuildSettings.limits` managers may set

_EXPLICIT_NAME = re.compile(r"<([^<>\s]{1,64})>")
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{1,31}")


NAME_RULES = NameRules(is_reserved_word=is_single_token, reads_as_words=reads_as_words)
BANNED = "You are not allowed to use Lexicon here; ask a manager of this server why."

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
    """What a member asked `/imagine` for; None means "the default" (the member's own from
    `/settings`, else the operator's)."""

    prompt: str
    negative: str | None = None
    count: int | None = None
    steps: int | None = None
    guidance: float | None = None
    seed: int | None = None
    size: str | None = None  # "WIDTHxHEIGHT", one of LEXICON_ALLOWED_SIZES
    sampler: str | None = None
    image: bytes | None = None  # a starting image as uploaded (image-to-image)
    image_name: str = ""  # its filename, for the refusal sentences
    strength: float | None = None  # image-to-image strength (default DEFAULT_STRENGTH)
    # The embeddings the request this one repeats used (a button): any the new member cannot
    # use is named in a note instead of being dropped silently.
    expected: tuple[str, ...] = ()
    model: str | None = None  # a configured model's name; None: the server's default

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
            model=request.model or None,
        )


@dataclass(frozen=True)
class TrainOptions:
    """What a member asked `/train` for; `photos` are (filename, bytes) in the order attached."""

    name: str
    photos: Sequence[tuple[str, bytes]]
    kind: TrainKind = "object"
    init_word: str | None = None
    vectors: int | None = None
    share: bool | None = None  # None: the member's `/settings` choice, else not shared
    negative: bool = False
    steps: int | None = None
    model: str | None = None  # a configured model's name; None: the server's default


@dataclass(frozen=True)
class Submitted:
    job: Job
    standing: Standing  # its place in line and expected start, as it was queued

    @property
    def notes(self) -> tuple[str, ...]:
        """One-line notes on what Lexicon changed or could not use in the request."""
        return job_notes(self.job)


NOTES_KEY = "notes"  # in a generate job's params: the notes its messages show


def job_notes(job: Job) -> tuple[str, ...]:
    return tuple(str(note) for note in job.params.get(NOTES_KEY, ()))


_MADE_UP_ENDINGS = ("zo", "ix", "ora", "ek", "umi", "-1", "-2", "-3")


async def checked_name(
    embeddings: EmbeddingRepository, user_id: int, raw: str, guild_id: int | None = None
) -> EmbeddingName:
    """A valid new name, or a refusal; a word the model already knows is refused with a
    made-up name that is free for this member (not theirs, not shared, not a known word) and
    could be shared (it does not read as ordinary words)."""
    name = parse_name(raw)
    if not is_single_token(name.folded):
        return name
    for ending in _MADE_UP_ENDINGS:
        candidate = f"{name.folded}{ending}"[:32]
        if (
            is_single_token(candidate)
            or reads_as_words(candidate)
            or await _taken(embeddings, user_id, candidate, guild_id)
        ):
            continue
        raise ServiceError(
            f"'{name.folded}' is already a word the model knows, so it cannot be a new one; "
            f"try '{candidate}' instead."
        )
    raise ServiceError(
        f"'{name.folded}' is already a word the model knows; pick a made-up word instead."
    )


async def _taken(
    embeddings: EmbeddingRepository, user_id: int, folded: str, guild_id: int | None
) -> bool:
    if await embeddings.resolve(user_id, [folded], guild_id):
        return True
    try:
        await embeddings.get_shared_by_name(folded, guild_id)
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


@dataclass(eq=False)
class _Checks:
    """Checks shared by every service that queues work."""

    settings: Settings
    users: UserRepository
    guilds: GuildSettingsRepository
    jobs: JobRepository
    preferences: PreferenceRepository
    embeddings: EmbeddingRepository

    @functools.cached_property
    def decodes(self) -> asyncio.Semaphore:
        """Photo decodes at once (training photos and starting images alike): each holds at
        most `max_photo_decode_bytes`, and the rest of the default thread pool stays free."""
        return asyncio.Semaphore(self.settings.photo_decodes)

    async def normalise(self, photos: Sequence[tuple[str, bytes]], **counts: int) -> list[bytes]:
        """Decode every photo now, so a bad one is refused before anything is stored; what to
        store is each photo's normalised PNG, so the worker never decodes the original."""
        settings = self.settings
        try:
            async with self.decodes:
                return await asyncio.to_thread(
                    functools.partial(
                        normalise_photos,
                        [data for _, data in photos],
                        filenames=[filename for filename, _ in photos],
                        max_bytes=settings.max_photo_bytes,
                        max_pixels=settings.max_photo_pixels,
                        max_decode_bytes=settings.max_photo_decode_bytes,
                        **counts,
                    )
                )
        except PhotoError as error:
            raise ServiceError(str(error)) from None

    async def refuse_over_quota(self, user_id: int, guild_id: int | None) -> int:
        """The user's limit of active jobs, refused now when it is reached (before a costly
        decode; `enqueue` checks again atomically)."""
        max_active = await self.max_active(guild_id)
        active = await self.jobs.active_count(user_id)
        if active >= max_active:
            raise over_quota(active)
        return max_active

    async def refuse_too_many_embeddings(self, user_id: int) -> int:
        """The most embeddings one member may keep, refused now when the member's own and their
        trainings under way reach it (a finished training is always stored, so nothing trained
        is lost to the limit; an import's `create` checks its own count again atomically)."""
        limit = self.settings.max_embeddings_per_user
        owned = await self.embeddings.count_owned(user_id)
        training = await self.jobs.active_count(user_id, JobKind.TRAIN)
        if owned + training >= limit:
            raise too_many_embeddings(owned, limit, training)
        return limit

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

    async def model_for(self, guild_id: int | None, requested: str | None) -> str:
        """The configured model a job runs on: the one asked for, else the server's default
        (while it is still configured), else the deployment's."""
        names = [model.name for model in self.settings.models]
        if requested is not None:
            if requested not in names:
                raise ServiceError(
                    f"There is no model called **{requested}** here; choose one of "
                    f"{', '.join(f'**{name}**' for name in names)}."
                )
            return requested
        if guild_id is not None:
            chosen = (await self.guilds.get(guild_id)).default_model
            if chosen in names:
                return chosen
        return self.settings.default_model

    async def max_active(self, guild_id: int | None = None) -> int:
        """The server's limit, else the operator's default."""
        if guild_id is not None:
            limit = (await self.guilds.get(guild_id)).limits.get(GUILD_MAX_QUEUED)
            if limit is not None:
                return limit
        return self.settings.max_queued_per_user


@dataclass(eq=False)
class _QueueingService:
    """What both job-queueing services hold."""

    settings: Settings
    checks: _Checks
    embeddings: EmbeddingRepository
    scheduler: Scheduler
    hub: JobHub

    async def model_names(self, guild_id: int | None) -> list[str]:
        """The configured models' names, the server's default first."""
        default = await self.checks.model_for(guild_id, None)
        return [default, *(m.name for m in self.settings.models if m.name != default)]

    async def family_for(self, guild_id: int | None, requested: str | None) -> str | None:
        """The family of the model a request here would run on (None: a name that is not
        configured, or a model no worker has reported yet)."""
        try:
            name = await self.checks.model_for(guild_id, requested)
        except ServiceError:
            return None
        served = self.scheduler.models.get(name)
        return served.family if served is not None else None


@dataclass(eq=False)
class ImagineService(_QueueingService):
    images: ImageRepository  # the results that Vary and Upscale start from

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
        return await self._enqueue(user_id, options, request, guild_id, delivery)

    async def vary(
        self,
        user_id: int,
        job_id: int,
        idx: int,
        *,
        strong: bool,
        guild_id: int | None = None,
        delivery: Delivery | None = None,
    ) -> Submitted:
        """Vary (subtle/strong): image-to-image from image `idx` of `job_id` at the operator's
        strength, a new seed, the same prompt; as `user_id` (their embeddings, their queue)."""
        await self.checks.allowed(user_id, guild_id)
        source, png = await self._source(job_id, idx)
        strength = self.settings.vary_strong if strong else self.settings.vary_subtle
        options = dataclasses.replace(
            ImagineOptions.again(source), count=source.count, strength=strength
        )
        request = await self._build(user_id, options, guild_id, png_size(png), png)
        return await self._enqueue(user_id, options, request, guild_id, delivery)

    async def upscale(
        self,
        user_id: int,
        job_id: int,
        idx: int,
        *,
        guild_id: int | None = None,
        delivery: Delivery | None = None,
    ) -> Submitted:
        """Upscale ×2 (A1111's Hires. fix, Lanczos upscaler): image `idx` of `job_id` enlarged,
        then denoised again with its own seed and steps at the operator's strength."""
        await self.checks.allowed(user_id, guild_id)
        source, png = await self._source(job_id, idx)
        if source.hires_steps:
            raise ServiceError("This image is already upscaled; upscale the original instead.")
        width, height = png_size(png)
        limit = self.settings.max_upscale_side
        if max(width, height) * HIRES_SCALE > limit:
            raise ServiceError(
                f"Upscaling this {width}x{height} image would make it "
                f"{width * HIRES_SCALE}x{height * HIRES_SCALE}, over this server's limit of "
                f"{limit} pixels on a side; upscale a smaller image."
            )
        options = dataclasses.replace(
            ImagineOptions.again(source),
            count=1,
            seed=(await self.images.get(job_id, idx)).seed,
            strength=self.settings.upscale_strength,
        )
        hires_steps = min(source.steps, self.settings.max_steps)
        request = await self._build(
            user_id, options, guild_id, (width, height), png, hires_steps=hires_steps
        )
        return await self._enqueue(user_id, options, request, guild_id, delivery)

    async def _source(self, job_id: int, idx: int) -> tuple[GenerateRequest, bytes]:
        """The request behind a finished image, and the image's PNG."""
        try:
            job = await self.checks.jobs.get(job_id)
            if job.kind is not JobKind.GENERATE or job.state is not JobState.SUCCEEDED:
                raise NotFound(f"Job #{job_id} has no finished images.")
            png = await self.images.read_png(await self.images.get(job_id, idx))
        except NotFound as error:
            raise ServiceError(f"{error} Pick an image that is still shown.") from None
        except OSError:
            raise ServiceError(
                f"Image {idx + 1} of job #{job_id} was deleted; pick another image."
            ) from None
        request = GenerateRequest.from_params(job.params)
        return dataclasses.replace(request, model=self.scheduler.model_of(job)), png

    async def _enqueue(
        self,
        user_id: int,
        options: ImagineOptions,
        request: GenerateRequest,
        guild_id: int | None,
        delivery: Delivery | None,
    ) -> Submitted:
        """Queue a checked request with its notes; a starting image is stored with the job like
        a photo."""
        notes = await self.notes(user_id, options, request, guild_id=guild_id)
        try:
            job = await self.checks.jobs.enqueue(
                user_id,
                JobKind.GENERATE,
                {**request.to_params(), NOTES_KEY: notes},
                guild_id=guild_id,
                batch_key=request.batch_key,
                delivery=delivery,
                photos=[request.init_image] if request.is_img2img else [],
                max_active=await self.checks.max_active(guild_id),
                model=request.model,
            )
        except OSError as error:
            raise disk_failure("starting image", error) from None
        return await _queued(job, self.scheduler, self.hub)

    async def build_request(
        self, user_id: int, options: ImagineOptions, *, guild_id: int | None
    ) -> GenerateRequest:
        """Fill in the defaults, check every limit, take a starting image in like a training
        photo, resolve the embeddings the prompt names."""
        settings = self.settings
        mine = await self.checks.preferences.get(user_id)
        start: bytes | None = None
        if options.image is not None:
            await self.checks.refuse_over_quota(user_id, guild_id)  # before the decode
            (start,) = await self.checks.normalise(
                [(options.image_name, options.image)], min_count=1, max_count=1, min_side=MIN_SIDE
            )
        size = options.size or (mine.size if mine.size in settings.allowed_sizes else None)
        if size is None:
            size = settings.allowed_sizes[0] if start is None else self._nearest(png_size(start))
        if size not in settings.allowed_sizes:
            raise ServiceError(
                f"size {size} is not offered here; choose one of "
                f"{', '.join(settings.allowed_sizes)}."
            )
        width, height = (int(side) for side in size.split("x"))
        return await self._build(user_id, options, guild_id, (width, height), start, mine=mine)

    def _nearest(self, image_size: tuple[int, int]) -> str:
        """The offered size whose shape is closest to a starting image's."""
        shape = math.log(image_size[0] / image_size[1])
        return min(
            self.settings.allowed_sizes,
            key=lambda size: abs(math.log(_ratio(size)) - shape),
        )

    async def _build(
        self,
        user_id: int,
        options: ImagineOptions,
        guild_id: int | None,
        size: tuple[int, int],
        start: bytes | None,
        *,
        hires_steps: int = 0,
        mine: MemberDefaults | None = None,
    ) -> GenerateRequest:
        """The checked request at `size` (from `start`, a normalised or stored PNG, if given),
        omitted options taken from the member's defaults, then the operator's."""
        settings = self.settings
        if mine is None:
            mine = await self.checks.preferences.get(user_id)
        steps = _first(options.steps, mine.steps, settings.default_steps)
        strength = options.strength
        if start is not None and strength is None:
            strength = DEFAULT_STRENGTH
        request = GenerateRequest(
            prompt=options.prompt.strip(),
            negative=_first(options.negative, mine.negative, "").strip(),
            count=_first(options.count, mine.count, 1),
            steps=steps if options.steps is not None else min(steps, settings.max_steps),
            guidance=_first(options.guidance, mine.guidance, DEFAULT_GUIDANCE),
            seed=secrets.randbelow(MAX_SEED + 1) if options.seed is None else options.seed,
            width=size[0],
            height=size[1],
            sampler=options.sampler or mine.sampler or DEFAULT_SAMPLER,
            init_sha256="" if start is None else hashlib.sha256(start).hexdigest(),
            init_image=start or b"",
            strength=strength or 0.0,
            hires_steps=hires_steps,
            model=await self.checks.model_for(guild_id, options.model),
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
        self.refuse_other_family(request.model, used)
        prompt, negative = _move_negative_embeddings(request.prompt, negative, used)
        return dataclasses.replace(
            request,
            prompt=prompt,
            negative=negative,
            embeddings=tuple(
                EmbeddingPayload(e.name_folded, b"", e.sha256, e.id, e.source_sha256 or "")
                for e in used
            ),
        )

    def refuse_other_family(self, model: str, used: Sequence[Embedding]) -> None:
        """Refuse an embedding trained for another family than `model`'s, naming a configured
        model that fits. A model no worker has reported yet is left to the worker's check."""
        served = self.scheduler.models.get(model)
        if served is None:
            return
        for embedding in used:
            if embedding.family.value == served.family:
                continue
            fits = [
                info.name
                for info in self.scheduler.models.values()
                if info.family == embedding.family.value
            ]
            hint = (
                f"try model **{fits[0]}**"
                if fits
                else "no model here fits it, so leave it out of the prompt"
            )
            raise ServiceError(
                f"**{embedding.name_folded}** was trained for {_family(embedding.family.value)}, "
                f"but **{model}** is {_family(served.family)}; {hint}."
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
            if default_negative and default_negative not in (options.negative or ""):
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
                raise await self._unknown_name(user_id, guild_id, name)
        unusable = [e.name for e in found.values() if not e.usable]
        if unusable:
            raise ServiceError(
                f"The embedding '{unusable[0]}' cannot be used: its file is missing."
            )
        return sorted(found.values(), key=lambda e: e.name_folded)

    async def _unknown_name(
        self, user_id: int, guild_id: int | None, name: str
    ) -> ServiceError | EmbeddingNotFound:
        """The refusal of `<name>`: with the closest name there is, or else as a name not
        found in either place (Discord then points to both lists; the CLI names none)."""
        known = [e.name_folded for e in await self.embeddings.list_owned(user_id)]
        shared = await self.embeddings.list_shared(limit=500, guild_id=guild_id)
        known += [e.name_folded for e in shared]
        close = difflib.get_close_matches(name.lower(), known, n=1, cutoff=0.6)
        sentence = f"You have no embedding called <{name}> and none is shared under that name"
        if close:
            return ServiceError(f"{sentence}; did you mean <{close[0]}>?")
        return EmbeddingNotFound(f"{sentence}.", searched="either")


class TrainService(_QueueingService):
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
        checked = await checked_name(self.embeddings, user_id, options.name, guild_id)
        share = options.share
        if share is None:  # a personal default shares only where there is a server library
            defaults = await self.checks.preferences.get(user_id)
            share = guild_id is not None and bool(defaults.share)
        if share:
            if guild_id is None:
                raise ServiceError(SHARE_FROM_A_SERVER)
            NAME_RULES.check_shareable(checked)
        await self.refuse_taken(user_id, checked.folded, share, guild_id)
        await self.checks.refuse_too_many_embeddings(user_id)
        request = TrainRequest(
            name=checked.display,
            kind=options.kind,
            init_word=options.init_word,
            n_vectors=1 if options.vectors is None else options.vectors,
            steps=self.settings.train_steps if options.steps is None else options.steps,
            seed=secrets.randbelow(2**31),
            share=share,
            negative=options.negative,
            model=await self.checks.model_for(guild_id, options.model),
        )
        try:
            request.check()
        except RequestError as error:
            raise ServiceError(str(error)) from None
        max_active = await self.checks.refuse_over_quota(user_id, guild_id)
        stored = await self.checks.normalise(options.photos)
        try:
            job = await self.checks.jobs.enqueue(
                user_id,
                JobKind.TRAIN,
                request.to_params(),
                guild_id=guild_id,
                delivery=delivery,
                photos=stored,
                max_active=max_active,
                model=request.model,
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


_T = TypeVar("_T")


def _first(*values: _T | None) -> _T:
    """The first value that is not None (an option, then a personal default, then ours)."""
    return next(value for value in values if value is not None)


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
    return Submitted(job, await scheduler.standing(job))


def _family(family: str) -> str:
    return FAMILY_LABELS.get(family, family)


def _ratio(size: str) -> float:
    width, height = size.split("x")
    return int(width) / int(height)
