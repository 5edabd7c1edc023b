"""GPU timing of `engine.training` on random weights of the real SD 1.5 architecture.

Run on a CUDA machine from the repo root:

    python -m bench.train_speed [--quick]

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
    """The random-weight SD 1.5 model of bench.gpu_bench, loaded in `dtype` on the GPU."""
    from bench.gpu_bench import build_sd15
    from engine.model import load_model

    root = Path(tempfile.gettempdir()) / "lexicon-bench"
    folder = build_sd15(root / "sd15-random")
    return load_model(str(folder), device="cuda", dtype=dtype, data_dir=root / "data")


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
    trainer.run_steps(trainer.total)
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
