"""Per-user command rate limiting: at most N commands in any window of one minute.

Queue caps bound how much work a member has waiting; this bounds how fast they can ask. It
counts every command that gets past it, refused ones included, because a refused request still
costs something: a `/train` with five bombs decodes their headers, an `/embeddings import`
starts a converter process. A command the limiter itself refuses is not counted, so a member
who keeps clicking is let in again exactly when the window allows, never later.

The window is a sliding log (the times of a member's last N accepted commands), so "N per
minute" holds for every 60-second window, not per calendar minute, and the refusal can say
exactly when to try again. Memory is bounded by the members active in the last two minutes:
once per window, every log whose newest entry has left the window is dropped.

The limiter is Discord-independent; `cogs.common` applies it to every slash command.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

WINDOW_SECONDS = 60.0


def _monotonic() -> float:
    return time.monotonic()  # looked up per call, so a test clock installed later applies


class RateLimiter:
    """`per_minute` commands per key (a user id) in any `window` seconds."""

    def __init__(
        self,
        per_minute: int,
        *,
        window: float = WINDOW_SECONDS,
        clock: Callable[[], float] = _monotonic,
    ) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.per_minute = per_minute
        self.window = window
        self.clock = clock
        self._log: dict[int, deque[float]] = {}
        self._last_prune = clock()

    def acquire(self, key: int) -> float:
        """0.0 when the command may run (it is counted), else the seconds until it may."""
        now = self.clock()
        if now - self._last_prune >= self.window:
            self._prune(now)
        entries = self._log.get(key)
        if entries is None:
            entries = self._log[key] = deque()
        while entries and entries[0] <= now - self.window:
            entries.popleft()
        if len(entries) >= self.per_minute:
            return max(entries[0] + self.window - now, 0.001)
        entries.append(now)
        return 0.0

    def _prune(self, now: float) -> None:
        self._last_prune = now
        idle = [key for key, entries in self._log.items() if entries[-1] <= now - self.window]
        for key in idle:
            del self._log[key]

    def refusal(self, retry_after: float) -> str:
        """The one sentence a refused member reads."""
        seconds = max(1, math.ceil(retry_after))
        return (
            f"You have used {self.per_minute} commands in the last minute, the most allowed; "
            f"try again in {seconds} s."
        )
