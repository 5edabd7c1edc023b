"""A simulated Discord with the Lexicon bot in it, on the fast stand-in engine by default."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from simcord.actors import MemberActor
from simcord.results import InteractionResult

from bot.config import Settings
from tests.bot.conftest import _no_operator_env, make_settings, three_photos, tiny_model_path
from tests.simulation import Simulation, simulated

__all__ = ["_no_operator_env", "tiny_model_path"]

SLOW_STEP_SECONDS = 0.25  # the stand-in engine's time per step where a job must stay active


def standin_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"engine": "standin", "allowed_sizes": ["64x64", "128x128"]}
    values.update(overrides)
    return make_settings(data_dir, "standin", **values)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return standin_settings(tmp_path / "data")


@pytest.fixture
async def sim(settings: Settings) -> AsyncIterator[Simulation]:
    """The bot in a simulated server, on the stand-in engine."""
    async with simulated(settings) as simulation:
        yield simulation


@pytest.fixture
async def slow_sim(settings: Settings) -> AsyncIterator[Simulation]:
    """The same, with a stand-in engine that takes `SLOW_STEP_SECONDS` per step."""
    async with simulated(settings, standin_step_seconds=SLOW_STEP_SECONDS) as simulation:
        yield simulation


def photo_options(seed: int = 0, count: int = 3) -> dict[str, tuple[str, bytes]]:
    """`photo1=…, photo2=…` options of distinct valid photos for `/train`."""
    photos = three_photos(seed) + three_photos(seed + 1)
    return {f"photo{i + 1}": photos[i] for i in range(count)}


async def train(
    sim: Simulation, member: MemberActor, name: str, **options: Any
) -> InteractionResult:
    """`/train` a name from three photos and wait until it is delivered."""
    result = await member.slash(sim.channel, "train", name=name, **photo_options(), **options)
    await sim.job_done(member)
    return result


def refusal(result: InteractionResult) -> str:
    """The one private sentence a refused command left (and check nothing public remains)."""
    assert result.response is None or result.response.ephemeral, result.response
    private = [m for m in result.followups if m.ephemeral]
    if result.response is not None:
        private.insert(0, result.response)
    assert len(private) == 1, private
    return private[0].content
