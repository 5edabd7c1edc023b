"""Who may change what: every mutating operation × owner, another user, a server manager, a
manager of another server, and one of the operator's `LEXICON_OWNERS`."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from storage import Actor, Forbidden, JobState, NotFound, Storage, Visibility
from tests.storage.conftest import claim_next, make_embedding

OWNER, OTHER, MANAGER, OPERATOR = 1, 2, 3, 4
GUILD, ELSEWHERE = 100, 999
ACTORS = {
    "owner": Actor(OWNER, is_manager=False, guild_id=GUILD),
    "other": Actor(OTHER, is_manager=False, guild_id=GUILD),
    "manager": Actor(MANAGER, is_manager=True, guild_id=GUILD),
    "foreign-manager": Actor(MANAGER, is_manager=True, guild_id=ELSEWHERE),
    "lexicon-owner": Actor(OPERATOR, guild_id=ELSEWHERE, is_owner=True),
}
ALLOW = None


@dataclass(frozen=True)
class Case:
    operation: str
    visibility: Visibility
    actor: str
    expected: type[Exception] | None  # None: allowed


EMBEDDING_MATRIX = [
    # A private embedding: only its owner even learns it exists.
    Case("rename", Visibility.PRIVATE, "owner", ALLOW),
    Case("rename", Visibility.PRIVATE, "other", NotFound),
    Case("rename", Visibility.PRIVATE, "manager", NotFound),
    Case("delete", Visibility.PRIVATE, "owner", ALLOW),
    Case("delete", Visibility.PRIVATE, "other", NotFound),
    Case("delete", Visibility.PRIVATE, "manager", NotFound),
    Case("share", Visibility.PRIVATE, "owner", ALLOW),
    Case("share", Visibility.PRIVATE, "other", NotFound),
    Case("share", Visibility.PRIVATE, "manager", NotFound),
    Case("unshare", Visibility.PRIVATE, "owner", ALLOW),
    Case("unshare", Visibility.PRIVATE, "other", NotFound),
    Case("unshare", Visibility.PRIVATE, "manager", NotFound),
    # A shared embedding: visible to all; managers moderate (unshare, delete) but never rename.
    Case("rename", Visibility.SHARED, "owner", ALLOW),
    Case("rename", Visibility.SHARED, "other", Forbidden),
    Case("rename", Visibility.SHARED, "manager", Forbidden),
    Case("delete", Visibility.SHARED, "owner", ALLOW),
    Case("delete", Visibility.SHARED, "other", Forbidden),
    Case("delete", Visibility.SHARED, "manager", ALLOW),
    Case("share", Visibility.SHARED, "owner", ALLOW),
    Case("share", Visibility.SHARED, "other", Forbidden),
    Case("share", Visibility.SHARED, "manager", Forbidden),
    Case("unshare", Visibility.SHARED, "owner", ALLOW),
    Case("unshare", Visibility.SHARED, "other", Forbidden),
    Case("unshare", Visibility.SHARED, "manager", ALLOW),
    # Moderation is scoped to the server it was shared in; the operator's owners act everywhere.
    Case("delete", Visibility.SHARED, "foreign-manager", Forbidden),
    Case("unshare", Visibility.SHARED, "foreign-manager", Forbidden),
    Case("rename", Visibility.SHARED, "foreign-manager", Forbidden),
    Case("delete", Visibility.SHARED, "lexicon-owner", ALLOW),
    Case("unshare", Visibility.SHARED, "lexicon-owner", ALLOW),
    Case("delete", Visibility.PRIVATE, "lexicon-owner", NotFound),
]


async def _apply(store: Storage, operation: str, actor: Actor, embedding_id: int) -> None:
    repository = store.embeddings
    if operation == "rename":
        await repository.rename(actor, embedding_id, "renamed")
    elif operation == "delete":
        await repository.delete(actor, embedding_id)
    elif operation == "share":
        await repository.share(actor, embedding_id)
    elif operation == "unshare":
        await repository.unshare(actor, embedding_id)
    else:
        raise AssertionError(operation)


def _expected_after(operation: str, visibility: Visibility) -> tuple[str, Visibility] | None:
    """(name, visibility) once the operation succeeded; None when the row should be gone."""
    if operation == "delete":
        return None
    if operation == "rename":
        return ("renamed", visibility)
    if operation == "share":
        return ("zorb", Visibility.SHARED)
    return ("zorb", Visibility.PRIVATE)


@pytest.mark.parametrize(
    "case", EMBEDDING_MATRIX, ids=lambda c: f"{c.operation}-{c.visibility}-{c.actor}"
)
async def test_embedding_operation_matrix(store: Storage, case: Case) -> None:
    """Each (operation, visibility, actor) is allowed or refused as the contract says."""
    embedding = await make_embedding(
        store, OWNER, "zorb", shared=case.visibility is Visibility.SHARED, guild_id=GUILD
    )
    actor = ACTORS[case.actor]
    if case.expected is None:
        await _apply(store, case.operation, actor, embedding.id)
        after = _expected_after(case.operation, case.visibility)
        if after is None:
            assert await store.embeddings.list_owned(OWNER) == []
            assert not store.files.exists("embeddings", embedding.sha256)
        else:
            current = await store.embeddings.get(embedding.id, OWNER)
            assert (current.name, current.visibility) == after
        return
    with pytest.raises(case.expected) as caught:
        await _apply(store, case.operation, actor, embedding.id)
    assert str(caught.value).endswith(".")
    assert await store.embeddings.get(embedding.id, OWNER) == embedding
    assert store.files.exists("embeddings", embedding.sha256)


@pytest.mark.parametrize(
    ("actor", "expected"),
    [
        pytest.param(ACTORS["owner"], ALLOW, id="owner"),
        pytest.param(ACTORS["other"], Forbidden, id="other"),
        pytest.param(ACTORS["manager"], ALLOW, id="manager"),
        pytest.param(
            Actor(MANAGER, is_manager=True, guild_id=999), Forbidden, id="foreign-manager"
        ),
    ],
)
@pytest.mark.parametrize("running", [False, True], ids=["queued", "running"])
async def test_cancel_job_matrix(
    store: Storage, actor: Actor, expected: type[Exception] | None, running: bool
) -> None:
    """Only the job's owner or a manager of the server it came from cancels it."""
    job = await store.jobs.enqueue(OWNER, "generate", {"prompt": "a zorb"}, guild_id=GUILD)
    if running:
        claimed = await claim_next(store, "worker-1", lease_seconds=30)
        assert claimed is not None and claimed.id == job.id
    if expected is None:
        cancellation = await store.jobs.cancel(actor, job.id)
        assert cancellation.job.state is JobState.CANCELLED
        assert cancellation.stopped_worker == ("worker-1" if running else None)
        assert (await store.jobs.get(job.id)).finished_at is not None
        return
    with pytest.raises(expected, match="Only the person who queued job"):
        await store.jobs.cancel(actor, job.id)
    state = (await store.jobs.get(job.id)).state
    assert state is (JobState.RUNNING if running else JobState.QUEUED)
