"""Every refusal reaches the user as one private sentence, and queues nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import simcord

from bot.services import ServiceError, TrainOptions
from storage.models import Actor
from tests.bot.conftest import three_photos
from tests.e2e.conftest import SLOW_STEP_SECONDS, photo_options, refusal, standin_settings, train
from tests.hardening.hostile_files import a1111_pt
from tests.simulation import Simulation, simulated


async def test_two_photos_cannot_be_sent_and_the_service_says_why(sim: Simulation) -> None:
    """Discord refuses /train without photo3; the service's sentence covers 2 photos anyway."""
    alice = sim.member("alice")
    with pytest.raises(simcord.OptionError, match="photo3"):
        await alice.slash(sim.channel, "train", name="zorb", **photo_options(count=2))
    with pytest.raises(ServiceError, match=r"Training needs 3 to 5 photos; 2 were attached\."):
        await sim.app.train.submit(alice.id, TrainOptions("zorb", three_photos()[:2]))
    assert await sim.app.storage.jobs.list_for_user(alice.id, states=None) == []


async def test_six_photos_are_refused_by_the_service(sim: Simulation) -> None:
    """The command offers five photo options; the service refuses a sixth photo by sentence."""
    alice = sim.member("alice")
    six = three_photos(0) + three_photos(1)
    with pytest.raises(ServiceError, match=r"Training needs 3 to 5 photos; 6 were attached\."):
        await sim.app.train.submit(alice.id, TrainOptions("zorb", six))
    assert await sim.app.storage.jobs.list_for_user(alice.id, states=None) == []


async def test_a_non_image_attachment_is_refused(sim: Simulation) -> None:
    """A text file among the photos gets the photo intake's sentence naming it."""
    alice = sim.member("alice")
    options = photo_options() | {"photo2": ("notes.txt", b"these are my notes, not a photo")}
    result = await alice.slash(sim.channel, "train", name="zorb", **options)
    assert refusal(result) == (
        "Photo 2 (notes.txt) is not an image Lexicon can read; use JPEG, PNG or WebP."
    )
    assert await sim.app.storage.jobs.list_for_user(alice.id, states=None) == []


async def test_an_oversized_attachment_is_refused_before_download(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A photo over the limit is refused by its size; no attachment is ever downloaded."""
    settings = standin_settings(tmp_path / "data", max_photo_bytes=200 * 1024)
    async with simulated(settings) as sim:
        fetched: list[str] = []
        real_get = sim.env.backend.cdn.get
        monkeypatch.setattr(
            sim.env.backend.cdn, "get", lambda url: fetched.append(url) or real_get(url)
        )
        alice = sim.member("alice")
        options = photo_options() | {"photo3": ("huge.png", b"\0" * (300 * 1024))}
        result = await alice.slash(sim.channel, "train", name="zorb", **options)
        assert refusal(result) == (
            "Photo 3 (huge.png) is 300 KiB, over the 200 KiB limit; send a smaller file."
        )
        assert fetched == []


async def test_an_unknown_name_gets_a_suggestion(sim: Simulation) -> None:
    """`<zorp>` when only zorb exists: the service's "did you mean" sentence, privately."""
    alice = sim.member("alice")
    await train(sim, alice, "zorb")
    result = await alice.slash(sim.channel, "imagine", prompt="a photo of <zorp>")
    assert refusal(result) == (
        "You have no embedding called <zorp> and none is shared under that name; "
        "did you mean <zorb>?"
    )


async def test_a_taken_name_is_refused(sim: Simulation) -> None:
    """Training a name you already have, or sharing one the library has, is refused."""
    alice, bob = sim.member("alice"), sim.member("bob")
    await train(sim, alice, "zorb", share=True)
    again = await alice.slash(sim.channel, "train", name="zorb", **photo_options(seed=3))
    assert refusal(again) == "You already have an embedding called 'zorb'."
    clash = await bob.slash(sim.channel, "train", name="zorb", share=True, **photo_options(seed=5))
    assert refusal(clash) == "The shared library already has an embedding called 'zorb'."


async def test_blocked_words_are_refused_in_prompts_and_names(sim: Simulation) -> None:
    """A word a manager blocked is refused in a prompt and in a new name."""
    manager, alice = sim.member("mia", manager=True), sim.member("alice")
    added = await manager.slash(sim.channel, "admin blocked add", word="Gorgon")
    assert added.response.content.startswith("Blocked 'gorgon'.")
    prompt = await alice.slash(sim.channel, "imagine", prompt="a gorgon on a beach")
    assert refusal(prompt) == "'gorgon' is blocked on this server; remove it and try again."
    name = await alice.slash(sim.channel, "train", name="gorgon", **photo_options())
    assert refusal(name) == "'gorgon' is blocked on this server; remove it and try again."


async def test_a_full_queue_is_refused(slow_sim: Simulation) -> None:
    """With the server limit at one job per user, a second job waits its turn: refused."""
    sim = slow_sim
    manager, alice = sim.member("mia", manager=True), sim.member("alice")
    await manager.slash(sim.channel, "admin limits", max_queued_per_user=1)
    first = await alice.slash(sim.channel, "imagine", prompt="a red cube", steps=20)
    assert "Queued" in first.response.content
    second = await alice.slash(sim.channel, "imagine", prompt="a blue cube")
    assert refusal(second) == (
        "You already have 1 jobs waiting or running, the most allowed; "
        "wait for one to finish or cancel one."
    )
    assert 20 * SLOW_STEP_SECONDS > 2  # the first job was still running when refused
    await sim.job_done(alice)


async def test_only_the_owner_can_delete_a_result(sim: Simulation) -> None:
    """Bob's Delete on Alice's images is refused privately; Alice's removes the message."""
    alice, bob = sim.member("alice"), sim.member("bob")
    result = await alice.slash(sim.channel, "imagine", prompt="a red cube")
    await sim.job_done(alice)
    message = result.response
    refused = await bob.click(message, label="Delete")
    assert refused.ephemeral
    assert refused.response.content == (
        "Only the person who asked for these images can delete them; Reroll makes your own copy."
    )
    asked = await alice.click(message, label="Delete")
    assert asked.response.content == "Delete this image for everyone? This cannot be undone."
    assert sim.channel_message(message.id) is not None  # nothing deleted without a yes
    confirmed = await alice.click(asked.response.message, label="Delete for good")
    assert confirmed.response.content == "Deleted."
    assert message.id not in [m.id for m in sim.channel.history()]


async def test_a_banned_user_is_refused(sim: Simulation) -> None:
    """After /admin ban, the user's commands answer with one sentence."""
    manager, alice = sim.member("mia", manager=True), sim.member("alice")
    await manager.slash(sim.channel, "admin ban", user=alice)
    result = await alice.slash(sim.channel, "imagine", prompt="a red cube")
    assert (
        refusal(result)
        == "You are not allowed to use Lexicon here; ask a manager of this server why."
    )
    await manager.slash(sim.channel, "admin unban", user=alice)
    allowed = await alice.slash(sim.channel, "imagine", prompt="a red cube")
    assert "Queued" in allowed.response.content
    await sim.job_done(alice)


async def test_an_oversized_embedding_file_is_refused_before_download(sim: Simulation) -> None:
    """/embeddings import refuses a file over the limit by its size, privately."""
    alice = sim.member("alice")
    result = await alice.slash(
        sim.channel, "embeddings import", file=("big.pt", b"\0" * (1100 * 1024)), name="bigword"
    )
    assert refusal(result) == "big.pt is 1100 KiB; embedding files may be at most 1024 KiB."
    assert await sim.app.storage.embeddings.list_owned(alice.id) == []


async def test_a_member_at_the_embedding_limit_is_refused_import_and_training(
    tmp_path: Path,
) -> None:
    """With room for 2 embeddings: a training under way counts toward the limit (for a training
    and an import alike) and is stored when it finishes; then both are refused in one sentence
    that says what to do, storing and queueing nothing; after a delete an import goes through.
    The operator's imports are not counted."""
    settings = standin_settings(tmp_path / "data", max_embeddings_per_user=2)
    async with simulated(settings, standin_step_seconds=SLOW_STEP_SECONDS) as sim:
        alice = sim.member("alice")
        imported = await alice.slash(
            sim.channel, "embeddings import", file=("one.pt", a1111_pt()), name="onezo"
        )
        assert imported.response.embeds[0].title == "onezo"
        await sim.job_done(alice)  # the import's thumbnail render
        await alice.slash(sim.channel, "train", name="twozo", **photo_options())
        busy = (
            "You already have 1 embedding and 1 more in training, the most one member may keep "
            "(2); delete one with `/embeddings delete` before adding another."
        )
        third = await alice.slash(sim.channel, "train", name="threezo", **photo_options(1))
        assert refusal(third) == busy
        meanwhile = await alice.slash(
            sim.channel, "embeddings import", file=("three.pt", a1111_pt()), name="threezo"
        )
        assert refusal(meanwhile) == busy
        await sim.job_done(alice)
        assert [e.name for e in await sim.app.storage.embeddings.list_owned(alice.id)] == [
            "onezo",
            "twozo",
        ]

        files = sorted((tmp_path / "data").rglob("*"))
        jobs = await sim.app.storage.jobs.list_for_user(alice.id, states=None)
        full = (
            "You already have 2 embeddings, the most one member may keep (2); delete one with "
            "`/embeddings delete` before adding another."
        )
        refused = await alice.slash(
            sim.channel, "embeddings import", file=("three.pt", a1111_pt()), name="threezo"
        )
        assert refusal(refused) == full
        trained = await alice.slash(sim.channel, "train", name="threezo", **photo_options(1))
        assert refusal(trained) == full
        assert await sim.app.storage.jobs.list_for_user(alice.id, states=None) == jobs
        assert sorted((tmp_path / "data").rglob("*")) == files

        asked = (await alice.slash(sim.channel, "embeddings delete", name="onezo")).response
        await alice.click(asked, label="Delete for good")
        again = await alice.slash(
            sim.channel, "embeddings import", file=("three.pt", a1111_pt()), name="threezo"
        )
        assert again.response.embeds[0].title == "threezo"

        operator = Actor(0, is_manager=True)  # the CLI's imports are not counted
        for name in ("opzo1", "opzo2", "opzo3"):
            await sim.app.library.import_file(operator, f"{name}.pt", a1111_pt(), name)
        assert len(await sim.app.storage.embeddings.list_owned(0)) == 3
