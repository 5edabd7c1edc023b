"""UserRepository and GuildSettingsRepository."""

from __future__ import annotations

from dataclasses import replace

import pytest

from storage import Actor, Forbidden, GuildSettings, NotFound, Storage


async def test_users_are_created_on_first_sight_and_renamed(store: Storage) -> None:
    """get_or_create makes the row once and follows display-name changes."""
    with pytest.raises(NotFound):
        await store.users.get(42)
    first = await store.users.get_or_create(42, "Ann")
    assert first.display_name == "Ann" and first.created_at.tzinfo is not None
    assert await store.users.get_or_create(42) == first
    renamed = await store.users.get_or_create(42, "Annie")
    assert renamed.display_name == "Annie" and renamed.created_at == first.created_at


async def test_bans_and_quotas(store: Storage) -> None:
    """Bans toggle and quotas override defaults, creating the user row if needed."""
    assert await store.users.is_banned(7) is False
    banned = await store.users.set_banned(7, True)
    assert banned.banned and await store.users.is_banned(7)
    await store.users.set_banned(7, False)
    assert await store.users.is_banned(7) is False
    limited = await store.users.set_quotas(7, max_queued_jobs=1, max_embeddings=None)
    assert (limited.max_queued_jobs, limited.max_embeddings) == (1, None)


async def test_guild_settings_default_then_update_atomically(store: Storage) -> None:
    """An unconfigured server has defaults; a manager's change is normalized and stored."""
    assert await store.guilds.get(5) == GuildSettings(guild_id=5)
    manager = Actor(1, is_manager=True, guild_id=5)
    updated = await store.guilds.update(
        manager,
        5,
        lambda current: replace(
            current,
            blocked_words=("Gore", "gore ", "nsfw"),
            allowed_channel_ids=(30, 10, 30),
            limits={"max_steps": 30},
            default_negative_prompt=" easynegative ",
        ),
    )
    assert updated == await store.guilds.get(5)
    assert updated.blocked_words == ("gore", "nsfw")
    assert updated.allowed_channel_ids == (10, 30)
    assert updated.limits == {"max_steps": 30} and updated.default_negative_prompt == "easynegative"


@pytest.mark.parametrize(
    "actor",
    [Actor(1), Actor(1, is_manager=True, guild_id=6)],
    ids=["member", "manager-of-another-server"],
)
async def test_only_that_servers_managers_change_its_settings(store: Storage, actor: Actor) -> None:
    """Members and managers of other servers are refused; nothing is stored."""
    with pytest.raises(Forbidden, match="Only a manager of this server"):
        await store.guilds.update(actor, 5, lambda c: replace(c, blocked_words=("x",)))
    assert await store.guilds.get(5) == GuildSettings(guild_id=5)
