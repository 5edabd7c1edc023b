"""The embedding library: a user's own words and the shared ones — list, import, export, share.

Authorization lives in storage (only owners change their embeddings; a server's managers may
remove what is shared there); this service adds what needs more than the database: the ban and
the server's blocked words on everything that acts or names (reading stays open), normalising
uploaded files and writing A1111 `.pt` exports (in a throw-away child process, see
`engine.convert`, which caps its own memory and CPU time; here each child gets a wall-clock limit
and at most `MAX_CONVERT_CHILDREN` run at once), size limits, and family checks against the model
the workers have loaded. Shared libraries are per server: a `guild_id` of None (a direct message,
the CLI) sees the operator's library only. An import keeps the sha256 of the member's own file,
which is what A1111 writes as the `TI hashes` of an image, and the checkpoint the file says it
was trained on (cleaned by the child, shown as the file's claim); an export to anyone but the
owner leaves out the owner's private training metadata. An import has no training previews, so one
small render is queued as the importer (no Discord message: nothing is posted) and its image
becomes the embedding's thumbnail; a refused render (a full queue) leaves the import without one.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import logging
import sys
from dataclasses import dataclass
from typing import Any

from bot.config import Settings
from bot.scheduler import Scheduler
from bot.services import (
    NAME_RULES,
    ImagineOptions,
    ImagineService,
    ServiceError,
    _Checks,
    checked_name,
    disk_failure,
)
from engine.embedding_metadata import without_private_metadata
from storage.embeddings import shared_library
from storage.errors import StorageError
from storage.facade import Storage
from storage.models import Actor, Embedding, EmbeddingKind, FileKind

CONVERT_TIMEOUT_SECONDS = 60.0
MAX_CONVERT_CHILDREN = 2  # each may use engine.convert.MEMORY_LIMIT_BYTES
EXPORT_SUFFIXES = (".safetensors", ".pt", ".bin")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LibraryPage:
    items: list[Embedding]
    total: int
    page: int
    pages: int


class LibraryService:
    page_size = 4  # a gallery page: one embed, thumbnail and row of buttons per embedding

    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        scheduler: Scheduler,
        checks: _Checks,
        imagine: ImagineService,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.scheduler = scheduler
        self._children = asyncio.Semaphore(MAX_CONVERT_CHILDREN)
        self.checks = checks
        self.imagine = imagine  # renders an import's thumbnail

    # --- reading -----------------------------------------------------------------------------

    async def list_owned(self, user_id: int, family: str | None = None) -> list[Embedding]:
        """The user's embeddings; with `family`, only those made for that family of models."""
        return await self.storage.embeddings.list_owned(user_id, family)

    async def family_filter(self, guild_id: int | None, model: str) -> str:
        """The family of configured model `model`, for a list that shows only the words that fit
        it; refused when it is not configured, or no worker has reported it yet."""
        name = await self.checks.model_for(guild_id, model)
        served = self.scheduler.models.get(name)
        if served is None:
            raise _not_reported(
                name,
                "which embeddings fit it is not known; try again in a minute, or leave out "
                "`model:`",
            )
        return served.family

    async def trained_on(self, embeddings: list[Embedding]) -> dict[int, str]:
        """Embedding id → the configured model it was trained on, for those trained here (an
        import has only what its file claims: `Embedding.named_checkpoint`)."""
        found = await self.storage.embeddings.trained_on(e.id for e in embeddings)
        return {key: model or self.settings.default_model for key, model in found.items()}

    async def info(self, viewer_id: int, name: str, guild_id: int | None = None) -> Embedding:
        return await self.storage.embeddings.get_by_name(viewer_id, name, guild_id)

    async def browse(
        self,
        query: str = "",
        page: int = 1,
        guild_id: int | None = None,
        order: str = "popular",
        family: str | None = None,
    ) -> LibraryPage:
        """One page of the library `guild_id` sees (its own and the operator's); with `family`,
        only the words made for that family of models."""
        embeddings = self.storage.embeddings
        total = await embeddings.count_shared(query, guild_id=guild_id, family=family)
        pages = max(1, -(-total // self.page_size))
        page = min(max(1, page), pages)
        items = await embeddings.list_shared(
            query,
            limit=self.page_size,
            offset=(page - 1) * self.page_size,
            guild_id=guild_id,
            order=order,
            family=family,
        )
        return LibraryPage(items, total, page, pages)

    async def usable(
        self,
        viewer_id: int,
        prefix: str = "",
        limit: int = 25,
        guild_id: int | None = None,
        family: str | None = None,
    ) -> list[Embedding]:
        """The embeddings autocomplete offers, one per name: the viewer's own first, then the
        library `guild_id` sees; with `family`, only the words made for that family of models."""
        prefix = prefix.lower()
        found: dict[str, Embedding] = {}
        owned = await self.storage.embeddings.list_owned(viewer_id, family)
        shared = await self.storage.embeddings.list_shared(
            prefix, limit=limit, guild_id=guild_id, family=family
        )
        for embedding in [*owned, *shared]:
            folded = embedding.name_folded
            if folded not in found and folded.startswith(prefix):
                found[folded] = embedding
        return list(found.values())[:limit]

    async def export(
        self, actor: Actor, name: str, suffix: str = ".safetensors"
    ) -> tuple[str, bytes]:
        """(file name, bytes) of an embedding: Lexicon's safetensors, or A1111's `.pt` layout
        for `.pt`/`.bin`. Only the owner gets the training metadata (photo hashes, seed)."""
        if suffix not in EXPORT_SUFFIXES:
            raise ServiceError(
                f"Embeddings can be exported as {', '.join(EXPORT_SUFFIXES)}, not "
                f"{suffix or 'a file without a suffix'}; pick one of those."
            )
        await self.checks.allowed(actor.user_id, actor.guild_id)
        embedding = await self.storage.embeddings.get_by_name(actor.user_id, name, actor.guild_id)
        if not embedding.usable:
            raise ServiceError(f"The file of '{embedding.name}' is missing; it cannot be exported.")
        data = await asyncio.to_thread(
            self.storage.files.read, FileKind.EMBEDDINGS, embedding.sha256
        )
        if embedding.owner_id != actor.user_id:
            data = without_private_metadata(data)
        if suffix != ".safetensors":
            answer = await self._child(data, "a1111", embedding.name_folded)
            if not answer["ok"]:
                raise ServiceError(answer["error"])
            data = base64.b64decode(answer["data"])
        return f"{embedding.name_folded}{suffix}", data

    # --- changing (authorization is checked by storage) ---------------------------------------

    async def _acting(self, actor: Actor, *names: str) -> None:
        """Refuse a banned actor, and a name the actor's server blocks."""
        await self.checks.allowed(actor.user_id, actor.guild_id)
        await self.checks.refuse_blocked(actor.guild_id, *names)

    async def _owned_or_visible(self, actor: Actor, name: str) -> Embedding:
        """The actor's own embedding of that name; for a server's manager or the operator, else
        the one shared there (storage decides whether they may change it)."""
        if actor.is_manager or actor.is_owner:
            return await self.storage.embeddings.get_by_name(actor.user_id, name, actor.guild_id)
        return await self.storage.embeddings.get_owned_by_name(actor.user_id, name)

    async def share(self, actor: Actor, name: str) -> Embedding:
        await self._acting(actor, name)
        embedding = await self._owned_or_visible(actor, name)
        return await self.storage.embeddings.share(actor, embedding.id)

    async def share_by_id(self, actor: Actor, embedding_id: int) -> Embedding:
        """Share from a card's button: the same checks as `share`, by id."""
        embedding = await self.storage.embeddings.get(embedding_id, actor.user_id)
        await self._acting(actor, embedding.name)
        return await self.storage.embeddings.share(actor, embedding.id)

    async def unshare(self, actor: Actor, name: str) -> Embedding:
        await self._acting(actor)
        embedding = await self._owned_or_visible(actor, name)
        return await self.storage.embeddings.unshare(actor, embedding.id)

    async def describe(self, actor: Actor, name: str, description: str) -> Embedding:
        embedding = await self.storage.embeddings.get_owned_by_name(actor.user_id, name)
        return await self.storage.embeddings.describe(actor, embedding.id, description.strip())

    async def rename(self, actor: Actor, name: str, new_name: str) -> Embedding:
        await self._acting(actor, new_name)
        embedding = await self._owned_or_visible(actor, name)
        return await self.storage.embeddings.rename(actor, embedding.id, new_name)

    async def deletable(self, actor: Actor, name: str) -> Embedding:
        """The embedding `delete` would remove, or the refusal it would give (nothing changes)."""
        await self._acting(actor)
        return await self._owned_or_visible(actor, name)

    async def delete(self, actor: Actor, name: str) -> Embedding:
        embedding = await self.deletable(actor, name)
        return await self.storage.embeddings.delete(actor, embedding.id)

    async def delete_by_id(self, actor: Actor, embedding_id: int) -> Embedding:
        """Delete from a confirmation button: the same checks as `delete`, by id."""
        await self._acting(actor)
        return await self.storage.embeddings.delete(actor, embedding_id)

    async def import_file(
        self,
        actor: Actor,
        filename: str,
        data: bytes,
        name: str,
        *,
        negative: bool = False,
        share: bool = False,
        worker_wait: float = 0.0,
    ) -> Embedding:
        """Validate, normalise and store an uploaded embedding file, and queue its thumbnail
        (`thumbnail_job_id` is set when one was queued). The file is checked against the
        family of the server's model, which a worker reports: up to `worker_wait` seconds are
        spent waiting for that report (the CLI starts its own worker; a member is answered at
        once, as `/library model:` answers)."""
        await self._acting(actor, name)
        limit = self.settings.max_embedding_bytes
        if len(data) > limit:
            raise ServiceError(
                f"{_shown(filename)} is {len(data) / 1024:.0f} KiB; embedding files may be at "
                f"most {limit / 1024:.0f} KiB."
            )
        checked = await checked_name(self.storage.embeddings, actor.user_id, name, actor.guild_id)
        library = shared_library(actor) if share else None
        if share:
            NAME_RULES.check_shareable(checked)
        max_owned = None  # the operator's imports are not counted
        if not actor.acts_everywhere:
            max_owned = await self.checks.refuse_too_many_embeddings(actor.user_id)
        model = await self.checks.model_for(actor.guild_id, None)
        family = await self.model_family(model, worker_wait)
        kind = "negative" if negative else "positive"
        answer = await self._child(
            data, "import", filename[:200] or "upload", checked.display, kind, family
        )
        if not answer["ok"]:
            raise ServiceError(answer["error"])
        try:
            embedding = await self.storage.embeddings.create(
                actor.user_id,
                checked.display,
                base64.b64decode(answer["data"]),
                n_vectors=answer["n_vectors"],
                width=answer["width"],
                family=answer["family"],
                source="imported",
                kind=kind,
                shared=share,
                source_sha256=hashlib.sha256(data).hexdigest(),
                shared_guild_id=library,
                max_owned=max_owned,
                named_checkpoint=answer["checkpoint"],
            )
        except OSError as error:
            raise disk_failure("embedding", error) from None
        return await self._queue_thumbnail(actor, embedding)

    async def _queue_thumbnail(self, actor: Actor, embedding: Embedding) -> Embedding:
        """Queue one render of the new word as its owner, with no message to post: the first
        example its card shows (`cogs.cards.example_prompts` of a word with no training), so the
        image sits beside its prompt; a negative word goes in the negative prompt of a cat."""
        word = f"<{embedding.name_folded}>"
        prompt, negative = f"a photo of {word}", None
        if embedding.kind is EmbeddingKind.NEGATIVE:
            prompt, negative = "a photo of a cat", word
        try:
            submitted = await self.imagine.submit(
                actor.user_id,
                ImagineOptions(prompt, negative=negative, count=1),
                guild_id=actor.guild_id,
                delivery=None,
            )
            await self.storage.embeddings.set_thumbnail_job(embedding.id, submitted.job.id)
        except (ServiceError, StorageError) as refusal:
            log.info("no thumbnail for embedding %d: %s", embedding.id, refusal)
            return embedding
        return dataclasses.replace(embedding, thumbnail_job_id=submitted.job.id)

    async def model_family(self, model: str, limit_seconds: float) -> str:
        """The family of the configured model `model`, waiting up to `limit_seconds` for a
        worker to report it."""
        if limit_seconds <= 0 and model not in self.scheduler.models:
            raise _not_reported(
                model, "the file cannot be checked against it; try again in a minute"
            )
        reported = self.scheduler.models_reported
        try:
            async with asyncio.timeout(limit_seconds), reported:
                await reported.wait_for(lambda: model in self.scheduler.models)
        except TimeoutError:
            raise ServiceError(
                f"No GPU worker serving **{model}** is running, so the file cannot be checked "
                "against the model; try again later."
            ) from None
        return self.scheduler.models[model].family

    async def _child(self, data: bytes, *args: str) -> dict[str, Any]:
        """Run `python -m engine.convert ARGS` on `data`, one of at most MAX_CONVERT_CHILDREN."""
        async with self._children:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "engine.convert",
                *args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            try:
                stdout, _ = await asyncio.wait_for(
                    process.communicate(data), CONVERT_TIMEOUT_SECONDS
                )
            except TimeoutError:
                process.kill()
                await process.wait()
                raise ServiceError(
                    "Reading that embedding file took too long; it was refused."
                ) from None
        if process.returncode != 0:
            raise ServiceError("That embedding file could not be read; it was refused.")
        answer: dict[str, Any] = json.loads(stdout)
        return answer


def _shown(filename: str) -> str:
    return repr(filename[:60])


def _not_reported(model: str, consequence: str) -> ServiceError:
    """The refusal for a configured model no live worker has reported (its family unknown)."""
    return ServiceError(f"No GPU worker serving **{model}** has reported in yet, so {consequence}.")
