"""What workers last reported about each configured model, kept across restarts.

A worker reports a model's family, embedding width and weights' hash once it has loaded and
warmed the model up, which after a cold start takes minutes of compiling. The bot remembers the
last report of each model together with the source it had configured for that model, and
recalls them at start: an import, autocomplete or a family refusal then need not wait for the
first report. A report is recalled only while the model's configured source is the same.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from storage.clock import Clock, to_seconds, utc_now
from storage.db import Database


@dataclass(frozen=True, slots=True)
class ModelReport:
    name: str
    source: str
    family: str
    width: int
    model_hash: str


class ModelReportRepository:
    def __init__(self, db: Database, clock: Clock = utc_now) -> None:
        self._db = db
        self._clock = clock

    async def remember(self, reports: Iterable[ModelReport]) -> None:
        """Keep these reports, each replacing the model's last one."""
        now = to_seconds(self._clock())
        async with self._db.transaction() as transaction:
            await transaction.executemany(
                """
                INSERT INTO model_reports (name, source, family, width, model_hash, reported_at)
                VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT (name) DO UPDATE SET
                    source = excluded.source, family = excluded.family, width = excluded.width,
                    model_hash = excluded.model_hash, reported_at = excluded.reported_at
                """,
                [(r.name, r.source, r.family, r.width, r.model_hash, now) for r in reports],
            )

    async def recall(self, sources: Mapping[str, str]) -> list[ModelReport]:
        """The last report of each model in `sources` (name → configured source) that was
        made under that same source, by name."""
        rows = await self._db.fetch_all(
            "SELECT name, source, family, width, model_hash FROM model_reports ORDER BY name"
        )
        reports = [ModelReport(*row) for row in rows]
        return [r for r in reports if sources.get(r.name) == r.source]
