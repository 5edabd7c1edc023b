"""Textual-inversion training on the tiny model: equivalence, recovery, resume, control flow.

Steps run with one CPU thread: on the shared 2-core test machines two OpenMP threads competing
with other processes made each step ~10× slower, and one thread keeps every run bit-for-bit
reproducible.
"""

from __future__ import annotations

import base64
import io
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as load_safetensors

from engine.convert import to_a1111
from engine.diffusers_engine import DiffusersEngine
from engine.embedding_files import read_embedding
from engine.encode import encode_embeds, token_embeddings
from engine.model import LoadedModel
from engine.photos import PhotoError
from engine.training import CheckpointError, Trainer, TrainRecipe, TrainRequestError
from engine.training.checkpoint import decode_checkpoint
from engine.training.components import TrainComponents
from engine.training.data import splice, tokenize_templates
from tests.engine import train_helpers as helpers

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Train on one CPU thread for this module, then restore the previous setting."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def parts(tiny_model: LoadedModel) -> TrainComponents:
    """The shared tiny model, trained at 32 px."""
    return helpers.small_parts(tiny_model)


# --- equivalence with diffusers' example ------------------------------------------------------


@pytest.mark.parametrize("n_vectors", [1, 4])
def test_loss_and_gradient_equal_diffusers_formulation(
    tiny_model: LoadedModel, n_vectors: int
) -> None:
    """Splicing gives the example's loss and new-row gradient (grown tokenizer, whole matrix)."""
    trainer = Trainer(tiny_model, helpers.request(n_vectors=n_vectors, init_word="dog"))
    ref = helpers.reference(tiny_model, n_vectors, "dog")
    batch = trainer.draw_batch()

    ours_ids = trainer.prompts.input_ids[batch.template_indices]
    slots = trainer.prompts.slots[batch.template_indices]
    theirs_ids = helpers.reference_ids(ref, trainer, batch)
    assert torch.equal(ours_ids[slots < 0], theirs_ids[slots < 0])
    assert torch.equal(theirs_ids[slots >= 0] - ref.token_ids[0], slots[slots >= 0])

    vectors = trainer.vectors_init.clone().requires_grad_(True)
    ours = trainer.loss_on_batch(batch, vectors)
    ours.backward()
    theirs = helpers.reference_loss(ref, trainer, batch)
    theirs.backward()
    assert ref.matrix.grad is not None and vectors.grad is not None
    their_grad = ref.matrix.grad[ref.token_ids]
    loss_diff = abs(ours.item() - theirs.item())
    grad_diff = (vectors.grad - their_grad).abs().max().item()
    print(f"{n_vectors} vector(s): |Δloss| = {loss_diff:.1e}, max |Δgrad| = {grad_diff:.1e}")
    assert loss_diff < 1e-5
    assert their_grad.abs().max().item() > 1e-6  # the comparison below is not 0 == 0
    assert grad_diff < 1e-5


@pytest.mark.parametrize("n_vectors", [1, 4])
def test_twenty_adamw_steps_end_on_the_reference_vectors(
    parts: TrainComponents, tiny_model: LoadedModel, n_vectors: int
) -> None:
    """20 AdamW steps on the vectors equal 20 whole-matrix steps with rows restored."""
    recipe = TrainRecipe(batch_size=2, weight_decay=1e-2)  # the example's decay, accounted for
    trainer = Trainer(parts, helpers.request(n_vectors=n_vectors, init_word="dog"), recipe)
    ref = helpers.reference(tiny_model, n_vectors, "dog")
    optimizer = helpers.reference_adamw(ref, recipe)
    batch = trainer.draw_batch()
    for _ in range(20):
        trainer.step_on_batch(batch)
        helpers.reference_step(ref, optimizer, trainer, batch)
    moved = (trainer.vectors - trainer.vectors_init).abs().max().item()
    diff = (trainer.vectors - ref.new_rows()).abs().max().item()
    print(f"{n_vectors} vector(s): moved {moved:.3f}, max |Δ| after 20 steps = {diff:.1e}")
    assert moved > 1e-2
    assert diff < 1e-4


def test_shared_model_is_never_changed_or_given_gradients(
    parts: TrainComponents, tiny_model: LoadedModel
) -> None:
    """After training, no weight has a gradient or requires one, and the vocabulary is intact."""
    before = token_embeddings(tiny_model.text_encoder, torch.arange(49408)).detach().clone()
    trainer = Trainer(parts, helpers.request(steps=3))
    trainer.run_steps(trainer.total)
    modules = (tiny_model.unet, tiny_model.vae, tiny_model.text_encoder)
    for module in modules:
        assert all(p.grad is None and not p.requires_grad for p in module.parameters())
    assert len(tiny_model.tokenizer) == 49408
    after = token_embeddings(tiny_model.text_encoder, torch.arange(49408))
    assert torch.equal(before, after)
    assert [p for group in trainer.optimizer.param_groups for p in group["params"]] == [
        trainer._vectors
    ]


def test_vectors_start_from_the_init_words_tokens_cycled(parts: TrainComponents) -> None:
    """A two-token init word over 5 vectors gives a, b, a, b, a; kinds have default words."""
    table = parts.text_encoder.get_input_embeddings().weight
    ids = parts.tokenizer("teddy bear", add_special_tokens=False).input_ids
    assert len(ids) == 2
    trainer = Trainer(parts, helpers.request(n_vectors=5, init_word="teddy bear", steps=1))
    expected = table[[ids[0], ids[1], ids[0], ids[1], ids[0]]]
    assert torch.equal(trainer.vectors_init, expected)
    style = Trainer(parts, helpers.request(kind="style", steps=1))
    assert style.init_word == "painting"
    assert style.prompts.templates[0] == "a painting in the style of {}"
    assert Trainer(parts, helpers.request(kind="face", steps=1)).init_word == "person"


def test_latents_are_the_vae_posterior_mean_of_each_view(parts: TrainComponents) -> None:
    """Latents are cached once: scaled posterior means of each photo and its mirror image."""
    trainer = Trainer(parts, helpers.request(steps=1))
    assert trainer.latents.shape == (6, 4, 16, 16)
    from engine.photos import photo_views

    pixels = torch.from_numpy(photo_views(trainer.photos[:1], 32))
    with torch.no_grad():
        mean = parts.vae.encode(pixels).latent_dist.mean * parts.vae.config.scaling_factor
    assert torch.allclose(trainer.latents[:2], mean, atol=1e-6)


def test_v_prediction_models_train_against_the_velocity(parts: TrainComponents) -> None:
    """With prediction_type v_prediction the target is the scheduler's velocity."""
    config = {**dict(parts.scheduler_config), "prediction_type": "v_prediction"}
    trainer = Trainer(replace(parts, scheduler_config=config), helpers.request(steps=1))
    batch = trainer.draw_batch()
    latents = trainer.latents[batch.view_indices]
    velocity = trainer.noise_scheduler.get_velocity(latents, batch.noise, batch.timesteps)
    with torch.no_grad():
        noisy = trainer.noise_scheduler.add_noise(latents, batch.noise, batch.timesteps)
        hidden, _ = trainer.conditioning(batch.template_indices, trainer.vectors_init)
        prediction = parts.unet(noisy, batch.timesteps, hidden).sample
        expected = torch.nn.functional.mse_loss(prediction, velocity)
        assert float(trainer.loss_on_batch(batch)) == pytest.approx(float(expected), abs=1e-7)


# --- recovery -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_distillation_recovers_a_planted_vector(parts: TrainComponents, seed: int) -> None:
    """From 'cat', training closes ≥ 90 % of the gap to a planted vector; the file keeps it."""
    trainer, closed = helpers.distil(parts, seed)
    assert closed >= 0.90

    saved = read_embedding(trainer.finish().embedding, "zorblat.safetensors")
    assert torch.equal(saved.vectors, trainer.vectors)
    assert helpers.held_out_loss(trainer, saved.vectors, samples=32) == helpers.held_out_loss(
        trainer, samples=32
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_photos_of_a_planted_concept_lower_the_real_loss(
    tiny_model: LoadedModel, parts: TrainComponents, seed: int
) -> None:
    """On renders of a planted vector, the held-out real loss ends below the init word's."""
    planted = helpers.planted_vectors(parts, 1, seed=200 + seed)
    photos = helpers.render_photos(tiny_model, planted, [10 * seed + k for k in range(3)])
    trainer = Trainer(
        parts,
        helpers.request(photos=photos, init_word="cat", steps=30, seed=seed),
        TrainRecipe(batch_size=4),
    )
    trainer.run_steps(trainer.total)
    before = helpers.held_out_loss(trainer, trainer.vectors_init, samples=128, batch_size=32)
    after = helpers.held_out_loss(trainer, samples=128, batch_size=32)
    print(f"seed {seed}: held-out loss {before:.6f} → {after:.6f} ({before - after:.2e})")
    assert after < before


# --- output ---------------------------------------------------------------------------------


def test_result_file_loads_unchanged_in_diffusers(
    tiny_model: LoadedModel, tiny_model_dir: Path, parts: TrainComponents, tmp_path: Path
) -> None:
    """diffusers' load_textual_inversion(path, token=name) loads the file and encodes alike."""
    from diffusers import StableDiffusionPipeline

    trainer = Trainer(parts, helpers.request(n_vectors=2, steps=2, negative=True))
    trainer.run_steps(trainer.total)
    result = trainer.finish()
    assert (result.n_vectors, result.width, result.family, result.steps) == (2, 32, "tiny", 2)
    path = tmp_path / "zorblat.safetensors"
    path.write_bytes(result.embedding)
    vectors = load_safetensors(result.embedding)["emb_params"]

    pipe = StableDiffusionPipeline.from_pretrained(tiny_model_dir, safety_checker=None)
    pipe.load_textual_inversion(str(path), token="zorblat")
    rows = pipe.tokenizer.convert_tokens_to_ids(["zorblat", "zorblat_1"])
    assert torch.equal(pipe.text_encoder.get_input_embeddings().weight[rows], vectors)

    prompt = "a photo of a zorblat"
    with torch.no_grad():
        theirs, _ = pipe.encode_prompt(prompt, "cpu", 1, False)
        table = tokenize_templates(tiny_model.tokenizer, ["a photo of a {}"], 2, [320])
        embeds = token_embeddings(tiny_model.text_encoder, table.input_ids)
        ours = encode_embeds(tiny_model.text_encoder, splice(embeds, table.slots, vectors))
    assert float((ours - theirs).abs().max()) < 1e-5


def test_result_metadata_records_provenance(parts: TrainComponents) -> None:
    """The file says name, kind, family, steps, base model hash, the checkpoint's name and the
    photo hashes."""
    req = helpers.request(steps=2, kind="style", extra_metadata={"owner": "42"})
    trainer = Trainer(parts, req)
    trainer.run_steps(trainer.total)
    result = trainer.finish()
    metadata = read_embedding(result.embedding, "x.safetensors").metadata
    assert metadata["name"] == "zorblat" and metadata["kind"] == "positive"
    assert metadata["family"] == "tiny" and metadata["steps"] == "2"
    assert metadata["base_model_hash"] == parts.model_hash != ""
    assert metadata["photo_hashes"].split(",") == [p.sha256 for p in trainer.photos]
    assert metadata["train_kind"] == "style" and metadata["owner"] == "42"
    assert metadata["sd_checkpoint_name"] == parts.model_name == "tiny"  # A1111's key
    assert result.final_loss == pytest.approx(trainer.loss) and result.previews == ()
    exported = to_a1111(result.embedding, "zorblat")  # what `/embeddings export` as .pt writes
    pt_file = base64.b64decode(exported["data"])
    assert read_embedding(pt_file, "zorblat.pt").checkpoint == "tiny"  # what an import shows


def test_training_renders_previews_of_the_new_word(tiny_model: LoadedModel) -> None:
    """A run the worker's engine starts on a LoadedModel finishes with three native-size PNG
    renders made with the vectors (the card's three example prompts)."""
    from PIL import Image

    run = DiffusersEngine(tiny_model).start_training(helpers.request(steps=1), None)
    run.run_steps(run.total)
    result = run.finish()
    assert len(result.previews) == 3 and len(set(result.previews)) == 3
    for png in result.previews:
        with Image.open(io.BytesIO(png)) as image:
            assert (image.format, image.size) == ("PNG", (64, 64))


def test_a_preview_comes_once_half_way(tiny_model: LoadedModel) -> None:
    """Run in slices, exactly the slice that reaches half of the steps carries a native-size
    PNG render of the word; the others, and the last, carry none."""
    from PIL import Image

    run = DiffusersEngine(tiny_model).start_training(helpers.request(steps=6), None)
    previews = [(run.run_steps(2).preview_png, run.step) for _ in range(3)]
    assert [step for png, step in previews if png is not None] == [4]
    png = previews[1][0]
    assert png is not None
    with Image.open(io.BytesIO(png)) as image:
        assert (image.format, image.size) == ("PNG", (64, 64))


def test_a_failing_preview_does_not_lose_the_trained_word(parts: TrainComponents) -> None:
    """If the previewer raises, finish() still returns the embedding, without previews."""

    def broken(_trainer: Trainer) -> list[bytes]:
        raise RuntimeError("out of memory while rendering")

    trainer = Trainer(parts, helpers.request(steps=1), previewer=broken)
    trainer.run_steps(trainer.total)
    result = trainer.finish()
    assert result.previews == () and result.steps == 1 and result.embedding


# --- checkpoints and resume -----------------------------------------------------------------


def test_killed_run_resumes_to_the_same_vectors(
    tiny_model: LoadedModel, engine_data_dir: Path, tmp_path: Path
) -> None:
    """A run SIGKILLed after a checkpoint and resumed from it ends on the uninterrupted run."""
    checkpoint = tmp_path / "run.ckpt"
    code = (
        "from tests.engine.train_helpers import train_until_killed; "
        f"train_until_killed({str(engine_data_dir)!r}, {str(checkpoint)!r})"
    )
    child = subprocess.Popen([sys.executable, "-c", code], cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        while not checkpoint.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert not Path(f"{checkpoint}.finished").exists()
    saved = checkpoint.read_bytes()
    step = decode_checkpoint(saved).step
    assert 10 <= step < helpers.RESUME_STEPS and step % helpers.RESUME_SLICE == 0

    parts = helpers.small_parts(tiny_model)
    resumed = Trainer(parts, helpers.resume_request(), helpers.RESUME_RECIPE, resume_from=saved)
    assert resumed.step == step
    resumed.run_steps(resumed.total)
    straight = Trainer(parts, helpers.resume_request(), helpers.RESUME_RECIPE)
    straight.run_steps(straight.total)
    print(f"killed at step {step}; max |Δ| = {(resumed.vectors - straight.vectors).abs().max()}")
    assert torch.equal(resumed.vectors, straight.vectors)
    files = [read_embedding(t.finish().embedding, "z.safetensors") for t in (resumed, straight)]
    assert torch.equal(files[0].vectors, files[1].vectors)
    assert files[0].metadata == files[1].metadata


def test_checkpoints_between_slices_resume_in_process(parts: TrainComponents) -> None:
    """Checkpoints taken between slices of N steps are at N, 2N…; resuming from one is exact."""
    recipe = TrainRecipe(batch_size=1, lr_schedule="cosine")
    saved: list[tuple[int, bytes]] = []
    straight = Trainer(parts, helpers.request(steps=8), recipe)
    helpers.run_in_slices(straight, 3, lambda s, d: saved.append((s, d)))
    assert [step for step, _ in saved] == [3, 6]
    resumed = Trainer(parts, helpers.request(steps=8), recipe, resume_from=saved[0][1])
    resumed.run_steps(resumed.total)
    assert torch.equal(resumed.vectors, straight.vectors)
    assert resumed.loss == straight.loss


def test_checkpoint_from_another_run_is_refused(parts: TrainComponents) -> None:
    """A checkpoint of other photos, seed or recipe cannot be resumed; garbage is refused."""
    trainer = Trainer(parts, helpers.request(steps=4))
    trainer.run_steps(2)
    data = trainer.checkpoint()
    with pytest.raises(CheckpointError, match="its seed differs"):
        Trainer(parts, helpers.request(steps=4, seed=99), resume_from=data)
    other_photos = tuple(reversed(helpers.distinct_photos()))
    with pytest.raises(CheckpointError, match="its latents differ"):
        Trainer(parts, helpers.request(steps=4, photos=other_photos), resume_from=data)
    with pytest.raises(CheckpointError, match="its recipe differs"):
        Trainer(parts, helpers.request(steps=4), TrainRecipe(batch_size=2), resume_from=data)
    with pytest.raises(CheckpointError, match="unreadable"):
        Trainer(parts, helpers.request(steps=4), resume_from=b"not a checkpoint")
    identity = decode_checkpoint(data).identity
    assert json.loads(identity["recipe"])["learning_rate"] == 5e-3


# --- control flow ---------------------------------------------------------------------------


def test_progress_reports_every_step_with_loss_and_eta(parts: TrainComponents) -> None:
    """Progress steps increase one by one to the total; loss and ETA are there, ETA reaches 0."""
    trainer = Trainer(parts, helpers.request(steps=5))
    reports = [trainer.run_steps(1) for _ in range(5)]
    assert trainer.progress() == reports[-1]
    assert [p.step for p in reports] == [1, 2, 3, 4, 5]
    assert all(p.total == 5 and p.loss is not None and p.loss > 0 for p in reports)
    assert all(p.eta_seconds is not None and p.eta_seconds >= 0 for p in reports)
    assert reports[0].eta_seconds > 0 and reports[-1].eta_seconds == 0  # type: ignore[operator]
    assert trainer.done and trainer.run_steps(3).step == 5


def test_bad_requests_are_refused_before_training(parts: TrainComponents) -> None:
    """Vector counts outside 1–8, step counts outside the limit and bad photos are refused."""
    with pytest.raises(TrainRequestError, match="1 to 8 vectors; 9 were asked for"):
        Trainer(parts, helpers.request(n_vectors=9))
    with pytest.raises(TrainRequestError, match="1 to 5000 steps; 0 were asked for"):
        Trainer(parts, helpers.request(steps=0))
    with pytest.raises(TrainRequestError, match="has no tokens"):
        Trainer(parts, helpers.request(init_word="   "))
    with pytest.raises(PhotoError, match="3 to 5 photos; 2 were attached"):
        Trainer(parts, helpers.request(photos=helpers.distinct_photos(2)))
    photos = (*helpers.distinct_photos(2), b"GIF89a")
    with pytest.raises(PhotoError, match=r"^Photo 3 \(c\.png\) is not an image"):
        Trainer(parts, helpers.request(photos=photos, photo_names=("a.png", "b.png", "c.png")))
