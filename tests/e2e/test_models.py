"""Two models in one deployment, in a simulated server: `/imagine model:`, the server's default
model (`/admin model`), autocomplete, an unknown name, and buttons that keep a result's model."""

from __future__ import annotations

from pathlib import Path

from cogs.images import parse_parameters
from engine.model import ensure_tiny_model
from engine.png import read_parameters
from tests.bot.conftest import make_settings
from tests.e2e.conftest import photo_options, refusal, standin_settings
from tests.simulation import Simulation, simulated


async def _image(sim: Simulation, message_id: int) -> bytes:
    message = sim.channel_message(message_id)
    data: bytes = await message.attachments[0].read()
    assert parse_parameters(read_parameters(data)).seed == "7"
    return data


async def test_two_models_default_autocomplete_and_buttons(tmp_path: Path) -> None:
    """model:a and model:b render and are recorded; the admin default changes a bare /imagine;
    autocomplete puts the server's default first; Reroll keeps its result's model."""
    settings = standin_settings(tmp_path / "data", model_list="a=standin,b=standin")
    async with simulated(settings) as sim:
        alice, mia = sim.member("alice"), sim.member("mia", manager=True)
        for model in ("b", "a"):
            result = await alice.slash(sim.channel, "imagine", prompt="a red cube", model=model)
            job = await sim.job_done(alice)
            assert (job.state.value, job.model) == ("succeeded", model)
        info = await alice.click(result.response, label="Info")
        assert "**Model** a" in info.response.content

        offered = await alice.autocomplete(sim.channel, "imagine", "model", "")
        assert [choice["value"] for choice in offered] == ["a", "b"]
        bare = await alice.slash(sim.channel, "imagine", prompt="a blue ball")
        assert (await sim.job_done(alice)).model == "a"

        chosen = await mia.slash(sim.channel, "admin model", name="b")
        assert chosen.response.content == (
            "`/imagine` and `/train` here use **b** unless a member picks another model."
        )
        shown = await mia.slash(sim.channel, "admin settings")
        assert "**Default model** b" in shown.response.content
        offered = await alice.autocomplete(sim.channel, "imagine", "model", "")
        assert [choice["value"] for choice in offered] == ["b", "a"]
        await alice.slash(sim.channel, "imagine", prompt="a green cone")
        assert (await sim.job_done(alice)).model == "b"

        await alice.click(bare.response, label="Reroll")  # made on a: stays on a
        assert (await sim.job_done(alice)).model == "a"

        unknown = await alice.slash(sim.channel, "imagine", prompt="a cube", model="xl")
        assert (
            refusal(unknown) == "There is no model called **xl** here; choose one of **a**, **b**."
        )

        guide = (await alice.slash(sim.channel, "help")).response.embeds[0]
        models = {field.name: field.value for field in guide.fields}["Models"]
        assert models.startswith("This server runs several image models: **a**, **b**.")


async def test_help_leaves_models_out_when_there_is_one(sim: Simulation) -> None:
    """With one model, /help does not talk about choosing one."""
    guide = (await sim.member("alice").slash(sim.channel, "help")).response.embeds[0]
    assert "Models" not in [field.name for field in guide.fields]


async def test_two_tiny_models_render_on_the_real_engine(
    tmp_path: Path, tiny_model_path: Path
) -> None:
    """One local worker holds two tiny SD models (different seeds, one named by its folder):
    each /imagine renders on the model it names (same prompt and seed, other weights)."""
    second = ensure_tiny_model(tmp_path / "second-tiny", seed=1)
    models = f"first={tiny_model_path},second={second}"
    settings = make_settings(tmp_path / "data", "", model_list=models)
    async with simulated(settings) as sim:
        alice = sim.member("alice")
        images = {}
        for model in ("first", "second"):
            result = await alice.slash(
                sim.channel, "imagine", prompt="a red cube", seed=7, model=model
            )
            job = await sim.job_done(alice, limit=600)
            assert (job.state.value, job.model) == ("succeeded", model), job.error
            images[model] = await _image(sim, result.response.id)
        assert images["first"] != images["second"]
        assert sim.app.scheduler.models["second"].family == "tiny"


async def test_prompt_autocomplete_offers_words_that_fit_the_picked_model(tmp_path: Path) -> None:
    """Typing `<` offers the member's words and this server's shared ones, only those made
    for the family of the model picked in `model:`; name autocomplete shows each word's family."""
    settings = standin_settings(tmp_path / "data", model_list="a=standin,b=standin")
    async with simulated(settings) as sim:
        alice, bob = sim.member("alice"), sim.member("bob")
        embeddings = sim.app.storage.embeddings
        common = {"n_vectors": 1, "source": "imported"}
        await embeddings.create(alice.id, "tinyzo", b"t", width=32, family="tiny", **common)
        await embeddings.create(alice.id, "sdonezo", b"s", width=768, family="sd1", **common)
        await embeddings.create(
            bob.id,
            "zorbix",
            b"h",
            width=32,
            family="tiny",
            shared=True,
            shared_guild_id=sim.guild.id,
            **common,
        )
        offered = await alice.autocomplete(
            sim.channel, "imagine", "prompt", "a photo of <", model="b"
        )
        assert [choice["value"] for choice in offered] == [
            "a photo of <tinyzo>",
            "a photo of <zorbix>",
        ]
        named = await alice.autocomplete(sim.channel, "embeddings info", "name", "")
        assert {choice["name"] for choice in named} == {
            "tinyzo · the tiny test model",
            "sdonezo · SD 1.x",
            "zorbix · the tiny test model",
        }


async def test_a_word_trained_on_tiny_sdxl_renders_there_and_is_refused_on_sd(
    tmp_path: Path,
) -> None:
    """With sd=tiny and xl=tiny-sdxl on the real engine: /train model:xl stores an SDXL pair
    (family tiny-sdxl, width 32 + 64), /imagine with it on xl renders, and on sd it is refused
    in one sentence naming both families and the model that fits."""
    settings = make_settings(
        tmp_path / "data", "", model_list="sd=tiny,xl=tiny-sdxl", train_steps=4
    )
    async with simulated(settings) as sim:
        alice = sim.member("alice")
        await alice.slash(sim.channel, "train", name="xorb", model="xl", **photo_options())
        job = await sim.job_done(alice, limit=600)
        assert (job.state.value, job.model) == ("succeeded", "xl"), job.error
        (embedding,) = await sim.app.storage.embeddings.list_owned(alice.id)
        assert (embedding.family.value, embedding.width, embedding.n_vectors) == (
            "tiny-sdxl",
            96,
            1,
        )

        result = await alice.slash(
            sim.channel, "imagine", prompt="a photo of xorb", seed=7, model="xl"
        )
        job = await sim.job_done(alice, limit=600)
        assert (job.state.value, job.model) == ("succeeded", "xl"), job.error
        await _image(sim, result.response.id)

        refused = await alice.slash(sim.channel, "imagine", prompt="a photo of xorb", model="sd")
        assert refusal(refused) == (
            "**xorb** was trained for the tiny SDXL test model, but **sd** is the tiny test "
            "model; try model **xl**."
        )


async def test_a_job_for_a_model_no_worker_holds_says_so_with_a_next_step(tmp_path: Path) -> None:
    """The local worker holds only a: a job for c stays queued and its message says why and
    what the member can do."""
    settings = standin_settings(
        tmp_path / "data", model_list="a=standin,c=standin", worker_model_names=("a",)
    )
    async with simulated(settings) as sim:
        alice = sim.member("alice")
        result = await alice.slash(sim.channel, "imagine", prompt="a red cube", model="c")
        job = await sim.latest_job(alice)
        assert (job.state.value, job.model) == ("queued", "c")
        assert result.response.content == (
            f"Queued **a red cube** (job #{job.id}) — waiting for a worker that serves **c**; it "
            "starts when one is back, or `/cancel` it and pick another `model:`."
        )
