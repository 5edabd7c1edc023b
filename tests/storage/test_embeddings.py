"""EmbeddingRepository: creating, finding, the library, files, bookkeeping."""

from __future__ import annotations

import pytest

from storage import Actor, NotFound, QuotaExceeded, Storage, Visibility
from storage.files import sha256_of
from tests.storage.conftest import make_embedding, stored_hashes


async def test_create_stores_the_file_before_the_row(store: Storage) -> None:
    """A created embedding's file is on disk under its sha256 and reads back byte for byte."""
    created = await make_embedding(store, 1, "zorb", data=b"vectors")
    assert created.sha256 == sha256_of(b"vectors")
    assert store.files.read("embeddings", created.sha256) == b"vectors"
    path = store.files.path("embeddings", created.sha256)
    assert path.parent.name == created.sha256[:2] and path.suffix == ".safetensors"
    assert created.usable and created.visibility is Visibility.PRIVATE
    assert created.created_at.tzinfo is not None


async def test_own_names_win_over_shared_ones(store: Storage) -> None:
    """`get_by_name` and `resolve` prefer the viewer's own embedding to a shared namesake."""
    shared = await make_embedding(store, 1, "zorb", shared=True)
    mine = await make_embedding(store, 2, "zorb")
    assert (await store.embeddings.get_by_name(2, "zorb")).id == mine.id
    assert (await store.embeddings.get_by_name(3, "zorb")).id == shared.id
    assert {k: v.id for k, v in (await store.embeddings.resolve(2, ["Zorb", "nope"])).items()} == {
        "zorb": mine.id
    }


async def test_private_embeddings_are_invisible_to_others(store: Storage) -> None:
    """Another user's private embedding is NotFound by id and by name, and never listed."""
    private = await make_embedding(store, 1, "secret")
    with pytest.raises(NotFound):
        await store.embeddings.get(private.id, 2)
    with pytest.raises(NotFound):
        await store.embeddings.get_by_name(2, "secret")
    assert await store.embeddings.resolve(2, ["secret"]) == {}
    assert await store.embeddings.list_shared() == []
    assert (await store.embeddings.get(private.id, 1)).id == private.id


async def test_the_library_searches_and_pages_shared_embeddings(store: Storage) -> None:
    """`list_shared` filters by a plain-text query, orders by use and pages with limit/offset."""
    for index in range(5):
        await make_embedding(store, 1, f"style-{index}", shared=True)
    await make_embedding(store, 2, "other", shared=True)
    await make_embedding(store, 2, "style-private")
    popular = await store.embeddings.get_by_name(1, "style-3")
    await store.embeddings.increment_use([popular.id])
    page = await store.embeddings.list_shared("STYLE", limit=2)
    assert [e.name for e in page] == ["style-3", "style-0"]
    rest = await store.embeddings.list_shared("style", limit=10, offset=2)
    assert [e.name for e in rest] == ["style-1", "style-2", "style-4"]
    assert await store.embeddings.count_shared("style") == 5
    assert await store.embeddings.list_shared("_") == []  # wildcards are plain text
    assert await store.embeddings.count_shared() == 6


async def test_equal_content_is_stored_once_and_freed_with_its_last_row(store: Storage) -> None:
    """Two embeddings with the same bytes share one file, removed when both rows are gone."""
    first = await make_embedding(store, 1, "zorb", data=b"same")
    second = await make_embedding(store, 2, "blip", data=b"same")
    assert first.sha256 == second.sha256 and stored_hashes(store) == {first.sha256}
    await store.embeddings.delete(Actor(1), first.id)
    assert store.files.exists("embeddings", first.sha256)
    await store.embeddings.delete(Actor(2), second.id)
    assert stored_hashes(store) == set()


async def test_create_for_a_job_is_idempotent(store: Storage) -> None:
    """A retried training job that already produced its embedding gets the same row back."""
    job = await store.jobs.enqueue(1, "train", {"steps": 10})
    kwargs = {"n_vectors": 2, "width": 768, "family": "sd1", "source": "trained"}
    first = await store.embeddings.create(1, "zorb", b"v1", job_id=job.id, **kwargs)
    again = await store.embeddings.create(1, "zorb", b"v1", job_id=job.id, **kwargs)
    assert again == first
    assert len(await store.embeddings.list_owned(1)) == 1


async def test_max_owned_is_checked_atomically(store: Storage) -> None:
    """With `max_owned`, the create that would exceed the limit is refused with a sentence."""
    kwargs = {"n_vectors": 1, "width": 768, "family": "sd1", "source": "imported"}
    await store.embeddings.create(1, "one", b"1", max_owned=2, **kwargs)
    await store.embeddings.create(1, "two", b"2", max_owned=2, **kwargs)
    with pytest.raises(
        QuotaExceeded, match=r"already have 2 embeddings, the most one member may keep \(2\)"
    ):
        await store.embeddings.create(1, "three", b"3", max_owned=2, **kwargs)
    assert stored_hashes(store) == {sha256_of(b"1"), sha256_of(b"2")}


async def test_use_counts_and_unusable_marks(store: Storage) -> None:
    """`increment_use` counts each id once per call; one whose file is gone leaves the library."""
    shared = await make_embedding(store, 1, "zorb", shared=True)
    await store.embeddings.increment_use([shared.id, shared.id])
    await store.embeddings.increment_use([shared.id])
    assert (await store.embeddings.get(shared.id, 1)).use_count == 2
    store.files.path("embeddings", shared.sha256).unlink()
    await store.sweep()
    assert (await store.embeddings.get(shared.id, 1)).usable is False
    assert await store.embeddings.list_shared() == []


async def test_moderators_find_shared_embeddings_by_name(store: Storage) -> None:
    """`get_shared_by_name` finds only shared embeddings (what `/admin` may remove)."""
    await make_embedding(store, 1, "secret")
    shared = await make_embedding(store, 2, "public", shared=True)
    assert (await store.embeddings.get_shared_by_name("PUBLIC")).id == shared.id
    with pytest.raises(NotFound, match="shared library has no embedding called 'secret'"):
        await store.embeddings.get_shared_by_name("secret")


async def test_a_thumbnail_job_is_recorded_on_the_embedding(store: Storage) -> None:
    """`set_thumbnail_job` stores the job an import's thumbnail comes from; reads return it."""
    imported = await make_embedding(store, 1, "zorb")
    assert imported.thumbnail_job_id is None
    job = await store.jobs.enqueue(1, "generate", {"prompt": "a photo of <zorb>"})
    await store.embeddings.set_thumbnail_job(imported.id, job.id)
    assert (await store.embeddings.get(imported.id, 1)).thumbnail_job_id == job.id


async def test_lists_keep_only_the_family_asked_for(store: Storage) -> None:
    """`list_owned`, `list_shared` and `count_shared` with `family` keep that family's words."""
    common = {"n_vectors": 1, "source": "imported"}
    await store.embeddings.create(1, "onezo", b"a", width=768, family="sd1", **common)
    await store.embeddings.create(1, "xlzo", b"b", width=2048, family="sdxl", shared=True, **common)
    await store.embeddings.create(2, "xlbo", b"c", width=2048, family="sdxl", shared=True, **common)
    await store.embeddings.create(2, "tinybo", b"d", width=32, family="tiny", shared=True, **common)
    assert [e.name for e in await store.embeddings.list_owned(1, "sdxl")] == ["xlzo"]
    assert [e.name for e in await store.embeddings.list_owned(1)] == ["onezo", "xlzo"]
    assert await store.embeddings.list_owned(1, "tiny") == []
    shared = await store.embeddings.list_shared("bo", family="sdxl")
    assert [e.name for e in shared] == ["xlbo"]
    assert await store.embeddings.count_shared(family="sdxl") == 2
    assert await store.embeddings.count_shared("zo", family="tiny") == 0
    assert await store.embeddings.count_shared() == 3


async def test_trained_on_names_the_training_jobs_model(store: Storage) -> None:
    """`trained_on` gives each trained embedding its job's model (None: the default's job);
    imported ones are absent."""
    kwargs = {"n_vectors": 1, "width": 768, "family": "sd1", "source": "trained"}
    on_xl = await store.jobs.enqueue(1, "train", {"steps": 10}, model="xl")
    on_default = await store.jobs.enqueue(1, "train", {"steps": 10})
    named = await store.embeddings.create(1, "named", b"1", job_id=on_xl.id, **kwargs)
    default = await store.embeddings.create(1, "default", b"2", job_id=on_default.id, **kwargs)
    imported = await store.embeddings.create(1, "imported", b"3", **kwargs | {"source": "imported"})
    found = await store.embeddings.trained_on([named.id, default.id, imported.id, named.id])
    assert found == {named.id: "xl", default.id: None}
    assert await store.embeddings.trained_on([]) == {}
