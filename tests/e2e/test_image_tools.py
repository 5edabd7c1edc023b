"""Image-to-image, Vary and Upscale as jobs like any other: queued, stored, durable, cancellable,
run with the rights of whoever asked (the buttons will call these service methods)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
from PIL import Image

from bot.services import ImagineOptions, ServiceError
from engine.photos import normalise_photos
from engine.png import read_parameters
from storage.models import Actor, JobState
from tests.bot.conftest import photo_bytes
from tests.e2e.conftest import standin_settings
from tests.simulation import Simulation, simulated


async def _imagined(sim: Simulation, name: str = "alice") -> int:
    """A finished /imagine of two images by `name`; its job id."""
    member = sim.member(name)
    await member.slash(sim.channel, "imagine", prompt="a red cube", count=2, steps=6)
    return (await sim.job_done(member)).id


async def _png(sim: Simulation, job_id: int, idx: int = 0) -> bytes:
    images = sim.app.storage.images
    return await images.read_png(await images.get(job_id, idx))


async def test_imagine_with_an_image_stores_its_normalised_png(sim: Simulation) -> None:
    """`/imagine image: strength:` queues an img2img job whose starting image is stored as the
    normalised PNG the worker reads, named by sha256 in the job's parameters."""
    alice = sim.member("alice")
    upload = photo_bytes(3, side=300)
    result = await alice.slash(
        sim.channel, "imagine", prompt="a red cube", image=("cube.png", upload), strength=0.4
    )
    assert "Queued" in result.response.content
    job = await sim.job_done(alice)
    assert job.state is JobState.SUCCEEDED
    (normalised,) = normalise_photos([upload], min_count=1, max_count=1, min_side=64)
    assert job.params["init_image"] == hashlib.sha256(normalised).hexdigest()
    assert job.params["strength"] == 0.4 and job.params["hires_steps"] == 0
    assert await sim.app.storage.jobs.photos(job.id) == [job.params["init_image"]]
    assert job.batch_key == "64x64:4:dpmpp_2m_karras:img2img:0.4"
    assert "Denoising strength: 0.4" in read_parameters(await _png(sim, job.id))


async def test_strength_without_an_image_is_refused(sim: Simulation) -> None:
    """strength alone is one sentence and queues nothing."""
    with pytest.raises(ServiceError, match="need a starting image; attach one"):
        await sim.app.imagine.submit(1, ImagineOptions("a red cube", strength=0.5))
    assert await sim.app.storage.jobs.list_for_user(1, states=None) == []


async def test_vary_runs_as_the_presser_from_the_stored_image(sim: Simulation) -> None:
    """Bob varies Alice's second image: his job, a new seed, her prompt, the operator's
    strengths, her image as the start."""
    source = await _imagined(sim)
    bob = sim.member("bob")
    subtle = await sim.app.imagine.vary(bob.id, source, 1, strong=False)
    strong = await sim.app.imagine.vary(bob.id, source, 1, strong=True)
    start = hashlib.sha256(await _png(sim, source, 1)).hexdigest()
    for submitted, strength in ((subtle, 0.35), (strong, 0.65)):
        job = await sim.app.wait_for_job(submitted.job.id)
        assert job.user_id == bob.id and job.state is JobState.SUCCEEDED
        assert job.params["init_image"] == start and job.params["strength"] == strength
        assert job.params["prompt"] == "a red cube" and job.params["count"] == 2
        assert job.params["steps"] == 6
    seeds = {(await sim.app.storage.jobs.get(j)).params["seed"] for j in (source, subtle.job.id)}
    assert len(seeds) == 2


async def test_upscale_doubles_the_image_with_its_own_seed(sim: Simulation) -> None:
    """Upscale ×2 of a 64x64 image: a 128x128 image, its seed and steps, A1111's Hires keys."""
    source = await _imagined(sim)
    seed = (await sim.app.storage.images.get(source, 1)).seed
    submitted = await sim.app.imagine.upscale(sim.member("bob").id, source, 1)
    job = await sim.app.wait_for_job(submitted.job.id)
    assert job.state is JobState.SUCCEEDED
    assert (job.params["seed"], job.params["count"], job.params["hires_steps"]) == (seed, 1, 6)
    assert job.params["strength"] == 0.5 and job.params["width"] == 64
    assert job.batch_key == "128x128:6:dpmpp_2m_karras:img2img:0.5"
    assert Image.open(io.BytesIO(await _png(sim, job.id))).size == (128, 128)
    with pytest.raises(ServiceError, match="already upscaled; upscale the original instead"):
        await sim.app.imagine.upscale(1, job.id, 0)
    varied = await sim.app.imagine.vary(1, job.id, 0, strong=False)  # at the upscaled size
    assert (await sim.app.wait_for_job(varied.job.id)).batch_key.startswith("128x128:6:")


async def test_upscale_past_the_operator_limit_is_refused(tmp_path: Path) -> None:
    """With LEXICON_MAX_UPSCALE_SIDE=100 a 64x64 image cannot become 128x128: one sentence."""
    async with simulated(standin_settings(tmp_path / "data", max_upscale_side=100)) as sim:
        source = await _imagined(sim)
        with pytest.raises(ServiceError) as refused:
            await sim.app.imagine.upscale(1, source, 0)
        assert str(refused.value) == (
            "Upscaling this 64x64 image would make it 128x128, over this server's limit of "
            "100 pixels on a side; upscale a smaller image."
        )
        assert len(await sim.app.storage.jobs.list_for_user(1, states=None)) == 0


async def test_vary_of_a_missing_image_is_refused(sim: Simulation) -> None:
    """An image number the job does not have, or an unknown job: one sentence, nothing queued."""
    source = await _imagined(sim)
    with pytest.raises(ServiceError, match=r"has no image number 3\. Pick an image"):
        await sim.app.imagine.vary(1, source, 2, strong=True)
    with pytest.raises(ServiceError, match="There is no job #999"):
        await sim.app.imagine.upscale(1, 999, 0)
    assert await sim.app.storage.jobs.list_for_user(1, states=None) == []


async def test_an_img2img_job_survives_a_restart_and_can_be_cancelled(
    slow_sim: Simulation,
) -> None:
    """A queued variation outlives a bot restart (its starting image is read back from the
    store) and a second one is cancelled like any job."""
    sim = slow_sim
    source = await _imagined(sim)
    first = await sim.app.imagine.vary(2, source, 0, strong=True)
    second = await sim.app.imagine.vary(2, source, 0, strong=False)
    await sim.app.storage.jobs.cancel(Actor(2), second.job.id)  # before it can run
    await sim.restart_bot()
    done = await sim.app.wait_for_job(first.job.id)
    assert done.state is JobState.SUCCEEDED
    assert (await sim.app.storage.jobs.get(second.job.id)).state is JobState.CANCELLED
