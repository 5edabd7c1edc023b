"""The embedding library: a user's own words and the shared ones — list, import, export, share.

Authorization lives in storage (only owners change their embeddings; managers may remove shared
ones); this service adds what needs more than the database: normalising uploaded files (in a
throw-away child process, see `engine.convert`), size limits, and family checks against the
model the workers have loaded.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from dataclasses import dataclass
from typing import Any

from bot.config import Settings
from bot.scheduler import Scheduler
from bot.services import ServiceError, checked_name, disk_failure
from storage.errors import NotFound
from storage.facade import Storage
from storage.models import Actor, Embedding, FileKind

CONVERT_TIMEOUT_SECONDS = 120.0


@dataclass(frozen=True)
class LibraryPage:
    items: list[Embedding]
    total: int
    page: int
    pages: int


class LibraryService:
    page_size = 4  # a gallery page: one embed, thumbnail and row of buttons per embedding

    def __init__(self, settings: Settings, storage: Storage, scheduler: Scheduler) -> None:
        self.settings = settings
        self.storage = storage
        self.scheduler = scheduler

    # --- reading -----------------------------------------------------------------------------

    async def list_owned(self, user_id: int) -> list[Embedding]:
        return await self.storage.embeddings.list_owned(user_id)

    async def info(self, viewer_id: int, name: str) -> Embedding:
        return await self.storage.embeddings.get_by_name(viewer_id, name)

    async def browse(self, query: str = "", page: int = 1, order: str = "popular") -> LibraryPage:
        total = await self.storage.embeddings.count_shared(query)
        pages = max(1, -(-total // self.page_size))
        page = min(max(1, page), pages)
        items = await self.storage.embeddings.list_shared(
            query, limit=self.page_size, offset=(page - 1) * self.page_size, order=order
        )
        return LibraryPage(items, total, page, pages)

    async def usable_names(self, viewer_id: int, prefix: str = "", limit: int = 25) -> list[str]:
        """Names for autocomplete: the viewer's own first, then shared ones."""
        prefix = prefix.lower()
        names: list[str] = []
        for embedding in await self.storage.embeddings.list_owned(viewer_id):
            if embedding.name_folded.startswith(prefix):
                names.append(embedding.name_folded)
        for embedding in await self.storage.embeddings.list_shared(prefix, limit=limit):
            if embedding.name_folded not in names and embedding.name_folded.startswith(prefix):
                names.append(embedding.name_folded)
        return names[:limit]

    async def export(self, viewer_id: int, name: str) -> tuple[str, bytes]:
        """(file name, bytes) of an embedding in Lexicon's format, loadable by A1111/diffusers."""
        embedding = await self.storage.embeddings.get_by_name(viewer_id, name)
        if not embedding.usable:
            raise ServiceError(f"The file of '{embedding.name}' is missing; it cannot be exported.")
        data = await asyncio.to_thread(
            self.storage.files.read, FileKind.EMBEDDINGS, embedding.sha256
        )
        return f"{embedding.name_folded}.safetensors", data

    # --- changing (authorization is checked by storage) ---------------------------------------

    async def _owned_or_visible(self, actor: Actor, name: str) -> Embedding:
        try:
            return await self.storage.embeddings.get_owned_by_name(actor.user_id, name)
        except NotFound:
            if not actor.is_manager:
                raise
            return await self.storage.embeddings.get_shared_by_name(name)

    async def share(self, actor: Actor, name: str) -> Embedding:
        embedding = await self._owned_or_visible(actor, name)
        return await self.storage.embeddings.share(actor, embedding.id)

    async def unshare(self, actor: Actor, name: str) -> Embedding:
        embedding = await self._owned_or_visible(actor, name)
        return await self.storage.embeddings.unshare(actor, embedding.id)

    async def describe(self, actor: Actor, name: str, description: str) -> Embedding:
        embedding = await self.storage.embeddings.get_owned_by_name(actor.user_id, name)
        return await self.storage.embeddings.describe(actor, embedding.id, description.strip())

    async def rename(self, actor: Actor, name: str, new_name: str) -> Embedding:
        embedding = await self._owned_or_visible(actor, name)
        return await self.storage.embeddings.rename(actor, embedding.id, new_name)

    async def delete(self, actor: Actor, name: str) -> Embedding:
        embedding = await self._owned_or_visible(actor, name)
        return await self.storage.embeddings.delete(actor, embedding.id)

    async def import_file(
        self,
        actor: Actor,
        filename: str,
        data: bytes,
        name: str,
        *,
        negative: bool = False,
        share: bool = False,
    ) -> Embedding:
        """Validate, normalise and store an uploaded embedding file."""
        if await self.storage.users.is_banned(actor.user_id):
            raise ServiceError("You are not allowed to use Lexicon.")
        limit = self.settings.max_embedding_bytes
        if len(data) > limit:
            raise ServiceError(
                f"{_shown(filename)} is {len(data) / 1024:.0f} KiB; embedding files may be at "
                f"most {limit / 1024:.0f} KiB."
            )
        checked = await checked_name(self.storage.embeddings, actor.user_id, name)
        family = await self.model_family()
        answer = await _convert(data, filename, checked.display, negative, family)
        if not answer["ok"]:
            raise ServiceError(answer["error"])
        try:
            return await self.storage.embeddings.create(
                actor.user_id,
                checked.display,
                base64.b64decode(answer["data"]),
                n_vectors=answer["n_vectors"],
                width=answer["width"],
                family=answer["family"],
                source="imported",
                kind="negative" if negative else "positive",
                shared=share,
            )
        except OSError as error:
            raise disk_failure("embedding", error) from None

    async def model_family(self, limit_seconds: float = 600.0) -> str:
        """The family of the model the workers serve (waits for a worker to report it)."""
        try:
            await asyncio.wait_for(self.scheduler.worker_ready.wait(), limit_seconds)
        except TimeoutError:
            raise ServiceError(
                "No GPU worker is running, so the file cannot be checked against the model; "
                "try again later."
            ) from None
        family = self.scheduler.model_family
        assert family is not None
        return family


def _shown(filename: str) -> str:
    return repr(filename[:60])


async def _convert(
    data: bytes, filename: str, name: str, negative: bool, family: str
) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "engine.convert",
        filename[:200] or "upload",
        name,
        "negative" if negative else "positive",
        family,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, _ = await asyncio.wait_for(process.communicate(data), CONVERT_TIMEOUT_SECONDS)
    except TimeoutError:
        process.kill()
        raise ServiceError("Reading that embedding file took too long; it was refused.") from None
    if process.returncode != 0:
        raise ServiceError("That embedding file could not be read; it was refused.")
    answer: dict[str, Any] = json.loads(stdout)
    return answer
