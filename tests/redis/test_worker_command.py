"""`lexicon worker`: the command an operator runs on each GPU machine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.redis.conftest import RedisServer


def test_worker_needs_a_redis_queue(cli: Any) -> None:
    """Without --queue or LEXICON_QUEUE the worker refuses to start, in one sentence."""
    result = cli("worker", "--device", "cpu", "--max-batch", "2")
    assert result.returncode == 1
    assert "needs a Redis queue: pass --queue redis://" in result.stderr
    assert "Traceback" not in result.stderr


def test_worker_that_cannot_load_its_model_says_why(
    cli: Any, redis_server: RedisServer, tmp_path: Path
) -> None:
    """A model that cannot load ends the worker with status 1 and a reason for the bot too."""
    result = cli(
        "worker",
        "--queue",
        redis_server.url,
        "--device",
        "cpu",
        LEXICON_MODEL=str(tmp_path / "no-such-model"),
    )
    assert result.returncode == 1
    assert "could not start" in result.stderr
    events: Any = redis_server.client().xrange("lexicon:events:bot")
    assert len(events) == 1 and b"could not start" in events[0][1][b"m"]
