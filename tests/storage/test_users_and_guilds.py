"""UserRepository and GuildSettingsRepository."""

from __future__ import annotations

from dataclasses import replace

import pytest

from storage import Actor, Forbidden, GuildSettings, Storage

OPERATOR = Actor(0, is_manager=True)  # the CLI: a manager with no server acts everywhere


async def test_bans_toggle(store: Storage) -> None:
    """An operator's ban holds everywhere (on any server too) until lifted."""
    assert await store.users.is_banned(7) is False
    await store.users.set_banned(OPERATOR, 7, True, everywhere=True)
    assert await store.users.is_banned(7)
    assert await store.users.is_banned(7, 5)
    await store.users.set_banned(OPERATOR, 7, False, everywhere=True)
    assert await store.users.is_banned(7) is False


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


async def test_a_manager_bans_only_on_their_own_server(store: Storage) -> None:
    """A manager's ban holds on their server only; banning everywhere is the operator's."""
    manager = Actor(1, is_manager=True, guild_id=5)
    await store.users.set_banned(manager, 7, True)
    assert await store.users.is_banned(7, 5)
    assert not await store.users.is_banned(7, 6) and not await store.users.is_banned(7)
    with pytest.raises(Forbidden, match="Only Lexicon's operator can ban or unban everywhere"):
        await store.users.set_banned(manager, 8, True, everywhere=True)
    with pytest.raises(Forbidden, match="Only a manager of this server"):
        await store.users.set_banned(Actor(2, guild_id=5), 8, True)
    assert not await store.users.is_banned(8, 5)
    owner = Actor(3, guild_id=6, is_owner=True)
    await store.users.set_banned(owner, 8, True, everywhere=True)
    assert await store.users.is_banned(8, 5) and await store.users.is_banned(8)
    await store.users.set_banned(manager, 7, False)
    assert not await store.users.is_banned(7, 5)


async def test_a_banned_manager_cannot_lift_their_own_ban(store: Storage) -> None:
    """A manager banned on their server cannot unban themselves; the operator can."""
    manager = Actor(1, is_manager=True, guild_id=5)
    await store.users.set_banned(Actor(2, is_manager=True, guild_id=5), 1, True)
    with pytest.raises(Forbidden) as caught:
        await store.users.set_banned(manager, 1, False)
    assert str(caught.value) == "You cannot lift your own ban; ask Lexicon's operator."
    assert await store.users.is_banned(1, 5)
    await store.users.set_banned(Actor(3, guild_id=5, is_owner=True), 1, False)
    assert not await store.users.is_banned(1, 5)
