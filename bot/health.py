"""`python -m bot.health`: the container healthcheck.

The running bot touches `<data dir>/heartbeat` every few seconds from its event loop, so a fresh
file proves the loop is alive (not merely the process). Exit 0 when fresh, 1 otherwise.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

HEARTBEAT_FILE = "heartbeat"
MAX_AGE_SECONDS = 90.0


def heartbeat_path(data_dir: Path) -> Path:
    return data_dir / HEARTBEAT_FILE


def touch_heartbeat(data_dir: Path) -> None:
    """Record that the event loop is alive (called periodically by the running bot)."""
    path = heartbeat_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def check(data_dir: Path, now: float | None = None) -> str | None:
    """None when healthy, else one sentence saying what is wrong."""
    path = heartbeat_path(data_dir)
    try:
        age = (time.time() if now is None else now) - path.stat().st_mtime
    except FileNotFoundError:
        return f"no heartbeat at {path}: the bot has not started."
    if age > MAX_AGE_SECONDS:
        return f"the bot's heartbeat is {age:.0f} s old: its event loop is stuck or it stopped."
    return None


def main() -> int:
    problem = check(Path(os.environ.get("LEXICON_DATA_DIR", "./data")))
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
