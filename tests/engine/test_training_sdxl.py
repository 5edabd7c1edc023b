"""SDXL textual-inversion training on the tiny SDXL model: equivalence with diffusers'
`textual_inversion_sdxl.py` formulation (both encoders' vectors), resume, and the result file in
diffusers' SDXL pipeline.

The reference grows copies of both tokenizers and text encoders the example's way and computes
its loss as the example does: each encoder's penultimate hidden state of the prompt, side by side;
the second encoder's projected pooled output as `text_embeds`; `time_ids` from original size,
crop corner (0, 0) and target size, all at the training resolution.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load as load_safetensors

from engine.embedding_files import read_embedding
from engine.model import LoadedModel
from engine.training import Trainer, TrainRecipe
from engine.training.components import TrainComponents
from engine.training.data import TrainBatch
from tests.engine import train_helpers as helpers


@pytest.fixture(scope="module")
def parts(tiny_sdxl_model: LoadedModel) -> TrainComponents:
    """The shared tiny SDXL model, trained at 32 px."""
    return helpers.small_parts(tiny_sdxl_model)


def _references(model: LoadedModel, n_vectors: int, init_word: str) -> list[helpers.Reference]:
    """Both encoders grown the example's way (placeholder rows ← the init word's row in each)."""
    return [
        helpers.reference(
            SimpleNamespace(tokenizer=tokenizer, text_encoder=encoder), n_vectors, init_word
        )
        for tokenizer, encoder in (
            (model.tokenizer, model.text_encoder),
            (model.tokenizer_2, model.text_encoder_2),
        )
    ]


def _reference_loss(refs: list[helpers.Reference], trainer: Trainer, batch: TrainBatch) -> Any:
    """The SDXL example's loss: both encoders' hidden_states[-2] concatenated, text_embeds of
    encoder 2, time_ids (original + crop + target size), UNet, MSE against the noise."""
    ref_1, ref_2 = refs
    latents = trainer.latents[batch.view_indices]
    noisy = trainer.noise_scheduler.add_noise(latents, batch.noise, batch.timesteps)
    ids_1 = helpers.reference_ids(ref_1, trainer, batch)
    ids_2 = helpers.reference_ids(ref_2, trainer, batch)
    hidden_1 = ref_1.text_encoder(ids_1, output_hidden_states=True).hidden_states[-2]
    output_2 = ref_2.text_encoder(ids_2, output_hidden_states=True)
    hidden_2 = output_2.hidden_states[-2]
    size = trainer.parts.native_size
    original_size, crop_top_left, target_size = (size, size), (0, 0), (size, size)
    time_ids = torch.cat(
        [
            torch.tensor(original_size + crop_top_left + target_size)
            for _ in range(len(batch.timesteps))
        ]
    )
    added = {"text_embeds": output_2.text_embeds, "time_ids": time_ids}
    hidden = torch.cat([hidden_1, hidden_2], dim=-1)
    prediction = trainer.parts.unet(noisy, batch.timesteps, hidden, added_cond_kwargs=added).sample
    return F.mse_loss(prediction.float(), batch.noise.float(), reduction="mean")


def _reference_rows(refs: list[helpers.Reference]) -> torch.Tensor:
    """The new rows of both encoders, side by side as Lexicon holds them."""
    return torch.cat([ref.new_rows() for ref in refs], dim=1)


@pytest.mark.parametrize("n_vectors", [1, 3])
def test_loss_and_gradients_of_both_halves_equal_diffusers_sdxl_formulation(
    tiny_sdxl_model: LoadedModel, n_vectors: int
) -> None:
    """Splicing both halves gives the SDXL example's loss and each encoder's new-row gradient."""
    trainer = Trainer(tiny_sdxl_model, helpers.request(n_vectors=n_vectors, init_word="dog"))
    refs = _references(tiny_sdxl_model, n_vectors, "dog")
    assert torch.equal(trainer.vectors_init, _reference_rows(refs))
    batch = trainer.draw_batch()

    vectors = trainer.vectors_init.clone().requires_grad_(True)
    ours = trainer.loss_on_batch(batch, vectors)
    ours.backward()
    theirs = _reference_loss(refs, trainer, batch)
    theirs.backward()
    assert vectors.grad is not None
    width_l = trainer.parts.width_l
    loss_diff = abs(ours.item() - theirs.item())
    assert loss_diff < 1e-5
    halves = (vectors.grad[:, :width_l], vectors.grad[:, width_l:])
    for ref, our_grad in zip(refs, halves, strict=True):
        assert ref.matrix.grad is not None
        their_grad = ref.matrix.grad[ref.token_ids]
        assert their_grad.abs().max().item() > 1e-7  # the comparison is not 0 == 0
        grad_diff = (our_grad - their_grad).abs().max().item()
        print(f"{n_vectors} vector(s): |Δloss| = {loss_diff:.1e}, max |Δgrad| = {grad_diff:.1e}")
        assert grad_diff < 1e-5


def test_twenty_adamw_steps_end_on_the_reference_vectors_in_both_encoders(
    parts: TrainComponents, tiny_sdxl_model: LoadedModel
) -> None:
    """20 AdamW steps on the joined vectors equal the example's 20 steps over both whole
    matrices (one optimizer, every other row restored after each step)."""
    recipe = TrainRecipe(batch_size=2, weight_decay=1e-2)
    trainer = Trainer(parts, helpers.request(n_vectors=2, init_word="dog"), recipe)
    refs = _references(tiny_sdxl_model, 2, "dog")
    optimizer = torch.optim.AdamW(
        [ref.matrix for ref in refs],
        lr=recipe.learning_rate,
        betas=recipe.betas,
        eps=recipe.eps,
        weight_decay=recipe.weight_decay,
    )
    batch = trainer.draw_batch()
    for _ in range(20):
        trainer.step_on_batch(batch)
        optimizer.zero_grad()
        _reference_loss(refs, trainer, batch).backward()
        optimizer.step()
        for ref in refs:
            keep = torch.ones(ref.matrix.shape[0], dtype=torch.bool)
            keep[ref.token_ids] = False
            with torch.no_grad():
                ref.matrix[keep] = ref.original[keep]
    width_l = parts.width_l
    moved = (trainer.vectors - trainer.vectors_init).abs()
    diff = (trainer.vectors - _reference_rows(refs)).abs().max().item()
    print(f"moved {moved.max():.3f}, max |Δ| after 20 steps = {diff:.1e}")
    assert moved[:, :width_l].max() > 1e-2 and moved[:, width_l:].max() > 1e-2
    assert diff < 1e-4


def test_checkpoint_and_resume_end_on_the_uninterrupted_vectors(parts: TrainComponents) -> None:
    """A run resumed from a mid-run checkpoint ends on the uninterrupted run's vectors."""
    recipe = TrainRecipe(batch_size=2)
    request = helpers.request(n_vectors=2, steps=12, seed=11, init_word="dog")
    first = Trainer(parts, request, recipe)
    saved: list[bytes] = []
    first.run_steps(5)
    saved.append(first.checkpoint())
    resumed = Trainer(parts, request, recipe, resume_from=saved[0])
    assert resumed.step == 5
    resumed.run_steps(resumed.total)
    straight = Trainer(parts, request, recipe)
    straight.run_steps(straight.total)
    assert torch.equal(resumed.vectors, straight.vectors)
    assert resumed.vectors.shape == (2, parts.width)


def test_result_file_loads_in_diffusers_sdxl_pipeline_each_half_in_its_encoder(
    parts: TrainComponents, stock_sdxl_factory: Callable[[], Any]
) -> None:
    """The result is a {clip_l, clip_g} file; diffusers' SDXL load_textual_inversion puts each
    half into its encoder's new rows; width and family are the SDXL pair's."""
    trainer = Trainer(parts, helpers.request(n_vectors=2, steps=2), TrainRecipe(batch_size=2))
    trainer.run_steps(trainer.total)
    result = trainer.finish()
    assert (result.n_vectors, result.width, result.family) == (2, 96, "tiny-sdxl")
    tensors = load_safetensors(result.embedding)
    assert set(tensors) == {"clip_l", "clip_g"}
    assert torch.equal(torch.cat([tensors["clip_l"], tensors["clip_g"]], 1), trainer.vectors)
    assert torch.equal(read_embedding(result.embedding, "z.safetensors").joined, trainer.vectors)

    pipe = stock_sdxl_factory()
    pipe.load_textual_inversion(
        tensors["clip_g"],
        token="zorblat",
        text_encoder=pipe.text_encoder_2,
        tokenizer=pipe.tokenizer_2,
    )
    pipe.load_textual_inversion(
        tensors["clip_l"], token="zorblat", text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer
    )
    for tokenizer, encoder, half in (
        (pipe.tokenizer, pipe.text_encoder, tensors["clip_l"]),
        (pipe.tokenizer_2, pipe.text_encoder_2, tensors["clip_g"]),
    ):
        rows = tokenizer.convert_tokens_to_ids(["zorblat", "zorblat_1"])
        assert torch.equal(encoder.get_input_embeddings().weight[rows], half)


def test_sdxl_training_renders_previews_of_the_new_word(tiny_sdxl_model: LoadedModel) -> None:
    """The worker's engine trains on the SDXL model and finishes with three native-size PNG
    previews rendered through engine.generate with the trained pair."""
    from PIL import Image

    from engine.diffusers_engine import DiffusersEngine

    run = DiffusersEngine(tiny_sdxl_model).start_training(helpers.request(steps=1), None)
    run.run_steps(run.total)
    result = run.finish()
    assert (result.family, result.width) == ("tiny-sdxl", 96)
    assert len(result.previews) == 3 and len(set(result.previews)) == 3
    for png in result.previews:
        with Image.open(io.BytesIO(png)) as image:
            assert (image.format, image.size) == ("PNG", (64, 64))


@pytest.mark.parametrize("seed", [0, 1])
def test_distillation_recovers_a_planted_pair(parts: TrainComponents, seed: int) -> None:
    """From 'cat', training both halves closes ≥ 90 % of the gap to a planted SDXL pair."""
    trainer, closed = helpers.distil(parts, seed)
    assert trainer.planted.shape == (1, parts.width)
    assert closed >= 0.90
