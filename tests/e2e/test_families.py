"""Embeddings and the families of models they fit, as members read them: `/embeddings list`,
`/embeddings info` and `/library` name each word's family and the model it was trained on (for
an import, the checkpoint its file names, as the file's claim), and `model:` keeps only the words
that fit a model (page buttons keep that filter, and buttons posted before it existed still turn
pages)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import discord
from simcord.results import ResponseMessage

from cogs.library import FILTERS, QUERY_MAX
from cogs.persistent import CUSTOM_ID_MAX
from storage.models import Embedding, Family
from tests.e2e.conftest import refusal, standin_settings, train
from tests.hardening.hostile_files import a1111_pt
from tests.simulation import Simulation, simulated

TWO_MODELS = "a=standin,b=standin"  # the stand-in engine serves the tiny test model's family
NOT_SERVED = {"sd1": 768, "sdxl": 2048}  # families no model here fits, with their widths


async def _word(
    sim: Simulation, owner_id: int, name: str, family: str, *, shared: bool = False
) -> Embedding:
    """An imported embedding of `family` put straight into storage (lists never read its file)."""
    return await sim.app.storage.embeddings.create(
        owner_id,
        name,
        f"{name} vectors".encode(),
        n_vectors=1,
        width=NOT_SERVED.get(family, 32),
        family=family,
        source="imported",
        shared=shared,
        shared_guild_id=sim.guild.id if shared else None,
    )


def _custom_ids(message: ResponseMessage) -> list[str]:
    return [c["custom_id"] for row in message.components for c in row["components"]]


async def _ready(sim: Simulation, *models: str) -> None:
    """Wait until the worker has reported the families of `models`."""
    await sim.until(lambda: all(m in sim.app.scheduler.models for m in models), what="models")


async def test_list_and_info_name_the_family_and_the_model_trained_on(tmp_path: Path) -> None:
    """A word trained with model:b reads "for the tiny test model, trained on b" in the list and
    on its card; an imported SD 1.x file that names no checkpoint shows its family only."""
    async with simulated(standin_settings(tmp_path / "data", model_list=TWO_MODELS)) as sim:
        alice = sim.member("alice")
        await train(sim, alice, "zorb", model="b")
        await _word(sim, alice.id, "onezo", "sd1")

        listed = (await alice.slash(sim.channel, "embeddings list")).response.content
        assert listed.split("\n") == [
            "**onezo** · positive · 1 vector · for SD 1.x · private · 0 uses",
            "**zorb** · positive · 1 vector · for the tiny test model, trained on **b** · "
            "private · 0 uses",
        ]
        card = (await alice.slash(sim.channel, "embeddings info", name="zorb")).response
        assert (
            "Made for the tiny test model; trained on **b**, it works with any model of that "
            "family." in card.embeds[0].description
        )
        imported = (await alice.slash(sim.channel, "embeddings info", name="onezo")).response
        assert "Made for SD 1.x: it works with any model of that family." in (
            imported.embeds[0].description
        )
        assert "trained on" not in imported.embeds[0].description


async def test_an_imported_files_checkpoint_shows_as_what_the_file_says(sim: Simulation) -> None:
    """An A1111 file naming its checkpoint reads "made with **…** (says the file)", escaped, in
    the list, on its card, in Info and, once shared, in /library; a file naming none shows no
    such text anywhere."""
    alice, bob = sim.member("alice"), sim.member("bob")
    claim = "made with **sd\\_v1-5 \\*\\*pruned\\*\\*** (says the file)"
    named = await alice.slash(
        sim.channel,
        "embeddings import",
        file=("glow.pt", a1111_pt(checkpoint="sd_v1-5 **pruned**\n")),
        name="glowzo1",
    )
    assert f"Made for the tiny test model; {claim}, it works with any model of that family." in (
        named.response.embeds[0].description
    )
    plain = await alice.slash(
        sim.channel, "embeddings import", file=("plain.pt", a1111_pt()), name="plainzo1"
    )
    assert "says the file" not in plain.response.embeds[0].description

    listed = (await alice.slash(sim.channel, "embeddings list")).response.content
    assert [line.rsplit(" · ", 1)[0] for line in listed.split("\n")] == [  # uses: thumbnails
        f"**glowzo1** · positive · 2 vectors · for the tiny test model, {claim} · private",
        "**plainzo1** · positive · 2 vectors · for the tiny test model · private",
    ]
    card = (await alice.slash(sim.channel, "embeddings info", name="glowzo1")).response
    assert f"; {claim}, it works" in card.embeds[0].description
    info = (await alice.click(card, label="Info")).response.content
    assert "\nMade with checkpoint sd\\_v1-5 \\*\\*pruned\\*\\* (says the file)\n" in info
    plain_card = (await alice.slash(sim.channel, "embeddings info", name="plainzo1")).response
    assert "says the file" not in plain_card.embeds[0].description
    plain_info = (await alice.click(plain_card, label="Info")).response.content
    assert "says the file" not in plain_info and "Made with" not in plain_info

    for name in ("glowzo1", "plainzo1"):
        shared = await alice.slash(sim.channel, "embeddings share", name=name)
        assert shared.response.content.startswith(f"**{name}** is shared")
    page = (await bob.slash(sim.channel, "library")).response
    shown = {embed.title: embed.description for embed in page.embeds}
    assert f"\nMade for the tiny test model, {claim}\n" in shown["glowzo1"]
    assert "\nMade for the tiny test model\n" in shown["plainzo1"]


async def test_embeddings_list_model_keeps_the_words_that_fit(tmp_path: Path) -> None:
    """`/embeddings list model:a` lists only the tiny-family words; a model that is not here and
    a filter that keeps nothing are each answered with one sentence and what to do instead."""
    async with simulated(standin_settings(tmp_path / "data", model_list=TWO_MODELS)) as sim:
        alice, bob = sim.member("alice"), sim.member("bob")
        await _ready(sim, "a", "b")
        await train(sim, alice, "zorb")
        await _word(sim, alice.id, "onezo", "sd1")
        await _word(sim, alice.id, "xlzo", "sdxl")

        fitting = await alice.slash(sim.channel, "embeddings list", model="a")
        assert fitting.response.content == (
            "**zorb** · positive · 1 vector · for the tiny test model, trained on **a** · "
            "private · 0 uses"
        )
        offered = await alice.autocomplete(sim.channel, "embeddings list", "model", "")
        assert [choice["value"] for choice in offered] == ["a", "b"]

        unknown = await alice.slash(sim.channel, "embeddings list", model="xl")
        assert (
            refusal(unknown) == "There is no model called **xl** here; choose one of **a**, **b**."
        )

        await _word(sim, bob.id, "bobone", "sd1")
        nothing = await bob.slash(sim.channel, "embeddings list", model="b")
        assert refusal(nothing) == (
            "None of your embeddings fits **b**; leave out `model:` to see them all, or "
            "`/train model:b` one for it."
        )
        assert [e.name for e in await sim.app.storage.embeddings.list_owned(bob.id)] == ["bobone"]


async def test_library_model_filters_pages_and_keeps_the_filter(tmp_path: Path) -> None:
    """`/library model:a` shows only the shared words for the tiny test model, says so above
    the page, and Next keeps the filter; before any fits, it says so and how to see the rest."""
    async with simulated(standin_settings(tmp_path / "data", model_list=TWO_MODELS)) as sim:
        olga, rui = sim.member("olga"), sim.member("rui")
        await _ready(sim, "a", "b")
        for number in range(3):
            await _word(sim, olga.id, f"xlword{number}", "sdxl", shared=True)
        empty = await rui.slash(sim.channel, "library", model="a")
        assert empty.response.content == (
            "Nothing is shared for the tiny test model yet; leave out `model:` to see every family."
        )
        for number in range(5):
            await _word(sim, olga.id, f"tinyword{number}", "tiny", shared=True)
        await train(sim, olga, "zorb", share=True, model="b")

        everything = (await rui.slash(sim.channel, "library")).response
        assert everything.content.endswith("page 1 of 3 · 9 shared")
        page = (await rui.slash(sim.channel, "library", model="a")).response
        assert page.content == (
            "Shared library for the tiny test model · popular first · page 1 of 2 · 6 shared"
        )
        descriptions = [embed.description for embed in page.embeds]
        assert all("\nMade for the tiny test model" in text for text in descriptions)
        assert "lexicon:library:2:0:4:" in _custom_ids(page)  # Next: page 2, popular, tiny

        turned = (await rui.click(page.message, label="Next")).response
        assert turned.content == (
            "Shared library for the tiny test model · popular first · page 2 of 2 · 6 shared"
        )
        titles = [embed.title for embed in turned.embeds]
        assert not [title for title in titles if title.startswith("xlword")]
        zorb = {embed.title: embed.description for embed in [*page.embeds, *turned.embeds]}
        assert "\nMade for the tiny test model, trained on **b**\n" in zorb["zorb"]

        searched = await rui.slash(sim.channel, "library", query="xlword", model="b")
        assert searched.response.content == (
            "Nothing shared for the tiny test model matches that; leave out `model:` to see "
            "every family."
        )
        longest = "w" * QUERY_MAX
        searched = (await rui.slash(sim.channel, "library", query=longest, model="a")).response
        ids = _custom_ids(searched)
        assert f"lexicon:library:2:0:4:{longest}" in ids  # Next keeps the whole query
        assert all(len(custom_id) <= CUSTOM_ID_MAX for custom_id in ids)
        unknown = await rui.slash(sim.channel, "library", model="xl")
        assert (
            refusal(unknown) == "There is no model called **xl** here; choose one of **a**, **b**."
        )


async def test_a_library_button_posted_before_the_filter_still_turns_pages(sim: Simulation) -> None:
    """A Next button in the old `lexicon:lib:<page>:<sort>:<query>` form shows that page of
    every family, with buttons of today's form."""
    olga, rui = sim.member("olga"), sim.member("rui")
    for number in range(5):
        await _word(sim, olga.id, f"word{number}", "tiny", shared=True)
    await _word(sim, olga.id, "xlzorb7", "sdxl", shared=True)
    old = discord.ui.View(timeout=None)
    old.add_item(discord.ui.Button(label="Next", custom_id="lexicon:lib:2:1:"))
    channel: Any = sim.bot.get_channel(sim.channel.id)
    posted = await channel.send("Shared library · new first · page 1 of 2 · 6 shared", view=old)
    await sim.settle()

    await rui.click(sim.channel_message(posted.id), custom_id="lexicon:lib:2:1:")
    edited = sim.channel_message(posted.id)
    assert edited.content == "Shared library · new first · page 2 of 2 · 6 shared"
    assert [embed.title for embed in edited.embeds] == ["word1", "word0"]
    ids = [button.custom_id for row in edited.components for button in row.children]
    assert "lexicon:library:1:1:0:" in ids  # Prev: page 1, new first, every family


async def test_with_one_model_the_filter_hides_words_of_other_families(sim: Simulation) -> None:
    """With one model configured, `model:` still means "fits it": an SD 1.x word left from
    another model is left out, the tiny-family ones stay."""
    alice = sim.member("alice")
    await _ready(sim, "standin")
    await train(sim, alice, "zorb")
    await _word(sim, alice.id, "onezo", "sd1")
    listed = await alice.slash(sim.channel, "embeddings list", model="standin")
    assert listed.response.content.startswith("**zorb** · ")
    assert "onezo" not in listed.response.content


async def test_a_model_no_worker_has_reported_is_answered(tmp_path: Path) -> None:
    """While no worker holds model c, which words fit it is unknown: `model:c` says so and what
    to do, and lists nothing."""
    settings = standin_settings(
        tmp_path / "data", model_list="a=standin,c=standin", worker_model_names=("a",)
    )
    async with simulated(settings) as sim:
        alice = sim.member("alice")
        await _ready(sim, "a")
        await _word(sim, alice.id, "tinyzo1", "tiny", shared=True)
        waiting = (
            "No GPU worker serving **c** has reported in yet, so which embeddings fit it is not "
            "known; try again in a minute, or leave out `model:`."
        )
        for command in ("library", "embeddings list"):
            assert refusal(await alice.slash(sim.channel, command, model="c")) == waiting


async def test_an_import_for_a_model_no_worker_has_reported_is_answered_at_once(
    tmp_path: Path,
) -> None:
    """The file an import brings is checked against the server's model; while no worker holds
    it, the member is told so at once (no ten-minute spinner) and nothing is stored."""
    settings = standin_settings(
        tmp_path / "data", model_list="c=standin,a=standin", worker_model_names=("a",)
    )
    async with simulated(settings) as sim:
        alice = sim.member("alice")
        await _ready(sim, "a")
        result = await alice.slash(
            sim.channel, "embeddings import", file=("plain.pt", a1111_pt()), name="plainzo1"
        )
        assert refusal(result) == (
            "No GPU worker serving **c** has reported in yet, so the file cannot be checked "
            "against it; try again in a minute."
        )
        assert await sim.app.storage.embeddings.list_owned(alice.id) == []


async def test_after_a_restart_a_models_family_is_known_before_its_worker_reports(
    tmp_path: Path,
) -> None:
    """A worker's report of a model outlives the bot: after a restart, while model c's worker is
    still starting (here: none holds c), an import for c is checked against the family c had
    when it last ran from the same source, and `model:c` lists what fits it."""
    data = tmp_path / "data"
    async with simulated(standin_settings(data, model_list="c=standin,a=standin")) as sim:
        await _ready(sim, "c", "a")
    settings = standin_settings(data, model_list="c=standin,a=standin", worker_model_names=("a",))
    async with simulated(settings) as sim:
        alice = sim.member("alice")
        assert sim.app.scheduler.models["c"].family == "tiny"
        result = await alice.slash(
            sim.channel, "embeddings import", file=("plain.pt", a1111_pt()), name="plainzo1"
        )
        assert result.response.content.startswith(
            "Imported **plainzo1** (2 vectors, positive, made for the tiny test model)"
        )
        listed = await alice.slash(sim.channel, "embeddings list", model="c")
        assert listed.response.content.startswith("**plainzo1** · positive · 2 vectors")


def test_every_family_has_a_page_button_number() -> None:
    """A family added to storage gets a number in `FILTERS`, so /library's buttons can keep it."""
    assert set(FILTERS[1:]) == set(Family) and FILTERS[0] is None
