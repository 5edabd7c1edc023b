"""The commands around jobs: buttons, /embeddings, /library, /queue, /cancel and /admin."""

from __future__ import annotations

import json
import struct

import pytest
import simcord

from tests.e2e.conftest import refusal, train
from tests.simulation import Simulation


async def _share_many(sim: Simulation, owner_id: int, count: int) -> None:
    """`count` shared embeddings straight into storage (library pages need many)."""
    data = b"not read by the library listing"
    for number in range(count):
        await sim.app.storage.embeddings.create(
            owner_id,
            f"libword{number:02d}",
            data + bytes([number]),
            n_vectors=1,
            width=32,
            family="tiny",
            source="imported",
            shared=True,
        )


async def test_the_training_card_and_its_buttons(sim: Simulation) -> None:
    """The card explains the word with three examples and their images; technical details sit
    behind Info; Share is its owner's; Try it renders it."""
    alice, bob = sim.member("alice"), sim.member("bob")
    card = (await train(sim, alice, "zorb")).response
    assert card.content == (
        "**zorb** is ready — write `<zorb>` in `/imagine`. Here is what it makes:"
    )
    assert card.embeds[0].description.startswith(
        f"**zorb** is an object, by <@{alice.id}>, private to its owner; used 0 times."
    )
    assert "1. `a photo of a <zorb>`" in card.embeds[0].description
    assert [e.image.url for e in card.embeds[1:]] == [
        f"attachment://zorb-{i}.png" for i in range(3)
    ]
    assert len(card.attachments) == 3
    labels = [c["label"] for c in card.components[0]["components"]]
    assert labels == ["Try it", "How to use", "Info", "Share"]
    details = await bob.click(card, label="Info")
    assert details.response.content == (
        "That word is private to the person who trained it; ask them to share it, or find "
        "shared ones with `/library`."
    )
    mine = await alice.click(card, label="Info")
    assert "Vectors 1 × 32 · model family tiny" in mine.response.content
    assert "Training steps" in mine.response.content and "sha256" in mine.response.content

    refused = await bob.click(card, label="Share")
    assert refused.response.content == (
        "Only the person who trained this word can share it; `/train` your own from 3 photos."
    )
    shared = await alice.click(card, label="Share")
    assert "in the shared library now" in shared.response.content

    tried = await bob.click(card, label="Try it")
    job = await sim.job_done(bob)
    assert job.params["prompt"] == "a photo of a <zorb>"
    assert tried.response.attachments


async def test_a_long_embeddings_list_says_how_many_more_there_are(sim: Simulation) -> None:
    """40 words do not fit in one message: whole lines, then how many are left out and how to
    find them, never a line cut in the middle."""
    alice = sim.member("alice")
    await _share_many(sim, alice.id, 40)
    listed = (await alice.slash(sim.channel, "embeddings list")).response.content
    *lines, trailer = listed.split("\n")
    assert len(listed) <= 2000 and all(line.endswith(" uses") for line in lines)
    assert trailer == (
        f"…and {40 - len(lines)} more: `/embeddings info` opens any of them (start typing its "
        "name), or narrow the list with `model:`."
    )


async def test_embeddings_list_info_rename_export_delete(sim: Simulation) -> None:
    """A user manages their own word from list to delete; export is a safetensors file."""
    alice = sim.member("alice")
    empty = await alice.slash(sim.channel, "embeddings list")
    assert empty.response.content.startswith("You have no embeddings yet")
    await train(sim, alice, "zorb")

    listed = await alice.slash(sim.channel, "embeddings list")
    assert listed.ephemeral
    assert listed.response.content.startswith(
        "**zorb** · positive · 1 vector · for the tiny test model, trained on **standin** · private"
    )
    info = await alice.slash(sim.channel, "embeddings info", name="zorb")
    assert info.response.embeds[0].title == "zorb"
    assert [a.filename for a in info.response.attachments] == ["zorb.png"]
    assert info.response.embeds[1].image.url == "attachment://zorb.png"

    renamed = await alice.slash(sim.channel, "embeddings rename", name="zorb", new_name="blip")
    assert renamed.response.content == "Renamed to **blip**; write `<blip>` from now on."
    exported = await alice.slash(sim.channel, "embeddings export", name="blip")
    attachment = exported.response.attachments[0]
    assert attachment.filename == "blip.safetensors"
    data = await attachment.read()
    header = json.loads(data[8 : 8 + struct.unpack("<Q", data[:8])[0]])
    assert header["emb_params"]["shape"] == [1, 32]

    asked = (await alice.slash(sim.channel, "embeddings delete", name="blip")).response
    assert asked.content.startswith("Delete **blip** for good?") and asked.ephemeral
    still = await alice.slash(sim.channel, "embeddings info", name="blip")
    assert still.response.embeds[0].title == "blip"  # nothing deleted before the confirmation
    twice = (await alice.slash(sim.channel, "embeddings delete", name="blip")).response
    deleted = await alice.click(asked, label="Delete for good")
    assert deleted.response.content == "Deleted **blip**."
    assert deleted.response.components == []
    again = await alice.click(twice, label="Delete for good")
    assert refusal(again) == (
        "That embedding is already gone; `/embeddings list` shows the ones you have."
    )
    gone = await alice.slash(sim.channel, "embeddings info", name="blip")
    assert refusal(gone) == (
        "You have no embedding called 'blip' and the shared library has none; "
        "`/embeddings list` and `/library` show the names you can use."
    )
    not_hers = await alice.slash(sim.channel, "embeddings rename", name="blip", new_name="blop")
    assert refusal(not_hers) == (
        "You have no embedding called 'blip'; `/embeddings list` shows the ones you have."
    )


async def test_autocomplete_offers_usable_names_only(sim: Simulation) -> None:
    """Names autocomplete from the user's own and the shared ones, never others' private ones."""
    alice, bob = sim.member("alice"), sim.member("bob")
    await train(sim, alice, "zorb")
    await _share_many(sim, bob.id, 30)
    mine = await alice.autocomplete(sim.channel, "embeddings info", "name", "zo")
    assert [choice["value"] for choice in mine] == ["zorb"]
    assert [choice["name"] for choice in mine] == ["zorb · the tiny test model"]
    theirs = await bob.autocomplete(sim.channel, "embeddings info", "name", "zo")
    assert theirs == []
    many = await bob.autocomplete(sim.channel, "embeddings info", "name", "lib")
    assert len(many) == 25


async def test_library_pages_and_search(sim: Simulation) -> None:
    """/library is a gallery four a page with Prev/Next, and searches by name."""
    owner, reader = sim.member("olga"), sim.member("rui")
    await _share_many(sim, owner.id, 6)
    first = await reader.slash(sim.channel, "library")
    page = first.response
    assert page.ephemeral and len(page.embeds) == 4
    assert page.content == "Shared library · popular first · page 1 of 2 · 6 shared"
    assert f"by <@{owner.id}> · positive · 0 uses" in page.embeds[0].description

    turned = await reader.click(page.message, label="Next")
    assert turned.response.content.endswith("page 2 of 2 · 6 shared")
    back = await reader.click(turned.response.message, label="Prev")
    assert back.response.content.endswith("page 1 of 2 · 6 shared")

    found = await reader.slash(sim.channel, "library", query="libword05")
    assert [embed.title for embed in found.response.embeds] == ["libword05"]
    none = await reader.slash(sim.channel, "library", query="nothing-like-this")
    assert none.response.content == (
        "Nothing shared matches that; leave out `query:` to see the whole library."
    )


async def test_queue_and_cancel(slow_sim: Simulation) -> None:
    """/queue shows the job; another user cannot cancel it; its owner can, by button or command."""
    sim = slow_sim
    alice, bob = sim.member("alice"), sim.member("bob")
    first = await alice.slash(sim.channel, "imagine", prompt="a slow cube", steps=40)
    second = await alice.slash(sim.channel, "imagine", prompt="a slower cube", steps=40)
    ids = (first.response.id, second.response.id)
    queue = await alice.slash(sim.channel, "queue")
    lines = queue.response.content.split("\n")
    assert len(lines) == 2 and "a slow cube" in lines[0] and "a slower cube" in lines[1]

    refused = await bob.click(first.response, label="Cancel")
    job = await sim.latest_job(alice)
    assert refusal(refused) == (
        f"Only the person who queued job #{job.id - 1} or a server manager can cancel it."
    )
    cancelled = await alice.slash(sim.channel, "cancel")  # the running one: the first
    assert cancelled.response.content == f"Cancelled job #{job.id - 1}."
    by_button = await alice.click(second.response, label="Cancel")
    assert by_button.response.content == f"Cancelled job #{job.id}."
    await sim.job_done(job.id)
    await sim.job_done(job.id - 1)
    assert not set(ids) & {m.id for m in sim.channel.history()}  # cancelled: removed
    nothing = await alice.slash(sim.channel, "cancel")
    assert refusal(nothing) == "You have no job waiting or running to cancel."


async def test_admin_settings_reach_the_services(sim: Simulation) -> None:
    """Default negative prompt and removal of a shared word, by a manager."""
    manager, alice, bob = sim.member("mia", manager=True), sim.member("alice"), sim.member("bob")
    await manager.slash(sim.channel, "admin negative", prompt="lowres")
    shown = await manager.slash(sim.channel, "admin settings")
    assert "**Default negative prompt** lowres" in shown.response.content

    await alice.slash(sim.channel, "imagine", prompt="a red cube", negative="blurry")
    job = await sim.job_done(alice)
    assert job.params["negative"] == "blurry, lowres"

    await train(sim, alice, "zorb", share=True)
    removed = await manager.slash(sim.channel, "admin remove", name="zorb")
    assert removed.response.content == f"Took **zorb** out of the library; <@{alice.id}> keeps it."
    after = await bob.slash(sim.channel, "imagine", prompt="<zorb>")
    assert refusal(after).startswith("You have no embedding called <zorb>")


async def test_admin_offers_no_safety_setting_that_does_nothing(sim: Simulation) -> None:
    """No image is ever flagged, so there is no /admin safety and settings do not show one."""
    manager = sim.member("mia", manager=True)
    offered = manager.available_commands(sim.channel)
    assert "admin settings" in offered and "admin safety" not in offered
    shown = await manager.slash(sim.channel, "admin settings")
    assert "safety" not in shown.response.content.lower()


async def test_admin_is_hidden_from_members_without_manage_server(sim: Simulation) -> None:
    """Discord does not offer /admin to a member without Manage Server."""
    alice = sim.member("alice")
    assert "admin limits" not in alice.available_commands(sim.channel)
    with pytest.raises(simcord.SetupError):
        await alice.slash(sim.channel, "admin limits", max_queued_per_user=50)
