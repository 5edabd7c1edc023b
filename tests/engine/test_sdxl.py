"""SDXL: the tiny random SDXL model encodes and renders exactly as stock StableDiffusionXLPipeline,
with clip_l/clip_g embeddings spliced per request, A1111 weights and long prompts."""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save as save_safetensors

from engine.embedding_files import EmbeddingFileError, check_family, read_embedding
from engine.encode import PromptEncoder
from engine.generate import InvalidRequest, generate
from engine.jobs import GenerateRequest
from engine.model import LoadedModel, load_model
from engine.schedulers import make_scheduler
from tests.engine.render_helpers import (
    ZORB,
    beach_request,
    load_sdxl_embeddings,
    pixels,
    sdxl_embedding,
    stock_pixels,
)

STEPS = 4


XORB, XORB_HALVES = sdxl_embedding("xorb", 2, 21)
XBLOT, XBLOT_HALVES = sdxl_embedding("xblot", 1, 22)
BASE = beach_request(
    seed=7,
    steps=STEPS,
    prompt="a photo of xorb on a beach",
    negative="xblot, blurry",
    guidance=5.0,
    embeddings=(XORB, XBLOT),
)


def _request(**changes: Any) -> GenerateRequest:
    return dataclasses.replace(BASE, **changes)


@pytest.fixture(scope="module")
def stock(stock_sdxl_factory: Callable[[], Any]) -> Any:
    """A stock SDXL pipeline with both embeddings loaded into both encoders, the diffusers way."""
    pipe = stock_sdxl_factory()
    load_sdxl_embeddings(pipe, {"xorb": XORB_HALVES, "xblot": XBLOT_HALVES})
    return pipe


@pytest.fixture(scope="module")
def vectors() -> dict[str, torch.Tensor]:
    """The embeddings as the engine splices them (clip_l and clip_g side by side)."""
    return {
        payload.name: read_embedding(payload.data, f"{payload.name}.safetensors").joined
        for payload in (XORB, XBLOT)
    }


def test_tiny_sdxl_model_loads_with_both_encoders(
    tiny_sdxl_model: LoadedModel, tiny_sdxl_dir: Path, tmp_path: Path
) -> None:
    """`tiny-sdxl` is family tiny-sdxl: two frozen encoders (32+64), SDXL's pad, VAE and rules."""
    model = tiny_sdxl_model
    assert (model.family, model.hidden_size, model.native_size, model.name) == (
        "tiny-sdxl",
        96,
        64,
        "tiny-sdxl",
    )
    assert model.is_sdxl and model.force_zeros_for_empty_prompt
    assert model.tokenizer_2.pad_token == "!" and model.tokenizer.pad_token == "<|endoftext|>"
    assert model.vae.config.scaling_factor == 0.13025
    for module in (model.unet, model.vae, model.text_encoder, model.text_encoder_2):
        assert not any(p.requires_grad for p in module.parameters())
    index = json.loads((tiny_sdxl_dir / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLPipeline"
    by_path = load_model(str(tiny_sdxl_dir), "cpu", data_dir=tmp_path)
    assert (by_path.family, by_path.model_hash) == ("tiny-sdxl", model.model_hash)


def test_sd1_tiny_spec_still_means_the_sd1_model(tiny_model: LoadedModel) -> None:
    """`tiny` stays the SD 1.x tiny model, with no second encoder."""
    assert (tiny_model.family, tiny_model.is_sdxl, tiny_model.tokenizer_2) == ("tiny", False, None)
    assert not tiny_model.force_zeros_for_empty_prompt


@pytest.mark.parametrize(
    ("prompt", "negative"),
    [
        ("a photo of xorb on a beach", "xblot, blurry"),
        ("xorb", "ugly xblot"),
        ("a red cat and xorb", ""),
    ],
)
def test_encoding_equals_diffusers_sdxl_textual_inversion(
    tiny_sdxl_model: LoadedModel,
    stock: Any,
    vectors: dict[str, torch.Tensor],
    prompt: str,
    negative: str,
) -> None:
    """Both encoders' states and the pooled embeddings equal diffusers' load_textual_inversion
    (each half into its encoder) + encode_prompt."""
    ours = PromptEncoder(tiny_sdxl_model).encode_with_names(prompt, negative, vectors)
    with torch.no_grad():
        embeds, negative_embeds, pooled, negative_pooled = stock.encode_prompt(
            prompt,
            device=torch.device("cpu"),
            num_images_per_prompt=1,
            do_classifier_free_guidance=True,
            negative_prompt=negative or None,  # "" is stock's default: None, zeros
        )
    assert ours.cond.shape == (1, 77, 96) and ours.pooled is not None
    assert ours.pooled_uncond is not None
    torch.testing.assert_close(ours.cond, embeds)
    torch.testing.assert_close(ours.pooled, pooled)
    torch.testing.assert_close(ours.uncond, negative_embeds)
    torch.testing.assert_close(ours.pooled_uncond, negative_pooled)
    assert ours.used_embeddings == {name for name in vectors if name in f"{prompt} {negative}"}
    if not negative:
        assert not ours.uncond.any() and not ours.pooled_uncond.any()


@pytest.mark.parametrize("sampler", ["euler", "euler_a", "dpmpp_2m"])
@pytest.mark.parametrize("negative", ["xblot, blurry", ""])
def test_seeded_image_equals_stock_sdxl_pipeline(
    tiny_sdxl_model: LoadedModel, stock: Any, sampler: str, negative: str
) -> None:
    """Each sampler's seeded SDXL image with embeddings equals stock's within 1/255."""
    request = _request(sampler=sampler, negative=negative, count=2)
    ours = generate(tiny_sdxl_model, [request])[0]
    stock.scheduler = make_scheduler(sampler, tiny_sdxl_model.scheduler_config)
    for image in ours:
        expected = stock_pixels(stock, request, image.index, negative or None)
        assert image.seed == request.seed + image.index
        assert np.abs(pixels(image.png) - expected).max() <= 1


def test_batch_of_sdxl_requests_equals_each_alone(tiny_sdxl_model: LoadedModel) -> None:
    """Requests with other embeddings, guidance (with and without CFG), negatives and prompt
    lengths share one batch and each image equals its lone render."""
    other, _ = sdxl_embedding("quux", 3, 23)
    requests = [
        _request(seed=1, count=2),
        _request(seed=2, guidance=1.0, prompt="quux on a hill", negative="", embeddings=(other,)),
        _request(seed=3, guidance=9.0, negative="", embeddings=(XORB,)),
        _request(seed=4, prompt="(xorb:1.3) BREAK at night " + "cat " * 80),
    ]
    together = generate(tiny_sdxl_model, requests)
    worst = 0
    for request, batched in zip(requests, together, strict=True):
        alone = generate(tiny_sdxl_model, [request])[0]
        assert len(alone) == len(batched) == request.count
        for a, b in zip(alone, batched, strict=True):
            worst = max(worst, int(np.abs(pixels(a.png) - pixels(b.png)).max()))
    assert worst <= 1


def test_long_and_weighted_prompts_render_and_change_the_image(
    tiny_sdxl_model: LoadedModel,
) -> None:
    """A 2-chunk prompt and a `(word:1.3)` prompt render on SDXL and differ from the plain one
    (the weight by little: one token's states at 1.3 move a random tiny UNet's pixels slightly)."""
    plain = _request(prompt="a photo of a cat on a beach", negative="blurry", embeddings=())
    long = dataclasses.replace(plain, prompt=plain.prompt + ", at sunset" * 30)
    weighted = dataclasses.replace(plain, prompt="a photo of a (cat:1.3) on a beach")
    encoder = PromptEncoder(tiny_sdxl_model)
    assert len(encoder.tokenize(long.prompt, {}).chunks) == 2
    images = [pixels(generate(tiny_sdxl_model, [r])[0][0].png) for r in (plain, long, weighted)]
    assert np.abs(images[1] - images[0]).max() > 8
    assert np.abs(images[2] - images[0]).max() > 0


def test_long_prompt_takes_the_pooled_embedding_of_its_first_chunk(
    tiny_sdxl_model: LoadedModel,
) -> None:
    """A1111: the pooled embedding of a 2-chunk prompt is that of its first 75 tokens alone."""
    encoder = PromptEncoder(tiny_sdxl_model)
    first = "a cat " * 37 + "a"  # exactly 75 tokens: the long prompt's first chunk
    long = encoder.encode_with_names(first + " dog" * 10, "blurry", {})
    alone = encoder.encode_with_names(first, "blurry", {})
    assert long.cond.shape == (1, 154, 96) and long.pooled is not None
    torch.testing.assert_close(long.cond[:, :77], alone.cond)
    torch.testing.assert_close(long.pooled, alone.pooled)


def test_weights_are_normalised_per_encoder(tiny_sdxl_model: LoadedModel) -> None:
    """A weight rescales each encoder's half to its own unweighted mean, as A1111's two
    embedders each do; the weighted token's states change in both halves."""
    encoder = PromptEncoder(tiny_sdxl_model)
    plain = encoder.encode_with_names("a photo of a cat", "", {}).cond
    weighted = encoder.encode_with_names("a photo of a (cat:1.5)", "", {}).cond
    for half in (slice(0, 32), slice(32, 96)):
        torch.testing.assert_close(weighted[..., half].mean(), plain[..., half].mean())
        assert not torch.allclose(weighted[0, 5, half], plain[0, 5, half])


def test_embeddings_of_another_family_are_refused_naming_both(
    tiny_sdxl_model: LoadedModel, tiny_model: LoadedModel
) -> None:
    """An SD 1.x file on SDXL, an SDXL file on SD 1.x and real-SDXL widths on the tiny SDXL
    model are each refused with one sentence that names both families."""
    with pytest.raises(InvalidRequest) as caught:
        generate(tiny_sdxl_model, [_request(prompt="zorb", embeddings=(ZORB,))])
    assert str(caught.value) == (
        "Embedding zorb: This embedding is for the tiny test model (width 32) but the loaded "
        "model is the tiny SDXL test model (width 32+64)."
    )
    with pytest.raises(InvalidRequest, match="is for the tiny SDXL test model"):
        generate(tiny_model, [_request(embeddings=(XORB,), negative="")])
    real = read_embedding(
        save_safetensors({"clip_l": torch.ones(1, 768), "clip_g": torch.ones(1, 1280)}), "r.pt"
    )
    with pytest.raises(EmbeddingFileError) as refused:
        check_family(real.family, real.width, tiny_sdxl_model.family, tiny_sdxl_model.hidden_size)
    assert str(refused.value) == (
        "This embedding is for SDXL (width 768+1280) but the loaded model is "
        "the tiny SDXL test model (width 32+64)."
    )


# --- files: SDXL embeddings in, and out in the layout the other tools read ----------------------


def _sdxl_file(
    n: int, seed: int, dtype: torch.dtype = torch.float32
) -> tuple[bytes, dict[str, torch.Tensor]]:
    """An SDXL embedding as A1111, ComfyUI and kohya write it: `{clip_l, clip_g}` safetensors."""
    generator = torch.Generator().manual_seed(seed)
    halves = {
        "clip_l": torch.randn(n, 768, generator=generator).to(dtype),
        "clip_g": torch.randn(n, 1280, generator=generator).to(dtype),
    }
    return save_safetensors(halves, metadata={"name": "glowz"}), halves


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_an_sdxl_import_is_stored_as_clip_l_and_clip_g(dtype: torch.dtype) -> None:
    """An SDXL upload on an SDXL model is kept whole: both halves, in the SDXL layout."""
    from safetensors.torch import load as load_safetensors

    from engine.convert import convert

    data, halves = _sdxl_file(2, seed=5, dtype=dtype)
    answer = convert(data, "glowz.safetensors", "glowz", "negative", "sdxl")
    assert answer["ok"], answer
    assert (answer["family"], answer["width"], answer["n_vectors"]) == ("sdxl", 2048, 2)
    stored = base64.b64decode(answer["data"])
    tensors = load_safetensors(stored)
    assert set(tensors) == {"clip_l", "clip_g"}
    for key, half in halves.items():
        torch.testing.assert_close(tensors[key], half.float())
    parsed = read_embedding(stored, "glowz.safetensors")
    assert (parsed.family, parsed.metadata["kind"], parsed.metadata["name"]) == (
        "sdxl",
        "negative",
        "glowz",
    )


def test_an_sdxl_import_on_an_sd1_model_names_both_families() -> None:
    """The same upload on an SD 1.x model is refused in one sentence naming both."""
    from engine.convert import convert

    data, _ = _sdxl_file(1, seed=6)
    answer = convert(data, "glowz.safetensors", "glowz", "positive", "sd1")
    assert answer == {
        "ok": False,
        "error": "This embedding is for SDXL (width 768+1280) but the loaded model is "
        "SD 1.x (width 768).",
    }


def test_an_sdxl_file_has_no_a1111_pt_form() -> None:
    """Export as A1111 .pt is refused for SDXL with the form A1111 does read."""
    from engine.convert import convert, to_a1111

    data, _ = _sdxl_file(1, seed=7)
    stored = base64.b64decode(convert(data, "g.safetensors", "glowz", "positive", "sdxl")["data"])
    answer = to_a1111(stored, "glowz")
    assert answer == {
        "ok": False,
        "error": "SDXL embeddings have no A1111 .pt form; A1111 reads the .safetensors export.",
    }


def test_a_lexicon_sdxl_file_loads_in_diffusers_sdxl_pipeline(
    tiny_sdxl_model: LoadedModel, stock_sdxl_factory: Callable[[], Any]
) -> None:
    """A file Lexicon writes loads in stock StableDiffusionXLPipeline (each half into its
    encoder, as diffusers documents) and encodes the prompt exactly as Lexicon does."""
    from safetensors.torch import load as load_safetensors

    from engine.embedding_files import write_embedding

    _, halves = sdxl_embedding("qorb", 2, 31)
    data = write_embedding(
        halves["clip_l"],
        name="qorb",
        kind="positive",
        family="tiny-sdxl",
        vectors_g=halves["clip_g"],
    )
    state = load_safetensors(data)
    pipe = stock_sdxl_factory()
    load_sdxl_embeddings(pipe, {"qorb": state})
    prompt = "a photo of qorb on a beach"
    with torch.no_grad():
        embeds, _, pooled, _ = pipe.encode_prompt(
            prompt, device=torch.device("cpu"), num_images_per_prompt=1
        )
    joined = read_embedding(data, "qorb.safetensors").joined
    ours = PromptEncoder(tiny_sdxl_model).encode_with_names(prompt, "", {"qorb": joined})
    torch.testing.assert_close(ours.cond, embeds)
    torch.testing.assert_close(ours.pooled, pooled)
