"""The full story on the real engine (tiny model): train, imagine, share, import a negative."""

from __future__ import annotations

from pathlib import Path

import torch

from cogs.images import parse_parameters
from engine.embedding_files import write_embedding
from engine.png import read_parameters
from tests.bot.conftest import make_settings, three_photos
from tests.simulation import Simulation, simulated


async def _png_parameters(sim: Simulation, message_id: int) -> str:
    message = sim.channel_message(message_id)
    assert message.attachments, message.content
    data = await message.attachments[0].read()
    assert data.startswith(b"\x89PNG")
    return read_parameters(data)


async def test_full_story_on_the_real_engine(tmp_path: Path, tiny_model_path: Path) -> None:
    """A trains zorb and uses it; B is refused until A shares it; a manager's import works."""
    settings = make_settings(tmp_path / "data", tiny_model_path)
    async with simulated(settings) as sim:
        alice, bob = sim.member("alice"), sim.member("bob")
        manager = sim.member("mia", manager=True)

        photos = {f"photo{i + 1}": photo for i, photo in enumerate(three_photos())}
        trained = await alice.slash(sim.channel, "train", name="zorb", **photos)
        job = await sim.job_done(alice, limit=600)
        assert job.state.value == "succeeded", job.error
        card = trained.response
        assert card is not None and card.embeds[0].title == "zorb"

        mine = await alice.slash(sim.channel, "imagine", prompt="a photo of zorb on a beach")
        await sim.job_done(alice, limit=600)
        assert mine.response is not None
        info = parse_parameters(await _png_parameters(sim, mine.response.id))
        assert "zorb" in info.embeddings

        refused = await bob.slash(sim.channel, "imagine", prompt="a photo of <zorb> on a beach")
        assert refused.followups[0].ephemeral
        assert "You have no embedding called <zorb>" in refused.followups[0].content
        assert refused.response is None  # the public placeholder is gone

        shared = await alice.slash(sim.channel, "embeddings share", name="zorb")
        assert "shared" in shared.response.content
        allowed = await bob.slash(sim.channel, "imagine", prompt="<zorb> on a beach")
        await sim.job_done(bob, limit=600)
        info = parse_parameters(await _png_parameters(sim, allowed.response.id))
        assert "zorb" in info.embeddings

        easyneg = write_embedding(
            torch.randn(2, 32), name="easyneg", kind="negative", family="tiny"
        )
        imported = await manager.slash(
            sim.channel,
            "embeddings import",
            file=("easyneg.safetensors", easyneg),
            name="easyneg",
            negative=True,
            share=True,
        )
        assert imported.response.content.startswith(
            "Imported **easyneg** (2 vectors, negative, made for the tiny test model), "
            "in the shared library."
        )
        negative = await bob.slash(
            sim.channel, "imagine", prompt="a red cube", negative="easyneg, blurry"
        )
        await sim.job_done(bob, limit=600)
        info = parse_parameters(await _png_parameters(sim, negative.response.id))
        assert info.negative == "easyneg, blurry"
        assert "easyneg" in info.embeddings
