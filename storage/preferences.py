"""Members' personal defaults (`/settings`): one row per member, NULL = no preference.

The service validates values before they get here (the limits live in `engine.jobs` and the
operator's settings); this module only stores and reads them.
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass, fields

from storage.clock import Clock, to_seconds, utc_now
from storage.db import Database
from storage.users import ensure_user


@dataclass(frozen=True, slots=True)
class MemberDefaults:
    """What a member's omitted options become; None leaves the operator's default."""

    size: str | None = None
    steps: int | None = None
    sampler: str | None = None
    guidance: float | None = None
    count: int | None = None
    negative: str | None = None
    share: bool | None = None

    @property
    def is_empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))


_COLUMNS = tuple(f.name for f in fields(MemberDefaults))


def _from_row(row: sqlite3.Row) -> MemberDefaults:
    values = {name: row[name] for name in _COLUMNS}
    if values["share"] is not None:
        values["share"] = bool(values["share"])
    return MemberDefaults(**values)


class PreferenceRepository:
    def __init__(self, db: Database, clock: Clock = utc_now) -> None:
        self._db = db
        self._clock = clock

    async def get(self, user_id: int) -> MemberDefaults:
        """The member's defaults; a member who never set any gets an empty one."""
        row = await self._db.fetch_one(
            "SELECT * FROM member_defaults WHERE user_id = ?", (user_id,)
        )
        return MemberDefaults() if row is None else _from_row(row)

    async def set(self, user_id: int, defaults: MemberDefaults) -> MemberDefaults:
        """Replace the member's defaults with `defaults` (an empty one removes the row)."""
        async with self._db.transaction() as transaction:
            if defaults.is_empty:
                await transaction.execute(
                    "DELETE FROM member_defaults WHERE user_id = ?", (user_id,)
                )
                return defaults
            now = self._clock()
            await ensure_user(transaction, user_id, now)
            values = asdict(defaults)
            if values["share"] is not None:
                values["share"] = int(values["share"])
            columns = ", ".join(_COLUMNS)
            updates = ", ".join(f"{name} = excluded.{name}" for name in _COLUMNS)
            await transaction.execute(
                f"""
                INSERT INTO member_defaults (user_id, {columns}, updated_at)
                VALUES (?, {", ".join("?" for _ in _COLUMNS)}, ?)
                ON CONFLICT (user_id) DO UPDATE SET {updates}, updated_at = excluded.updated_at
                """,
                (user_id, *(values[name] for name in _COLUMNS), to_seconds(now)),
            )
        return defaults
