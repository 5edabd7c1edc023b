"""Issue 17's buttons as members press them: Vary (subtle/strong), Upscale ×2, Edit & rerun and
its modal, Info's personal defaults; by the owner, by another member (their rights, their
queue), and on a message posted before a restart."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

from PIL import Image
from simcord.actors import MemberActor
from simcord.results import InteractionResult, ResponseMessage

from cogs.persistent import CUSTOM_ID_MAX
from storage.models import JobState
from tests.e2e.conftest import refusal, standin_settings, train
from tests.simulation import Simulation, simulated

SEED = "Seed (empty for a random one)"
LEFT_OUT = "-# `zorb` was left out: this was made with your own embeddings"


def _rows(message: ResponseMessage) -> list[list[str]]:
    return [[c["label"] for c in row["components"]] for row in message.components]


def _custom_ids(message: ResponseMessage) -> list[str]:
    return [c["custom_id"] for row in message.components for c in row["components"]]


def _modal_values(shown: InteractionResult) -> dict[str, Any]:
    """Label → prefilled value of each text input of the modal the bot showed."""
    modal = shown.modal
    assert modal is not None
    inputs = [row["components"][0] for row in modal["components"]]
    return {field["label"]: field.get("value") for field in inputs}


def _modal_ids(shown: InteractionResult) -> dict[str, str]:
    modal = shown.modal
    assert modal is not None
    return {
        row["components"][0]["label"]: row["components"][0]["custom_id"]
        for row in modal["components"]
    }


async def _submit(member: MemberActor, shown: InteractionResult, **typed: str) -> InteractionResult:
    """Submit the modal with the fields named by label (Prompt, Steps, …) changed."""
    ids = _modal_ids(shown)
    values = {ids[label]: value for label, value in _modal_values(shown).items()}
    for label, value in typed.items():
        values[ids[label]] = value
    return await member.submit_modal(shown, {k: v for k, v in values.items() if v is not None})


async def _zorb_result(sim: Simulation) -> tuple[MemberActor, ResponseMessage, int]:
    """Alice, her result of two images for a prompt with her private word `zorb`, its job id."""
    alice = sim.member("alice")
    await train(sim, alice, "zorb")
    result = await alice.slash(
        sim.channel, "imagine", prompt="zorb on a beach", count=2, steps=6, seed=40
    )
    job = await sim.job_done(alice)
    assert result.response is not None
    return alice, result.response, job.id


async def _png(sim: Simulation, job_id: int, idx: int) -> bytes:
    images = sim.app.storage.images
    return await images.read_png(await images.get(job_id, idx))


async def test_a_result_has_a_row_of_tools_per_image(sim: Simulation) -> None:
    """Four images: Reroll and Delete, then Vary subtle/strong, Upscale, Edit and Info for each,
    22 buttons in 5 rows; one image gets the long labels."""
    alice = sim.member("alice")
    four = await alice.slash(sim.channel, "imagine", prompt="a red cube", count=4)
    job = await sim.job_done(alice)
    rows = _rows(four.response)
    assert rows[0] == ["Reroll", "Delete"]
    assert rows[1:] == [
        [f"Vary subtle {n}", f"Vary strong {n}", f"Upscale {n}", f"Edit {n}", f"Info {n}"]
        for n in range(1, 5)
    ]
    assert f"lexicon:vary-strong:{job.id}:3" in _custom_ids(four.response)
    assert all(len(custom_id) <= CUSTOM_ID_MAX for custom_id in _custom_ids(four.response))
    one = await alice.slash(sim.channel, "imagine", prompt="a red cube")
    await sim.job_done(alice)
    assert _rows(one.response) == [
        ["Reroll", "Delete"],
        ["Vary (subtle)", "Vary (strong)", "Upscale ×2", "Edit & rerun", "Info"],
    ]


async def test_vary_by_the_owner_and_by_another_member(sim: Simulation) -> None:
    """Alice's Vary (subtle) 2 keeps her word; Bob's Vary (strong) 2 is his job, without her
    private word and saying so; both start from image 2 with a new seed."""
    alice, message, source = await _zorb_result(sim)
    bob = sim.member("bob")
    start = hashlib.sha256(await _png(sim, source, 1)).hexdigest()

    mine = await alice.click(message, label="Vary subtle 2")
    assert mine.response is not None and "Queued" in mine.response.content
    varied = await sim.job_done(alice)
    assert varied.user_id == alice.id and varied.state is JobState.SUCCEEDED
    assert (varied.params["init_image"], varied.params["strength"]) == (start, 0.35)
    assert [e["name"] for e in varied.params["embeddings"]] == ["zorb"]
    assert varied.params["seed"] != 40
    text = mine.response.content
    assert text.startswith("**zorb on a beach**\nimage 1 seed ")
    assert "· 6 steps · 64x64 · strength 0.35" in text
    assert f"**Embeddings** `zorb` by <@{alice.id}>" in text
    assert [a.filename for a in mine.response.attachments] == [
        f"lexicon-{varied.id}-0.png",
        f"lexicon-{varied.id}-1.png",
    ]
    assert _rows(mine.response)[1][:2] == ["Vary subtle 1", "Vary strong 1"]

    theirs = await bob.click(message, label="Vary strong 2")
    strong = await sim.job_done(bob)
    assert strong.user_id == bob.id and strong.params["embeddings"] == []
    assert (strong.params["init_image"], strong.params["strength"]) == (start, 0.65)
    assert "strength 0.65" in theirs.response.content
    assert "**Embeddings** none" in theirs.response.content
    assert LEFT_OUT in theirs.response.content


async def test_upscale_by_the_owner_and_by_another_member(sim: Simulation) -> None:
    """Upscale 1 makes a 128x128 image whose text names its source; an upscaled result has
    no Upscale button; Bob's upscale is his job without Alice's private word."""
    alice, message, source = await _zorb_result(sim)
    bob = sim.member("bob")

    mine = await alice.click(message, label="Upscale 1")
    upscale = await sim.job_done(alice)
    assert upscale.user_id == alice.id and upscale.params["hires_steps"] == 6
    lines = mine.response.content.split("\n")
    assert lines[1] == (
        f"×2 upscale of image 1 of job #{source} · seed 40 · 6 steps · 128x128 · strength 0.5"
    )
    (attachment,) = mine.response.attachments
    assert attachment.filename == f"lexicon-{upscale.id}-0.png"
    assert Image.open(io.BytesIO(await attachment.read())).size == (128, 128)
    assert _rows(mine.response) == [
        ["Reroll", "Delete"],
        ["Vary (subtle)", "Vary (strong)", "Edit & rerun", "Info"],
    ]

    theirs = await bob.click(message, label="Upscale 2")
    upscaled = await sim.job_done(bob)
    assert upscaled.user_id == bob.id and upscaled.params["seed"] == 41
    assert f"×2 upscale of image 2 of job #{source} · seed 41" in theirs.response.content
    assert LEFT_OUT in theirs.response.content


async def test_upscale_past_the_limit_is_one_private_sentence(tmp_path: Path) -> None:
    """With LEXICON_MAX_UPSCALE_SIDE=100 the button answers with the service's sentence, only
    to the presser, and queues nothing."""
    async with simulated(standin_settings(tmp_path / "data", max_upscale_side=100)) as sim:
        alice, bob = sim.member("alice"), sim.member("bob")
        result = await alice.slash(sim.channel, "imagine", prompt="a red cube")
        await sim.job_done(alice)
        refused = await bob.click(result.response, label="Upscale ×2")
        assert refusal(refused) == (
            "Upscaling this 64x64 image would make it 128x128, over this server's limit of "
            "100 pixels on a side; upscale a smaller image."
        )
        assert await sim.app.storage.jobs.list_for_user(bob.id, states=None) == []


async def test_edit_opens_a_prefilled_modal_and_queues_for_the_owner(sim: Simulation) -> None:
    """Edit 2 shows image 2's prompt, negative, seed, steps and guidance; Alice's changed
    prompt and steps queue one image with that seed, her word still used."""
    alice = sim.member("alice")
    await train(sim, alice, "zorb")
    result = await alice.slash(
        sim.channel,
        "imagine",
        prompt="zorb on a beach",
        negative="blurry",
        count=2,
        steps=6,
        guidance=5.5,
        seed=40,
    )
    source = await sim.job_done(alice)
    shown = await alice.click(result.response, label="Edit 2")
    assert shown.modal is not None
    assert shown.modal["title"] == f"Edit image 2 of job #{source.id}"
    assert _modal_values(shown) == {
        "Prompt": "zorb on a beach",
        "Negative prompt": "blurry",
        SEED: "41",
        "Steps": "6",
        "Guidance (CFG scale)": "5.5",
    }
    edited = await _submit(alice, shown, Prompt="zorb on a hill", Steps="8")
    job = await sim.job_done(alice)
    assert job.user_id == alice.id and job.id != source.id
    assert (job.params["prompt"], job.params["negative"]) == ("zorb on a hill", "blurry")
    assert (job.params["seed"], job.params["steps"], job.params["guidance"]) == (41, 8, 5.5)
    assert job.params["count"] == 1 and "init_image" not in job.params
    assert [e["name"] for e in job.params["embeddings"]] == ["zorb"]
    assert edited.response is not None and not edited.response.ephemeral
    assert edited.response.content.startswith("**zorb on a hill**\nseed 41 · 8 steps · 64x64")
    assert [a.filename for a in edited.response.attachments] == [f"lexicon-{job.id}-0.png"]
    assert _rows(edited.response)[0] == ["Reroll", "Delete"]


async def test_edit_by_another_member_runs_as_them(sim: Simulation) -> None:
    """Bob's edit of Alice's image is his job: her private word is left out with a note; an
    emptied seed is a random one."""
    _alice, message, _source = await _zorb_result(sim)
    bob = sim.member("bob")
    shown = await bob.click(message, label="Edit 1")
    submitted = await _submit(bob, shown, Prompt="zorb on the moon", **{SEED: ""})
    job = await sim.job_done(bob)
    assert job.params["seed"] != 40
    assert job.user_id == bob.id and job.params["embeddings"] == []
    assert job.params["prompt"] == "zorb on the moon"
    assert LEFT_OUT in submitted.response.content
    assert "**Embeddings** none" in submitted.response.content


async def test_a_bad_value_in_the_modal_is_one_private_sentence(sim: Simulation) -> None:
    """Steps that are not a number, or over the limit, are refused privately; nothing queued."""
    alice, bob = sim.member("alice"), sim.member("bob")
    result = await alice.slash(sim.channel, "imagine", prompt="a red cube")
    await sim.job_done(alice)
    shown = await bob.click(result.response, label="Edit & rerun")
    words = await _submit(bob, shown, Steps="lots")
    assert refusal(words) == "Steps must be a whole number, like 30; you wrote 'lots'."
    shown = await bob.click(result.response, label="Edit & rerun")
    many = await _submit(bob, shown, Steps="999")
    assert refusal(many) == "steps must be between 1 and 50; got 999."
    shown = await bob.click(result.response, label="Edit & rerun")
    guidance = await _submit(bob, shown, **{"Guidance (CFG scale)": "strong"})
    assert refusal(guidance) == "Guidance must be a number, like 7.5; you wrote 'strong'."
    assert await sim.app.storage.jobs.list_for_user(bob.id, states=None) == []


async def test_every_new_button_works_after_a_restart(sim: Simulation) -> None:
    """On a message posted before `restart_bot()`, Vary, Upscale and Edit (with its modal)
    still queue jobs for whoever presses them."""
    alice, bob = sim.member("alice"), sim.member("bob")
    before = await alice.slash(sim.channel, "imagine", prompt="a red cube", count=2, steps=6)
    source = await sim.job_done(alice)
    await sim.restart_bot()

    subtle = await bob.click(before.response, label="Vary subtle 1")
    assert (await sim.job_done(bob)).params["strength"] == 0.35
    assert subtle.response.attachments
    strong = await alice.click(before.response, label="Vary strong 2")
    assert (await sim.job_done(alice)).params["strength"] == 0.65
    assert "strength 0.65" in strong.response.content
    upscale = await bob.click(before.response, label="Upscale 2")
    assert (await sim.job_done(bob)).params["hires_steps"] == 6
    assert f"×2 upscale of image 2 of job #{source.id}" in upscale.response.content
    shown = await alice.click(before.response, label="Edit 1")
    assert _modal_values(shown)["Prompt"] == "a red cube"
    edited = await _submit(alice, shown, Prompt="a blue cube")
    assert (await sim.job_done(alice)).params["prompt"] == "a blue cube"
    assert edited.response.content.startswith("**a blue cube**")


async def test_info_lists_the_pressers_personal_defaults(sim: Simulation) -> None:
    """Info adds a line with the presser's own defaults when they have any."""
    alice, bob = sim.member("alice"), sim.member("bob")
    result = await alice.slash(sim.channel, "imagine", prompt="a red cube")
    await sim.job_done(alice)
    plain = await alice.click(result.response, label="Info")
    assert "Your defaults" not in plain.response.content
    await bob.slash(sim.channel, "settings", steps=30, sampler="euler")
    info = await bob.click(result.response, label="Info")
    assert info.response.ephemeral
    assert info.response.content.endswith(
        "\n**Your defaults** steps 30, sampler euler (used for what you leave out; `/settings`)"
    )


async def test_a_banned_member_is_refused_by_every_image_tool(sim: Simulation) -> None:
    """Bob, banned here, pressing Vary, Upscale or submitting Edit gets the ban sentence
    privately and queues nothing; the Edit modal itself (a look-up) still opens."""
    alice, bob, mia = sim.member("alice"), sim.member("bob"), sim.member("mia", manager=True)
    result = await alice.slash(sim.channel, "imagine", prompt="a red cube")
    await sim.job_done(alice)
    await mia.slash(sim.channel, "admin ban", user=bob)
    for label in ("Vary (subtle)", "Vary (strong)", "Upscale ×2"):
        refused = await bob.click(result.response, label=label)
        assert (
            refusal(refused)
            == "You are not allowed to use Lexicon here; ask a manager of this server why."
        ), label
    shown = await bob.click(result.response, label="Edit & rerun")
    assert (
        refusal(await _submit(bob, shown))
        == "You are not allowed to use Lexicon here; ask a manager of this server why."
    )
    assert await sim.app.storage.jobs.list_for_user(bob.id, states=None) == []


async def test_a_tool_counts_against_the_pressers_queue(slow_sim: Simulation) -> None:
    """With one job per member, Bob (his job running) is refused Vary on Alice's image with
    the queue sentence and gets no job; Alice, her queue empty, upscales the same image."""
    sim = slow_sim
    alice, bob, mia = sim.member("alice"), sim.member("bob"), sim.member("mia", manager=True)
    result = await alice.slash(sim.channel, "imagine", prompt="a red cube", steps=6)
    await sim.job_done(alice)
    await mia.slash(sim.channel, "admin limits", max_queued_per_user=1)
    running = await bob.slash(sim.channel, "imagine", prompt="a blue cube", steps=40)
    assert "Queued" in running.response.content

    refused = await bob.click(result.response, label="Vary (subtle)")
    assert refusal(refused) == (
        "You already have 1 jobs waiting or running, the most allowed; "
        "wait for one to finish or cancel one."
    )
    assert len(await sim.app.storage.jobs.list_for_user(bob.id, states=None)) == 1
    upscale = await alice.click(result.response, label="Upscale ×2")
    assert "Queued" in upscale.response.content
    await bob.slash(sim.channel, "cancel")
    await sim.job_done(bob)
    assert (await sim.job_done(alice)).params["hires_steps"] == 6
