"""The Redis wire layout that the bot's transport and the workers share (docs/SCALING.md).

Stream and key names, consumer groups, how a work entry names its jobs, the size bounds and the
liveness timing: both sides import them from here and neither imports the other, so the bot
never loads worker code and a layout change is made in one place. Torch-free; messages inside
the entries are `engine.protocol` dataclasses in its JSON codec.

Work goes on one stream per slot kind and model (`work(slot, model)`, e.g.
`lexicon:work:generate:sd15`): a worker reads only the streams of the models it holds, so a job
reaches only a worker that can run it. A work entry has the fields `p` (its payload key), `jobs`
(`format_jobs`) and `bot` (the bot id whose event stream gets the reports); event and control
entries carry one encoded message in the field `m`.

An entry that cannot be read (too big, nested too deep, not a protocol message: a bug or an
attack) is a *poison* entry: whoever meets it acknowledges it and moves a copy to the capped
dead-letter stream `lexicon:dead` with the reason (`dead_letter`), so it is looked at once and
never read again — not even by a bot that restarts and rereads its pending events.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from redis.exceptions import AuthenticationError, AuthorizationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from engine.protocol import GenerateBatch, SlotKind, TrainJob

log = logging.getLogger("lexicon.redis")

SLOTS: tuple[SlotKind, SlotKind] = ("generate", "train")
WORK_GROUP = "workers"
BOT_GROUP = "bot"
# Photos of one /train: 5 x 10 MB (LEXICON_MAX_PHOTO_BYTES) grow by 4/3 in the JSON codec.
DEFAULT_MAX_PAYLOAD_BYTES = 128 * 1024 * 1024
DEFAULT_PAYLOAD_TTL = 3600.0
# Stream lengths are safety bounds only: entries are deleted once handled, and the scheduler
# never has more work entries out than there are free slots.
WORK_MAXLEN = 10_000
EVENTS_MAXLEN = 100_000
CONTROL_MAXLEN = 100
DEAD_MAXLEN = 1000
DEAD_SAMPLE_BYTES = 1024  # a dead letter keeps the start of the poison entry, not all of it
# Errors that mean "Redis is unreachable right now": retried with backoff on both sides.
# (Redis's refusals of our credentials are ConnectionErrors too: catch REFUSED first.)
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)
# Errors that mean "Redis refuses these credentials": waiting does not help, start-up stops.
REFUSED = (AuthenticationError, AuthorizationError)


class QueueRefused(Exception):
    """Redis refused the credentials in LEXICON_QUEUE; the message is `refused_sentence`."""


def refused_sentence(error: Exception) -> str:
    """Why start-up stops when Redis refuses Lexicon's credentials, in one sentence (Redis's
    own words go to the log: they are long and say nothing an operator can act on)."""
    log.error("Redis refused the credentials: %s", error)
    return (
        "Redis refused the credentials in LEXICON_QUEUE: set it to "
        "redis://:PASSWORD@host:6379/0 with the server's password (or a user allowed to use "
        "Lexicon's keys) and start again."
    )


@dataclass(frozen=True)
class RedisLayout:
    """Every key Lexicon uses in Redis. One bot (a stable `bot_id`) per prefix and database."""

    prefix: str = "lexicon"
    bot_id: str = "bot"

    def work(self, slot: str, model: str) -> str:
        return f"{self.prefix}:work:{slot}:{model}"

    def payload(self, token: str) -> str:
        return f"{self.prefix}:payload:{token}"

    def events(self, bot_id: str | None = None) -> str:
        return f"{self.prefix}:events:{bot_id or self.bot_id}"

    def control(self, worker_id: str) -> str:
        return f"{self.prefix}:control:{worker_id}"

    def cancel(self, job_id: int) -> str:
        return f"{self.prefix}:cancel:{job_id}"

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}:worker:{worker_id}"

    @property
    def workers(self) -> str:
        return f"{self.prefix}:workers"

    @property
    def dead(self) -> str:
        return f"{self.prefix}:dead"


def dead_letter(
    pipe: Any, layout: RedisLayout, stream: str, entry_id: str, reason: str, raw: bytes | None
) -> None:
    """Queue on `pipe` (sync or async) a dead letter for a poison entry of `stream`: where it
    was, why it was refused, its size and its first DEAD_SAMPLE_BYTES."""
    data = raw or b""
    pipe.xadd(
        layout.dead,
        {
            "stream": stream,
            "id": entry_id,
            "reason": reason,
            "size": len(data),
            "sample": data[:DEAD_SAMPLE_BYTES],
        },
        maxlen=DEAD_MAXLEN,
        approximate=True,
    )


def slot_of(message: GenerateBatch | TrainJob) -> SlotKind:
    return "generate" if isinstance(message, GenerateBatch) else "train"


def model_of(message: GenerateBatch | TrainJob) -> str:
    """The model a work entry is for (a batch never mixes models)."""
    if isinstance(message, GenerateBatch):
        return message.jobs[0].request.model
    return message.request.model


def format_jobs(pairs: Iterable[tuple[int, int]]) -> str:
    """Job ids and attempts of a work entry, readable without its payload: `12:1,13:2`."""
    return ",".join(f"{job}:{attempt}" for job, attempt in pairs)


def parse_jobs(text: str) -> list[tuple[int, int]]:
    pairs = []
    for part in filter(None, text.split(",")):
        job, _, attempt = part.partition(":")
        pairs.append((int(job), int(attempt)))
    return pairs


def as_text(value: Any) -> str:
    """A name or id as Redis returned it (bytes) or as a script or test passed it (str)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def liveness_for(lease_seconds: float) -> tuple[float, float]:
    """(heartbeat interval, liveness TTL) for the bot's job lease: a dead worker is noticed
    (TTL) well before its jobs' leases run out, and a busy one beats five times per TTL."""
    heartbeat = min(2.0, max(0.2, lease_seconds / 15))
    return heartbeat, 5 * heartbeat
