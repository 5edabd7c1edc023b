"""JobRepository: fair claims, leases, retries, results, delivery."""

from __future__ import annotations

from datetime import timedelta

import pytest

from storage import (
    Actor,
    Delivery,
    JobFinished,
    JobProgress,
    JobState,
    Lease,
    LeaseLost,
    NewImage,
    QuotaExceeded,
    Storage,
)
from storage.clock import utc_now
from storage.files import sha256_of
from tests.storage.conftest import claim_next, stored_hashes

A, B, C = 1, 2, 3


async def _claim_users(store: Storage, count: int) -> list[int]:
    claimed: list[int] = []
    for _ in range(count):
        job = await claim_next(store, "worker-1", lease_seconds=60)
        assert job is not None
        claimed.append(job.user_id)
    return claimed


async def test_claims_are_round_robin_across_users(store: Storage) -> None:
    """A queues 20, then B and C one each: B and C are claimed before A's third job."""
    a_jobs = [await store.jobs.enqueue(A, "generate", {"n": n}) for n in range(20)]
    await store.jobs.enqueue(B, "generate", {})
    await store.jobs.enqueue(C, "generate", {})
    predicted = [job.user_id for job in await store.jobs.fair_order(limit=100)]
    claimed_jobs = []
    for _ in range(22):
        job = await claim_next(store, "worker-1", lease_seconds=60)
        assert job is not None
        claimed_jobs.append(job)
    order = [job.user_id for job in claimed_jobs]
    third_of_a = [i for i, user in enumerate(order) if user == A][2]
    assert order.index(B) < third_of_a and order.index(C) < third_of_a
    assert order[:4] == [A, B, C, A]
    assert order == predicted
    assert [job.id for job in claimed_jobs if job.user_id == A] == [job.id for job in a_jobs]
    assert await claim_next(store, "worker-1", lease_seconds=60) is None


async def test_a_newcomer_goes_before_a_user_who_just_had_a_turn(store: Storage) -> None:
    """After A's job starts, a user who queues later still goes before A's next job."""
    for n in range(3):
        await store.jobs.enqueue(A, "generate", {"n": n})
    assert await _claim_users(store, 1) == [A]
    await store.jobs.enqueue(B, "generate", {})
    assert await _claim_users(store, 3) == [B, A, A]


async def test_queue_position_follows_the_fair_order(store: Storage) -> None:
    """Positions count from 1 in claim order; a job that is not queued has none."""
    a1 = await store.jobs.enqueue(A, "generate", {})
    a2 = await store.jobs.enqueue(A, "generate", {})
    b1 = await store.jobs.enqueue(B, "generate", {})
    assert [await store.jobs.queue_position(j.id) for j in (a1, b1, a2)] == [1, 2, 3]
    await claim_next(store, "worker-1", lease_seconds=60)
    assert await store.jobs.queue_position(a1.id) is None
    assert await store.jobs.queue_position(b1.id) == 1


async def test_claims_can_be_limited_to_kinds(store: Storage) -> None:
    """A worker that only trains is never handed a generate job."""
    await store.jobs.enqueue(A, "generate", {})
    train = await store.jobs.enqueue(B, "train", {})
    claimed = await claim_next(store, "trainer", lease_seconds=60, kinds=["train"])
    assert claimed is not None and claimed.id == train.id
    assert await claim_next(store, "trainer", lease_seconds=60, kinds=["train"]) is None


async def test_expired_leases_are_requeued_until_attempts_run_out(store: Storage) -> None:
    """A silent worker's job returns to the queue, then fails with a sentence at the limit."""
    job = await store.jobs.enqueue(A, "train", {}, max_attempts=2)
    first = await claim_next(store, "worker-1", lease_seconds=30)
    assert first is not None and first.attempts == 1
    later = utc_now() + timedelta(seconds=60)
    assert await store.jobs.requeue_expired_leases(utc_now()) == []
    assert await store.jobs.requeue_expired_leases(later) == [job.id]
    requeued = await store.jobs.get(job.id)
    assert requeued.state is JobState.QUEUED and requeued.lease_owner is None
    second = await claim_next(store, "worker-2", lease_seconds=30)
    assert second is not None and second.attempts == 2
    with pytest.raises(LeaseLost, match="no longer leased to worker-1"):
        await store.jobs.complete(job.id, {"late": True}, Lease("worker-1"))
    assert await store.jobs.requeue_expired_leases(later) == []
    failed = await store.jobs.get(job.id)
    assert failed.state is JobState.FAILED
    assert failed.error == "Lexicon gave up on this job after 2 interrupted attempts."
    assert [j.id for j in await store.jobs.list_undelivered_finished()] == [job.id]


async def test_heartbeat_extends_the_lease(store: Storage) -> None:
    """A heartbeat moves the lease's expiry forward; a requeue check then leaves the job alone."""
    job = await store.jobs.enqueue(A, "generate", {})
    claimed = await claim_next(store, "worker-1", lease_seconds=1)
    assert claimed is not None and claimed.lease_expires_at is not None
    beaten = await store.jobs.heartbeat(job.id, "worker-1", lease_seconds=120)
    assert beaten.lease_expires_at is not None
    assert beaten.lease_expires_at > claimed.lease_expires_at + timedelta(seconds=100)
    assert await store.jobs.requeue_expired_leases(utc_now() + timedelta(seconds=60)) == []
    with pytest.raises(LeaseLost):
        await store.jobs.heartbeat(job.id, "worker-2", lease_seconds=120)


async def test_fail_retries_while_attempts_remain(store: Storage) -> None:
    """A retryable failure requeues until max_attempts; a non-retryable one is final at once."""
    retried = await store.jobs.enqueue(A, "generate", {}, max_attempts=2)
    await claim_next(store, "worker-1", lease_seconds=60)
    again = await store.jobs.fail(retried.id, "The GPU ran out of memory.", retryable=True)
    assert again.state is JobState.QUEUED and again.error == "The GPU ran out of memory."
    await claim_next(store, "worker-1", lease_seconds=60)
    final = await store.jobs.fail(retried.id, "The GPU ran out of memory.", retryable=True)
    assert final.state is JobState.FAILED and final.attempts == 2
    hopeless = await store.jobs.enqueue(B, "generate", {"size": "bad"})
    await claim_next(store, "worker-1", lease_seconds=60)
    refused = await store.jobs.fail(hopeless.id, "That size is not allowed.", retryable=False)
    assert refused.state is JobState.FAILED and refused.attempts == 1


async def test_complete_stores_images_and_frees_progress_files(store: Storage) -> None:
    """Completion stores images with the result; the checkpoint file is freed."""
    job = await store.jobs.enqueue(A, "generate", {"prompt": "a zorb"})
    await claim_next(store, "worker-1", lease_seconds=60)
    with_progress = await store.jobs.set_progress(
        job.id, JobProgress(step=5, total=25, eta_seconds=3.5), Lease(attempt=1)
    )
    assert with_progress.progress == JobProgress(5, 25, 3.5)
    await store.jobs.save_checkpoint(job.id, b"checkpoint", Lease("worker-1"))
    images = [
        NewImage(idx=i, seed=40 + i, png=f"png {i}".encode(), metadata={"i": i}) for i in (0, 1)
    ]
    done = await store.jobs.complete(job.id, {"images": 2}, Lease("worker-1"), images=images)
    assert done.state is JobState.SUCCEEDED and done.result == {"images": 2}
    stored = await store.images.list_for_job(job.id)
    assert [(image.idx, image.seed, image.metadata) for image in stored] == [
        (0, 40, {"i": 0}),
        (1, 41, {"i": 1}),
    ]
    assert await store.images.read_png(stored[1]) == b"png 1"
    assert stored_hashes(store, "images") == {sha256_of(b"png 0"), sha256_of(b"png 1")}
    assert stored_hashes(store, "checkpoints") == set()


async def test_a_requeued_training_job_keeps_its_checkpoint_and_photos(store: Storage) -> None:
    """Photos are stored at enqueue; a checkpoint survives a lost lease so the retry resumes."""
    job = await store.jobs.enqueue(A, "train", {"name": "zorb"}, photos=[b"p1", b"p2", b"p3"])
    assert await store.jobs.photos(job.id) == [sha256_of(p) for p in (b"p1", b"p2", b"p3")]
    await claim_next(store, "worker-1", lease_seconds=1)
    await store.jobs.save_checkpoint(job.id, b"step 100", Lease("worker-1"))
    sha = await store.jobs.save_checkpoint(job.id, b"step 200", Lease("worker-1"))
    assert stored_hashes(store, "checkpoints") == {sha}
    await store.jobs.requeue_expired_leases(utc_now() + timedelta(seconds=5))
    assert (await store.jobs.get(job.id)).checkpoint_sha256 == sha
    assert store.files.read("checkpoints", sha) == b"step 200"


async def test_cancelling_a_finished_job_is_refused(store: Storage) -> None:
    """A job that already succeeded cannot be cancelled; the sentence says why."""
    job = await store.jobs.enqueue(A, "generate", {})
    await claim_next(store, "worker-1", lease_seconds=60)
    await store.jobs.complete(job.id, {})
    with pytest.raises(JobFinished) as caught:
        await store.jobs.cancel(Actor(A), job.id)
    assert str(caught.value) == f"Job #{job.id} has already succeeded, so it cannot be cancelled."


async def test_a_cancelled_running_job_tells_its_worker_to_stop(store: Storage) -> None:
    """After a cancel, the worker's next heartbeat or result is refused with LeaseLost."""
    job = await store.jobs.enqueue(A, "generate", {})
    await claim_next(store, "worker-1", lease_seconds=60)
    await store.jobs.cancel(Actor(A), job.id)
    with pytest.raises(LeaseLost, match="it is cancelled"):
        await store.jobs.heartbeat(job.id, "worker-1", lease_seconds=60)
    with pytest.raises(LeaseLost):
        await store.jobs.complete(job.id, {}, Lease("worker-1"))
    assert (await store.jobs.get(job.id)).state is JobState.CANCELLED


async def test_delivery_ids_survive_until_delivered(store: Storage) -> None:
    """Delivery ids are stored with the job; finished jobs stay listed until marked delivered."""
    expires = utc_now() + timedelta(minutes=15)
    job = await store.jobs.enqueue(
        A,
        "generate",
        {},
        delivery=Delivery(
            channel_id=7, message_id=8, interaction_token="secret-xyz", token_expires_at=expires
        ),
    )
    assert (job.channel_id, job.message_id, job.interaction_token) == (7, 8, "secret-xyz")
    assert "secret-xyz" not in repr(job)
    assert await store.jobs.list_undelivered_finished() == []
    await claim_next(store, "worker-1", lease_seconds=60)
    await store.jobs.complete(job.id, {"ok": True})
    pending = await store.jobs.list_undelivered_finished()
    assert [j.id for j in pending] == [job.id] and pending[0].token_expires_at == expires
    await store.jobs.mark_delivered(job.id)
    assert await store.jobs.list_undelivered_finished() == []


async def test_active_job_limit_and_counts(store: Storage) -> None:
    """`max_active` refuses a job beyond the limit; counts include running jobs."""
    await store.jobs.enqueue(A, "generate", {}, max_active=2)
    await store.jobs.enqueue(A, "generate", {}, max_active=2)
    await claim_next(store, "worker-1", lease_seconds=60)
    with pytest.raises(QuotaExceeded, match="2 jobs waiting or running"):
        await store.jobs.enqueue(A, "generate", {}, max_active=2)
    assert [j.state for j in await store.jobs.list_for_user(A)] == [
        JobState.QUEUED,
        JobState.RUNNING,
    ]


async def test_claim_ids_leases_only_jobs_still_queued(store: Storage) -> None:
    """A scheduler's own pick is leased in its order; cancelled or taken jobs are skipped."""
    first = await store.jobs.enqueue(A, "generate", {})
    gone = await store.jobs.enqueue(B, "generate", {})
    last = await store.jobs.enqueue(C, "generate", {})
    await store.jobs.cancel(Actor(B), gone.id)
    claimed = await store.jobs.claim_ids([last.id, gone.id, first.id], "worker-1", 60)
    assert [job.id for job in claimed] == [last.id, first.id]
    assert await store.jobs.claim_ids([first.id], "worker-2", 60) == []
    assert await store.jobs.count_queued() == 0


async def test_a_released_job_is_queued_again_without_using_an_attempt(store: Storage) -> None:
    """`release` returns a job the worker never ran; a stale attempt number is refused."""
    job = await store.jobs.enqueue(A, "generate", {}, max_attempts=1)
    claimed = await claim_next(store, "worker-1", lease_seconds=60)
    assert claimed is not None and claimed.attempts == 1
    with pytest.raises(LeaseLost, match="report from attempt 2 was ignored"):
        await store.jobs.release(job.id, Lease(attempt=2))
    released = await store.jobs.release(job.id, Lease("worker-1", attempt=1))
    assert released.state is JobState.QUEUED and released.attempts == 0
    again = await claim_next(store, "worker-1", lease_seconds=60)
    assert again is not None and again.attempts == 1


async def test_jobs_of_a_lost_worker_or_a_restart_are_requeued(store: Storage) -> None:
    """`requeue_worker` takes one worker's jobs back; `requeue_running` takes all of them."""
    one = await store.jobs.enqueue(A, "generate", {})
    two = await store.jobs.enqueue(B, "generate", {})
    spent = await store.jobs.enqueue(C, "generate", {}, max_attempts=1)
    await store.jobs.claim_ids([one.id], "worker-1", 60)
    await store.jobs.claim_ids([two.id, spent.id], "worker-2", 60)
    assert await store.jobs.requeue_worker("worker-1", "The GPU worker stopped.") == [one.id]
    assert (await store.jobs.get(two.id)).state is JobState.RUNNING
    assert await store.jobs.requeue_running("Lexicon restarted.") == [two.id]
    assert (await store.jobs.get(two.id)).error == "Lexicon restarted."
    given_up = await store.jobs.get(spent.id)
    assert given_up.state is JobState.FAILED
    assert given_up.error == "Lexicon gave up on this job after 1 interrupted attempt."
    assert await store.jobs.count_queued() == 2
