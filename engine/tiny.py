"""The tiny random Stable Diffusion pipeline every engine test runs on.

No Stable Diffusion weights are reachable from development or CI machines, so the engine is
proven on a pipeline with the real SD 1.x *structure* (CLIP text encoder → cross-attention UNet →
KL VAE, SD 1.5's scheduler config) at toy width, with the real CLIP BPE tokenizer so that prompt
parsing, token counts, chunking and vocabulary checks behave exactly as on SD 1.5.

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
    from transformers import CLIPTextModel, CLIPTokenizer

TINY_HIDDEN_SIZE = 32
TINY_IMAGE_SIZE = 64
_MARKER = "lexicon-tiny.json"
# SD 1.5's noise schedule, so timesteps and noise levels of a random model are the real ones.
SD15_NOISE_SCHEDULE: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "steps_offset": 1,
}


def write_clip_tokenizer(folder: Path) -> None:
    """Write an SD 1.5-style `tokenizer/` folder (vocab.json, merges.txt, configs)."""
    vocab, merges = clip_vocab_and_merges()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8"
    )
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
    }
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


def make_tiny_model(folder: Path, seed: int = 0) -> Path:
    """Write a tiny random SD 1.x pipeline to `folder`, loadable by `from_pretrained`.

    The same seed writes the same weights. The folder is written completely before the marker
    file appears, so a half-written folder is never mistaken for a model.
    """
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_clip_tokenizer(folder / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=TINY_IMAGE_SIZE // 2,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TINY_HIDDEN_SIZE,
        attention_head_dim=8,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        sample_size=TINY_IMAGE_SIZE,
    )
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
            hidden_size=TINY_HIDDEN_SIZE,
            intermediate_size=37,
            layer_norm_eps=1e-5,
            num_attention_heads=4,
            num_hidden_layers=5,
            vocab_size=CLIP_VOCAB_SIZE,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            projection_dim=TINY_HIDDEN_SIZE,
        )
    )
    scheduler = PNDMScheduler(**SD15_NOISE_SCHEDULE, set_alpha_to_one=False, skip_prk_steps=True)
    save_pipeline(folder, unet, vae, text_encoder, tokenizer, scheduler)
    (folder / _MARKER).write_text(json.dumps({"seed": seed}), encoding="utf-8")
    return folder


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
