"""Issue 16: the bot explains itself and never fails silently — one test per observation."""

from __future__ import annotations

from pathlib import Path

from simcord.actors import MemberActor

from tests.e2e.conftest import SLOW_STEP_SECONDS, photo_options, refusal, standin_settings, train
from tests.hardening.hostile_files import good_embedding
from tests.simulation import Simulation, simulated


async def _import_negative(sim: Simulation, member: MemberActor, name: str) -> None:
    """A negative embedding in storage (as `/embeddings import negative:True` makes)."""
    await sim.app.storage.embeddings.create(
        member.id,
        name,
        b"negative vectors",
        n_vectors=1,
        width=32,
        family="tiny",
        source="imported",
        kind="negative",
        shared=True,
    )


async def test_help_and_how_to_use_and_prompt_autocomplete(sim: Simulation) -> None:
    """(1) /help shows the three ways to write a word and the limits where it is asked (the
    server's queue limit once its managers set one); cards have How to use; the prompt
    autocompletes usable <names>."""
    alice = sim.member("alice")
    shown = await alice.slash(sim.channel, "help")
    fields = {f.name: f.value for f in shown.response.embeds[0].fields}
    assert "(zorb:1.3)" in fields["2. Use it — three ways"]
    assert "negative" in fields["Negative embeddings"]
    assert fields["Limits"].startswith(
        f"{sim.app.settings.max_queued_per_user} jobs waiting at a time, 20 images or trainings "
        "a minute, up to 4 images per prompt, 200 words of your own."
    )
    await sim.member("mia", manager=True).slash(sim.channel, "admin limits", max_queued_per_user=3)
    limits = (await alice.slash(sim.channel, "help")).response.embeds[0].fields[-1]
    assert (limits.name, limits.value.split(",")[0]) == ("Limits", "3 jobs waiting at a time")
    card = (await train(sim, alice, "zorb")).response
    how = await alice.click(card, label="How to use")
    assert how.response.content.startswith("**How to use zorb**\n• `<zorb>` — the sure way")
    offered = await alice.autocomplete(sim.channel, "imagine", "prompt", "a photo of <zo")
    assert [c["value"] for c in offered] == ["a photo of <zorb>"]
    assert [c["name"] for c in offered] == ["a photo of <zorb> · the tiny test model"]


async def test_results_name_their_embeddings_and_buttons_say_what_changed(
    slow_sim: Simulation,
) -> None:
    """(2) A word still training gets a note; the result lists embeddings and whose; Bob's
    Reroll of Alice's private word says it was left out. (The slow stand-in engine keeps the
    training running while the first /imagine is answered.)"""
    sim = slow_sim
    alice, bob = sim.member("alice"), sim.member("bob")
    await alice.slash(sim.channel, "train", name="zorb", **photo_options())
    training = await sim.latest_job(alice)
    early = await alice.slash(sim.channel, "imagine", prompt="zorb on a beach")
    assert f"-# `zorb` is still training (job #{training.id})" in early.response.content
    await sim.job_done(alice)
    await sim.job_done(training.id)
    result = await alice.slash(sim.channel, "imagine", prompt="zorb on a beach")
    await sim.job_done(alice)
    assert f"**Embeddings** `zorb` by <@{alice.id}>" in result.response.content
    rerolled = await bob.click(result.response, label="Reroll")
    job = await sim.job_done(bob)
    assert job.params["embeddings"] == []
    assert "**Embeddings** none" in rerolled.response.content
    assert "`zorb` was left out: this was made with your own embeddings" in (
        rerolled.response.content
    )


async def test_a_negative_embedding_is_moved_and_the_default_negative_shown(
    sim: Simulation,
) -> None:
    """(9) A negative embedding in the prompt moves to the negative, saying so; the server's
    default negative is named."""
    mia, alice = sim.member("mia", manager=True), sim.member("alice")
    await _import_negative(sim, mia, "easyneg")
    await mia.slash(sim.channel, "admin negative", prompt="lowres")
    result = await alice.slash(sim.channel, "imagine", prompt="a cat, <easyneg>")
    job = await sim.job_done(alice)
    assert job.params["prompt"] == "a cat" and job.params["negative"] == "lowres, easyneg"
    text = result.response.content
    assert "`easyneg` is a negative embedding, so it was moved to the negative prompt." in text
    assert "This server adds `lowres` to every negative prompt." in text


async def test_four_images_show_four_seeds_and_per_image_info(sim: Simulation) -> None:
    """(3) One Reroll for all, a row of tools per image (Info included) that knows its image,
    each seed shown."""
    alice = sim.member("alice")
    result = await alice.slash(sim.channel, "imagine", prompt="a red cube", count=4, seed=42)
    await sim.job_done(alice)
    message = result.response
    assert "image 1 seed 42 · image 2 seed 43 · image 3 seed 44 · image 4 seed 45" in (
        message.content
    )
    rows = [[c["label"] for c in row["components"]] for row in message.components]
    assert rows[0] == ["Reroll", "Delete"]
    assert [row[-1] for row in rows[1:]] == ["Info 1", "Info 2", "Info 3", "Info 4"]
    third = await alice.click(message, label="Info 3")
    assert third.response.content.startswith("**Image 3 of 4**")
    assert "**Seed** 44" in third.response.content
    assert [a.filename for a in third.response.attachments] == [
        f"lexicon-{(await sim.latest_job(alice)).id}-2.png"
    ]
    await alice.click(message, label="Reroll")
    again = await sim.job_done(alice)
    assert again.params["count"] == 4 and again.params["seed"] != 42


async def test_refusals_say_what_to_do_and_suggest_free_names(sim: Simulation) -> None:
    """(6) A known word is refused with a made-up name nobody has."""
    alice, bob = sim.member("alice"), sim.member("bob")
    await train(sim, bob, "catix", share=True)
    refused = await alice.slash(sim.channel, "train", name="cat", **photo_options(seed=2))
    assert refusal(refused) == (
        "'cat' is already a word the model knows, so it cannot be a new one; try 'catek' instead."
    )
    unknown = await alice.slash(sim.channel, "imagine", prompt="<qqqq>")
    assert refusal(unknown).endswith(
        "; `/embeddings list` and `/library` show the names you can use."
    )


async def test_look_ups_do_not_spend_the_gpu_rate_limit(tmp_path: Path) -> None:
    """(7) 25 look-ups in a minute at a limit of 3 still leave /imagine free."""

    async with simulated(standin_settings(tmp_path / "data", rate_limit=3)) as sim:
        alice = sim.member("alice")
        for command in ["queue", "embeddings list", "library", "help", "queue"] * 5:
            answer = await alice.slash(sim.channel, command)
            assert answer.response is not None and answer.response.ephemeral
        allowed = await alice.slash(sim.channel, "imagine", prompt="a red cube")
        assert "Queued" in allowed.response.content
        await sim.job_done(alice)


async def test_waiting_messages_move_up_the_line(slow_sim: Simulation) -> None:
    """(4) A waiting job's message says its place with a relative time, and changes to "next
    up" while the job ahead of it runs, before its own training starts."""
    sim = slow_sim
    members = [sim.member(name) for name in ("ann", "ben", "cy")]
    results = [
        await m.slash(sim.channel, "train", name=f"word{i}x", **photo_options(seed=i))
        for i, m in enumerate(members)
    ]
    last = results[2].response.id
    first_shown = sim.channel_message(last).content
    assert "#2 in line" in first_shown and "<t:" in first_shown, first_shown
    shown: list[str] = []  # every state the third message passes through

    def next_up() -> bool:
        content = sim.channel_message(last).content
        if not shown or shown[-1] != content:
            shown.append(content)
        return "— next up, expected to start" in content or content.startswith(("Start", "Train"))

    await sim.until(next_up, limit=60, what="the third job to move up")
    assert "— next up, expected to start" in shown[-1], "\n".join(shown)  # not straight to training
    for member in members:
        await sim.job_done(member)


async def test_gallery_describe_and_info_image(sim: Simulation) -> None:
    """(8) /embeddings describe sets what the gallery shows, with a thumbnail, Try and Use."""
    alice, bob = sim.member("alice"), sim.member("bob")
    await train(sim, alice, "zorb", share=True)
    described = await alice.slash(
        sim.channel, "embeddings describe", name="zorb", description="my orange cat"
    )
    assert described.response.content == "**zorb** now reads: my orange cat"
    page = (await bob.slash(sim.channel, "library", sort="new")).response
    assert page.embeds[0].description.startswith("my orange cat\nby <@")
    assert page.embeds[0].thumbnail.url.startswith("attachment://thumb-")
    labels = [c["label"] for c in page.components[0]["components"]]
    assert labels == ["Try zorb", "Use zorb"]
    found = await bob.slash(sim.channel, "library", query="orange")
    assert [e.title for e in found.response.embeds] == ["zorb"]


async def test_an_import_gets_a_thumbnail_rendered_quietly(sim: Simulation) -> None:
    """(8) An imported word's preview is rendered as its importer, posts nothing, and becomes its
    thumbnail in /library and its card in /embeddings info."""
    alice, bob = sim.member("alice"), sim.member("bob")
    posted = len(list(sim.channel.history()))
    imported = await alice.slash(
        sim.channel,
        "embeddings import",
        file=("glow.safetensors", good_embedding()),
        name="glowzo1",
        share=True,
    )
    assert imported.response.content.endswith(
        "in the shared library. A preview is being rendered for the library."
    )
    (embedding,) = await sim.app.storage.embeddings.list_owned(alice.id)
    assert embedding.thumbnail_job_id is not None
    job = await sim.job_done(embedding.thumbnail_job_id)
    assert job.user_id == alice.id and job.params["prompt"] == "a photo of <glowzo1>"
    assert job.channel_id is None and job.message_id is None
    assert len(list(sim.channel.history())) == posted  # nothing was posted for it

    page = (await bob.slash(sim.channel, "library")).response
    assert page.embeds[0].thumbnail.url == f"attachment://thumb-{embedding.id}.png"
    assert [a.filename for a in page.attachments] == [f"thumb-{embedding.id}.png"]
    info = (await bob.slash(sim.channel, "embeddings info", name="glowzo1")).response
    assert [a.filename for a in info.attachments] == ["glowzo1.png"]
    assert info.embeds[1].image.url == "attachment://glowzo1.png"


async def test_a_negative_import_previews_in_the_negative_prompt(sim: Simulation) -> None:
    """(8) A negative word's preview is a plain picture with the word in the negative prompt."""
    alice = sim.member("alice")
    await alice.slash(
        sim.channel,
        "embeddings import",
        file=("neg.safetensors", good_embedding()),
        name="smudgezo",
        negative=True,
    )
    (embedding,) = await sim.app.storage.embeddings.list_owned(alice.id)
    assert embedding.thumbnail_job_id is not None
    job = await sim.job_done(embedding.thumbnail_job_id)
    assert job.params["prompt"] == "a photo of a cat"
    assert "<smudgezo>" in job.params["negative"]


async def test_an_import_with_a_full_queue_has_no_thumbnail(tmp_path: Path) -> None:
    """(8) When the member's queue is full the import still succeeds, only without a preview."""
    settings = standin_settings(tmp_path / "data", max_queued_per_user=1)
    async with simulated(settings, standin_step_seconds=SLOW_STEP_SECONDS) as sim:
        alice = sim.member("alice")
        await alice.slash(sim.channel, "imagine", prompt="a red cube", steps=40)  # 10 s
        imported = await alice.slash(
            sim.channel,
            "embeddings import",
            file=("glow.safetensors", good_embedding()),
            name="glowzo1",
        )
        assert imported.response.content.startswith("Imported **glowzo1**")
        assert imported.response.content.endswith("private to you.")
        (embedding,) = await sim.app.storage.embeddings.list_owned(alice.id)
        assert embedding.thumbnail_job_id is None
        assert not (await sim.latest_job(alice)).state.is_final  # it was full all along
        await alice.slash(sim.channel, "cancel")
        await sim.job_done(alice)
