"""Hostile `/imagine` requests: huge or broken prompts and out-of-range numbers."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import pytest
import simcord
from PIL import Image

from bot.services import ImagineOptions, ServiceError
from tests.bot.conftest import make_settings
from tests.e2e.conftest import refusal
from tests.hardening.conftest import NOTHING, stored
from tests.simulation import Simulation, simulated

LONG_PROMPT = "a photo of a cat " * 589 + "!!!"  # 10,016 characters


async def test_a_10000_character_prompt_is_refused(sim: Simulation) -> None:
    """Discord caps the option at 1500; the service says so for a longer one from elsewhere."""
    alice = sim.member("alice")
    assert len(LONG_PROMPT) > 10_000
    with pytest.raises(simcord.OptionError, match="prompt"):
        await alice.slash(sim.channel, "imagine", prompt=LONG_PROMPT)
    with pytest.raises(ServiceError) as refused:
        await sim.app.imagine.submit(alice.id, ImagineOptions(LONG_PROMPT))
    assert str(refused.value) == "The prompt is 10016 characters long; the most is 1500."
    assert await stored(sim.app) == NOTHING


@pytest.mark.parametrize(
    ("options", "sentence"),
    [
        ({"prompt": "a red \x1b[2J cube"}, "The prompt contains control characters; remove them."),
        (
            {"prompt": "a red cube", "negative": "blurry\x00"},
            "The negative prompt contains control characters; remove them.",
        ),
        ({"prompt": "a red cube", "steps": 150}, "steps must be between 1 and 50; got 150."),
        ({"prompt": "   \u3000 "}, "The prompt is empty; describe the image you want."),
    ],
    ids=["ansi-escape", "nul-in-negative", "steps-over-server-max", "only-spaces"],
)
async def test_a_bad_imagine_is_refused_by_one_sentence(
    sim: Simulation, options: dict[str, Any], sentence: str
) -> None:
    """What Discord lets through but Lexicon refuses: control characters, steps, blank."""
    alice = sim.member("alice")
    result = await alice.slash(sim.channel, "imagine", **options)
    assert refusal(result) == sentence
    assert await stored(sim.app) == NOTHING


CHUNK_REFUSAL = (
    "The {} is longer than 8 chunks of 75 tokens (each BREAK starts a chunk and each embedding "
    "takes one token per vector); shorten it."
)


@pytest.mark.parametrize(
    ("options", "label"),
    [
        ({"prompt": "a dog" + " BREAK" * 249}, "prompt"),
        ({"prompt": "a cat", "negative": "bad " * 10 + "x " * 650}, "negative prompt"),
    ],
    ids=["250-breaks", "660-word-negative"],
)
async def test_a_prompt_over_eight_chunks_is_refused_before_it_is_queued(
    sim: Simulation, options: dict[str, Any], label: str
) -> None:
    """250 BREAKs, or a negative of 660 words, is refused by the bot: nothing is queued."""
    alice = sim.member("alice")
    result = await alice.slash(sim.channel, "imagine", **options)
    assert refusal(result) == CHUNK_REFUSAL.format(label)
    assert await stored(sim.app) == NOTHING


@pytest.mark.parametrize(
    "options",
    [
        {"seed": -1},
        {"seed": 2**32},
        {"steps": 0},
        {"steps": 151},
        {"guidance": -0.5},
        {"guidance": 31.0},
        {"count": 5},
        {"size": "1024x1024"},
    ],
    ids=[
        "seed-negative",
        "seed-2**32",
        "steps-0",
        "steps-151",
        "guidance-negative",
        "guidance-31",
        "count-5",
        "size-not-offered",
    ],
)
async def test_out_of_range_options_never_reach_the_bot(
    sim: Simulation, options: dict[str, Any]
) -> None:
    """Discord itself refuses values outside an option's declared range or choices."""
    alice = sim.member("alice")
    with pytest.raises(simcord.OptionError):
        await alice.slash(sim.channel, "imagine", prompt="a red cube", **options)
    assert await stored(sim.app) == NOTHING


@pytest.mark.parametrize(
    ("options", "sentence"),
    [
        ({"seed": -1}, "seed must be between 0 and 4294967295; got -1."),
        ({"seed": 2**40}, "seed must be between 0 and 4294967295; got 1099511627776."),
        ({"steps": 0}, "steps must be between 1 and 50; got 0."),
        ({"steps": 10**9}, "steps must be between 1 and 50; got 1000000000."),
        ({"guidance": math.nan}, "guidance must be between 0 and 30; got nan."),
        ({"guidance": math.inf}, "guidance must be between 0 and 30; got inf."),
        ({"guidance": -1.0}, "guidance must be between 0 and 30; got -1."),
        ({"count": 0}, "count must be between 1 and 4; you asked for 0."),
        (
            {"size": "99999x99999"},
            "size 99999x99999 is not offered here; choose one of 64x64, 128x128.",
        ),
        (
            {"size": "64x64'; DROP TABLE jobs;--"},
            "size 64x64'; DROP TABLE jobs;-- is not offered here; choose one of 64x64, 128x128.",
        ),
        (
            {"sampler": "../../euler"},
            "Unknown sampler '../../euler'; choose one of ",
        ),
    ],
    ids=[
        "seed-negative",
        "seed-2**40",
        "steps-0",
        "steps-huge",
        "guidance-nan",
        "guidance-inf",
        "guidance-negative",
        "count-0",
        "size-huge",
        "size-sql",
        "sampler-path",
    ],
)
async def test_out_of_range_values_are_refused_by_the_service(
    sim: Simulation, options: dict[str, Any], sentence: str
) -> None:
    """The service (CLI, buttons, any caller) checks every number itself: one sentence."""
    with pytest.raises(ServiceError) as refused:
        await sim.app.imagine.submit(5, ImagineOptions("a red cube", **options))
    assert str(refused.value).startswith(sentence)
    assert str(refused.value).count(". ") == 0 and str(refused.value).endswith(".")
    assert await stored(sim.app) == NOTHING


async def test_unbalanced_brackets_render_on_the_stand_in_engine(sim: Simulation) -> None:
    """`(((`, `)))`, `[[[` and a stray backslash are a prompt like any other: delivered."""
    for index, prompt in enumerate(["(((a cat", "a cat)))", "[[[[ a dog", "\\ (x:1.2.3"]):
        member = sim.member(f"m{index}")
        result = await member.slash(sim.channel, "imagine", prompt=prompt)
        job = await sim.job_done(member)
        assert job.state.value == "succeeded", job.error
        assert sim.channel_message(result.response.id).attachments


HOSTILE_SYNTAX = [
    "(((a cat",
    "a cat)))",
    "[[[[ a dog",
    "(a cat:99999999999)",
    "(x:1.2.3)",
    "BREAK BREAK BREAK",
    "(" * 1500,
    "\\",
]


async def test_unbalanced_brackets_render_on_the_real_engine(
    tmp_path: Path, tiny_model_path: Path
) -> None:
    """The real prompt parser and encoder take hostile syntax: every job renders, none crashes."""
    settings = make_settings(tmp_path / "data", tiny_model_path, allowed_sizes=["64x64"])
    async with simulated(settings) as sim:
        results = []
        for index, prompt in enumerate(HOSTILE_SYNTAX):
            member = sim.member(f"m{index}")
            results.append((member, await member.slash(sim.channel, "imagine", prompt=prompt)))
        for member, result in results:
            job = await sim.job_done(member)
            assert job.state.value == "succeeded", (job.params["prompt"], job.error)
            (attachment,) = sim.channel_message(result.response.id).attachments
            image = Image.open(io.BytesIO(await attachment.read()))
            assert image.size == (64, 64) and image.format == "PNG"
        assert sim.app.scheduler.last_worker_error is None  # the worker never died
