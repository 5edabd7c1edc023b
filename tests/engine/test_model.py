"""Model loading: the tiny model, folders, devices and one-sentence errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.model import (
    LoadedModel,
    ModelLoadError,
    load_model,
    resolve_device,
    upcast_vae_dtype,
)


def test_tiny_model_is_sd1_shaped_frozen_fp32_on_cpu(tiny_model: LoadedModel) -> None:
    """The tiny model loads with family, width, size, hash and frozen weights."""
    assert (tiny_model.family, tiny_model.hidden_size, tiny_model.native_size) == ("tiny", 32, 64)
    assert tiny_model.device == torch.device("cpu") and tiny_model.dtype == torch.float32
    assert len(tiny_model.model_hash) == 10 and int(tiny_model.model_hash, 16) >= 0
    assert tiny_model.vae_scale_factor == 2 and tiny_model.latent_channels == 4
    for module in (tiny_model.unet, tiny_model.vae, tiny_model.text_encoder):
        assert not any(p.requires_grad for p in module.parameters())
        assert next(module.parameters()).dtype == torch.float32


def test_tiny_model_is_built_once_and_reused(
    tiny_model: LoadedModel, engine_data_dir: Path
) -> None:
    """A second `tiny` load reuses the folder (no rebuild) and gives the same hash."""
    marker = engine_data_dir / "models" / "tiny" / "lexicon-tiny.json"
    built_at = marker.stat().st_mtime_ns
    again = load_model("tiny", "cpu", data_dir=engine_data_dir, dtype="bf16")
    assert marker.stat().st_mtime_ns == built_at
    assert again.model_hash == tiny_model.model_hash
    assert again.dtype == torch.bfloat16


def test_a_diffusers_folder_loads(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A local diffusers folder given by path loads like `tiny`."""
    model = load_model(str(tiny_model_dir), "auto", data_dir=tmp_path)
    assert model.family == "tiny" and model.device == torch.device("cpu")


def test_explicit_cuda_without_cuda_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    """Asking for cuda on this CPU-only machine raises one sentence; auto picks the CPU."""
    assert not torch.cuda.is_available(), "this test describes the CPU-only CI machine"
    with pytest.raises(ModelLoadError) as caught:
        load_model("tiny", "cuda", data_dir=tmp_path)
    assert str(caught.value) == (
        "LEXICON_DEVICE asks for cuda but no CUDA GPU is available; set it to auto or cpu."
    )
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ModelLoadError, match="not a device"):
        resolve_device("tpu")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("not a model", "is neither tiny, a local folder"),
        ("/nonexistent/model.safetensors", "does not exist"),
        (".", "is not a diffusers model"),
    ],
)
def test_bad_specs_fail_with_one_sentence(spec: str, message: str, tmp_path: Path) -> None:
    """Unknown specs, missing files and non-model folders each give one sentence."""
    with pytest.raises(ModelLoadError, match=message) as caught:
        load_model(spec, "cpu", data_dir=tmp_path)
    assert str(caught.value).endswith(".")


def test_single_file_without_a_local_config_says_where_to_put_one(tmp_path: Path) -> None:
    """A checkpoint with no config folder beside it names where the config must go."""
    checkpoint = tmp_path / "v1-5.safetensors"
    checkpoint.write_bytes(b"\0" * 16)
    with pytest.raises(ModelLoadError) as caught:
        load_model(str(checkpoint), "cpu", data_dir=tmp_path / "data")
    assert "needs a local diffusers config folder" in str(caught.value)
    assert str(tmp_path / "v1-5") in str(caught.value)


def test_unreachable_hub_fails_with_one_sentence(tmp_path: Path) -> None:
    """A hub id that is neither cached nor reachable fails with one sentence."""
    with pytest.raises(ModelLoadError) as caught:
        load_model("lexicon-tests/no-such-model", "cpu", data_dir=tmp_path)
    assert str(caught.value) == (
        "The hub model lexicon-tests/no-such-model is not in the local Hugging Face cache and "
        "could not be downloaded; download it first or set LEXICON_MODEL to a local folder."
    )


@pytest.mark.parametrize(
    ("vae_float32", "capability", "expected"),
    [
        (False, (9, 0), torch.bfloat16),  # Hopper: bfloat16, ComfyUI's choice
        (False, (8, 0), torch.bfloat16),  # Ampere, the first with native bfloat16
        (False, (7, 5), torch.float32),  # Turing: stock's float32
        (False, None, torch.float32),  # not a CUDA device
        (True, (9, 0), torch.float32),  # LEXICON_VAE_FLOAT32=true: stock's pixels
    ],
)
def test_a_vae_that_overflows_in_float16_gets_bfloat16_only_where_the_gpu_computes_it(
    vae_float32: bool, capability: tuple[int, int] | None, expected: torch.dtype
) -> None:
    assert upcast_vae_dtype(vae_float32, capability) == expected


def test_the_sdxl_vae_of_a_half_precision_model_on_cpu_stays_float32(tmp_path: Path) -> None:
    """On a CPU there is no native bfloat16 to win: the upcast VAE keeps stock's float32 while
    the rest of the model is float16."""
    model = load_model("tiny-sdxl", device="cpu", dtype="float16", data_dir=tmp_path)
    assert model.dtype == torch.float16 and model.vae.dtype == torch.float32
