"""The tiny random Stable Diffusion pipelines every engine test runs on.

No Stable Diffusion weights are reachable from development or CI machines, so the engine is
proven on a pipeline with the real SD 1.x *structure* (CLIP text encoder → cross-attention UNet →
KL VAE, SD 1.5's scheduler config) at toy width, with the real CLIP BPE tokenizer so that prompt
parsing, token counts, chunking and vocabulary checks behave exactly as on SD 1.5.

The SDXL sibling (`family="sdxl"`) has SDXL's structure the same way: two text encoders on the
same tokenizer (the second a `CLIPTextModelWithProjection` whose tokenizer pads with "!", as
SDXL's `tokenizer_2` does), a UNet conditioned on both encoders' states side by side plus the
pooled projection and the six size/crop numbers (`addition_embed_type="text_time"`), SDXL's VAE
scaling factor and SDXL's Euler noise schedule. Both encoders pool at the first end-of-text token
(`eos_token_id` 49407), as A1111 does on every SDXL checkpoint.

The tokenizer is rebuilt from `bpe_simple_vocab_16e6.txt.gz` (OpenAI CLIP's BPE merges, MIT
licence, shipped in `engine/data/`), in the order CLIP builds it: 256 byte characters, the same
with `</w>`, the joined first 48,894 merges, then the two special tokens — 49,408 entries.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.vocabulary import CLIP_VOCAB_SIZE, clip_vocab_and_merges

if TYPE_CHECKING:
    import torch
    from diffusers import AutoencoderKL, SchedulerMixin, UNet2DConditionModel
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
    )

TINY_HIDDEN_SIZE = 32
TINY_HIDDEN_SIZE_2 = 64  # the SDXL sibling's second text encoder
TINY_PROJECTION = 32  # its pooled projection
TINY_TIME_EMBED = 8  # per size/crop number: SDXL's `addition_time_embed_dim` at toy width
TINY_IMAGE_SIZE = 64
TINY_FAMILIES = ("sd1", "sdxl")
_MARKER = "lexicon-tiny.json"
# SD 1.5's noise schedule, so timesteps and noise levels of a random model are the real ones.
SD15_NOISE_SCHEDULE: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "steps_offset": 1,
}
# SDXL base's scheduler_config.json.
SDXL_NOISE_SCHEDULE: dict[str, Any] = {
    **SD15_NOISE_SCHEDULE,
    "timestep_spacing": "leading",
    "interpolation_type": "linear",
    "prediction_type": "epsilon",
    "use_karras_sigmas": False,
}
SDXL_VAE_SCALING = 0.13025
# The UNet both tiny models share; SDXL's adds its conditioning options.
_TINY_UNET: dict[str, Any] = {
    "block_out_channels": (32, 64),
    "layers_per_block": 2,
    "sample_size": TINY_IMAGE_SIZE // 2,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
}
_CLIP_SPECIAL = {
    "bos_token": "<|startoftext|>",
    "eos_token": "<|endoftext|>",
    "unk_token": "<|endoftext|>",
}


def write_clip_tokenizer(folder: Path, pad_token: str = "<|endoftext|>") -> None:
    """Write an SD 1.5-style `tokenizer/` folder (vocab.json, merges.txt, configs); SDXL's
    `tokenizer_2` is the same with `pad_token="!"`."""
    vocab, merges = clip_vocab_and_merges()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8"
    )
    special = {**_CLIP_SPECIAL, "pad_token": pad_token}
    (folder / "special_tokens_map.json").write_text(json.dumps(special), encoding="utf-8")
    config = {
        **special,
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "do_lower_case": True,
        "errors": "replace",
        "add_prefix_space": False,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")


def is_tiny_model(folder: Path) -> bool:
    """True when `folder` holds a complete tiny model written by `make_tiny_model`."""
    return (folder / _MARKER).is_file() and (folder / "model_index.json").is_file()


def make_tiny_model(folder: Path, seed: int = 0, family: str = "sd1") -> Path:
    """Write a tiny random SD 1.x (or, with `family="sdxl"`, SDXL) pipeline to `folder`,
    loadable by `from_pretrained`.

    The same seed writes the same weights. The folder is written completely before the marker
    file appears, so a half-written folder is never mistaken for a model.
    """
    if family not in TINY_FAMILIES:
        raise ValueError(f"family must be one of {', '.join(TINY_FAMILIES)}, not {family!r}.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    marker: dict[str, Any] = {"seed": seed}
    if family == "sdxl":
        _write_sdxl(folder, seed)
        marker["family"] = family  # the SD 1.x marker stays as it was (it is part of the hash)
    else:
        _write_sd1(folder, seed)
    (folder / _MARKER).write_text(json.dumps(marker), encoding="utf-8")
    return folder


def _write_sd1(folder: Path, seed: int) -> None:
    import torch
    from diffusers import PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    write_clip_tokenizer(folder / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        **_TINY_UNET,
        cross_attention_dim=TINY_HIDDEN_SIZE,
        attention_head_dim=8,
    )
    vae = _tiny_vae(seed + 1)
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(_clip_config(TINY_HIDDEN_SIZE, TINY_HIDDEN_SIZE, "quick_gelu"))
    scheduler = PNDMScheduler(**SD15_NOISE_SCHEDULE, set_alpha_to_one=False, skip_prk_steps=True)
    save_pipeline(folder, unet, vae, text_encoder, tokenizer, scheduler)


def _write_sdxl(folder: Path, seed: int) -> None:
    import torch
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        **_TINY_UNET,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        transformer_layers_per_block=(1, 2),
        cross_attention_dim=TINY_HIDDEN_SIZE + TINY_HIDDEN_SIZE_2,
        addition_embed_type="text_time",
        addition_time_embed_dim=TINY_TIME_EMBED,
        # original size, crop corner and target size: six numbers, then the pooled projection
        projection_class_embeddings_input_dim=6 * TINY_TIME_EMBED + TINY_PROJECTION,
    )
    vae = _tiny_vae(seed + 1, scaling_factor=SDXL_VAE_SCALING)
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(_clip_config(TINY_HIDDEN_SIZE, TINY_HIDDEN_SIZE, "quick_gelu"))
    torch.manual_seed(seed + 3)
    text_encoder_2 = CLIPTextModelWithProjection(
        _clip_config(TINY_HIDDEN_SIZE_2, TINY_PROJECTION, "gelu")
    )
    save_sdxl_pipeline(folder, unet, vae, text_encoder, text_encoder_2)


def save_sdxl_pipeline(
    folder: Path,
    unet: UNet2DConditionModel,
    vae: AutoencoderKL,
    text_encoder: CLIPTextModel,
    text_encoder_2: CLIPTextModelWithProjection,
    dtype: torch.dtype | None = None,
) -> None:
    """Assemble SDXL components with SDXL's two tokenizers and scheduler (no watermarker) and
    save them as a diffusers folder."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTokenizer

    write_clip_tokenizer(folder / "tokenizer")
    write_clip_tokenizer(folder / "tokenizer_2", pad_token="!")
    pipeline = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=CLIPTokenizer.from_pretrained(folder / "tokenizer"),
        tokenizer_2=CLIPTokenizer.from_pretrained(folder / "tokenizer_2"),
        unet=unet,
        scheduler=EulerDiscreteScheduler(**SDXL_NOISE_SCHEDULE),
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    if dtype is not None:
        pipeline = pipeline.to(dtype)
    pipeline.save_pretrained(folder, safe_serialization=True)


def _tiny_vae(seed: int, scaling_factor: float = 0.18215) -> AutoencoderKL:
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        sample_size=TINY_IMAGE_SIZE,
        scaling_factor=scaling_factor,
    )


def _clip_config(hidden_size: int, projection_dim: int, activation: str) -> CLIPTextConfig:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        hidden_size=hidden_size,
        intermediate_size=37 * hidden_size // TINY_HIDDEN_SIZE,
        layer_norm_eps=1e-5,
        num_attention_heads=4,
        num_hidden_layers=5,
        vocab_size=CLIP_VOCAB_SIZE,
        max_position_embeddings=77,
        hidden_act=activation,
        projection_dim=projection_dim,
    )


def save_pipeline(
    folder: Path,
    unet: UNet2DConditionModel,
    vae: AutoencoderKL,
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    scheduler: SchedulerMixin,
    dtype: torch.dtype | None = None,
) -> None:
    """Assemble SD 1.x components (no safety checker) and save them as a diffusers folder."""
    from diffusers import StableDiffusionPipeline

    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    if dtype is not None:
        pipeline = pipeline.to(dtype)
    pipeline.save_pretrained(folder, safe_serialization=True)
