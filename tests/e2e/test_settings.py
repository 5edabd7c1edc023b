"""`/settings`: personal defaults set, shown, used by /imagine and /train, and reset."""

from __future__ import annotations

import pytest
import simcord

from tests.e2e.conftest import refusal, train
from tests.simulation import Simulation


async def test_settings_show_set_use_and_reset(sim: Simulation) -> None:
    """A member's defaults fill the options they leave out, until they reset them."""
    alice, bob = sim.member("alice"), sim.member("bob")
    shown = await alice.slash(sim.channel, "settings")
    assert shown.ephemeral
    assert shown.response.content == (
        "You have no personal defaults, so Lexicon's own apply. To set one, run `/settings` with "
        "that option, e.g. `/settings count: 2` or `/settings negative: blurry`."
    )

    set_ = await alice.slash(
        sim.channel,
        "settings",
        size="128x128",
        steps=7,
        sampler="euler",
        guidance=4.5,
        count=2,
        negative="blurry",
        share=True,
    )
    assert set_.ephemeral
    assert set_.response.content == (
        "Your defaults for options you leave out:\n- size: 128x128\n- steps: 7\n"
        "- sampler: euler\n- guidance: 4.5\n- count: 2\n- negative prompt: blurry\n"
        "- share new embeddings: yes\n"
        "-# Run `/settings` with an option to change it; `/settings reset: True` forgets them all."
    )
    again = await alice.slash(sim.channel, "settings")
    assert again.response.content == set_.response.content

    await alice.slash(sim.channel, "imagine", prompt="a red cube")
    used = (await sim.job_done(alice)).params
    assert (used["width"], used["steps"], used["sampler"], used["guidance"]) == (
        128,
        7,
        "euler",
        4.5,
    )
    assert (used["count"], used["negative"]) == (2, "blurry")

    await alice.slash(sim.channel, "imagine", prompt="a blue cube", steps=3, count=1)
    chosen = (await sim.job_done(alice)).params
    assert (chosen["steps"], chosen["count"], chosen["sampler"]) == (3, 1, "euler")

    await train(sim, alice, "zorb")
    (word,) = await sim.app.storage.embeddings.list_owned(alice.id)
    assert word.is_shared

    await bob.slash(sim.channel, "imagine", prompt="a green cube")
    theirs = (await sim.job_done(bob)).params
    assert (theirs["steps"], theirs["count"], theirs["width"]) == (4, 1, 64)  # not alice's

    reset = await alice.slash(sim.channel, "settings", reset=True)
    assert reset.response.content == "Your defaults are forgotten; Lexicon's own apply again."
    await alice.slash(sim.channel, "imagine", prompt="a grey cube")
    after = (await sim.job_done(alice)).params
    assert (after["steps"], after["count"], after["sampler"], after["negative"]) == (
        4,
        1,
        "dpmpp_2m_karras",
        "",
    )
    shown = await alice.slash(sim.channel, "settings")
    assert shown.response.content.startswith("You have no personal defaults")


async def test_bad_settings_are_refused_and_change_nothing(sim: Simulation) -> None:
    """reset with values, a size not offered or steps over the cap: one sentence, unchanged."""
    alice = sim.member("alice")
    await alice.slash(sim.channel, "settings", steps=5)
    mixed = await alice.slash(sim.channel, "settings", reset=True, steps=9)
    assert refusal(mixed) == "Use reset on its own; then set new defaults."
    with pytest.raises(simcord.OptionError, match="size"):
        await alice.slash(sim.channel, "settings", size="512x512")
    too_many = await alice.slash(sim.channel, "settings", steps=120)
    assert refusal(too_many) == "steps must be between 1 and 50; got 120."
    assert (await sim.app.defaults.show(alice.id)).steps == 5
