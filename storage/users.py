"""Discord users as Lexicon knows them: their bans.

A ban is per server: a manager bans on the server they manage (`guild_bans`) and only there.
The operator (`Actor.acts_everywhere`: the CLI, or one of `LEXICON_OWNERS`) also bans everywhere
(`users.banned`). Nobody lifts their own ban but the operator.
"""

from __future__ import annotations

from datetime import datetime

from storage.clock import Clock, to_seconds, utc_now
from storage.db import Database, Transaction
from storage.errors import Forbidden
from storage.models import Actor


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
        async with self._db.transaction() as transaction:
            if everywhere:
                await ensure_user(transaction, user_id, self._clock())
                await transaction.execute(
                    "UPDATE users SET banned = ? WHERE id = ?", (int(banned), user_id)
                )
                return
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
