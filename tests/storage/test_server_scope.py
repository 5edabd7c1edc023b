"""Shared libraries are per server: what a name resolves to, which names may be shared, and
how rows shared before libraries were per server are sorted out by migration 0003."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from storage import Actor, Forbidden, InvalidName, Storage
from storage.db import migrations
from tests.storage.conftest import make_embedding

HERE, THERE = 10, 20


async def test_bare_names_resolve_to_own_and_this_servers_library_only(store: Storage) -> None:
    """A stranger's 'zorb' shared on another server is not a word here, nor in a DM; the
    operator's library is seen everywhere; the viewer's own and this server's come first."""
    stranger = await make_embedding(store, 1, "zorb", shared=True, guild_id=THERE)
    operator = await make_embedding(store, 0, "blip", shared=True)
    assert await store.embeddings.resolve(2, ["zorb", "blip"], HERE) == {"blip": operator}
    assert await store.embeddings.resolve(2, ["zorb", "blip"]) == {"blip": operator}
    assert await store.embeddings.resolve(2, ["zorb"], THERE) == {"zorb": stranger}
    local = await make_embedding(store, 3, "blip", shared=True, guild_id=HERE)
    assert await store.embeddings.resolve(2, ["blip"], HERE) == {"blip": local}
    own = await make_embedding(store, 2, "blip")
    assert await store.embeddings.resolve(2, ["blip"], HERE) == {"blip": own}
    assert [e.id for e in await store.embeddings.list_shared(guild_id=HERE)] == sorted(
        [operator.id, local.id]
    )
    assert await store.embeddings.count_shared(guild_id=THERE) == 2


async def test_a_share_goes_to_the_servers_library_and_never_from_a_dm(store: Storage) -> None:
    """Sharing records the server it was shared in; from a direct message it is refused."""
    mine = await make_embedding(store, 2, "zorb")
    with pytest.raises(Forbidden) as caught:
        await store.embeddings.share(Actor(2), mine.id)
    assert str(caught.value) == "Share it from a server: each server has its own library."
    shared = await store.embeddings.share(Actor(2, guild_id=HERE), mine.id)
    assert shared.shared_guild_id == HERE
    private = await store.embeddings.unshare(Actor(2), mine.id)
    assert (private.is_shared, private.shared_guild_id) == (False, None)


@pytest.mark.parametrize("name", ["highres", "bokeh"])
async def test_a_name_that_reads_as_words_cannot_be_shared(store: Storage, name: str) -> None:
    """Kept private it is fine; shared, created shared, or a shared one renamed to it: refused."""
    sentence = (
        f"'{name}' reads as ordinary words to the model, so it cannot be a shared name; pick a "
        f"made-up word like 'zorb', or add a digit as in '{name}1'."
    )
    private = await make_embedding(store, 2, name)
    with pytest.raises(InvalidName) as caught:
        await store.embeddings.share(Actor(2, guild_id=HERE), private.id)
    assert str(caught.value) == sentence
    with pytest.raises(InvalidName):
        await make_embedding(store, 3, name, shared=True, guild_id=HERE)
    shared = await make_embedding(store, 3, "zorb", shared=True, guild_id=HERE)
    with pytest.raises(InvalidName):
        await store.embeddings.rename(Actor(3, guild_id=HERE), shared.id, name)
    assert await store.embeddings.count_shared(guild_id=HERE) == 1


def _version_1_database(data_dir: Path) -> None:
    """A database at schema 1 with a share trained on server 10 and an imported share."""
    data_dir.mkdir(parents=True)
    connection = sqlite3.connect(data_dir / "lexicon.sqlite3")
    for statement in migrations()[0].statements():
        connection.execute(statement)
    connection.executescript(
        """
        PRAGMA user_version = 1;
        INSERT INTO users (id, created_at) VALUES (1, 0), (2, 0);
        INSERT INTO jobs (id, user_id, guild_id, kind, params, created_at)
            VALUES (5, 1, 10, 'train', '{}', 0);
        INSERT INTO embeddings (owner_id, name, name_folded, kind, visibility, n_vectors, width,
            family, sha256, source, created_at, job_id)
        VALUES (1, 'zorb', 'zorb', 'positive', 'shared', 1, 768, 'sd1', printf('%064d', 1),
                'trained', 0, 5),
               (2, 'blip', 'blip', 'positive', 'shared', 1, 768, 'sd1', printf('%064d', 2),
                'imported', 0, NULL);
        """
    )
    connection.commit()
    connection.close()


async def test_migration_0003_keeps_a_trained_share_in_its_server(data_dir: Path) -> None:
    """A shared row trained in a server stays shared there; one whose server is unknown (an
    import) becomes private, so no old share reaches every server."""
    _version_1_database(data_dir)
    store = await Storage.open(data_dir)
    try:
        (trained,) = await store.embeddings.list_owned(1)
        (imported,) = await store.embeddings.list_owned(2)
        assert (trained.is_shared, trained.shared_guild_id) == (True, 10)
        assert (imported.is_shared, imported.shared_guild_id) == (False, None)
        assert await store.users.is_banned(1, 10) is False  # the guild_bans table exists
    finally:
        await store.close()
