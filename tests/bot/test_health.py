"""The container healthcheck reads the bot's heartbeat file."""

from __future__ import annotations

import os
from pathlib import Path

from bot.health import MAX_AGE_SECONDS, check, heartbeat_path, touch_heartbeat


def test_missing_heartbeat_is_unhealthy(tmp_path: Path) -> None:
    """No heartbeat file means the bot never started."""
    assert "has not started" in (check(tmp_path) or "")


def test_fresh_and_stale_heartbeat(tmp_path: Path) -> None:
    """A fresh heartbeat is healthy; one older than the limit is not."""
    touch_heartbeat(tmp_path)
    assert check(tmp_path) is None
    old = heartbeat_path(tmp_path).stat().st_mtime - MAX_AGE_SECONDS - 5
    os.utime(heartbeat_path(tmp_path), (old, old))
    assert "stuck or it stopped" in (check(tmp_path) or "")
