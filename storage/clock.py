"""Time as storage keeps it: REAL unix seconds in SQLite, timezone-aware UTC datetimes in Python.

One representation per side and two converters between them, so no naive datetime and no
local-time surprise can enter a row.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def to_seconds(moment: datetime) -> float:
    """A stored timestamp; a naive datetime is refused because its zone would be a guess."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("storage only accepts timezone-aware datetimes")
    return moment.timestamp()


def from_seconds(seconds: float) -> datetime:
    """The aware UTC datetime of a stored timestamp."""
    return datetime.fromtimestamp(seconds, UTC)


def maybe_from_seconds(seconds: float | None) -> datetime | None:
    return None if seconds is None else from_seconds(seconds)
