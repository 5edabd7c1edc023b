"""GPU smoke test: the real engine on CUDA, half precision (collected only where CUDA exists)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from engine.generate import generate
from engine.jobs import EmbeddingPayload, GenerateRequest, TrainRequest
from engine.model import load_model
from engine.png import read_parameters
from engine.runtime import DiffusersEngine
from engine.training import TrainRecipe
from tests.bot.conftest import photo_bytes


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def test_generate_and_train_on_cuda(tmp_path: Path) -> None:
    """fp16 on CUDA renders what fp32 on CPU renders (within a few levels) and trains a word."""
    gpu = load_model("tiny", device="cuda", data_dir=tmp_path)
    cpu = load_model("tiny", device="cpu", data_dir=tmp_path)
    assert gpu.dtype == torch.float16 and gpu.device.type == "cuda"
    request = GenerateRequest("a photo of a cat", 3, 8, 7.5, 64, 64)
    on_gpu = generate(gpu, [request])[0][0].png
    on_cpu = generate(cpu, [request])[0][0].png
    difference = np.abs(_pixels(on_gpu) - _pixels(on_cpu))
    assert difference.max() <= 8, difference.max()
    assert "Steps: 8" in read_parameters(on_gpu)

    engine = DiffusersEngine(gpu, TrainRecipe(batch_size=8))
    photos = tuple(photo_bytes(i) for i in range(4))
    run = engine.start_training(TrainRequest("zorb", photos, steps=10, seed=0), None)
    run.run_steps(10)
    result = run.finish()
    assert result.steps == 10 and len(result.previews) == 2
    payload = EmbeddingPayload("zorb", result.embedding, result.sha256)
    image = generate(gpu, [GenerateRequest("a zorb", 1, 4, 7.5, 64, 64, embeddings=(payload,))])
    assert "zorb:" in read_parameters(image[0][0].png)
