"""Measure each speed lever alone on the random-weight SD 1.5 model (see gpu_bench.py).

    python -m bench.levers --levers eager,graphs,compile+graphs [--ti eager,graphs] [--decode]

Prints, per lever (each on a freshly loaded model): single-image latency and batch-8 images/s
(512x512, 25 steps, CFG 7.5), a phase profile (encode / denoise / decode / PNG) of batch 1 and
8, the largest pixel difference from the eager image of the same request and, for the levers
named by --ti, the training step's samples/s at batch 4, 8 and 16. --decode times decoding 8
latents in chunks of 1, 2, 4 and 8, eager and graphed.

Levers: `eager`; `graphs` (CUDA graphs, engine.graphs); `compile` (torch.compile, inductor
default); `compile_max` (max-autotune-no-cudagraphs); `cudnn_benchmark` (cuDNN times its conv
algorithms); `sdpa_cudnn` / `sdpa_efficient` (prefer cuDNN's or the memory-efficient attention
kernels over flash attention); `fuse_qkv` (one projection GEMM for q, k, v); `tuned` (inductor's
1x1-convs-as-matmuls and coordinate-descent tuning, as diffusers' guide sets them). Join them
with `+`: `compile+graphs`, `graphs+sdpa_cudnn`, `compile+tuned+graphs`.
"""

from __future__ import annotations

import argparse
import os
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.gpu_bench import (
    GUIDANCE,
    SIZE,
    STEPS,
    build_sd15,
    random_embedding,
    record,
    timed,
    write_results,
)


def requests(n: int) -> list[Any]:
    from engine.jobs import EmbeddingPayload, GenerateRequest

    return [
        GenerateRequest(
            f"a photo of word{i} on a beach",
            i,
            STEPS,
            GUIDANCE,
            SIZE,
            SIZE,
            embeddings=(EmbeddingPayload(f"word{i}", random_embedding(i), ""),),
        )
        for i in range(n)
    ]


def profile_phases(model: Any, n: int, label: str) -> None:
    """Seconds per phase of one batch, by timing engine.generate's own steps."""
    import engine.generate as g

    phases: dict[str, float] = {}

    def wrap(name: str, fn: Any) -> Any:
        def inner(*args: Any, **kwargs: Any) -> Any:
            torch.cuda.synchronize()
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            torch.cuda.synchronize()
            phases[name] = phases.get(name, 0.0) + time.perf_counter() - start
            return out

        return inner

    saved = (g._denoise, g._package, g.validate_requests)
    g._denoise = wrap("denoise", g._denoise)
    # The VAE decodes lazily inside `_package`, each chunk while the last one's PNGs encode.
    g._package = wrap("decode and png", g._package)
    g.validate_requests = wrap("validate", g.validate_requests)
    more = (g.make_scheduler, g._initial_latents, g.PromptEncoder.encode_many)
    g.make_scheduler = wrap("scheduler", g.make_scheduler)
    g._initial_latents = wrap("latents", g._initial_latents)
    g.PromptEncoder.encode_many = wrap("text", g.PromptEncoder.encode_many)
    try:
        batch = requests(n)
        g.generate(model, batch)
        phases.clear()
        torch.cuda.synchronize()
        start = time.perf_counter()
        g.generate(model, batch)
        torch.cuda.synchronize()
        total = time.perf_counter() - start
    finally:
        g._denoise, g._package, g.validate_requests = saved
        g.make_scheduler, g._initial_latents, g.PromptEncoder.encode_many = more
    phases["other"] = total - sum(phases.values())
    record(
        f"{label}_profile_batch{n}",
        {k: round(v, 3) for k, v in phases.items()} | {"total": round(total, 3)},
    )


def measure(model: Any, label: str, reference: Any) -> None:
    """Batch-8 throughput, then single-image latency, phases of both, and the pixel difference
    from the eager image `reference` of the same request. Each shape's warm-up (compiling, where
    compiled) is reported on its own, batch 8 first, so a slow compile still leaves figures."""
    from engine.generate import generate

    for n in (8, 1):
        started = time.perf_counter()
        generate(model, requests(n))
        record(f"{label}_batch{n}_warmup_s", round(time.perf_counter() - started, 1))
        if n == 8:
            seconds = timed(lambda: generate(model, requests(8)), 3)
            record(f"{label}_batch8_img_per_s", round(8 / seconds, 2))
        else:
            record(f"{label}_single_s", round(timed(lambda: generate(model, requests(1)), 5), 3))
        profile_phases(model, n, label)
    image = pixels(generate(model, requests(1))[0][0].png)
    record(f"{label}_vs_eager_max_pixel_diff", int(np.abs(image - reference).max()))


def pixels(png: bytes) -> Any:
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def ti_rates(model: Any, label: str) -> None:
    import io

    from PIL import Image

    from engine.jobs import TrainRequest
    from engine.training import Trainer, TrainRecipe

    rng = np.random.default_rng(0)
    photos = []
    for _ in range(4):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (640, 640, 3), dtype=np.uint8)).save(buffer, "PNG")
        photos.append(buffer.getvalue())
    for batch in (4, 8, 16):
        trainer = Trainer(
            model, TrainRequest("zorb", tuple(photos), steps=1000), TrainRecipe(batch_size=batch)
        )
        trainer.run_steps(3)
        torch.cuda.synchronize()
        start = time.perf_counter()
        trainer.run_steps(20)
        torch.cuda.synchronize()
        record(
            f"{label}_ti_batch{batch}_samples_per_s",
            round(20 * batch / (time.perf_counter() - start), 1),
        )


def prepare(model: Any, lever: str) -> AbstractContextManager[Any]:
    """Apply `lever` to a fresh model; returns the context the measurements run in."""
    from engine.speed import apply_speedups

    parts = set(lever.split("+"))
    known = {"eager", "graphs", "compile", "compile_max", "cudnn_benchmark", "fuse_qkv", "tuned"}
    unknown = parts - known - {"sdpa_cudnn", "sdpa_efficient"}
    if unknown:
        raise SystemExit(f"unknown lever {lever}")
    mode = "default" if "compile" in parts else "off"
    if "compile_max" in parts:
        mode = "max-autotune-no-cudagraphs"
    torch.backends.cudnn.benchmark = "cudnn_benchmark" in parts
    if "tuned" in parts:  # the inductor settings of diffusers' "accelerate inference" guide
        import torch._inductor.config as inductor

        inductor.conv_1x1_as_mm = True
        inductor.coordinate_descent_tuning = True
        inductor.coordinate_descent_check_all_directions = True
        inductor.epilogue_fusion = False
    if "fuse_qkv" in parts:
        model.unet.fuse_qkv_projections()
    apply_speedups(model, mode, cuda_graphs="graphs" in parts)  # type: ignore[arg-type]
    from torch.nn.attention import SDPBackend, sdpa_kernel

    for part, backend in (
        ("sdpa_cudnn", SDPBackend.CUDNN_ATTENTION),
        ("sdpa_efficient", SDPBackend.EFFICIENT_ATTENTION),
    ):
        if part in parts:  # preferred where it supports the shape, else the usual order
            others = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
            return sdpa_kernel([backend, *(b for b in others if b != backend)], set_priority=True)
    return nullcontext()


def decode_batches(model: Any) -> None:
    """Seconds to decode 8 latents in chunks of 1, 2, 4 and 8, eager and as CUDA graphs."""
    from engine.generate import decode_pixels
    from engine.speed import apply_speedups

    latents = torch.randn(8, 4, SIZE // 8, SIZE // 8, device="cuda", dtype=model.dtype)
    apply_speedups(model, "off", cuda_graphs=True)
    with torch.inference_mode():
        for label, decode in (
            ("eager", lambda z: decode_pixels(model.vae, z)),
            ("graphs", model.graphs.decode),
        ):
            for chunk in (1, 2, 4, 8):
                seconds = timed(lambda c=chunk, d=decode: [d(z) for z in latents.split(c)], 3)
                record(f"decode8_{label}_chunks_of_{chunk}_s", round(seconds, 4))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--levers", default="eager,graphs,compile,compile+graphs")
    parser.add_argument("--ti", default="", help="comma list of levers to measure training for")
    parser.add_argument("--decode", action="store_true", help="VAE decode by chunk size")
    parser.add_argument("--out", default=os.environ.get("OUT", ".") + "/levers.json")
    args = parser.parse_args()
    import tempfile

    from engine.generate import generate
    from engine.model import load_model

    folder = build_sd15(Path(tempfile.gettempdir()) / "lexicon-bench" / "sd15-random")
    data_dir = Path(tempfile.gettempdir()) / "lexicon-bench" / "data"
    try:
        for lever in filter(None, args.levers.split(",")):
            model = load_model(str(folder), device="cuda", data_dir=data_dir)
            try:
                reference = pixels(generate(model, requests(1))[0][0].png)  # eager, this model
                with prepare(model, lever):
                    measure(model, lever, reference)
                    if lever in args.ti.split(","):
                        ti_rates(model, lever)
            except Exception as error:  # one broken lever must not lose the others' figures
                import traceback

                traceback.print_exc()
                record(f"{lever}_error", f"{type(error).__name__}: {error}")
            del model
            torch.cuda.empty_cache()
        if args.decode:
            decode_batches(load_model(str(folder), device="cuda", data_dir=data_dir))
    finally:
        write_results(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
