"""A standalone GPU worker that serves a Redis queue (scale-out).

The worker loop is the same `engine.worker.loop.Worker` the embedded worker runs; only its
`Channel` differs. The key layout it shares with the bot's transport is `engine.redis_wire`.
`lexicon worker` imports the engine (and with it torch) only once the connection is set up.

How a worker uses Redis (docs/SCALING.md has the whole picture):
- work arrives on one stream per slot kind and model (`lexicon:work:generate:sd15`,
  `lexicon:work:train:sd15`); a worker reads the streams of the models it holds through the
  consumer group `workers`, only while it has that slot free. A read over several models' streams
  may return an entry from each at once: the extras run after the first, and the slot is
  announced free again only when all of them are done. The entry names its payload, a separate
  key that the reader takes with GETDEL, so photos and embeddings stay in Redis only until a
  worker picks them up;
- when the worker has reported every job of an entry (done, failed, cancelled or released), the
  report and the XACK + XDEL of the entry go in one MULTI, so an entry is gone exactly when its
  outcome is on the bot's event stream;
- a free slot is announced by one Lua script that *takes a waiting entry instead* when there is
  one. So an announcement never coexists with work nobody has read, and capacity the bot counted
  twice (a race between workers) is absorbed by the next worker that frees up;
- liveness is a hash with a TTL (`lexicon:worker:<id>`), rewritten with every heartbeat (held
  job ids, peak accelerator memory), which also touches (XCLAIM to itself) the entries the
  worker holds so the bot's janitor never takes them for orphans;
- cancels arrive on a per-worker control stream, and as `lexicon:cancel:<job>` keys that are
  checked when an entry is read (the cancel may come before anyone has started the job).

Nothing read from Redis can stop the worker: payloads and control messages are decoded within
`max_payload_bytes` and `engine.protocol.MAX_DEPTH`, and a poison entry is acknowledged and
moved to the dead-letter stream (`engine.redis_wire.dead_letter`); its jobs are released.
A wrong or missing password stops `serve` before the engine loads (`QueueRefused`).

Every Redis call survives a dropped connection: reports are retried with backoff until Redis is
back (the bot deduplicates by job attempt), progress reports are dropped instead of waited for.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import redis
from redis.exceptions import RedisError, ResponseError

from engine import protocol
from engine.redis_wire import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    EVENTS_MAXLEN,
    REDIS_DOWN,
    REFUSED,
    SLOTS,
    WORK_GROUP,
    QueueRefused,
    RedisLayout,
    as_text,
    dead_letter,
    parse_jobs,
    refused_sentence,
)
from engine.worker.local import model_cache, quiet_libraries
from engine.worker.loop import Worker
from engine.worker_config import EngineSpec, WorkerConfig

log = logging.getLogger("lexicon.redis_worker")

# Between denoising steps the worker talks to Redis at most this often (cancels, new training).
PEEK_INTERVAL = 0.05
# Longest single blocking read, so SIGTERM and cancels are noticed quickly.
MAX_BLOCK = 0.25

# Errors a busy or failing-over Redis answers with; worth waiting out like a dropped connection.
TRANSIENT = ("OOM", "LOADING", "BUSY", "READONLY", "MASTERDOWN", "TRYAGAIN")

T = TypeVar("T")


# Free a slot: take the oldest waiting entry of the first of its work streams (one per model
# held) that has one (returned as XREADGROUP returns it), else announce the free slot on the
# bot's event stream. Atomic, so an announcement never coexists with unread work. KEYS: the work
# streams, then the events stream. ARGV: group, consumer, encoded SlotFree, events maxlen.
TAKE_OR_ANNOUNCE = """
for i = 1, #KEYS - 1 do
  redis.pcall('XGROUP', 'CREATE', KEYS[i], ARGV[1], '0', 'MKSTREAM')
  local got = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1,
                         'STREAMS', KEYS[i], '>')
  if got then return got end
end
redis.call('XADD', KEYS[#KEYS], 'MAXLEN', '~', ARGV[4], '*', 'm', ARGV[3])
return false
"""


class ChannelClosed(EOFError):
    """The channel gave up (Redis stayed away while the worker was stopping)."""


@dataclass
class _Entry:
    """A work entry this worker has read and not yet acknowledged."""

    stream: str
    entry_id: str
    slot: protocol.SlotKind
    bot_id: str
    outstanding: set[tuple[int, int]] = field(default_factory=set)


def _fields(raw: Any) -> dict[str, Any]:
    """Entry fields as a dict, whether redis-py parsed them or a script returned a flat list."""
    if isinstance(raw, dict):
        return {as_text(k): v for k, v in raw.items()}
    items = list(raw or [])
    return {as_text(k): v for k, v in zip(items[::2], items[1::2], strict=True)}


class RedisChannel:
    """A `Channel` (engine.worker.loop) over Redis streams. Thread-safe where the worker needs it:
    the worker loop sends and polls, its heartbeat thread sends heartbeats."""

    def __init__(
        self,
        client: redis.Redis,
        worker_id: str,
        *,
        layout: RedisLayout | None = None,
        max_batch: int = 8,
        ttl: float = 10.0,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        stop_grace: float = 30.0,
    ) -> None:
        self.client = client
        self.worker_id = worker_id
        self.layout = layout or RedisLayout()
        self.max_batch = max_batch
        self.ttl = ttl
        self.max_payload_bytes = max_payload_bytes
        self.stop_grace = stop_grace
        self._lock = threading.RLock()
        self._inbox: deque[protocol.ToWorker] = deque()
        self._free: dict[str, bool] = dict.fromkeys(SLOTS, False)
        self._swallow: dict[str, int] = dict.fromkeys(SLOTS, 0)
        self._entries: dict[str, _Entry] = {}
        self._held: dict[tuple[int, int], _Entry] = {}
        self._worker_jobs: tuple[int, ...] = ()
        self._ready: bytes | None = None
        self._announcement: protocol.WorkerReady | None = None  # `_ready`, decoded
        self._models: tuple[str, ...] = ()  # the models held, from the registration
        self._control_last = "0-0"
        self._next_peek = 0.0
        self._stop = threading.Event()
        self._stop_at: float | None = None
        self._shutdown_sent = False
        self._outage_since: float | None = None
        self._take = client.register_script(TAKE_OR_ANNOUNCE)

    # --- life cycle ------------------------------------------------------------------------

    def request_stop(self) -> None:
        """SIGTERM: the next poll answers Shutdown; the worker finishes or releases its work."""
        if not self._stop.is_set():
            self._stop_at = time.monotonic()
            self._stop.set()

    def close(self, reason: str = "the worker stopped") -> None:
        """Give back what was read but never handed to the worker loop, then say goodbye."""
        self._stop.set()
        with self._lock:
            leftovers = list(self._inbox)
            self._inbox.clear()
        for message in leftovers:
            if isinstance(message, protocol.GenerateBatch):
                for job in message.jobs:
                    self.send(protocol.JobReleased(job.job_id, job.attempt))
            elif isinstance(message, protocol.TrainJob):
                self.send(protocol.JobReleased(message.job_id, message.attempt))
        layout = self.layout

        def farewell() -> None:
            pipe = self.client.pipeline(transaction=True)
            if self._ready is not None:
                pipe.xadd(
                    layout.events(),
                    {"m": protocol.encode(protocol.WorkerLost(self.worker_id, reason))},
                    maxlen=EVENTS_MAXLEN,
                    approximate=True,
                )
            pipe.delete(layout.worker(self.worker_id), layout.control(self.worker_id))
            pipe.srem(layout.workers, self.worker_id)
            pipe.execute()
            for stream in self._streams(SLOTS):
                with contextlib.suppress(ResponseError):
                    self.client.xgroup_delconsumer(stream, WORK_GROUP, self.worker_id)

        with contextlib.suppress(ChannelClosed):
            self._retry(farewell)

    # --- Channel: send -----------------------------------------------------------------------

    def send(self, message: protocol.FromWorker) -> None:
        if isinstance(message, protocol.WorkerReady):
            self._register(message)
        elif isinstance(message, protocol.SlotFree):
            self._slot_free(message)
        elif isinstance(message, protocol.Heartbeat):
            self._heartbeat(message)
        elif isinstance(message, protocol.ProgressReport):
            self._progress(message)
        elif isinstance(message, protocol.JobOutcome):
            self._outcome(message)
        elif isinstance(message, protocol.ModelSwitched):
            self._switched(message)
        else:  # JobStarted, TrainCheckpoint, WorkerLost (could not start)
            self._event(message)

    def _register(self, message: protocol.WorkerReady) -> None:
        self._models = tuple(model.name for model in message.models)
        self._announcement = message
        self._ready = protocol.encode(message)
        self._retry(self._write_registration)

    def _switched(self, message: protocol.ModelSwitched) -> None:
        """Report a model switch, and keep the registration true to it (the next heartbeat
        writes it): a bot that starts later reads which models are resident from there."""
        announcement = self._announcement
        if announcement is not None:
            models = tuple(
                replace(
                    held,
                    resident=held.name in message.resident,
                    switch_seconds=(
                        message.seconds if held.name == message.model else held.switch_seconds
                    ),
                )
                for held in announcement.models
            )
            self._announcement = replace(announcement, models=models)
            self._ready = protocol.encode(self._announcement)
        self._event(message)

    def _event(self, message: protocol.FromWorker) -> None:
        data = self._bounded(message)
        if data is not None:
            self._retry(lambda: self._xadd_event(self.client, self.layout.events(), data))

    def _write_registration(self, pipe_events: bool = True) -> None:
        assert self._ready is not None
        layout = self.layout
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(
            layout.worker(self.worker_id),
            mapping={"ready": self._ready, "host": socket.gethostname(), "pid": os.getpid()},
        )
        pipe.pexpire(layout.worker(self.worker_id), int(self.ttl * 1000))
        pipe.sadd(layout.workers, self.worker_id)
        if pipe_events:
            self._xadd_event(pipe, layout.events(), self._ready)
        pipe.execute()

    def _slot_free(self, message: protocol.SlotFree) -> None:
        slot = message.slot
        with self._lock:
            if self._swallow[slot]:
                self._swallow[slot] -= 1  # one chunk of a split batch is done, not the entry
                return
            self._free[slot] = True
        if self._stop.is_set():
            return
        data = protocol.encode(message)
        keys = [*self._streams([slot]), self.layout.events()]

        def take_or_announce() -> Any:
            return self._take(keys=keys, args=[WORK_GROUP, self.worker_id, data, EVENTS_MAXLEN])

        self._accept_entries(self._retry(take_or_announce))

    def _heartbeat(self, message: protocol.Heartbeat) -> None:
        """Liveness: refresh the hash and its TTL, and touch the entries this worker holds."""
        with self._lock:
            self._worker_jobs = message.job_ids
            held = [(e.stream, e.entry_id) for e in self._entries.values()]
            jobs = sorted({*message.job_ids, *(job for job, _ in self._held)})
        layout = self.layout
        key = layout.worker(self.worker_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(
            key, mapping={"jobs": ",".join(map(str, jobs)), "memory": message.peak_memory_bytes}
        )
        if self._ready is not None:
            pipe.hset(key, "ready", self._ready)
        pipe.hincrby(key, "beat", 1)
        if self._stop.is_set():
            pipe.hset(key, "stopping", 1)
        pipe.pexpire(key, int(self.ttl * 1000))
        pipe.sadd(layout.workers, self.worker_id)
        for stream, entry_id in held:
            pipe.xclaim(stream, WORK_GROUP, self.worker_id, 0, [entry_id], justid=True)
        try:
            pipe.execute(raise_on_error=False)
            self._back_online()
        except REDIS_DOWN as error:
            self._note_outage(error)

    def _progress(self, message: protocol.ProgressReport) -> None:
        """Best effort: a progress report is never worth waiting for Redis."""
        data = self._bounded(message)
        if data is None:
            return
        try:
            self._xadd_event(self.client, self._events_for(message.job_id, message.attempt), data)
            self._back_online()
        except REDIS_DOWN as error:
            self._note_outage(error)

    def _outcome(self, message: protocol.JobOutcome) -> None:
        """Report an outcome; the entry is acknowledged and deleted in the same MULTI once
        every job of it has one."""
        job_id, attempt = message.job_id, message.attempt
        data = self._bounded(message)
        if data is None:
            size = len(protocol.encode(message)) / 1e6
            data = protocol.encode(
                protocol.JobFailed(
                    job_id,
                    attempt,
                    f"The result is {size:.1f} MB, more than the "
                    f"{self.max_payload_bytes / 1e6:.0f} MB the queue carries.",
                    retryable=False,
                    worker_id=self.worker_id,
                )
            )
        with self._lock:
            entry = self._held.pop((job_id, attempt), None)
            finished = None
            if entry is not None:
                entry.outstanding.discard((job_id, attempt))
                if not entry.outstanding:
                    finished = self._entries.pop(entry.entry_id, None)
        events = self.layout.events(entry.bot_id if entry else None)

        def report() -> None:
            pipe = self.client.pipeline(transaction=True)
            self._xadd_event(pipe, events, data)
            if finished is not None:
                pipe.xack(finished.stream, WORK_GROUP, finished.entry_id)
                pipe.xdel(finished.stream, finished.entry_id)
            pipe.execute(raise_on_error=False)

        self._retry(report)

    # --- Channel: poll -----------------------------------------------------------------------

    def poll(self, timeout: float) -> protocol.ToWorker | None:
        """The next message for the worker loop, waiting up to `timeout` seconds.

        Between denoising steps (`timeout` 0) Redis is asked at most every PEEK_INTERVAL; an
        idle worker blocks on the work streams of its free slots, MAX_BLOCK at a time."""
        deadline = time.monotonic() + max(0.0, timeout)
        first = True
        while True:
            with self._lock:
                if self._inbox:
                    return self._inbox.popleft()
            if self._stop.is_set():
                if not self._shutdown_sent:
                    self._shutdown_sent = True
                    with contextlib.suppress(RedisError, OSError):  # no more offers for us
                        self.client.hset(self.layout.worker(self.worker_id), "stopping", 1)
                    return protocol.Shutdown()
                return None
            now = time.monotonic()
            remaining = deadline - now
            if not first and remaining <= 0:
                return None
            first = False
            if remaining <= 0 and now < self._next_peek:
                return None
            self._next_peek = now + PEEK_INTERVAL
            block_ms = max(1, int(min(remaining, MAX_BLOCK) * 1000)) if remaining > 0 else None
            try:
                self._read_control(block_ms if not self._free_slots() else None)
                if not self._inbox and self._free_slots():
                    self._read_work(self._free_slots(), block_ms)
                self._back_online()
            except REDIS_DOWN as error:
                self._note_outage(error)
                time.sleep(min(max(remaining, 0.0), 0.5))
            except RedisError:
                log.exception("reading from Redis failed; retrying")
                time.sleep(min(max(remaining, 0.0), 0.5))

    def _free_slots(self) -> list[protocol.SlotKind]:
        with self._lock:
            return [slot for slot in SLOTS if self._free[slot]]

    def _read_control(self, block_ms: int | None) -> None:
        stream = self.layout.control(self.worker_id)
        response: Any = self.client.xread({stream: self._control_last}, count=16, block=block_ms)
        for _stream, entries in response or []:
            for entry_id, fields in entries:
                self._control_last = as_text(entry_id)
                raw: Any = None
                try:
                    raw = _fields(fields).get("m")
                    if raw is None:
                        raise protocol.DecodeError("the entry carries no message")
                    message = protocol.decode(raw, self.max_payload_bytes)
                except ValueError as error:  # DecodeError, or fields that are not pairs
                    self._poison(stream, self._control_last, str(error), raw)
                    continue
                if isinstance(message, protocol.CancelJob):
                    with self._lock:
                        self._inbox.append(message)
                elif isinstance(message, protocol.Shutdown):
                    self.request_stop()

    def _streams(self, slots: list[protocol.SlotKind] | tuple[protocol.SlotKind, ...]) -> list[str]:
        """The work streams of these slots for every model this worker holds."""
        return [self.layout.work(slot, model) for slot in slots for model in self._models]

    def _slot_of(self, stream: str) -> protocol.SlotKind:
        return "generate" if stream in self._streams(["generate"]) else "train"

    def _read_work(self, slots: list[protocol.SlotKind], block_ms: int | None) -> None:
        streams: dict[Any, Any] = dict.fromkeys(self._streams(slots), ">")
        try:
            response: Any = self.client.xreadgroup(
                WORK_GROUP, self.worker_id, streams, count=1, block=block_ms
            )
        except ResponseError as error:
            if "NOGROUP" not in str(error):
                raise
            self._ensure_groups()  # Redis lost its data (restart without persistence)
            return
        self._accept_entries(response)

    def _ensure_groups(self) -> None:
        for stream in self._streams(SLOTS):
            with contextlib.suppress(ResponseError):  # BUSYGROUP: someone was faster
                self.client.xgroup_create(stream, WORK_GROUP, "0", mkstream=True)

    def _accept_entries(self, response: Any) -> None:
        for stream, entries in response or []:
            stream_name = as_text(stream)
            slot = self._slot_of(stream_name)
            for entry_id, fields in entries:
                self._accept(stream_name, slot, as_text(entry_id), fields)

    def _accept(self, stream: str, slot: protocol.SlotKind, entry_id: str, raw: Any) -> None:
        """Take one work entry: its payload (GETDEL), cancels, and hand it to the worker."""
        try:
            fields = _fields(raw)
            if "p" not in fields:  # trimmed or deleted under us: nothing to run
                self._retry(lambda: self._ack(stream, entry_id))
                return
            jobs = parse_jobs(as_text(fields.get("jobs", b"")))
            bot_id = as_text(fields.get("bot", self.layout.bot_id))
            payload_key = as_text(fields["p"])
        except ValueError as error:  # not pairs, not UTF-8, job ids that are not numbers
            self._poison(stream, entry_id, f"unreadable work entry fields ({error})", None)
            self._retry(lambda: self._ack(stream, entry_id))
            return

        def fetch() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            pipe.getdel(payload_key)
            for job_id, _ in jobs:
                pipe.exists(self.layout.cancel(job_id))
            result: list[Any] = pipe.execute()
            return result

        payload, *cancelled = self._retry(fetch)
        entry = _Entry(stream, entry_id, slot, bot_id, set(jobs))
        with self._lock:
            self._entries[entry_id] = entry
            for pair in jobs:
                self._held[pair] = entry
        message: Any = None
        if payload is not None:
            try:
                message = protocol.decode(payload, self.max_payload_bytes)
                if not isinstance(message, protocol.GenerateBatch | protocol.TrainJob):
                    raise protocol.DecodeError(f"a {type(message).__name__} is not work")
            except protocol.DecodeError as error:
                self._poison(payload_key, entry_id, str(error), payload)
        if not isinstance(message, protocol.GenerateBatch | protocol.TrainJob):
            # The payload expired or is corrupt: give the jobs back; the bot sends them again.
            log.warning("work entry %s has no usable payload; releasing %s", entry_id, jobs)
            for job_id, attempt in jobs:
                self.send(protocol.JobReleased(job_id, attempt))
            return
        with self._lock:
            if not self._free[slot]:  # a second model's entry of one read: free after both
                self._swallow[slot] += 1
            self._free[slot] = False
            for (job_id, _), is_cancelled in zip(jobs, cancelled, strict=True):
                if is_cancelled:
                    self._inbox.append(protocol.CancelJob(job_id))
            if isinstance(message, protocol.GenerateBatch):
                chunks = split_batch(message, self.max_batch)
                self._swallow["generate"] += len(chunks) - 1
                self._inbox.extend(chunks)
            else:
                self._inbox.append(message)

    def _ack(self, stream: str, entry_id: str) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.xack(stream, WORK_GROUP, entry_id)
        pipe.xdel(stream, entry_id)
        pipe.execute(raise_on_error=False)

    # --- helpers -----------------------------------------------------------------------------

    def _poison(self, stream: str, entry_id: str, reason: str, raw: bytes | None) -> None:
        """Move what a poison entry carried to the dead-letter stream (best effort)."""
        log.warning(
            "moved unreadable entry %s of %s to %s: %s", entry_id, stream, self.layout.dead, reason
        )
        pipe = self.client.pipeline(transaction=False)
        dead_letter(pipe, self.layout, stream, entry_id, reason, raw)
        with contextlib.suppress(*REDIS_DOWN):
            pipe.execute()

    def _events_for(self, job_id: int, attempt: int) -> str:
        with self._lock:
            entry = self._held.get((job_id, attempt))
        return self.layout.events(entry.bot_id if entry else None)

    def _bounded(self, message: protocol.FromWorker) -> bytes | None:
        data = protocol.encode(message)
        if len(data) > self.max_payload_bytes:
            log.error(
                "%s is %d bytes, over the %d-byte limit; not sent",
                type(message).__name__,
                len(data),
                self.max_payload_bytes,
            )
            return None
        return data

    @staticmethod
    def _xadd_event(target: Any, stream: str, data: bytes) -> Any:
        return target.xadd(stream, {"m": data}, maxlen=EVENTS_MAXLEN, approximate=True)

    def _retry(self, call: Callable[[], T]) -> T:
        """Run a Redis call until it succeeds; a stopping worker gives up after `stop_grace`."""
        delay = 0.05
        while True:
            try:
                result = call()
            except (*REDIS_DOWN, ResponseError) as error:
                if isinstance(error, ResponseError) and not str(error).startswith(TRANSIENT):
                    raise
                self._note_outage(error)
                if self._stop_at is not None and time.monotonic() - self._stop_at > self.stop_grace:
                    raise ChannelClosed(
                        "Redis stayed unreachable while the worker stopped"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            self._back_online()
            return result

    def _note_outage(self, error: BaseException) -> None:
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            log.warning("lost the connection to Redis (%s); retrying", error)

    def _back_online(self) -> None:
        if self._outage_since is not None:
            log.warning(
                "Redis is reachable again after %.1f s", time.monotonic() - self._outage_since
            )
            self._outage_since = None
            # A restarted Redis may have lost the registration: write it again right away.
            if self._ready is not None:
                with contextlib.suppress(*REDIS_DOWN):
                    self._write_registration(pipe_events=False)


def split_batch(batch: protocol.GenerateBatch, max_images: int) -> list[protocol.GenerateBatch]:
    """Chunks of at most `max_images` images, for a worker smaller than the one the scheduler
    sized the batch for (the work stream is shared)."""
    chunks: list[protocol.GenerateBatch] = []
    current: list[Any] = []
    images = 0
    for job in batch.jobs:
        count = job.request.count
        if current and images + count > max_images:
            chunks.append(protocol.GenerateBatch(tuple(current)))
            current, images = [], 0
        current.append(job)
        images += count
    if current:
        chunks.append(protocol.GenerateBatch(tuple(current)))
    return chunks


def connect(url: str) -> redis.Redis:
    """A thread-safe client; blocking reads stay far below the socket timeout."""
    return redis.Redis.from_url(
        url, socket_connect_timeout=5, socket_timeout=15, health_check_interval=30
    )


def serve(
    url: str,
    spec: EngineSpec,
    config: WorkerConfig,
    *,
    ttl: float,
    layout: RedisLayout | None = None,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    install_signals: bool = True,
) -> int:
    """Load the models (as memory allows), register, serve until SIGTERM; returns the exit status.
    QueueRefused when Redis refuses the credentials in `url`."""
    quiet_libraries()
    channel = RedisChannel(
        connect(url),
        config.worker_id,
        layout=layout,
        max_batch=config.max_batch,
        ttl=ttl,
        max_payload_bytes=max_payload_bytes,
    )
    try:
        channel.client.ping()  # before the engine loads: a refused password ends the start
    except REFUSED as error:
        raise QueueRefused(refused_sentence(error)) from None
    except REDIS_DOWN as error:
        log.warning("Redis is not reachable yet (%s); the worker will keep trying", error)
    if install_signals:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: channel.request_stop())
    names = ", ".join(f"{model.name}={model.source}" for model in spec.models)
    log.info("worker %s: loading the %s engine (%s)", config.worker_id, spec.kind, names)
    try:
        models = model_cache(spec)
    except Exception as error:
        log.error("the GPU worker could not start: %s", error)
        with contextlib.suppress(ChannelClosed):
            channel.request_stop()
            channel.send(
                protocol.WorkerLost(config.worker_id, f"the GPU worker could not start: {error}")
            )
        return 1
    if channel._stop.is_set():
        return 0
    log.info("worker %s: ready, serving %s", config.worker_id, url)
    try:
        Worker(models, channel, config).run()
        channel.close()
    finally:
        models.close()  # their threads (PNG encoders) must stop before the interpreter
    log.info("worker %s: stopped", config.worker_id)
    return 0
