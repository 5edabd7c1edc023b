"""Discord users as Lexicon knows them: display name, quota overrides, bans.

A ban is per server: a manager bans on the server they manage (`guild_bans`) and only there.
The operator (`Actor.acts_everywhere`: the CLI, or one of `LEXICON_OWNERS`) also bans everywhere
(`users.banned`). Nobody lifts their own ban but the operator.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime

from storage.clock import Clock, from_seconds, to_seconds, utc_now
from storage.db import Database, Transaction, from_row
from storage.errors import Forbidden, NotFound
from storage.models import Actor, User


def user_from_row(row: sqlite3.Row) -> User:
    return from_row(
        User, row, banned=bool(row["banned"]), created_at=from_seconds(row["created_at"])
    )


async def ensure_user(transaction: Transaction, user_id: int, now: datetime) -> None:
    """Create the user's row if it is missing, inside a caller's transaction."""
    await transaction.execute(
        "INSERT INTO users (id, created_at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING",
        (user_id, to_seconds(now)),
    )


class UserRepository:
    def __init__(self, db: Database, clock: Clock = utc_now) -> None:
        self._db = db
        self._clock = clock

    async def get(self, user_id: int) -> User:
        row = await self._db.fetch_one("SELECT * FROM users WHERE id = ?", (user_id,))
        if row is None:
            raise NotFound(f"Lexicon has no record of user {user_id}.")
        return user_from_row(row)

    async def get_or_create(self, user_id: int, display_name: str | None = None) -> User:
        """The user's row, created on first sight; a new display name replaces the old one."""
        row = await self._db.fetch_one("SELECT * FROM users WHERE id = ?", (user_id,))
        if row is not None and (display_name is None or row["display_name"] == display_name):
            return user_from_row(row)
        async with self._db.transaction() as transaction:
            row = await transaction.fetch_one(
                """
                INSERT INTO users (id, display_name, created_at) VALUES (?1, coalesce(?2, ''), ?3)
                ON CONFLICT (id) DO UPDATE SET display_name = coalesce(?2, display_name)
                RETURNING *
                """,
                (user_id, display_name, to_seconds(self._clock())),
            )
        assert row is not None
        return user_from_row(row)

    async def set_banned(
        self, actor: Actor, user_id: int, banned: bool, *, everywhere: bool = False
    ) -> None:
        """Ban or unban on the actor's server, or `everywhere` (the operator only); a banned
        user's requests are refused by the services above."""
        if everywhere and not actor.acts_everywhere:
            raise Forbidden(
                "Only Lexicon's operator can ban or unban everywhere; leave 'everywhere' off to "
                "act on this server."
            )
        if not everywhere and (actor.guild_id is None or not actor.manages(actor.guild_id)):
            raise Forbidden("Only a manager of this server can ban or unban here.")
        if not banned and user_id == actor.user_id and not actor.acts_everywhere:
            raise Forbidden("You cannot lift your own ban; ask Lexicon's operator.")
        if everywhere:
            await self._update(user_id, "banned = ?", (int(banned),))
            return
        async with self._db.transaction() as transaction:
            if not banned:
                await transaction.execute(
                    "DELETE FROM guild_bans WHERE guild_id = ? AND user_id = ?",
                    (actor.guild_id, user_id),
                )
                return
            now = self._clock()
            await ensure_user(transaction, user_id, now)
            await transaction.execute(
                """
                INSERT INTO guild_bans (guild_id, user_id, banned_by, created_at)
                VALUES (?, ?, ?, ?) ON CONFLICT (guild_id, user_id) DO NOTHING
                """,
                (actor.guild_id, user_id, actor.user_id, to_seconds(now)),
            )

    async def is_banned(self, user_id: int, guild_id: int | None = None) -> bool:
        """Banned everywhere, or on `guild_id`."""
        value = await self._db.fetch_value(
            """
            SELECT (SELECT banned FROM users WHERE id = ?1)
                OR EXISTS (SELECT 1 FROM guild_bans WHERE guild_id = ?2 AND user_id = ?1)
            """,
            (user_id, guild_id),
        )
        return bool(value)

    async def set_quotas(
        self, user_id: int, *, max_queued_jobs: int | None, max_embeddings: int | None
    ) -> User:
        """Per-user overrides of the server-wide limits; None means "use the default"."""
        return await self._update(
            user_id,
            "max_queued_jobs = ?, max_embeddings = ?",
            (max_queued_jobs, max_embeddings),
        )

    async def _update(self, user_id: int, assignments: str, params: tuple[object, ...]) -> User:
        async with self._db.transaction() as transaction:
            await ensure_user(transaction, user_id, self._clock())
            row = await transaction.fetch_one(
                f"UPDATE users SET {assignments} WHERE id = ? RETURNING *", (*params, user_id)
            )
        assert row is not None
        return user_from_row(row)
