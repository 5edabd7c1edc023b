"""The job queue: one row per job is the single source of truth.

Claims are atomic (`BEGIN IMMEDIATE` + `UPDATE … RETURNING`) and fair: the next job goes to the
user who has waited longest since their last job started, so someone with twenty queued jobs
gets one, then everyone else waiting gets one, before their next. A claimed job carries a lease
that the worker's heartbeat extends; a lease that runs out puts the job back in the queue until
its attempts are used up, so no job is silently dropped.

Worker-side calls (`heartbeat`, `set_progress`, `save_checkpoint`, `complete`, `fail`) accept
the worker's id and raise LeaseLost when that worker no longer holds the job — it was cancelled,
or its lease expired and the job went back to the queue — so a late answer cannot overwrite a
newer attempt.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from storage.clock import Clock, from_seconds, maybe_from_seconds, to_seconds, utc_now
from storage.db import Database, Params, Queries, Transaction, from_row
from storage.errors import Forbidden, JobFinished, LeaseLost, NotFound, QuotaExceeded
from storage.files import FileStore
from storage.images import insert_image
from storage.models import (
    Actor,
    Delivery,
    FileKind,
    Job,
    JobKind,
    JobProgress,
    JobState,
    NewImage,
)
from storage.references import remove_if_unreferenced
from storage.users import ensure_user


@dataclass(frozen=True, slots=True)
class Lease:
    """Where a report about a running job says it comes from: the worker holding the job and
    the attempt it runs. A write that carries a lease is refused (`LeaseLost`) when the job has
    moved on — another worker, another attempt, no longer running; a part left None is not
    checked."""

    worker_id: str | None = None
    attempt: int | None = None


UNCHECKED = Lease()  # the writes of the bot itself, which holds no lease


ACTIVE_STATES = (JobState.QUEUED, JobState.RUNNING)
_FINAL_SQL = "('succeeded', 'failed', 'cancelled')"


def job_from_row(row: sqlite3.Row) -> Job:
    progress = None
    if row["progress"] is not None:
        raw = json.loads(row["progress"])
        progress = JobProgress(
            step=raw["step"],
            total=raw["total"],
            eta_seconds=raw.get("eta"),
        )
    return from_row(
        Job,
        row,
        kind=JobKind(row["kind"]),
        state=JobState(row["state"]),
        params=json.loads(row["params"]),
        lease_expires_at=maybe_from_seconds(row["lease_expires_at"]),
        progress=progress,
        result=None if row["result"] is None else json.loads(row["result"]),
        token_expires_at=maybe_from_seconds(row["token_expires_at"]),
        delivered=bool(row["delivered"]),
        created_at=from_seconds(row["created_at"]),
        started_at=maybe_from_seconds(row["started_at"]),
        finished_at=maybe_from_seconds(row["finished_at"]),
    )


async def _job(queries: Queries, job_id: int) -> Job:
    """The job, or NotFound."""
    row = await queries.fetch_one("SELECT * FROM jobs WHERE id = ?", (job_id,))
    if row is None:
        raise NotFound(f"There is no job #{job_id}.")
    return job_from_row(row)


async def _updated(transaction: Transaction, sql: str, params: Params) -> Job:
    """Run an `UPDATE jobs … RETURNING *` of one job known to exist; the job as it is now."""
    row = await transaction.fetch_one(sql, params)
    assert row is not None
    return job_from_row(row)


@dataclass(frozen=True)
class ModelFilter:
    """Queued jobs for some configured models only; a job with no model (queued before models
    had names) is one for `default`."""

    names: Collection[str]
    default: str


def _fair_queue_sql(
    kinds: Collection[JobKind | str] | None, models: ModelFilter | None = None
) -> tuple[str, list[Any]]:
    """A query of queued jobs in fair order: `SELECT id, position FROM fair ORDER BY position`.

    A user's place is the moment their last job started (never: first of all), so whoever has
    waited longest since their last turn goes next. Each round takes one job per user, their
    oldest, users in that order; the whole order therefore equals successive claims. With
    `models`, the order is that among the jobs for those models (what one worker can run).
    """
    filters = ["state = 'queued'"]
    params: list[Any] = []
    if kinds is not None:
        kind_values = sorted(JobKind(kind).value for kind in kinds)
        filters.append(f"kind IN ({', '.join('?' for _ in kind_values)})")
        params.extend(kind_values)
    if models is not None:
        names = sorted(models.names)
        filters.append(f"coalesce(model, ?) IN ({', '.join('?' for _ in names)})")
        params.extend([models.default, *names])
    sql = f"""
        WITH queued AS (
            SELECT id, user_id, created_at,
                   row_number() OVER (PARTITION BY user_id ORDER BY id) AS turn
            FROM jobs WHERE {" AND ".join(filters)}
        ),
        waiting AS (
            SELECT q.user_id,
                   coalesce((SELECT max(s.started_at) FROM jobs AS s
                             WHERE s.user_id = q.user_id), 0.0) AS since
            FROM queued AS q GROUP BY q.user_id
        ),
        fair AS (
            SELECT q.id, row_number() OVER (ORDER BY q.turn, w.since, q.id) AS position
            FROM queued AS q JOIN waiting AS w ON w.user_id = q.user_id
        )
    """
    return sql, params


def over_quota(active: int) -> QuotaExceeded:
    """The refusal for a user who already has `active` jobs, the most allowed."""
    return QuotaExceeded(
        f"You already have {active} jobs waiting or running, the most allowed; "
        "wait for one to finish or cancel one."
    )


@dataclass(frozen=True, slots=True)
class Cancellation:
    """A cancelled job, and the worker that was running it (to be told to stop), if any."""

    job: Job
    stopped_worker: str | None


class JobRepository:
    def __init__(self, db: Database, files: FileStore, clock: Clock = utc_now) -> None:
        self._db = db
        self._files = files
        self._clock = clock

    # -- enqueueing and reading ----------------------------------------------------------------

    async def enqueue(
        self,
        user_id: int,
        kind: JobKind | str,
        params: Mapping[str, Any],
        *,
        guild_id: int | None = None,
        batch_key: str | None = None,
        max_attempts: int = 3,
        delivery: Delivery | None = None,
        photos: Sequence[bytes] = (),
        max_active: int | None = None,
        model: str | None = None,
    ) -> Job:
        """Queue a job for `model` (None: the deployment's default). Training photos are stored
        before the row commits; `max_active` (queued + running jobs of this user) is checked
        atomically with the insert."""
        kind = JobKind(kind)
        delivery = delivery or Delivery()
        now = self._clock()
        params_json = json.dumps(params, sort_keys=True)
        async with self._db.transaction() as transaction:
            await ensure_user(transaction, user_id, now)
            if max_active is not None:
                active = await self._active_count(transaction, user_id)
                if active >= max_active:
                    raise over_quota(active)
            job_id = await transaction.insert(
                """
                INSERT INTO jobs (user_id, guild_id, kind, params, batch_key, max_attempts,
                    channel_id, message_id, interaction_token, token_expires_at, created_at, model)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """,
                (
                    user_id,
                    guild_id,
                    kind.value,
                    params_json,
                    batch_key,
                    max_attempts,
                    delivery.channel_id,
                    delivery.message_id,
                    delivery.interaction_token,
                    _maybe_seconds(delivery.token_expires_at),
                    to_seconds(now),
                    model,
                ),
            )
            for idx, photo in enumerate(photos):
                sha = await asyncio.to_thread(self._files.put, FileKind.PHOTOS, photo)
                await transaction.execute(
                    "INSERT INTO job_photos (job_id, idx, sha256) VALUES (?, ?, ?)",
                    (job_id, idx, sha),
                )
            return await _job(transaction, job_id)

    async def get(self, job_id: int) -> Job:
        return await _job(self._db, job_id)

    async def photos(self, job_id: int) -> list[str]:
        """The sha256s of a training job's photos, in the order they were given."""
        rows = await self._db.fetch_all(
            "SELECT sha256 FROM job_photos WHERE job_id = ? ORDER BY idx", (job_id,)
        )
        return [row[0] for row in rows]

    async def active_count(self, user_id: int, kind: JobKind | None = None) -> int:
        """Jobs of this user that are not finished (queued or running), of `kind` or of every
        kind: what a limit counts."""
        return await self._active_count(self._db, user_id, kind)

    async def list_for_user(
        self,
        user_id: int,
        *,
        states: Collection[JobState | str] | None = ACTIVE_STATES,
        limit: int = 25,
    ) -> list[Job]:
        """The user's jobs in those states (default: waiting or running), newest first."""
        sql = "SELECT * FROM jobs WHERE user_id = ?"
        params: list[Any] = [user_id]
        if states is not None:
            values = sorted(JobState(state).value for state in states)
            sql += f" AND state IN ({', '.join('?' for _ in values)})"
            params.extend(values)
        rows = await self._db.fetch_all(f"{sql} ORDER BY id DESC LIMIT ?", (*params, limit))
        return [job_from_row(row) for row in rows]

    async def fair_order(
        self,
        limit: int = 50,
        kinds: Collection[JobKind | str] | None = None,
        models: ModelFilter | None = None,
    ) -> list[Job]:
        """Queued jobs in fair order, for the scheduler to pick from (nothing is claimed);
        with `models`, only those for these models, in fair order among themselves."""
        fair, params = _fair_queue_sql(kinds, models)
        rows = await self._db.fetch_all(
            f"""{fair}
            SELECT jobs.* FROM fair JOIN jobs ON jobs.id = fair.id
            ORDER BY fair.position LIMIT ?
            """,
            (*params, limit),
        )
        return [job_from_row(row) for row in rows]

    async def queue_position(self, job_id: int, models: ModelFilter | None = None) -> int | None:
        """1 for the job that would be claimed next; None when the job is not queued; with
        `models`, its place among the jobs for those models."""
        fair, params = _fair_queue_sql(None, models)
        value = await self._db.fetch_value(
            f"{fair} SELECT position FROM fair WHERE id = ?", (*params, job_id)
        )
        return None if value is None else int(value)

    # -- claiming ------------------------------------------------------------------------------

    async def claim_ids(
        self, job_ids: Sequence[int], worker_id: str, lease_seconds: float
    ) -> list[Job]:
        """Lease exactly these jobs (a scheduler's pick from `fair_order`), in the given order.

        Jobs that are no longer queued (cancelled or claimed meanwhile) are skipped. Each job
        starts one microsecond after the one before it: the fair order breaks ties between
        users by their last start, and one shared timestamp would hand every tie to the lowest
        job id, so with more users than a batch holds the same users would be left out each time.
        """
        now = self._clock()
        expires = to_seconds(now + timedelta(seconds=lease_seconds))
        claimed: list[Job] = []
        async with self._db.transaction() as transaction:
            for index, job_id in enumerate(dict.fromkeys(job_ids)):
                row = await transaction.fetch_one(
                    """
                    UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_owner = ?,
                        lease_expires_at = ?, started_at = ?
                    WHERE id = ? AND state = 'queued' RETURNING *
                    """,
                    (worker_id, expires, to_seconds(now) + index * 1e-6, job_id),
                )
                if row is not None:
                    claimed.append(job_from_row(row))
        return claimed

    async def move_lease(
        self, job_id: int, worker_id: str, lease_seconds: float, *, attempt: int
    ) -> Job:
        """Hand a running job's lease to the worker that actually took it (shared queues).

        Only the current attempt moves; a late report from an earlier one changes nothing.
        """
        expires = to_seconds(self._clock() + timedelta(seconds=lease_seconds))
        async with self._db.transaction() as transaction:
            row = await transaction.fetch_one(
                """
                UPDATE jobs SET lease_owner = ?, lease_expires_at = ?
                WHERE id = ? AND state = 'running' AND attempts = ? RETURNING *
                """,
                (worker_id, expires, job_id, attempt),
            )
            if row is None:
                return await _job(transaction, job_id)
        return job_from_row(row)

    async def leased_to(self, worker_id: str) -> list[Job]:
        """The running jobs whose lease this worker holds, oldest first."""
        rows = await self._db.fetch_all(
            "SELECT * FROM jobs WHERE state = 'running' AND lease_owner = ? ORDER BY id",
            (worker_id,),
        )
        return [job_from_row(row) for row in rows]

    async def release(self, job_id: int, lease: Lease = UNCHECKED) -> Job:
        """A worker hands back a job it never ran: queued again, the attempt not counted."""
        async with self._db.transaction() as transaction:
            current = await self._leased(transaction, job_id, lease)
            await self._back_to_queue(transaction, current, current.error)
            return await _updated(
                transaction,
                "UPDATE jobs SET attempts = max(attempts - 1, 0) WHERE id = ? RETURNING *",
                (job_id,),
            )

    # -- the worker's side ---------------------------------------------------------------------

    async def heartbeat(
        self, job_id: int, worker_id: str, lease_seconds: float, *, attempt: int | None = None
    ) -> Job:
        """Extend the lease; LeaseLost tells the worker to stop working on this job."""
        async with self._db.transaction() as transaction:
            await self._leased(transaction, job_id, Lease(worker_id, attempt))
            expires = self._clock() + timedelta(seconds=lease_seconds)
            return await _updated(
                transaction,
                "UPDATE jobs SET lease_expires_at = ? WHERE id = ? RETURNING *",
                (to_seconds(expires), job_id),
            )

    async def set_progress(
        self, job_id: int, progress: JobProgress, lease: Lease = UNCHECKED
    ) -> Job:
        """Record how far the running attempt has come; a report from another worker or an
        earlier attempt is LeaseLost."""
        progress_json = json.dumps(
            {"step": progress.step, "total": progress.total, "eta": progress.eta_seconds}
        )
        async with self._db.transaction() as transaction:
            await self._leased(transaction, job_id, lease)
            return await _updated(
                transaction,
                "UPDATE jobs SET progress = ? WHERE id = ? RETURNING *",
                (progress_json, job_id),
            )

    async def save_checkpoint(self, job_id: int, data: bytes, lease: Lease = UNCHECKED) -> str:
        """Keep a training checkpoint so a retried attempt resumes; returns its sha256."""
        async with self._db.transaction() as transaction:
            current = await self._leased(transaction, job_id, lease)
            sha = await asyncio.to_thread(self._files.put, FileKind.CHECKPOINTS, data)
            await transaction.execute(
                "UPDATE jobs SET checkpoint_sha256 = ? WHERE id = ?", (sha, job_id)
            )
            if current.checkpoint_sha256 != sha:
                await remove_if_unreferenced(
                    transaction, self._files, FileKind.CHECKPOINTS, current.checkpoint_sha256
                )
        return sha

    async def complete(
        self,
        job_id: int,
        result: Mapping[str, Any],
        lease: Lease = UNCHECKED,
        images: Sequence[NewImage] = (),
    ) -> Job:
        """Mark the job succeeded, storing its images in the same transaction."""
        now = self._clock()
        async with self._db.transaction() as transaction:
            current = await self._leased(transaction, job_id, lease)
            for image in images:
                await insert_image(transaction, self._files, job_id, image, now)
            row = await self._finish(
                transaction,
                current,
                JobState.SUCCEEDED,
                now,
                result=json.dumps(result, sort_keys=True),
                error=None,
            )
        return row

    async def fail(
        self, job_id: int, error: str, *, retryable: bool, lease: Lease = UNCHECKED
    ) -> Job:
        """Record a failure: back to the queue while attempts remain and it may help, else final.

        `error` is the sentence the user will read.
        """
        now = self._clock()
        async with self._db.transaction() as transaction:
            current = await self._leased(transaction, job_id, lease)
            if retryable and current.attempts < current.max_attempts:
                return await self._back_to_queue(transaction, current, error)
            return await self._finish(
                transaction, current, JobState.FAILED, now, result=None, error=error
            )

    # -- the user's and the scheduler's side ---------------------------------------------------

    async def cancel(self, actor: Actor, job_id: int) -> Cancellation:
        """Only the job's owner, or a manager of the server it came from, cancels it."""
        now = self._clock()
        async with self._db.transaction() as transaction:
            current = await _job(transaction, job_id)
            manages_it = actor.is_manager and (
                actor.guild_id is None or actor.guild_id == current.guild_id
            )
            if current.user_id != actor.user_id and not manages_it:
                raise Forbidden(
                    f"Only the person who queued job #{job_id} or a server manager can cancel it."
                )
            if current.is_final:
                raise JobFinished(
                    f"Job #{job_id} has already {_state_verb(current.state)}, "
                    "so it cannot be cancelled."
                )
            cancelled = await self._finish(
                transaction,
                current,
                JobState.CANCELLED,
                now,
                result=None,
                error=current.error,
            )
        return Cancellation(job=cancelled, stopped_worker=current.lease_owner)

    async def requeue_expired_leases(self, now: datetime | None = None) -> list[int]:
        """Put jobs whose worker stopped heartbeating back in the queue; return their ids.

        A job that has used all its attempts fails instead, with a sentence for its owner.
        """
        now = now or self._clock()
        return await self._requeue_running(
            "lease_expires_at < ?",
            (to_seconds(now),),
            "The worker running this job stopped responding.",
            now,
        )

    async def requeue_worker(self, worker_id: str, error: str) -> list[int]:
        """Requeue every job leased to a worker that is gone (same attempt rule as above)."""
        return await self._requeue_running("lease_owner = ?", (worker_id,), error, self._clock())

    async def requeue_running(self, error: str) -> list[int]:
        """At start-up: every job still marked running was lost with the previous process."""
        return await self._requeue_running("1", (), error, self._clock())

    async def count_queued(self) -> int:
        return int(await self._db.fetch_value("SELECT count(*) FROM jobs WHERE state = 'queued'"))

    async def _requeue_running(
        self, condition: str, params: Params, error: str, now: datetime
    ) -> list[int]:
        async with self._db.transaction() as transaction:
            lost = await transaction.fetch_all(
                f"SELECT * FROM jobs WHERE state = 'running' AND {condition} ORDER BY id", params
            )
            requeued: list[int] = []
            for row in lost:
                job = job_from_row(row)
                if job.attempts < job.max_attempts:
                    await self._back_to_queue(transaction, job, error)
                    requeued.append(job.id)
                else:
                    await self._finish(
                        transaction,
                        job,
                        JobState.FAILED,
                        now,
                        result=None,
                        error=(
                            f"Lexicon gave up on this job after {job.attempts} interrupted "
                            f"attempt{'' if job.attempts == 1 else 's'}."
                        ),
                    )
        return requeued

    async def mark_delivered(self, job_id: int) -> None:
        async with self._db.transaction() as transaction:
            changed = await transaction.execute(
                f"UPDATE jobs SET delivered = 1 WHERE id = ? AND state IN {_FINAL_SQL}",
                (job_id,),
            )
        if not changed:
            raise NotFound(f"There is no finished job #{job_id}.")

    async def list_undelivered_finished(self, limit: int = 100) -> list[Job]:
        """Finished jobs whose result has not reached Discord yet, oldest first (for restarts)."""
        rows = await self._db.fetch_all(
            f"""
            SELECT * FROM jobs WHERE delivered = 0 AND state IN {_FINAL_SQL}
            ORDER BY id LIMIT ?
            """,
            (limit,),
        )
        return [job_from_row(row) for row in rows]

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    async def _active_count(transaction: Queries, user_id: int, kind: JobKind | None = None) -> int:
        sql = "SELECT count(*) FROM jobs WHERE user_id = ? AND state IN ('queued', 'running')"
        if kind is None:
            return int(await transaction.fetch_value(sql, (user_id,)))
        return int(await transaction.fetch_value(f"{sql} AND kind = ?", (user_id, kind.value)))

    @staticmethod
    async def _leased(transaction: Transaction, job_id: int, lease: Lease) -> Job:
        """The running job, or LeaseLost if it is not running, not leased to the lease's
        worker, or no longer on its attempt (a late report from an earlier attempt)."""
        job = await _job(transaction, job_id)
        worker_id, attempt = lease.worker_id, lease.attempt
        holder = worker_id or "its worker"
        if job.state is not JobState.RUNNING or (
            worker_id is not None and job.lease_owner != worker_id
        ):
            raise LeaseLost(
                f"Job #{job_id} is no longer leased to {holder} (it is {job.state.value})."
            )
        if attempt is not None and job.attempts != attempt:
            raise LeaseLost(
                f"Job #{job_id} is on attempt {job.attempts}, so the report from attempt "
                f"{attempt} was ignored."
            )
        return job

    async def _back_to_queue(
        self, transaction: Transaction, current: Job, error: str | None
    ) -> Job:
        """Queue a running job again (keeping its checkpoint, dropping its stale progress)."""
        return await _updated(
            transaction,
            """
            UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_expires_at = NULL,
                error = ?, progress = NULL, preview_sha256 = NULL
            WHERE id = ? RETURNING *
            """,
            (error, current.id),
        )

    async def _finish(
        self,
        transaction: Transaction,
        current: Job,
        state: JobState,
        now: datetime,
        *,
        result: str | None,
        error: str | None,
    ) -> Job:
        """Move to a final state and free the checkpoint file it no longer needs."""
        job = await _updated(
            transaction,
            """
            UPDATE jobs SET state = ?, finished_at = ?, lease_owner = NULL,
                lease_expires_at = NULL, result = ?, error = ?, preview_sha256 = NULL,
                checkpoint_sha256 = NULL
            WHERE id = ? RETURNING *
            """,
            (state.value, to_seconds(now), result, error, current.id),
        )
        await remove_if_unreferenced(
            transaction, self._files, FileKind.CHECKPOINTS, current.checkpoint_sha256
        )
        return job


def _maybe_seconds(moment: datetime | None) -> float | None:
    return None if moment is None else to_seconds(moment)


def _state_verb(state: JobState) -> str:
    return {
        JobState.SUCCEEDED: "succeeded",
        JobState.FAILED: "failed",
        JobState.CANCELLED: "been cancelled",
    }.get(state, state.value)
