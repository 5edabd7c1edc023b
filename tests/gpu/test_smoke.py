"""GPU smoke test: the real engine on CUDA, half precision (collected only where CUDA exists)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from engine.diffusers_engine import DiffusersEngine
from engine.generate import generate
from engine.jobs import EXAMPLE_PROMPTS, EmbeddingPayload, GenerateRequest, TrainRequest
from engine.model import load_model
from engine.png import read_parameters
from engine.training import TrainRecipe
from tests.bot.conftest import photo_bytes
from tests.gpu.training_helpers import assert_graphed_steps_equal_eager


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def test_generate_and_train_on_cuda(tmp_path: Path) -> None:
    """fp16 on CUDA renders what stock diffusers renders there, and trains a word."""
    from diffusers import StableDiffusionPipeline

    from engine.schedulers import make_scheduler

    gpu = load_model("tiny", device="cuda", data_dir=tmp_path)
    assert gpu.dtype == torch.float16 and gpu.device.type == "cuda"
    request = GenerateRequest("a photo of a cat", 3, 8, 7.5, 64, 64)
    ours = _pixels(generate(gpu, [request])[0][0].png)
    stock = StableDiffusionPipeline.from_pretrained(
        tmp_path / "models" / "tiny", torch_dtype=torch.float16
    ).to("cuda")
    stock.scheduler = make_scheduler(request.sampler, stock.scheduler.config)
    theirs = stock(
        request.prompt,
        num_inference_steps=8,
        guidance_scale=7.5,
        height=64,
        width=64,
        generator=torch.Generator("cpu").manual_seed(3),
    ).images[0]
    difference = np.abs(ours - np.asarray(theirs).astype(int))
    assert difference.max() <= 2, difference.max()

    engine = DiffusersEngine(gpu, TrainRecipe(batch_size=8))
    photos = tuple(photo_bytes(i) for i in range(4))
    run = engine.start_training(TrainRequest("zorb", photos, steps=10, seed=0), None)
    run.run_steps(10)
    result = run.finish()
    assert result.steps == 10 and len(result.previews) == len(EXAMPLE_PROMPTS["object"])
    payload = EmbeddingPayload("zorb", result.embedding, result.sha256)
    image = generate(gpu, [GenerateRequest("a zorb", 1, 4, 7.5, 64, 64, embeddings=(payload,))])
    assert "zorb:" in read_parameters(image[0][0].png)


def test_cuda_graphs_change_nothing_but_speed(tmp_path: Path) -> None:
    """Graphed generation and training compute what the eager paths compute on the same GPU."""
    from engine.speed import apply_speedups

    eager = load_model("tiny", device="cuda", data_dir=tmp_path)
    graphed = load_model("tiny", device="cuda", data_dir=tmp_path)
    apply_speedups(graphed, "off", cuda_graphs=True)
    assert graphed.graphs is not None and eager.graphs is None

    requests = [GenerateRequest(f"a photo of a cat {i}", i, 6, 7.5, 64, 64) for i in range(3)]
    for _ in range(2):  # the first call records, the second replays
        ours = generate(graphed, requests)
    theirs = generate(eager, requests)
    assert len(graphed.graphs.unet) == 1 and len(graphed.graphs.decode) == 1
    for mine, reference in zip(ours, theirs, strict=True):
        assert np.abs(_pixels(mine[0].png) - _pixels(reference[0].png)).max() <= 1

    photos = tuple(photo_bytes(i) for i in range(4))
    request = TrainRequest("zorb", photos, steps=6, seed=0)
    assert_graphed_steps_equal_eager(eager, graphed, request)


def test_compiled_worker_runs_new_shapes_eagerly_and_equal(tmp_path: Path) -> None:
    """With LEXICON_COMPILE, shapes warmed up at start run compiled; a batch shape the warm-up
    never saw runs eagerly (no minute-long compile stall) and renders what eager renders."""
    import time

    import torch

    engine = DiffusersEngine.load(
        "tiny", "cuda", tmp_path, compile_mode="default", cuda_graphs=True, warm_up_batches=(1,)
    )
    eager = load_model("tiny", device="cuda", data_dir=tmp_path)
    requests = [GenerateRequest(f"a red house {i}", i, 6, 7.5, 64, 64) for i in range(3)]
    try:
        started = time.monotonic()
        ours = generate(engine.model, requests)  # 6 UNet rows, padded to 8: not warmed up
        assert time.monotonic() - started < 15
        theirs = generate(eager, requests)
        for mine, reference in zip(ours, theirs, strict=True):
            assert np.abs(_pixels(mine[0].png) - _pixels(reference[0].png)).max() <= 2
        alone = generate(engine.model, requests[:1])[0][0].png  # the warmed, compiled shape
        assert np.abs(_pixels(alone) - _pixels(theirs[0][0].png)).max() <= 2
    finally:
        torch.compiler.set_stance("default")
