"""Embeddings: names, visibility, the shared libraries, and who may change what.

Authorization lives here so no caller can forget it. A private embedding is invisible to all but
its owner — lookups answer NotFound, never Forbidden, so its existence does not leak. A shared
one sits in the library of the server it was shared in (`shared_guild_id`; None is the
operator's library, which every server sees); names resolve to the viewer's own embeddings and
to that server's library only, so a stranger elsewhere cannot put words into this server's
prompts. Only its owner renames, shares or unshares it; a manager of *that* server (or the
operator) may unshare or delete it (moderation) but not rename it.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterable

from storage.clock import Clock, from_seconds, to_seconds, utc_now
from storage.db import Database, Params, Queries, Transaction, from_row
from storage.errors import (
    EmbeddingNotFound,
    Forbidden,
    NameTaken,
    NotFound,
    TooManyEmbeddings,
)
from storage.files import FileStore
from storage.models import (
    Actor,
    Embedding,
    EmbeddingKind,
    EmbeddingSource,
    Family,
    FileKind,
    Visibility,
)
from storage.names import EmbeddingName, NameRules, fold_for_lookup, quote
from storage.references import remove_if_unreferenced
from storage.users import ensure_user

_ORDER_SHARED = {
    "popular": "ORDER BY use_count DESC, name_folded, id",
    "new": "ORDER BY created_at DESC, id DESC",
}
SHARE_FROM_A_SERVER = "Share it from a server: each server has its own library."
_NOT_SHARED = -1  # `_refuse_taken`'s library for a private name (Discord ids are never negative)


def _in_library(guild: str = "?") -> str:
    """SQL: shared and seen by server `guild` (a parameter mark): its library, the operator's."""
    return f"visibility = 'shared' AND (shared_guild_id IS NULL OR shared_guild_id = {guild})"


# What the library lists of what server ?2 sees: usable entries whose name or description holds
# ?1 (a LIKE pattern), made for family ?3 (NULL: every family). `_searched` gives the three.
_SEARCHED = f"""{_in_library("?2")} AND usable = 1
    AND (name_folded LIKE ?1 ESCAPE '\\' OR description LIKE ?1 ESCAPE '\\')
    AND (?3 IS NULL OR family = ?3)"""


def embedding_from_row(row: sqlite3.Row) -> Embedding:
    return from_row(
        Embedding,
        row,
        kind=EmbeddingKind(row["kind"]),
        visibility=Visibility(row["visibility"]),
        family=Family(row["family"]),
        source=EmbeddingSource(row["source"]),
        created_at=from_seconds(row["created_at"]),
        usable=bool(row["usable"]),
    )


def _family_value(family: Family | str | None) -> str | None:
    return None if family is None else Family(family).value


def _searched(
    query: str, guild_id: int | None, family: Family | str | None
) -> tuple[str, int | None, str | None]:
    """The parameters ?1-?3 of `_SEARCHED`."""
    return _like_pattern(query.strip().casefold()), guild_id, _family_value(family)


def _like_pattern(query: str) -> str:
    escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class EmbeddingRepository:
    def __init__(
        self,
        db: Database,
        files: FileStore,
        rules: NameRules | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self._db = db
        self._files = files
        self._rules = rules or NameRules()
        self._clock = clock

    # -- creating ------------------------------------------------------------------------------

    async def create(
        self,
        owner_id: int,
        name: str,
        data: bytes,
        *,
        n_vectors: int,
        width: int,
        family: Family | str,
        source: EmbeddingSource | str,
        kind: EmbeddingKind | str = EmbeddingKind.POSITIVE,
        shared: bool = False,
        shared_guild_id: int | None = None,
        description: str = "",
        job_id: int | None = None,
        max_owned: int | None = None,
        source_sha256: str | None = None,
        named_checkpoint: str | None = None,
    ) -> Embedding:
        """Store the file, then commit the row that names it, in one write transaction.

        `shared` puts it in the library of `shared_guild_id` (None: the operator's; the caller
        decides who may). With `job_id`, creating is idempotent: a retried training job that
        already produced its embedding gets that row back. `max_owned` is checked atomically
        with the insert. `source_sha256` is the hash of an imported file as the member had it,
        before rewriting, and `named_checkpoint` the checkpoint that file says it was trained on
        (already cleaned, see `engine.embedding_files.claimed_checkpoint`).
        """
        checked = self._rules.check(name)
        if shared:
            self._rules.check_shareable(checked)
        kind, family, source = EmbeddingKind(kind), Family(family), EmbeddingSource(source)
        now = self._clock()
        async with self._db.transaction() as transaction:
            if job_id is not None:
                row = await transaction.fetch_one(
                    "SELECT * FROM embeddings WHERE job_id = ?", (job_id,)
                )
                if row is not None:
                    return embedding_from_row(row)
            await ensure_user(transaction, owner_id, now)
            library = shared_guild_id if shared else _NOT_SHARED
            await self._refuse_taken(transaction, owner_id, checked, library)
            if max_owned is not None:
                owned = await _owned_count(transaction, owner_id)
                if owned >= max_owned:
                    raise too_many_embeddings(owned, max_owned)
            sha = await asyncio.to_thread(self._files.put, FileKind.EMBEDDINGS, data)
            return await _write_named(
                transaction,
                checked,
                """
                INSERT INTO embeddings (owner_id, name, name_folded, kind, visibility,
                    n_vectors, width, family, sha256, source, description, created_at, job_id,
                    source_sha256, shared_guild_id, named_checkpoint)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                RETURNING *
                """,
                (
                    owner_id,
                    checked.display,
                    checked.folded,
                    kind.value,
                    (Visibility.SHARED if shared else Visibility.PRIVATE).value,
                    n_vectors,
                    width,
                    family.value,
                    sha,
                    source.value,
                    description,
                    to_seconds(now),
                    job_id,
                    source_sha256,
                    shared_guild_id if shared else None,
                    named_checkpoint,
                ),
            )

    # -- reading -------------------------------------------------------------------------------

    async def get(self, embedding_id: int, viewer_id: int) -> Embedding:
        """The embedding if `viewer_id` may see it (owner, or shared), else NotFound."""
        return await _visible(self._db, viewer_id, embedding_id)

    async def get_by_name(
        self, viewer_id: int, name: str, guild_id: int | None = None
    ) -> Embedding:
        """The viewer's own embedding of that name, else the one shared in `guild_id`'s library
        (or the operator's), else NotFound."""
        found = await self.resolve(viewer_id, [name], guild_id)
        if not found:
            raise EmbeddingNotFound(
                f"You have no embedding called {quote(name)} and the shared library has none.",
                "either",
            )
        return next(iter(found.values()))

    async def get_owned_by_name(self, owner_id: int, name: str) -> Embedding:
        folded = fold_for_lookup(name)
        row = None
        if folded is not None:
            row = await self._db.fetch_one(
                "SELECT * FROM embeddings WHERE owner_id = ? AND name_folded = ?",
                (owner_id, folded),
            )
        if row is None:
            raise EmbeddingNotFound(f"You have no embedding called {quote(name)}.", "own")
        return embedding_from_row(row)

    async def get_shared_by_name(self, name: str, guild_id: int | None = None) -> Embedding:
        """The embedding of that name in `guild_id`'s library, else in the operator's."""
        folded = fold_for_lookup(name)
        row = None
        if folded is not None:
            row = await self._db.fetch_one(
                f"""
                SELECT * FROM embeddings WHERE {_in_library()} AND name_folded = ?
                ORDER BY shared_guild_id IS NULL
                """,
                (guild_id, folded),
            )
        if row is None:
            raise EmbeddingNotFound(
                f"The shared library has no embedding called {quote(name)}.", "shared"
            )
        return embedding_from_row(row)

    async def resolve(
        self, viewer_id: int, names: Iterable[str], guild_id: int | None = None
    ) -> dict[str, Embedding]:
        """Folded name → embedding for each name the viewer can use in `guild_id` (None: a
        direct message or the CLI): their own first, then that server's library, then the
        operator's. Names that match nothing are absent, so a prompt parser treats them as words.
        """
        folded = sorted({f for f in map(fold_for_lookup, names) if f is not None})
        if not folded:
            return {}
        marks = ", ".join("?" for _ in folded)
        rows = await self._db.fetch_all(
            f"""
            SELECT * FROM embeddings
            WHERE name_folded IN ({marks}) AND (owner_id = ? OR ({_in_library()}))
            ORDER BY owner_id = ? DESC, shared_guild_id IS NULL
            """,
            (*folded, viewer_id, guild_id, viewer_id),
        )
        found: dict[str, Embedding] = {}
        for row in rows:
            found.setdefault(row["name_folded"], embedding_from_row(row))
        return found

    async def list_owned(
        self, owner_id: int, family: Family | str | None = None
    ) -> list[Embedding]:
        """The owner's embeddings by name; with `family`, only those made for it."""
        rows = await self._db.fetch_all(
            """
            SELECT * FROM embeddings WHERE owner_id = ?1 AND (?2 IS NULL OR family = ?2)
            ORDER BY name_folded
            """,
            (owner_id, _family_value(family)),
        )
        return [embedding_from_row(row) for row in rows]

    async def list_shared(
        self,
        query: str = "",
        limit: int = 25,
        offset: int = 0,
        *,
        guild_id: int | None = None,
        order: str = "popular",
        family: Family | str | None = None,
    ) -> list[Embedding]:
        """One page of the library `guild_id` sees (usable entries only), most used (or newest)
        first.

        `query` matches anywhere in the name or description, as plain text (no wildcards);
        `family` keeps only the embeddings made for that family of models.
        """
        rows = await self._db.fetch_all(
            f"""
            SELECT * FROM embeddings WHERE {_SEARCHED}
            {_ORDER_SHARED[order]} LIMIT ?4 OFFSET ?5
            """,
            (*_searched(query, guild_id, family), max(0, limit), max(0, offset)),
        )
        return [embedding_from_row(row) for row in rows]

    async def count_owned(self, owner_id: int) -> int:
        """How many embeddings the user owns, shared or not: what `max_owned` counts."""
        return await _owned_count(self._db, owner_id)

    async def count_shared(
        self, query: str = "", *, guild_id: int | None = None, family: Family | str | None = None
    ) -> int:
        """How many entries `list_shared` pages through for the same query and family."""
        value = await self._db.fetch_value(
            f"SELECT count(*) FROM embeddings WHERE {_SEARCHED}",
            _searched(query, guild_id, family),
        )
        return int(value)

    async def trained_on(self, embedding_ids: Iterable[int]) -> dict[int, str | None]:
        """Embedding id → the model its training job named (None: the deployment's default),
        for each of those that was trained here; imported ones are absent (an import's
        `named_checkpoint` is what its file claims)."""
        ids = sorted(set(embedding_ids))
        if not ids:
            return {}
        marks = ", ".join("?" for _ in ids)
        rows = await self._db.fetch_all(
            f"""
            SELECT embeddings.id, jobs.model FROM embeddings
            JOIN jobs ON jobs.id = embeddings.job_id
            WHERE embeddings.id IN ({marks})
            """,
            ids,
        )
        return {row["id"]: row["model"] for row in rows}

    # -- changing (each takes an Actor) --------------------------------------------------------

    async def rename(self, actor: Actor, embedding_id: int, new_name: str) -> Embedding:
        """Only the owner renames; a shared embedding keeps its place in its library."""
        checked = self._rules.check(new_name)
        async with self._db.transaction() as transaction:
            current = await _visible(transaction, actor.user_id, embedding_id)
            if current.owner_id != actor.user_id:
                raise Forbidden(f"Only the owner of '{current.name}' can rename it.")
            if current.is_shared:
                self._rules.check_shareable(checked)
            await self._refuse_taken(
                transaction, current.owner_id, checked, _library(current), ignore=current.id
            )
            return await _write_named(
                transaction,
                checked,
                "UPDATE embeddings SET name = ?, name_folded = ? WHERE id = ? RETURNING *",
                (checked.display, checked.folded, embedding_id),
            )

    async def share(self, actor: Actor, embedding_id: int) -> Embedding:
        """Only the owner shares, into the library of the server they ask from (the operator's
        with no server); a name that library has, or that reads as ordinary words, is refused."""
        async with self._db.transaction() as transaction:
            current = await _visible(transaction, actor.user_id, embedding_id)
            if current.owner_id != actor.user_id:
                raise Forbidden(f"Only the owner of '{current.name}' can share it.")
            library = shared_library(actor)
            if current.is_shared:
                if current.shared_guild_id == library:
                    return current
                raise Forbidden(
                    f"'{current.name}' is already shared in another library; "
                    "unshare it first to share it here."
                )
            name = EmbeddingName(current.name, current.name_folded)
            self._rules.check_shareable(name)
            await self._refuse_taken(
                transaction, current.owner_id, name, library, ignore=current.id
            )
            return await _write_named(
                transaction,
                name,
                """
                UPDATE embeddings SET visibility = 'shared', shared_guild_id = ?
                WHERE id = ? RETURNING *
                """,
                (library, embedding_id),
            )

    async def unshare(self, actor: Actor, embedding_id: int) -> Embedding:
        """The owner, or a manager of the server whose library holds it (moderation), takes it
        out of the library."""
        async with self._db.transaction() as transaction:
            current = await _visible(transaction, actor.user_id, embedding_id)
            _refuse_unless_moderator(actor, current, "unshare")
            if not current.is_shared:
                return current
            row = await transaction.fetch_one(
                """
                UPDATE embeddings SET visibility = 'private', shared_guild_id = NULL
                WHERE id = ? RETURNING *
                """,
                (embedding_id,),
            )
        assert row is not None
        return embedding_from_row(row)

    async def delete(self, actor: Actor, embedding_id: int) -> Embedding:
        """The owner, or a manager of the server whose library holds a shared one, deletes it;
        its file goes with the last row that names it."""
        async with self._db.transaction() as transaction:
            current = await _visible(transaction, actor.user_id, embedding_id)
            _refuse_unless_moderator(actor, current, "delete")
            await transaction.execute("DELETE FROM embeddings WHERE id = ?", (embedding_id,))
            await remove_if_unreferenced(
                transaction, self._files, FileKind.EMBEDDINGS, current.sha256
            )
        return current

    # -- bookkeeping ---------------------------------------------------------------------------

    async def increment_use(self, embedding_ids: Iterable[int]) -> None:
        ids = sorted(set(embedding_ids))
        if not ids:
            return
        async with self._db.transaction() as transaction:
            await transaction.executemany(
                "UPDATE embeddings SET use_count = use_count + 1 WHERE id = ?",
                [(embedding_id,) for embedding_id in ids],
            )

    async def describe(self, actor: Actor, embedding_id: int, description: str) -> Embedding:
        """The owner sets the description the library shows and searches."""
        async with self._db.transaction() as transaction:
            current = await _visible(transaction, actor.user_id, embedding_id)
            if current.owner_id != actor.user_id:
                raise Forbidden(f"Only the owner of '{current.name}' can describe it.")
            row = await transaction.fetch_one(
                "UPDATE embeddings SET description = ? WHERE id = ? RETURNING *",
                (description, embedding_id),
            )
        assert row is not None
        return embedding_from_row(row)

    async def set_thumbnail_job(self, embedding_id: int, job_id: int) -> None:
        """Record the job whose first image is the embedding's thumbnail (an import's preview)."""
        async with self._db.transaction() as transaction:
            await transaction.execute(
                "UPDATE embeddings SET thumbnail_job_id = ? WHERE id = ?", (job_id, embedding_id)
            )

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    async def _refuse_taken(
        transaction: Transaction,
        owner_id: int,
        name: EmbeddingName,
        library: int | None,
        *,
        ignore: int | None = None,
    ) -> None:
        """Refuse a name the owner already has, or that `library` (a server, None for the
        operator's, `_NOT_SHARED` for a private name) already holds."""
        ignore_id = -1 if ignore is None else ignore
        if await transaction.fetch_value(
            "SELECT 1 FROM embeddings WHERE owner_id = ? AND name_folded = ? AND id != ?",
            (owner_id, name.folded, ignore_id),
        ):
            raise NameTaken(
                f"You already have an embedding called '{name.folded}'; "
                "pick another name or delete that one first."
            )
        if library != _NOT_SHARED and await transaction.fetch_value(
            """
            SELECT 1 FROM embeddings WHERE visibility = 'shared' AND shared_guild_id IS ?
                AND name_folded = ? AND id != ?
            """,
            (library, name.folded, ignore_id),
        ):
            raise NameTaken(
                f"The shared library already has an embedding called '{name.folded}'; "
                "rename yours before sharing it."
            )


def too_many_embeddings(owned: int, limit: int, training: int = 0) -> TooManyEmbeddings:
    """The refusal for a user who owns `owned` embeddings and has `training` more on the way,
    when one member may keep at most `limit`."""
    coming = f" and {training} more in training" if training else ""
    return TooManyEmbeddings(
        f"You already have {owned} embedding{'s' * (owned != 1)}{coming}, the most one member "
        f"may keep ({limit})."
    )


async def _owned_count(queries: Queries, owner_id: int) -> int:
    value = await queries.fetch_value(
        "SELECT count(*) FROM embeddings WHERE owner_id = ?", (owner_id,)
    )
    return int(value)


def shared_library(actor: Actor) -> int | None:
    """The library `actor` shares into: their server's, or the operator's (no server), which
    only the operator may fill."""
    if actor.guild_id is None and not actor.acts_everywhere:
        raise Forbidden(SHARE_FROM_A_SERVER)
    return actor.guild_id


def _library(embedding: Embedding) -> int | None:
    return embedding.shared_guild_id if embedding.is_shared else _NOT_SHARED


def _refuse_unless_moderator(actor: Actor, embedding: Embedding, verb: str) -> None:
    """The owner changes their own; a shared one also by a manager of its library's server."""
    if embedding.owner_id == actor.user_id:
        return
    if not (embedding.is_shared and actor.manages(embedding.shared_guild_id)):
        raise Forbidden(
            f"Only the owner of '{embedding.name}' or a manager of the server it is shared in "
            f"can {verb} it."
        )


async def _visible(queries: Queries, viewer_id: int, embedding_id: int) -> Embedding:
    """The embedding if `viewer_id` owns it or it is shared, else NotFound (never Forbidden)."""
    row = await queries.fetch_one(
        "SELECT * FROM embeddings WHERE id = ? AND (owner_id = ? OR visibility = 'shared')",
        (embedding_id, viewer_id),
    )
    if row is None:
        raise NotFound(f"There is no embedding #{embedding_id} that you can see.")
    return embedding_from_row(row)


async def _write_named(
    transaction: Transaction, name: EmbeddingName, sql: str, params: Params
) -> Embedding:
    """Run the `INSERT` or `UPDATE … RETURNING *` that gives a row `name`.

    A unique-index violation becomes NameTaken; other constraint failures are bugs. The explicit
    checks run first inside the same write transaction, so this is a last line only.
    """
    try:
        row = await transaction.fetch_one(sql, params)
    except sqlite3.IntegrityError as error:
        if "UNIQUE" in str(error):
            raise NameTaken(
                f"The name '{name.folded}' is already taken; pick another one."
            ) from error
        raise
    assert row is not None
    return embedding_from_row(row)
