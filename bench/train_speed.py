"""GPU timing of `engine.training` on random weights of the real SD 1.5 architecture.

Not collected by pytest. Run on a CUDA machine from the repo root:

    python -m tests.engine.train_gpu_bench [--quick]

A UNet pass costs the same whatever its weights hold, so random weights give the real step time.
Prints one JSON line per measurement; docs/TRAINING.md quotes the results.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch


def sd15_parts(dtype: torch.dtype) -> Any:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from engine.tiny import write_clip_tokenizer
    from engine.training import TrainComponents

    folder = Path(tempfile.mkdtemp()) / "tokenizer"
    write_clip_tokenizer(folder)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=2,
        sample_size=512,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=768,
            intermediate_size=3072,
            num_attention_heads=12,
            num_hidden_layers=12,
            vocab_size=49408,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
    )
    for module in (unet, vae, text_encoder):
        module.requires_grad_(False).eval().to("cuda", dtype)
    scheduler_config = {
        "_class_name": "PNDMScheduler",
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "num_train_timesteps": 1000,
        "set_alpha_to_one": False,
        "skip_prk_steps": True,
        "steps_offset": 1,
    }
    return TrainComponents(
        tokenizer=CLIPTokenizer.from_pretrained(folder),
        text_encoder=text_encoder,
        unet=unet,
        vae=vae,
        scheduler_config=scheduler_config,
        device=torch.device("cuda"),
        dtype=dtype,
        family="sd1",
        model_hash="random-sd15",
        native_size=512,
    )


def photos() -> tuple[bytes, ...]:
    from tests.engine import photo_files

    return tuple(photo_files.jpeg(seed=s, size=(640, 512)) for s in range(4))


def report(**values: Any) -> None:
    print(json.dumps(values), flush=True)


def main(quick: bool) -> None:
    from engine.jobs import TrainRequest
    from engine.training import Trainer, TrainRecipe

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    report(device=torch.cuda.get_device_name(), torch=torch.__version__)
    request = TrainRequest(name="zorblat", photos=photos(), n_vectors=4, steps=250, seed=0)
    dtypes = (torch.float16, torch.bfloat16)
    for dtype in dtypes:
        parts = sd15_parts(dtype)
        # Does the half-precision step agree with fp32 on the same batch? (gradient direction)
        for batch_size in (1, 4, 8) if not quick else (4,):
            torch.cuda.synchronize()
            started = time.perf_counter()
            trainer = Trainer(parts, request, TrainRecipe(batch_size=batch_size))
            torch.cuda.synchronize()
            setup = time.perf_counter() - started
            trainer.run_steps(5)  # warm-up (cuDNN autotune, allocator)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            started = time.perf_counter()
            steps = 40
            trainer.run_steps(steps)
            torch.cuda.synchronize()
            per_step = (time.perf_counter() - started) / steps
            report(
                dtype=str(dtype),
                batch=batch_size,
                setup_s=round(setup, 2),
                step_ms=round(per_step * 1000, 1),
                samples_per_s=round(batch_size / per_step, 1),
                run_250_s=round(250 * per_step + setup, 1),
                peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2),
                loss=trainer.loss,
                loss_scale=trainer.loss_scale,
                finite=bool(torch.isfinite(trainer.vectors).all()),
            )
        # Half-precision gradient vs an fp32 copy of the same frozen nets on one batch.
        trainer = Trainer(parts, request, TrainRecipe(batch_size=4))
        batch = trainer.draw_batch()
        vectors = trainer.vectors_init.clone().cuda().requires_grad_(True)
        trainer.loss_on_batch(batch, vectors).backward()
        half_grad = vectors.grad.detach().clone()  # type: ignore[union-attr]
        full = sd15_parts(torch.float32)
        full.unet.load_state_dict(parts.unet.state_dict())
        full.text_encoder.load_state_dict(parts.text_encoder.state_dict())
        full.vae.load_state_dict(parts.vae.state_dict())
        reference = Trainer(full, request, TrainRecipe(batch_size=4, mixed_precision=False))
        vectors32 = reference.vectors_init.clone().cuda().requires_grad_(True)
        reference.loss_on_batch(batch, vectors32).backward()
        grad32 = vectors32.grad.detach()  # type: ignore[union-attr]
        cosine = torch.nn.functional.cosine_similarity(half_grad.flatten(), grad32.flatten(), 0)
        report(dtype=str(dtype), grad_cosine_vs_fp32=round(float(cosine), 4))
        del full, reference, parts, trainer
        torch.cuda.empty_cache()

    # One whole default job, end to end (intake, latents, 250 steps, file).
    parts = sd15_parts(torch.float16)
    torch.cuda.synchronize()
    started = time.perf_counter()
    trainer = Trainer(parts, request)
    trainer.run()
    result = trainer.finish()
    torch.cuda.synchronize()
    report(
        default_job_s=round(time.perf_counter() - started, 1),
        steps=result.steps,
        final_loss=result.final_loss,
        file_bytes=len(result.embedding),
    )


if __name__ == "__main__":
    main("--quick" in sys.argv)
