"""Per-server settings that managers change with `/admin`: limits, blocked words, channels."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable

from storage.clock import Clock, to_seconds, utc_now
from storage.db import Database, Queries
from storage.errors import Forbidden
from storage.models import Actor, GuildSettings


def settings_from_row(row: sqlite3.Row) -> GuildSettings:
    return GuildSettings(
        guild_id=row["guild_id"],
        limits={str(key): int(value) for key, value in json.loads(row["limits"]).items()},
        blocked_words=tuple(json.loads(row["blocked_words"])),
        allowed_channel_ids=tuple(int(value) for value in json.loads(row["allowed_channel_ids"])),
        default_negative_prompt=row["default_negative_prompt"],
        default_model=row["default_model"],
    )


def _normalized(settings: GuildSettings) -> GuildSettings:
    words = sorted({word.strip().casefold() for word in settings.blocked_words if word.strip()})
    return GuildSettings(
        guild_id=settings.guild_id,
        limits=dict(sorted(settings.limits.items())),
        blocked_words=tuple(words),
        allowed_channel_ids=tuple(sorted(set(settings.allowed_channel_ids))),
        default_negative_prompt=settings.default_negative_prompt.strip(),
        default_model=settings.default_model,
    )


class GuildSettingsRepository:
    def __init__(self, db: Database, clock: Clock = utc_now) -> None:
        self._db = db
        self._clock = clock

    async def get(self, guild_id: int) -> GuildSettings:
        """The server's settings; a server nobody configured gets the defaults."""
        return await self._get_in(self._db, guild_id)

    async def update(
        self, actor: Actor, guild_id: int, change: Callable[[GuildSettings], GuildSettings]
    ) -> GuildSettings:
        """Apply `change` to the current settings atomically; only that server's managers may.

        Blocked words are stored case-folded, sorted and without duplicates.
        """
        if not actor.manages(guild_id):
            raise Forbidden("Only a manager of this server can change its Lexicon settings.")
        async with self._db.transaction() as transaction:
            current = await self._get_in(transaction, guild_id)
            updated = _normalized(change(current))
            if updated.guild_id != guild_id:
                raise ValueError("a settings change must not move settings to another server")
            await transaction.execute(
                """
                INSERT INTO guild_settings (guild_id, limits, blocked_words, allowed_channel_ids,
                    default_negative_prompt, default_model, updated_at)
                VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                ON CONFLICT (guild_id) DO UPDATE SET limits = ?2, blocked_words = ?3,
                    allowed_channel_ids = ?4, default_negative_prompt = ?5, default_model = ?6,
                    updated_at = ?7
                """,
                (
                    guild_id,
                    json.dumps(dict(updated.limits)),
                    json.dumps(list(updated.blocked_words)),
                    json.dumps(list(updated.allowed_channel_ids)),
                    updated.default_negative_prompt,
                    updated.default_model,
                    to_seconds(self._clock()),
                ),
            )
        return updated

    @staticmethod
    async def _get_in(queries: Queries, guild_id: int) -> GuildSettings:
        row = await queries.fetch_one(
            "SELECT * FROM guild_settings WHERE guild_id = ?", (guild_id,)
        )
        return GuildSettings(guild_id=guild_id) if row is None else settings_from_row(row)
