"""Moderation stays inside one server, shared names stay inside one server's library, and bans
and blocked words hold on every path that acts or names something (issue 15, items 4, 7, 8)."""

from __future__ import annotations

from typing import Any

import discord
import pytest
from simcord.actors import MemberActor
from simcord.builders import ChannelHandle
from simcord.results import InteractionResult

from storage.models import JobState
from tests.e2e.conftest import photo_options, refusal, train
from tests.hardening import hostile_files as hostile
from tests.hardening.conftest import stored
from tests.simulation import Simulation

BANNED = "You are not allowed to use Lexicon here; ask a manager of this server why."


async def _import(
    member: MemberActor, channel: ChannelHandle, name: str, **options: Any
) -> InteractionResult:
    return await member.slash(
        channel,
        "embeddings import",
        file=(f"{name}.safetensors", hostile.good_embedding()),
        name=name,
        **options,
    )


async def _allow_admin(sim: Simulation, member: MemberActor) -> None:
    """What a server's admins do for someone without Manage Server: allow them /admin."""
    commands = await sim.bot.tree.fetch_commands(guild=discord.Object(id=sim.guild.id))
    admin = next(command for command in commands if command.name == "admin")
    sim.guild.set_command_permissions(admin, {member: True})


async def test_a_manager_moderates_only_their_own_server(sim: Simulation) -> None:
    """A manager elsewhere cannot unshare or delete what was shared here, and bans only there."""
    alice = sim.member("alice")
    other = await sim.add_server("Elsewhere")
    mallory = other.join(sim.member("mallory"), manager=True)
    await _import(alice, sim.channel, "zorb", share=True)
    for delete in (False, True):
        result = await mallory.slash(other.channel, "admin remove", name="zorb", delete=delete)
        assert refusal(result) == (
            "You have no embedding called 'zorb' and the shared library has none; "
            "`/embeddings list` and `/library` show the names you can use."
        )
    (embedding,) = await sim.app.storage.embeddings.list_owned(alice.id)
    assert (embedding.is_shared, embedding.shared_guild_id) == (True, sim.guild.id)

    alice_there = other.join(alice)
    banned = await mallory.slash(other.channel, "admin ban", user=alice_there)
    assert banned.response.content == f"{alice.mention} can no longer use Lexicon on this server."
    there = await alice_there.slash(other.channel, "imagine", prompt="a red cube")
    assert refusal(there) == BANNED
    here = await alice.slash(sim.channel, "imagine", prompt="a red cube")
    assert not here.response.ephemeral  # accepted here (a refusal is private)
    assert (await sim.job_done(alice)).state is JobState.SUCCEEDED
    everywhere = await mallory.slash(other.channel, "admin ban", user=alice_there, everywhere=True)
    assert refusal(everywhere) == (
        "Only Lexicon's operator can ban or unban everywhere; leave 'everywhere' off to act on "
        "this server."
    )
    assert not await sim.app.storage.users.is_banned(alice.id, sim.guild.id)


async def test_lexicon_owners_moderate_everywhere(sim: Simulation) -> None:
    """A `LEXICON_OWNERS` member without Manage Server removes a shared word and bans everywhere."""
    alice, bob, owen = sim.member("alice"), sim.member("bob"), sim.member("owen")
    sim.bot.settings = sim.bot.settings.model_copy(update={"owners": frozenset({owen.id})})
    other = await sim.add_server("Elsewhere")
    await _allow_admin(sim, owen)
    await _import(alice, sim.channel, "zorb", share=True)
    removed = await owen.slash(sim.channel, "admin remove", name="zorb")
    assert removed.response.content == f"Took **zorb** out of the library; <@{alice.id}> keeps it."
    banned = await owen.slash(sim.channel, "admin ban", user=bob, everywhere=True)
    assert banned.response.content == f"{bob.mention} can no longer use Lexicon anywhere."
    there = await other.join(bob).slash(other.channel, "imagine", prompt="a red cube")
    assert refusal(there) == BANNED


async def test_names_shared_on_another_server_are_not_words_here(sim: Simulation) -> None:
    """A stranger's shared 'zorb' elsewhere neither joins this server's prompts nor blocks the
    name here; a shared name that reads as ordinary words is refused."""
    alice = sim.member("alice")
    other = await sim.add_server("Elsewhere")
    mallory = other.join(sim.member("mallory"))
    await _import(mallory, other.channel, "zorb", share=True)

    await alice.slash(sim.channel, "imagine", prompt="a zorb on a table")
    job = await sim.job_done(alice)
    assert job.params["embeddings"] == []
    explicit = await alice.slash(sim.channel, "imagine", prompt="a <zorb> on a table")
    assert refusal(explicit) == (
        "You have no embedding called <zorb> and none is shared under that name; "
        "`/embeddings list` and `/library` show the names you can use."
    )
    mine = await _import(alice, sim.channel, "zorb", share=True)
    assert "in the shared library" in mine.response.content
    await sim.job_done(alice)  # its library preview, so nothing changes after this

    before = await stored(sim.app)
    for word in ("highres", "photorealistic"):
        hijack = await _import(mallory, other.channel, word, share=True)
        assert refusal(hijack) == (
            f"'{word}' reads as ordinary words to the model, so it cannot be a shared name; "
            f"pick a made-up word like 'zorb', or add a digit as in '{word}1'."
        )
    trained = await mallory.slash(
        other.channel, "train", name="bokeh", share=True, **photo_options()
    )
    assert refusal(trained).startswith("'bokeh' reads as ordinary words to the model")
    assert await stored(sim.app) == before


@pytest.mark.parametrize(
    ("command", "options"),
    [
        ("embeddings share", {"name": "zorb"}),
        ("embeddings unshare", {"name": "zorb"}),
        ("embeddings rename", {"name": "zorb", "new_name": "blip"}),
        ("embeddings delete", {"name": "zorb"}),
        ("embeddings export", {"name": "zorb"}),
        ("embeddings import", {"file": ("w.safetensors", b"x"), "name": "blip"}),
        ("imagine", {"prompt": "a zorb"}),
        ("train", {"name": "blip", **photo_options()}),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
async def test_a_banned_member_is_refused_by_every_acting_command(
    sim: Simulation, command: str, options: dict[str, Any]
) -> None:
    """Banned on this server: each command that acts or names answers the ban, changes nothing."""
    manager, bob = sim.member("mia", manager=True), sim.member("bob")
    await _import(bob, sim.channel, "zorb")
    await sim.job_done(bob)  # its library preview, so nothing changes after this
    await manager.slash(sim.channel, "admin ban", user=bob)
    before = await stored(sim.app)
    result = await bob.slash(sim.channel, command, **options)
    assert refusal(result) == BANNED
    assert await stored(sim.app) == before
    (embedding,) = await sim.app.storage.embeddings.list_owned(bob.id)
    assert (embedding.name, embedding.is_shared) == ("zorb", False)


async def test_a_banned_member_is_refused_by_every_acting_button(sim: Simulation) -> None:
    """Share, Try it and Reroll answer the ban; reading (list, info, library) stays open."""
    manager, bob = sim.member("mia", manager=True), sim.member("bob")
    card = (await train(sim, bob, "zorb")).response
    result = (await bob.slash(sim.channel, "imagine", prompt="a red cube")).response
    await sim.job_done(bob)
    await manager.slash(sim.channel, "admin ban", user=bob)
    before = await stored(sim.app)
    for message, label in ((card, "Share"), (card, "Try it"), (result, "Reroll")):
        refused = await bob.click(message, label=label)
        assert refusal(refused) == BANNED, label
    assert await stored(sim.app) == before
    assert not (await sim.app.storage.embeddings.list_owned(bob.id))[0].is_shared
    listed = await bob.slash(sim.channel, "embeddings list")
    assert listed.response.content.startswith("**zorb**")
    library = await bob.slash(sim.channel, "library")
    assert library.response.content == (
        "Nothing is shared yet; `/embeddings share` puts one of your words here."
    )


async def test_a_banned_manager_cannot_unban_themselves(sim: Simulation) -> None:
    """Banned by another manager, a manager's /admin answers the ban and the ban stays."""
    mia, max_ = sim.member("mia", manager=True), sim.member("max", manager=True)
    await max_.slash(sim.channel, "admin ban", user=mia)
    unban = await mia.slash(sim.channel, "admin unban", user=mia)
    assert refusal(unban) == BANNED
    blocked = await mia.slash(sim.channel, "admin blocked add", word="cube")
    assert refusal(blocked) == BANNED
    assert await sim.app.storage.users.is_banned(mia.id, sim.guild.id)
    assert (await sim.app.storage.guilds.get(sim.guild.id)).blocked_words == ()


async def test_import_and_rename_check_the_blocked_words(sim: Simulation) -> None:
    """A blocked word cannot become a name by import or by rename."""
    manager, alice = sim.member("mia", manager=True), sim.member("alice")
    await manager.slash(sim.channel, "admin blocked add", word="gorgon")
    before = await stored(sim.app)
    imported = await _import(alice, sim.channel, "gorgon")
    assert refusal(imported) == "'gorgon' is blocked on this server; remove it and try again."
    assert await stored(sim.app) == before
    await _import(alice, sim.channel, "zorb")
    renamed = await alice.slash(sim.channel, "embeddings rename", name="zorb", new_name="Gorgon")
    assert refusal(renamed) == "'gorgon' is blocked on this server; remove it and try again."
    (embedding,) = await sim.app.storage.embeddings.list_owned(alice.id)
    assert embedding.name == "zorb"
