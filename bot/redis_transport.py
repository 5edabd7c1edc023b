"""The Redis transport: the scheduler's `Transport` over Redis Streams, for workers elsewhere.

Like the local transport it only moves `engine.protocol` messages; SQLite stays the single source
of truth and the scheduler still hands out work only when a worker reports a free slot. The key
layout, shared with the workers, is `engine.redis_wire`; docs/SCALING.md explains the design.
In short:

- `submit` stores the encoded batch or training job in a payload key with a TTL (bounded by
  `max_payload_bytes`; a bigger job fails with a sentence instead) and appends a small entry
  naming it to the work stream of its slot kind and model. Any worker that holds the model and
  has that slot free takes it.
- Workers report on this bot's event stream, read through a consumer group: an event is
  acknowledged and deleted only after the scheduler has handled it, so a bot that dies mid-way
  reads it again on restart, and results leave Redis as soon as they are stored.
- A monitor reads the worker registry every `check_interval`: a new worker becomes `WorkerReady`
  (also after a bot restart, for workers that kept running), a new heartbeat becomes `Heartbeat`
  (the scheduler extends the leases), a worker whose liveness key expired becomes `WorkerLost`
  (the scheduler requeues its jobs) and its stream entries are dropped. A janitor XAUTOCLAIMs
  entries nobody has touched for `reclaim_idle_seconds` and drops them too: by then the database
  has requeued their jobs, so running them again would only duplicate an attempt.
- Capacity. The work stream is shared, so the worker that takes an entry may not be the one the
  scheduler had in mind (the scheduler moves the lease on `JobStarted`), and a slot can end up
  counted busy while its worker idles. The monitor therefore also offers `SlotFree` for every
  registered worker that holds no entry of a kind while no entry of that kind for its models
  waits unread — only if no submit happened since that snapshot, so an offer can never add
  capacity that does not exist.

Nothing a worker writes can stop the reader: every event is decoded within `max_payload_bytes`
and `engine.protocol.MAX_DEPTH`, and one that cannot be read is acknowledged and moved to the
dead-letter stream (`engine.redis_wire.dead_letter`), also when a restarted bot meets it again
in its pending list. A wrong or missing password is not an outage: `start` refuses with one
sentence naming LEXICON_QUEUE (`QueueRefused`) instead of retrying while jobs pile up.

Everything survives a Redis restart: calls are retried with backoff; a missing consumer group is
recreated (reading from the start); a restart (new `run_id`) or outage gives workers
`reconnect_grace` seconds to re-register before anyone is declared lost; jobs whose entries
vanished with an unpersisted Redis are requeued when their leases expire, and sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, get_args

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from bot.config import StartupError
from engine import protocol
from engine.redis_wire import (
    BOT_GROUP,
    CONTROL_MAXLEN,
    DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_PAYLOAD_TTL,
    REDIS_DOWN,
    REFUSED,
    SLOTS,
    WORK_GROUP,
    WORK_MAXLEN,
    RedisLayout,
    as_text,
    dead_letter,
    format_jobs,
    model_of,
    refused_sentence,
    slot_of,
)

log = logging.getLogger("lexicon.redis_transport")

BOT_CONSUMER = "bot"
JANITOR = "janitor"
# Events this big are decoded off the event loop (images, embeddings, checkpoints).
DECODE_IN_THREAD_BYTES = 256 * 1024
_FORGET_AFTER = 3600.0
_REGISTRATION_BYTES = 64 * 1024  # a worker's registration is a WorkerReady of a few hundred
_FROM_WORKER = get_args(protocol.FromWorker)


@dataclass
class _Known:
    """A worker the transport has announced (or will announce) to the scheduler."""

    models: tuple[str, ...]  # the models it holds (their work streams are the ones it reads)
    beat: bytes | None = None


class _Wake:
    """Queue item that only wakes `events()` (an offer was added)."""


_WAKE = _Wake()
_Item = tuple[protocol.FromWorker, str | None] | _Wake


class RedisTransport:
    """Scale-out transport: workers on any machine that reaches the same Redis."""

    # Remote workers keep running while the bot restarts: the scheduler must not requeue the
    # jobs they hold at start-up, only those whose leases then expire.
    workers_outlive_bot = True

    def __init__(
        self,
        url: str,
        *,
        layout: RedisLayout | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        payload_ttl: float = DEFAULT_PAYLOAD_TTL,
        check_interval: float = 0.5,
        reclaim_idle_seconds: float = 60.0,
        reconnect_grace: float = 15.0,
        cancel_ttl: float = 86_400.0,
        submit_patience: float = 30.0,
        models: tuple[str, ...] = (),
    ) -> None:
        self.url = url
        # Models whose work streams the transport looks after: the configured ones, and any a
        # worker reports or a job names.
        self._models: set[str] = set(models)
        self.layout = layout or RedisLayout()
        self.max_payload_bytes = max_payload_bytes
        self.payload_ttl = payload_ttl
        self.check_interval = check_interval
        self.reclaim_idle_seconds = reclaim_idle_seconds
        self.reconnect_grace = reconnect_grace
        self.cancel_ttl = cancel_ttl
        self.submit_patience = submit_patience
        self.startup_error: str | None = None
        self.client = aioredis.from_url(
            url, socket_connect_timeout=5, socket_timeout=15, health_check_interval=30
        )
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._acks: list[str] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._known: dict[str, _Known] = {}
        self._announced: set[str] = set()  # WorkerReady already yielded to the scheduler
        self._lost: dict[str, float] = {}
        self._submit_seq: dict[str, int] = dict.fromkeys(SLOTS, 0)
        self._offers: dict[tuple[str, protocol.SlotKind], int] = {}
        self._offered: dict[tuple[str, protocol.SlotKind], int] = {}
        self._job_worker: dict[int, str] = {}
        self._unrouted_cancels: dict[int, float] = {}
        self._outage_at = float("-inf")
        self._outage_logged = False
        self._run_id: str | None = None
        self._closing = False

    # --- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Look at Redis once and start reading; StartupError if it refuses the credentials
        (an unreachable Redis is waited out instead)."""
        try:
            await self._ensure_groups()
            await self._tick()  # announce workers that are already running (bot restart)
        except REFUSED as error:
            await self.client.aclose()
            raise StartupError(refused_sentence(error)) from None
        except REDIS_DOWN as error:
            self._note_outage(error)
        except RedisError:
            log.exception("the first look at Redis failed; the monitor will try again")
        self._tasks = [
            asyncio.create_task(self._read_loop(), name="redis-events"),
            asyncio.create_task(self._monitor_loop(), name="redis-monitor"),
        ]

    async def close(self) -> None:
        """Stop reading; workers keep what they hold and report to the next bot process."""
        self._closing = True
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=1.0)
            if pending:
                # redis-py can swallow a cancel in the middle of a blocking read; closing the
                # sockets ends the read, and the loops see `_closing`.
                await self.client.connection_pool.disconnect()
                await asyncio.wait(pending, timeout=5.0)
        with contextlib.suppress(*REDIS_DOWN, TimeoutError):
            await asyncio.wait_for(self._flush_acks(), 5)
        await self.client.aclose()

    # --- Transport ---------------------------------------------------------------------------

    async def submit(self, work: protocol.GenerateBatch | protocol.TrainJob) -> None:
        slot, model = slot_of(work), model_of(work)
        self._submit_seq[slot] += 1  # first, before any await: invalidates pending offers
        self._models.add(model)
        if isinstance(work, protocol.GenerateBatch):
            pairs = [(job.job_id, job.attempt) for job in work.jobs]
        else:
            pairs = [(work.job_id, work.attempt)]
        data = await asyncio.to_thread(protocol.encode, work)
        if len(data) > self.max_payload_bytes:
            sentence = (
                f"This job carries {len(data) / 1e6:.1f} MB, more than the "
                f"{self.max_payload_bytes / 1e6:.0f} MB a GPU worker accepts over the queue; "
                "use fewer or smaller photos."
            )
            for job_id, attempt in pairs:
                self._queue.put_nowait((protocol.JobFailed(job_id, attempt, sentence, False), None))
            return
        key = self.layout.payload(uuid.uuid4().hex)
        fields = {"p": key, "jobs": format_jobs(pairs), "bot": self.layout.bot_id}

        async def write() -> None:
            pipe = self.client.pipeline(transaction=True)
            pipe.set(key, data, px=int(self.payload_ttl * 1000))
            stream = self.layout.work(slot, model)
            pipe.xadd(stream, fields, maxlen=WORK_MAXLEN, approximate=True)  # type: ignore[arg-type]
            await pipe.execute()

        if not await self._patiently(write, self.submit_patience):
            # The jobs stay leased in SQLite; their leases expire and they are sent again.
            log.error("could not reach Redis to submit jobs %s; they will be retried", pairs)

    async def cancel(self, job_id: int) -> None:
        worker = self._job_worker.get(job_id)
        if worker is None:
            # Not started anywhere yet: the worker that reads it checks the cancel key; if one
            # starts it before that, `JobStarted` routes the cancel to it.
            self._unrouted_cancels[job_id] = time.monotonic()

        async def write() -> None:
            pipe = self.client.pipeline(transaction=False)
            pipe.set(self.layout.cancel(job_id), 1, px=int(self.cancel_ttl * 1000))
            if worker is not None:
                self._control(pipe, worker, job_id)
            await pipe.execute()

        await self._patiently(write, 10.0)

    async def events(self) -> AsyncIterator[protocol.FromWorker]:
        while True:
            offer = self._take_offer()
            if offer is not None:
                yield offer
                continue
            item = await self._queue.get()
            if isinstance(item, _Wake):
                continue
            message, entry_id = item
            if isinstance(message, protocol.WorkerReady):
                self._announced.add(message.worker_id)
                self._forget_offers(message.worker_id)
            elif isinstance(message, protocol.WorkerLost):
                self._announced.discard(message.worker_id)
                self._forget_offers(message.worker_id)
            yield message
            if entry_id is not None:
                self._acks.append(entry_id)  # handled: acknowledge and delete it

    # --- reading the event stream ------------------------------------------------------------

    async def _read_loop(self) -> None:
        events = self.layout.events()
        backlog: str | None = "0"  # first, what a previous bot process read but never handled
        delay = 0.05
        while not self._closing:
            try:
                await self._flush_acks()
                response: Any = await self.client.xreadgroup(
                    BOT_GROUP,
                    BOT_CONSUMER,
                    {events: backlog or ">"},
                    count=100,
                    block=None if backlog else 500,
                )
                self._back_online()
                delay = 0.05
            except ResponseError as error:
                if "NOGROUP" not in str(error):
                    raise
                log.warning("the event stream's consumer group is gone (Redis lost its data)")
                await self._ensure_groups()
                backlog = "0"
                continue
            except REDIS_DOWN as error:
                self._note_outage(error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            except RedisError:
                log.exception("reading the event stream failed; retrying")
                await asyncio.sleep(1.0)
                continue
            entries = response[0][1] if response else []
            if backlog is not None:
                if not entries:
                    backlog = None
                    continue
                backlog = as_text(entries[-1][0])
            for entry_id, fields in entries:
                try:
                    await self._receive(as_text(entry_id), fields)
                except (RedisError, OSError):
                    log.exception("could not route event %s", entry_id)
                except Exception as error:  # a poison entry must never end the reader
                    log.exception("could not route event %s", entry_id)
                    await self._dead_letter(as_text(entry_id), repr(error), None)

    async def _receive(self, entry_id: str, fields: Any) -> None:
        raw = (fields or {}).get(b"m")
        try:
            if raw is None:
                raise protocol.DecodeError("the entry carries no message")
            if len(raw) > DECODE_IN_THREAD_BYTES:
                message = await asyncio.to_thread(protocol.decode, raw, self.max_payload_bytes)
            else:
                message = protocol.decode(raw, self.max_payload_bytes)
            if not isinstance(message, _FROM_WORKER):
                raise protocol.DecodeError(f"a {type(message).__name__} is not a worker's report")
        except protocol.DecodeError as error:
            await self._dead_letter(entry_id, str(error), raw)
            return
        if isinstance(message, protocol.WorkerReady):
            worker = message.worker_id
            if worker in self._known or worker in self._lost:
                self._acks.append(entry_id)  # announced already, or an old one of a dead worker
                return
            held = tuple(model.name for model in message.models)
            self._known[worker] = _Known(held)
            self._models.update(held)
        elif isinstance(message, protocol.WorkerLost):
            self._known.pop(message.worker_id, None)
            self._lost[message.worker_id] = time.monotonic()
            self._forget_routes(message.worker_id)
        elif isinstance(message, protocol.JobStarted):
            self._job_worker[message.job_id] = message.worker_id
            if self._unrouted_cancels.pop(message.job_id, None) is not None:
                await self._patiently(lambda: self._route_cancel(message), 10.0)
        elif isinstance(message, protocol.JobOutcome):
            self._job_worker.pop(message.job_id, None)
        self._queue.put_nowait((message, entry_id))

    async def _route_cancel(self, started: protocol.JobStarted) -> None:
        pipe = self.client.pipeline(transaction=False)
        self._control(pipe, started.worker_id, started.job_id)
        await pipe.execute()

    def _control(self, pipe: Any, worker: str, job_id: int) -> None:
        stream = self.layout.control(worker)
        pipe.xadd(
            stream,
            {"m": protocol.encode(protocol.CancelJob(job_id))},
            maxlen=CONTROL_MAXLEN,
            approximate=True,
        )
        pipe.expire(stream, int(self.cancel_ttl))

    async def _dead_letter(self, entry_id: str, reason: str, raw: bytes | None) -> None:
        """Acknowledge a poison event and move it to the dead-letter stream."""
        events = self.layout.events()
        log.warning("moved unreadable event %s to %s: %s", entry_id, self.layout.dead, reason)

        async def move() -> None:
            pipe = self.client.pipeline(transaction=True)
            dead_letter(pipe, self.layout, events, entry_id, reason, raw)
            pipe.xack(events, BOT_GROUP, entry_id)
            pipe.xdel(events, entry_id)
            await pipe.execute()

        if not await self._patiently(move, 10.0):
            self._acks.append(entry_id)  # acknowledged with the next batch, without its copy

    async def _flush_acks(self) -> None:
        if not self._acks:
            return
        ids, self._acks = self._acks, []
        events = self.layout.events()
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.xack(events, BOT_GROUP, *ids)
            pipe.xdel(events, *ids)
            await pipe.execute()
        except BaseException:
            self._acks = ids + self._acks
            raise

    # --- the monitor: registry, liveness, capacity offers, janitor ----------------------------

    async def _monitor_loop(self) -> None:
        next_janitor = time.monotonic() + self.reclaim_idle_seconds / 2
        while not self._closing:
            try:
                await self._tick()
                if time.monotonic() >= next_janitor:
                    await self._janitor()
                    next_janitor = time.monotonic() + self.reclaim_idle_seconds / 2
                self._back_online()
            except REFUSED as error:  # Redis came up refusing us: say so to whoever waits
                self.startup_error = refused_sentence(error)
                self._note_outage(error)
            except REDIS_DOWN as error:
                self._note_outage(error)
            except Exception:  # one bad registration must not stop liveness checks
                log.exception("worker check failed; retrying")
            self._prune()
            await asyncio.sleep(self.check_interval)

    async def _tick(self) -> None:
        """One atomic snapshot of the registry and the work streams, turned into events."""
        seq = dict(self._submit_seq)
        await self._check_restart()
        layout = self.layout
        members = {as_text(m) for m in await self.client.smembers(layout.workers)}
        workers = sorted(members | set(self._known))
        streams = self._streams()
        pipe = self.client.pipeline(transaction=True)
        for _, _, stream in streams:
            pipe.xlen(stream)
            pipe.xpending(stream, WORK_GROUP)
        for worker in workers:
            pipe.hmget(layout.worker(worker), ["ready", "beat", "jobs", "stopping", "memory"])
        results = await pipe.execute(raise_on_error=False)
        unread: dict[tuple[str, str], int] = {}
        holding: dict[tuple[str, str], set[str]] = {}
        for index, (slot, model, _) in enumerate(streams):
            length, pending = results[2 * index], results[2 * index + 1]
            length = length if isinstance(length, int) else 0
            if isinstance(pending, dict):
                unread[slot, model] = length - int(pending.get("pending", 0))
                holding[slot, model] = {as_text(c["name"]) for c in pending.get("consumers") or []}
            else:  # no group yet: everything in the stream is unread
                unread[slot, model], holding[slot, model] = length, set()
        in_grace = time.monotonic() - self._outage_at < self.reconnect_grace
        for worker, fields in zip(workers, results[2 * len(streams) :], strict=True):
            ready, beat, jobs, stopping, memory = fields if isinstance(fields, list) else [None] * 5
            if ready is None:
                if not in_grace:
                    await self._lose(worker, "its heartbeat stopped (liveness key expired)")
                continue
            known = self._known.get(worker)
            try:
                if known is None:
                    announcement = protocol.decode(ready, _REGISTRATION_BYTES)
                    if not isinstance(announcement, protocol.WorkerReady):
                        raise protocol.DecodeError(f"a {type(announcement).__name__}")
                ids = tuple(int(j) for j in as_text(jobs or b"").split(",") if j)
                peak = int(memory or 0)
            except ValueError as error:  # DecodeError included: one bad worker, not the tick
                log.warning("worker %s has an unreadable registration (%s); ignored", worker, error)
                continue
            if known is None:
                held = tuple(model.name for model in announcement.models)
                known = self._known[worker] = _Known(held)
                self._models.update(held)
                self._lost.pop(worker, None)
                self._queue.put_nowait((announcement, None))
            if beat != known.beat:
                known.beat = beat
                self._queue.put_nowait((protocol.Heartbeat(worker, ids, peak), None))
            if stopping or worker not in self._announced:
                continue
            for slot in SLOTS:
                key = (worker, slot)
                free = all(
                    unread.get((slot, model), 0) <= 0
                    and worker not in holding.get((slot, model), set())
                    for model in known.models
                )
                if free and self._offered.get(key) != seq[slot]:
                    self._offers[key] = self._offered[key] = seq[slot]
                    self._queue.put_nowait(_WAKE)

    def _take_offer(self) -> protocol.SlotFree | None:
        while self._offers:
            (worker, slot), seq = self._offers.popitem()
            # Valid only if nothing was submitted since the snapshot that found the slot free.
            if seq == self._submit_seq[slot] and worker in self._announced:
                return protocol.SlotFree(worker, slot)
        return None

    def _forget_offers(self, worker: str) -> None:
        for slot in SLOTS:
            self._offers.pop((worker, slot), None)
            self._offered.pop((worker, slot), None)

    async def _lose(self, worker: str, reason: str) -> None:
        """A worker is gone: drop its stream entries (the scheduler requeues its jobs)."""
        layout = self.layout
        for _, _, stream in self._streams():
            with contextlib.suppress(ResponseError):
                pending = await self.client.xpending_range(
                    stream, WORK_GROUP, min="-", max="+", count=1000, consumername=worker
                )
                ids = [as_text(p["message_id"]) for p in pending]
                if ids:
                    await self._drop_entries(stream, ids)
                await self.client.xgroup_delconsumer(stream, WORK_GROUP, worker)
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(layout.worker(worker), layout.control(worker))
        pipe.srem(layout.workers, worker)
        await pipe.execute()
        self._known.pop(worker, None)
        self._lost[worker] = time.monotonic()
        self._forget_routes(worker)
        self._forget_offers(worker)
        log.warning("worker %s lost: %s", worker, reason)
        self._queue.put_nowait((protocol.WorkerLost(worker, reason), None))

    async def _janitor(self) -> None:
        """XAUTOCLAIM entries idle longer than `reclaim_idle_seconds` and drop them."""
        min_idle = int(self.reclaim_idle_seconds * 1000)
        for slot, _, stream in self._streams():
            start = "0-0"
            with contextlib.suppress(ResponseError):  # no group yet
                while True:
                    response = await self.client.xautoclaim(
                        stream, WORK_GROUP, JANITOR, min_idle, start_id=start, count=100
                    )
                    start, claimed = as_text(response[0]), response[1]
                    if claimed:
                        keys = [as_text(f[b"p"]) for _, f in claimed if f and b"p" in f]
                        ids = [as_text(entry_id) for entry_id, _ in claimed]
                        log.warning("reclaimed %d orphaned %s entries: %s", len(ids), slot, ids)
                        await self._drop_entries(stream, ids, keys)
                    if start == "0-0":
                        break

    async def _drop_entries(
        self, stream: str, ids: list[str], keys: list[str] | None = None
    ) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.xack(stream, WORK_GROUP, *ids)
        pipe.xdel(stream, *ids)
        if keys:
            pipe.delete(*keys)
        await pipe.execute()

    def _streams(self) -> list[tuple[str, str, str]]:
        """(slot, model, stream) of every work stream the transport looks after."""
        return [
            (slot, model, self.layout.work(slot, model))
            for slot in SLOTS
            for model in sorted(self._models)
        ]

    async def _ensure_groups(self) -> None:
        streams = [stream for _, _, stream in self._streams()]
        for stream, group in [
            *((s, WORK_GROUP) for s in streams),
            (self.layout.events(), BOT_GROUP),
        ]:
            with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists
                await self.client.xgroup_create(stream, group, "0", mkstream=True)

    async def _check_restart(self) -> None:
        info = await self.client.info("server")
        run_id = str(info.get("run_id"))
        if self._run_id is not None and run_id != self._run_id:
            log.warning("Redis restarted; workers have %.0f s to re-register", self.reconnect_grace)
            self._outage_at = time.monotonic()
            await self._ensure_groups()
        self._run_id = run_id

    # --- helpers -----------------------------------------------------------------------------

    async def _patiently(self, call: Callable[[], Awaitable[None]], patience: float) -> bool:
        """Retry a call through a Redis outage for up to `patience` seconds."""
        deadline = time.monotonic() + patience
        delay = 0.05
        while True:
            try:
                await call()
            except (RedisError, OSError) as error:  # never into the scheduler's dispatch loop
                self._note_outage(error)
                if time.monotonic() > deadline:
                    return False
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            self._back_online()
            return True

    def _note_outage(self, error: BaseException) -> None:
        self._outage_at = time.monotonic()
        if not self._outage_logged:
            self._outage_logged = True
            log.warning("lost the connection to Redis (%s); retrying", error)

    def _back_online(self) -> None:
        if self._outage_logged:
            self._outage_logged = False
            log.warning("Redis is reachable again")

    def _forget_routes(self, worker: str) -> None:
        self._job_worker = {j: w for j, w in self._job_worker.items() if w != worker}

    def _prune(self) -> None:
        cutoff = time.monotonic() - _FORGET_AFTER
        self._lost = {k: at for k, at in self._lost.items() if at >= cutoff}
        self._unrouted_cancels = {k: at for k, at in self._unrouted_cancels.items() if at >= cutoff}
