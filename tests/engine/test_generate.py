"""Generation: equal to stock diffusers per scheduler, batch-invariant, validated, cancellable."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import engine.generate
from engine.embedding_files import write_embedding
from engine.generate import Cancelled, InvalidRequest, decode_batch, generate
from engine.graphs import bucket
from engine.jobs import MAX_CHUNKS, SAMPLERS, EmbeddingPayload, GenerateRequest, too_many_chunks
from engine.model import LoadedModel
from engine.png import read_parameters
from engine.schedulers import make_scheduler
from tests.engine.render_helpers import (
    ZORB,
    beach_request,
    pixels,
    random_embedding,
    stock_pixels,
)

STEPS = 4


BLOT = random_embedding("negblot", 1, 2)
WIDE = random_embedding("wideblot", 75, 3)  # one whole chunk per mention
BASE = beach_request(seed=7, steps=STEPS, negative="negblot, blurry", embeddings=(ZORB, BLOT))


def _request(**changes: Any) -> GenerateRequest:
    return dataclasses.replace(BASE, **changes)


@pytest.fixture(scope="module")
def stock(
    stock_pipeline_factory: Callable[[], Any], tmp_path_factory: pytest.TempPathFactory
) -> Any:
    """A separate stock pipeline with both embeddings loaded through load_textual_inversion."""
    pipe = stock_pipeline_factory()
    folder = tmp_path_factory.mktemp("stock-embeddings")
    for payload in (ZORB, BLOT):
        path = folder / f"{payload.name}.safetensors"
        path.write_bytes(payload.data)
        pipe.load_textual_inversion(str(path), token=payload.name)
    return pipe


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_seeded_image_equals_stock_pipeline(
    tiny_model: LoadedModel, stock: Any, sampler: str
) -> None:
    """Each sampler's seeded image with embeddings equals stock StableDiffusionPipeline's."""
    request = _request(sampler=sampler, count=2)
    ours = generate(tiny_model, [request])[0]
    stock.scheduler = make_scheduler(sampler, tiny_model.scheduler_config)
    for image in ours:
        expected = stock_pixels(stock, request, image.index, request.negative)
        assert image.seed == request.seed + image.index
        assert np.abs(pixels(image.png) - expected).max() <= 2


def test_embedding_changes_the_image(tiny_model: LoadedModel) -> None:
    """Dropping the embedding from the prompt moves the image by more than 8/255 somewhere."""
    with_it = pixels(generate(tiny_model, [_request()])[0][0].png)
    without = pixels(generate(tiny_model, [_request(prompt="a photo of on a beach")])[0][0].png)
    assert np.abs(with_it - without).max() > 8


def test_batch_of_six_users_equals_each_alone(tiny_model: LoadedModel) -> None:
    """Six requests with different embeddings, seeds, guidance and prompts batch invariantly."""
    requests = [
        _request(sampler="euler_a", seed=1, count=2),
        _request(sampler="euler_a", seed=2, guidance=3.0, embeddings=(), prompt="a red house"),
        _request(
            sampler="euler_a",
            seed=3,
            guidance=1.0,
            prompt="quux on a hill",
            negative="",
            embeddings=(random_embedding("quux", 3, 5),),
        ),
        _request(sampler="euler_a", seed=4, prompt="(zorb:1.3) BREAK at night", count=3),
        _request(sampler="euler_a", seed=5, guidance=12.0, prompt="zorb " + "cat " * 100),
        _request(
            sampler="euler_a",
            seed=6,
            prompt="a zorb",
            negative="zorb",
            embeddings=(random_embedding("zorb", 1, 9),),  # another user's different "zorb"
        ),
    ]
    together = generate(tiny_model, requests)
    assert [len(images) for images in together] == [r.count for r in requests]
    worst = 0
    for request, batched in zip(requests, together, strict=True):
        alone = generate(tiny_model, [request])[0]
        for a, b in zip(alone, batched, strict=True):
            worst = max(worst, int(np.abs(pixels(a.png) - pixels(b.png)).max()))
    assert worst <= 2


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"width": 60}, "width 60 must be a multiple of 8"),
        ({"height": 4096}, "height 4096"),
        ({"steps": 0}, "steps must be between 1 and 150"),
        ({"steps": 151}, "steps must be between 1 and 150"),
        ({"guidance": 31.0}, "guidance must be between 0 and 30"),
        ({"guidance": float("nan")}, "guidance"),
        ({"count": 5}, "count must be between 1 and 4"),
        ({"seed": -1}, "seed"),
        ({"prompt": "x" * 1501}, "prompt is 1501 characters long"),
        ({"sampler": "lms"}, "Unknown sampler 'lms'"),
        ({"embeddings": (dataclasses.replace(ZORB, sha256="0" * 64),)}, "does not match"),
        ({"embeddings": (ZORB, ZORB)}, "attached twice"),
    ],
)
def test_invalid_requests_are_refused_before_rendering(
    tiny_model: LoadedModel, changes: dict[str, Any], message: str
) -> None:
    """Bad sizes, steps, guidance, count, seed, prompt, sampler or files raise one sentence."""
    with pytest.raises(ValueError, match=message):
        generate(tiny_model, [_request(**changes)], on_step=_never_called)


@pytest.mark.parametrize(
    ("changes", "label"),
    [
        ({"prompt": "wideblot " * (MAX_CHUNKS + 1), "embeddings": (WIDE,)}, "prompt"),
        ({"negative": "wideblot " * (MAX_CHUNKS + 1), "embeddings": (WIDE,)}, "negative prompt"),
    ],
    ids=["prompt", "negative"],
)
def test_a_prompt_over_max_chunks_is_refused_before_rendering(
    tiny_model: LoadedModel, changes: dict[str, Any], label: str
) -> None:
    """A 75-vector embedding written 9 times passes the bot's bound; the worker counts 9 chunks."""
    request = _request(**changes)
    request.check()  # the service's tokenizer-free bound cannot see the vectors
    with pytest.raises(InvalidRequest) as refused:
        generate(tiny_model, [request], on_step=_never_called)
    assert str(refused.value) == str(too_many_chunks(label))
    assert str(refused.value).startswith(f"The {label} is longer than {MAX_CHUNKS} chunks")


def test_a_max_chunks_batch_mate_leaves_an_image_unchanged(tiny_model: LoadedModel) -> None:
    """A normal request renders the same next to the longest allowed prompt as alone."""
    normal = _request(sampler="euler_a", embeddings=(ZORB,), negative="blurry")
    longest = _request(
        sampler="euler_a",
        seed=99,
        prompt="wideblot " * MAX_CHUNKS,
        negative="wideblot BREAK " * (MAX_CHUNKS - 1) + "wideblot",
        embeddings=(WIDE,),
    )
    alone = generate(tiny_model, [normal])[0][0]
    together = generate(tiny_model, [normal, longest])
    assert len(together[1]) == 1
    assert np.abs(pixels(alone.png) - pixels(together[0][0].png)).max() <= 2


def _never_called(step: int, total: int, latents: torch.Tensor) -> None:
    raise AssertionError("validation must fail before the first step")


def test_payload_without_hash_is_hashed_here(tiny_model: LoadedModel) -> None:
    """An unstored embedding (sha256 "") renders, and the PNG names its computed hash."""
    unstored = dataclasses.replace(ZORB, sha256="")
    image = generate(tiny_model, [_request(embeddings=(unstored,), negative="")])[0][0]
    assert f'TI hashes: "zorb: {ZORB.sha256[:12]}"' in read_parameters(image.png)


def test_an_imported_embedding_is_named_by_its_original_files_hash(
    tiny_model: LoadedModel,
) -> None:
    """`TI hashes` gives the sha256 of the file the member imported, which A1111 and Civitai know,
    not that of Lexicon's rewrite."""
    original = hashlib.sha256(b"the member's own easyneg.pt").hexdigest()
    imported = dataclasses.replace(ZORB, source_sha256=original)
    image = generate(tiny_model, [_request(embeddings=(imported,), negative="")])[0][0]
    assert f'TI hashes: "zorb: {original[:12]}"' in read_parameters(image.png)


def test_wrong_family_embedding_is_refused(tiny_model: LoadedModel) -> None:
    """An SD 1.x (768-wide) embedding in a request for the tiny model names both families."""
    data = write_embedding(torch.ones(1, 768), name="wide", kind="positive", family="sd1")
    payload = EmbeddingPayload("wide", data, hashlib.sha256(data).hexdigest())
    with pytest.raises(InvalidRequest, match=r"SD 1.x \(width 768\).*tiny test model"):
        generate(tiny_model, [_request(embeddings=(payload,))])


def test_requests_with_different_batch_keys_are_refused(tiny_model: LoadedModel) -> None:
    """Requests that differ in size, steps or sampler cannot share a batch."""
    with pytest.raises(ValueError, match="share size, steps and sampler"):
        generate(tiny_model, [_request(), _request(steps=5)])


def test_callback_sees_every_step_and_can_cancel(tiny_model: LoadedModel) -> None:
    """on_step gets (step, total, latents) each step; returning True raises Cancelled."""
    seen: list[tuple[int, int, tuple[int, ...]]] = []

    def on_step(step: int, total: int, latents: torch.Tensor) -> bool:
        seen.append((step, total, tuple(latents.shape)))
        return step == 2

    with pytest.raises(Cancelled):
        generate(tiny_model, [_request(count=2)], on_step=on_step)
    assert seen == [(1, STEPS, (2, 4, 32, 32)), (2, STEPS, (2, 4, 32, 32))]


def test_previews_arrive_as_small_pngs(tiny_model: LoadedModel) -> None:
    """preview_every=2 yields one preview PNG per request at step 2 of 4."""
    previews: list[tuple[int, int, list[bytes]]] = []
    generate(
        tiny_model,
        [_request(), _request(seed=9, count=2)],
        preview_every=2,
        on_preview=lambda step, total, pngs: previews.append((step, total, pngs)),
    )
    assert [(step, total, len(pngs)) for step, total, pngs in previews] == [(2, STEPS, 2)]
    image = Image.open(io.BytesIO(previews[0][2][0]))
    assert image.format == "PNG" and image.size == (64, 64)


def test_previews_wait_for_preview_after(tiny_model: LoadedModel) -> None:
    """A batch that finishes before `preview_after` seconds renders no preview at all."""
    previews: list[int] = []
    generate(
        tiny_model,
        [_request()],
        preview_every=1,
        on_preview=lambda step, total, pngs: previews.append(step),
        preview_after=3600.0,
    )
    assert previews == []


def test_bucket_is_the_next_power_of_two() -> None:
    assert [bucket(n) for n in (1, 2, 3, 4, 5, 8, 9, 16, 17)] == [1, 2, 4, 4, 8, 8, 16, 16, 32]


def test_padded_batches_render_the_same_images(tiny_model: LoadedModel) -> None:
    """Zero rows padding a batch up to a power of two (compiled models) change no real row:
    three requests (7 UNet rows → 8) equal the unpadded render."""
    requests = [_request(seed=1), _request(seed=2, guidance=1.0), _request(seed=3, count=2)]
    plain = generate(tiny_model, requests)
    padded_model = dataclasses.replace(tiny_model, pad_batches=True)
    padded = generate(padded_model, requests)
    for mine, theirs in zip(padded, plain, strict=True):
        for a, b in zip(mine, theirs, strict=True):
            assert np.abs(pixels(a.png) - pixels(b.png)).max() <= 1


def test_decode_batch_holds_four_512_images_worth_of_pixels() -> None:
    sides = [(512, 512), (1024, 1024), (512, 768), (768, 768), (2048, 2048), (256, 256), (64, 64)]
    assert [decode_batch(h, w) for h, w in sides] == [4, 1, 2, 1, 1, 16, 256]


def test_decoding_in_chunks_changes_no_image(
    tiny_model: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seven images decoded four per VAE call, the last call padded from three to four (a
    compiled model's shapes), render as one call for all seven does."""
    requests = [_request(seed=1, count=3), _request(seed=5, count=4, prompt="a red house")]
    calls: list[int] = []
    decode = engine.generate.decode_pixels

    def counted(vae: Any, latents: torch.Tensor) -> torch.Tensor:
        calls.append(latents.shape[0])
        return decode(vae, latents)

    monkeypatch.setattr(engine.generate, "decode_pixels", counted)
    whole = generate(tiny_model, requests)
    assert calls == [7]
    monkeypatch.setattr(engine.generate, "DECODE_PIXELS", 4 * 64 * 64)
    chunked = generate(dataclasses.replace(tiny_model, pad_batches=True), requests)
    assert calls == [7, 4, 4]
    for mine, theirs in zip(chunked, whole, strict=True):
        assert [image.seed for image in mine] == [image.seed for image in theirs]
        for a, b in zip(mine, theirs, strict=True):
            assert np.abs(pixels(a.png) - pixels(b.png)).max() <= 1


def test_png_carries_a1111_parameters(tiny_model: LoadedModel) -> None:
    """The PNG's parameters chunk holds prompt, negative, settings, model and TI hashes; a folder
    model has no checkpoint file, so no `Model hash`."""
    image = generate(tiny_model, [_request(seed=41, count=2)])[0][1]
    text = read_parameters(image.png)
    assert text == (
        "a photo of zorb on a beach\n"
        "Negative prompt: negblot, blurry\n"
        f"Steps: {STEPS}, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 42, Size: 64x64, "
        f'Model: {tiny_model.name}, TI hashes: "negblot: {BLOT.sha256[:12]}, '
        f'zorb: {ZORB.sha256[:12]}", Version: {text.rsplit("Version: ", 1)[1]}'
    )
    assert text.rsplit("Version: ", 1)[1].startswith("lexicon")


def test_tiny_image_renders_in_well_under_two_seconds(tiny_model: LoadedModel) -> None:
    """A 4-step 64×64 image takes under 2 s on CPU once warm."""
    request = _request(embeddings=(), prompt="a cat", negative="")
    generate(tiny_model, [request])
    start = time.perf_counter()
    generate(tiny_model, [request])
    assert time.perf_counter() - start < 2.0
