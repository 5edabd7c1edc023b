"""The speed levers on CPU: where compiled artefacts are cached, and that nothing is compiled
or cached on a CPU worker (compiling, graphs and the cache round trip are tested in tests/gpu)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import Attention

from engine.generate import generate
from engine.jobs import GenerateRequest
from engine.model import load_model
from engine.speed import (
    ARTIFACTS_FILE,
    CompileCache,
    apply_speedups,
    compile_cache_dir,
    compile_options,
    fuse_attention_projections,
)
from engine.training import Trainer
from tests.engine import train_helpers
from tests.engine.render_helpers import pixels


@pytest.mark.parametrize(
    ("version", "device", "folder"),
    [
        ("2.13.0+cu128", "NVIDIA H200", "torch-2.13.0-cu128-nvidia-h200"),
        ("2.13.0", "NVIDIA GeForce RTX 4090", "torch-2.13.0-nvidia-geforce-rtx-4090"),
        (
            "2.14.0.dev20260101+cu130",
            "NVIDIA H100 80GB HBM3",
            "torch-2.14.0.dev20260101-cu130-nvidia-h100-80gb-hbm3",
        ),
        ("2.13.0", "Weird/GPU: (x)", "torch-2.13.0-weird-gpu-x"),
        ("2.13.0", "", "torch-2.13.0-unknown"),
    ],
)
def test_cache_dir_is_per_torch_version_and_gpu_model(
    version: str, device: str, folder: str
) -> None:
    """The cache folder is `<data dir>/compile-cache/torch-<version>-<gpu>`, one path segment."""
    assert compile_cache_dir(Path("/data"), version, device) == Path("/data/compile-cache", folder)


@pytest.mark.parametrize(
    ("mode", "inductor"),
    [
        ("default", {}),
        ("max-autotune-no-cudagraphs", {"max_autotune": True, "coordinate_descent_tuning": True}),
        ("reduce-overhead", {"triton.cudagraphs": True}),
    ],
)
def test_compile_options_keep_the_mode_and_add_multi_kernel(
    mode: str, inductor: dict[str, object]
) -> None:
    """LEXICON_COMPILE's mode keeps its own inductor options; every mode adds `multi_kernel`,
    and inductor knows each option by that name."""
    options = compile_options(mode)  # type: ignore[arg-type]
    assert options == {**inductor, "triton.multi_kernel": 1}
    with torch._inductor.config.patch(options):
        assert torch._inductor.config.triton.multi_kernel == 1
    with pytest.raises(ValueError, match="compiles nothing"):
        compile_options("off")


def test_cpu_worker_compiles_and_caches_nothing(engine_data_dir: Path, tmp_path: Path) -> None:
    """On CPU the default LEXICON_COMPILE is ignored: no compiled module, no graphs, no cache."""
    model = load_model("tiny", "cpu", data_dir=engine_data_dir)
    unet = model.unet
    assert apply_speedups(model, "default", cuda_graphs=True, data_dir=tmp_path) is None
    assert model.unet is unet and model.graphs is None and not model.pad_batches
    assert list(tmp_path.iterdir()) == []


def test_unreadable_cache_file_costs_only_a_recompile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A corrupt artefacts file is reported and skipped; inductor still caches in the folder,
    and saving with nothing compiled keeps the file there rather than emptying it."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "before"))  # restored after
    cache = CompileCache(tmp_path / "cache")
    cache.folder.mkdir()
    cache.artifacts.write_bytes(b"not a cache")
    with caplog.at_level(logging.WARNING, logger="lexicon.engine"):
        cache.open()
    assert "not loaded" in caplog.text and ARTIFACTS_FILE in caplog.text
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(cache.folder)
    assert cache.save() == 0
    assert cache.artifacts.read_bytes() == b"not a cache"


def test_fused_attention_projections_render_and_train_as_before(engine_data_dir: Path) -> None:
    """SDXL's fused q/k/v projections (a CUDA lever, tried here on CPU) leave the pixels and
    training's loss and gradients as they were, hold each weight once, and freeze it."""
    model = load_model("tiny-sdxl", "cpu", data_dir=engine_data_dir)  # its own: fused in place
    request = GenerateRequest("a cat", seed=3, steps=4, guidance=5.0, width=64, height=64)
    trainer = Trainer(train_helpers.small_parts(model), train_helpers.request(init_word="dog"))
    batch = trainer.draw_batch()

    def render_and_gradient() -> tuple[np.ndarray, float, torch.Tensor]:
        vectors = trainer.vectors_init.clone().requires_grad_(True)
        loss = trainer.loss_on_batch(batch, vectors)
        loss.backward()
        assert vectors.grad is not None
        return pixels(generate(model, [request])[0][0].png), loss.item(), vectors.grad

    def held_bytes() -> int:
        weights = list(model.unet.parameters())
        storages = {p.untyped_storage().data_ptr(): p.untyped_storage().nbytes() for p in weights}
        return sum(storages.values())

    image, loss, gradient = render_and_gradient()
    before = held_bytes()
    weights = {name: tensor.clone() for name, tensor in model.unet.state_dict().items()}
    fuse_attention_projections(model.unet)
    fused_weights = model.unet.state_dict()
    assert all(torch.equal(fused_weights[name], tensor) for name, tensor in weights.items())
    attentions = [m for m in model.unet.modules() if isinstance(m, Attention)]
    assert attentions and all(m.fused_projections for m in attentions)
    assert held_bytes() == before
    assert not any(p.requires_grad for p in model.unet.parameters())

    fused_image, fused_loss, fused_gradient = render_and_gradient()
    assert np.abs(fused_image - image).max() <= 1
    assert abs(fused_loss - loss) < 1e-5
    assert gradient.abs().max() > 1e-7  # the comparison is not 0 == 0
    assert (fused_gradient - gradient).abs().max() < 1e-5
