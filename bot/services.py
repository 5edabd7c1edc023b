"""Services: what a user can ask for, checked and stored, independent of Discord.

The cogs and the CLI call these; they validate everything (one sentence per refusal, nothing
stored for a refused request), resolve embedding names in a prompt to the embeddings this user
may use (their own first, then shared ones), queue the job and return at once with its place in
the queue. Nothing here waits for the GPU.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bot.config import Settings
from bot.hub import JobHub, JobUpdate
from bot.scheduler import Scheduler
from engine.jobs import DEFAULT_SCHEDULER, SCHEDULERS
from engine.photos import PhotoError, load_photos
from engine.vocabulary import is_single_token
from storage.embeddings import EmbeddingRepository
from storage.errors import NotFound
from storage.guilds import GuildSettingsRepository
from storage.jobs import JobRepository
from storage.models import Delivery, Embedding, Job, JobKind
from storage.names import NameRules, fold_for_lookup
from storage.users import UserRepository

MAX_PROMPT_CHARS = 1500
MAX_SEED = 2**32 - 1
TRAIN_KINDS = ("object", "style", "face")
GUILD_MAX_QUEUED = "max_queued_per_user"  # the key of `GuildSettings.limits` managers may set

_EXPLICIT_NAME = re.compile(r"<([^<>\s]{1,64})>")
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{1,31}")


NAME_RULES = NameRules(is_reserved_word=is_single_token)

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
        prompt: str,
        *,
        negative: str = "",
        count: int = 1,
        steps: int | None = None,
        guidance: float = 7.5,
        seed: int | None = None,
        size: str | None = None,
        scheduler: str = DEFAULT_SCHEDULER,
        guild_id: int | None = None,
        delivery: Delivery | None = None,
    ) -> Submitted:
        await self.checks.allowed(user_id)
        params = await self.build_params(
            user_id,
            prompt,
            negative=negative,
            count=count,
            steps=steps,
            guidance=guidance,
            seed=seed,
            size=size,
            scheduler=scheduler,
            guild_id=guild_id,
        )
        batch_key = f"{params['width']}x{params['height']}:{params['steps']}:{params['scheduler']}"
        job = await self.checks.jobs.enqueue(
            user_id,
            JobKind.GENERATE,
            params,
            guild_id=guild_id,
            batch_key=batch_key,
            delivery=delivery,
            max_active=await self.checks.max_active(user_id, guild_id),
        )
        return await _queued(job, self.scheduler, self.hub)

    async def build_params(
        self,
        user_id: int,
        prompt: str,
        *,
        negative: str,
        count: int,
        steps: int | None,
        guidance: float,
        seed: int | None,
        size: str | None,
        scheduler: str,
        guild_id: int | None,
    ) -> dict[str, Any]:
        """Validate a request and turn it into the job's stored parameters."""
        settings = self.settings
        prompt, negative = prompt.strip(), negative.strip()
        if not prompt:
            raise ServiceError("The prompt is empty; describe the image you want.")
        for label, text in (("prompt", prompt), ("negative prompt", negative)):
            if len(text) > MAX_PROMPT_CHARS:
                raise ServiceError(
                    f"The {label} is {len(text)} characters long; the most is {MAX_PROMPT_CHARS}."
                )
            if any(ord(c) < 32 and c not in "\n\t" for c in text):
                raise ServiceError(f"The {label} contains control characters; remove them.")
        if not 1 <= count <= 4:
            raise ServiceError(f"count must be between 1 and 4; you asked for {count}.")
        steps = settings.default_steps if steps is None else steps
        if not 1 <= steps <= settings.max_steps:
            raise ServiceError(f"steps must be between 1 and {settings.max_steps}; got {steps}.")
        if not 0.0 <= guidance <= 30.0:
            raise ServiceError(f"guidance must be between 0 and 30; got {guidance:g}.")
        if seed is None:
            seed = secrets.randbelow(MAX_SEED + 1)
        if not 0 <= seed <= MAX_SEED:
            raise ServiceError(f"seed must be between 0 and {MAX_SEED}; got {seed}.")
        size = size or settings.allowed_sizes[0]
        if size not in settings.allowed_sizes:
            raise ServiceError(
                f"size {size} is not offered here; choose one of "
                f"{', '.join(settings.allowed_sizes)}."
            )
        if scheduler not in SCHEDULERS:
            raise ServiceError(
                f"Unknown sampler '{scheduler}'; choose one of {', '.join(SCHEDULERS)}."
            )
        await self.checks.refuse_blocked(guild_id, prompt, negative)
        if guild_id is not None:
            default_negative = (await self.checks.guilds.get(guild_id)).default_negative_prompt
            if default_negative and default_negative not in negative:
                negative = f"{negative}, {default_negative}" if negative else default_negative
        used = await self.resolve_names(user_id, prompt, negative)
        width, height = (int(side) for side in size.split("x"))
        return {
            "prompt": prompt,
            "negative": negative,
            "count": count,
            "steps": steps,
            "guidance": guidance,
            "seed": seed,
            "width": width,
            "height": height,
            "scheduler": scheduler,
            "embeddings": [
                {"id": e.id, "name": e.name_folded, "sha256": e.sha256}
                | ({"source_sha256": e.source_sha256} if e.source_sha256 else {})
                for e in used
            ],
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
        hint = f" Did you mean <{close[0]}>?" if close else ""
        return f"You have no embedding called <{name}> and none is shared under that name.{hint}"


class TrainService(_QueueingService):
    async def submit(
        self,
        user_id: int,
        name: str,
        photos: Sequence[tuple[str, bytes]],
        *,
        kind: str = "object",
        init_word: str | None = None,
        vectors: int | None = None,
        share: bool = False,
        negative: bool = False,
        steps: int | None = None,
        guild_id: int | None = None,
        delivery: Delivery | None = None,
    ) -> Submitted:
        """Queue training; `photos` are (filename, bytes) pairs in the order attached."""
        await self.checks.allowed(user_id)
        await self.checks.refuse_blocked(guild_id, name)
        checked = NAME_RULES.check(name)
        await self.refuse_taken(user_id, checked.folded, share)
        if kind not in TRAIN_KINDS:
            raise ServiceError(f"kind must be one of {', '.join(TRAIN_KINDS)}; got '{kind}'.")
        n_vectors = 1 if vectors is None else vectors
        if not 1 <= n_vectors <= 8:
            raise ServiceError(f"vectors must be between 1 and 8; got {n_vectors}.")
        if init_word is not None and not re.fullmatch(r"[A-Za-z][A-Za-z ]{0,31}", init_word):
            raise ServiceError("init_word must be one or two plain English words, like 'dog'.")
        steps = self.settings.train_steps if steps is None else steps
        if not 1 <= steps <= 20_000:
            raise ServiceError(f"steps must be between 1 and 20000; got {steps}.")
        await self.check_photos(photos)
        params = {
            "name": checked.display,
            "kind": kind,
            "init_word": init_word,
            "n_vectors": n_vectors,
            "steps": steps,
            "seed": secrets.randbelow(2**31),
            "share": share,
            "negative": negative,
        }
        try:
            job = await self.checks.jobs.enqueue(
                user_id,
                JobKind.TRAIN,
                params,
                guild_id=guild_id,
                delivery=delivery,
                photos=[data for _, data in photos],
                max_active=await self.checks.max_active(user_id, guild_id),
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

    async def check_photos(self, photos: Sequence[tuple[str, bytes]]) -> None:
        """Decode every photo now, so a bad one is refused before anything is stored."""
        settings = self.settings
        try:
            await asyncio.to_thread(
                load_photos,
                [data for _, data in photos],
                filenames=[filename for filename, _ in photos],
                max_bytes=settings.max_photo_bytes,
                max_pixels=settings.max_photo_pixels,
            )
        except PhotoError as error:
            raise ServiceError(str(error)) from None


async def _queued(job: Job, scheduler: Scheduler, hub: JobHub) -> Submitted:
    scheduler.wake()
    hub.publish(JobUpdate(job.id, job.user_id, "queued"))
    position = await scheduler.jobs.queue_position(job.id)
    eta = await scheduler.estimate_start(job)
    return Submitted(job, position, eta)
