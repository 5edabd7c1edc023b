"""Measure each speed lever alone on the random-weight SD 1.5 model (see gpu_bench.py).

    python -m bench.levers --levers eager,channels_last,compile [--ti]

Prints, per lever: single-image latency and batch-8 images/s (512x512, 25 steps, CFG 7.5),
plus a phase profile of one plain batch (encode / denoise / decode / PNG) and, with --ti, the
training step's samples/s at batch 4, 8 and 16.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from bench.gpu_bench import GUIDANCE, SIZE, STEPS, build_sd15, random_embedding, timed

RESULTS: dict[str, Any] = {}


def record(key: str, value: Any) -> None:
    RESULTS[key] = value
    print(f"{key}: {value}", file=sys.stderr, flush=True)


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


def profile_phases(model: Any, n: int) -> None:
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

    saved = (g._denoise, g._decode, g._package, g.validate_requests)
    g._denoise, g._decode = wrap("denoise", g._denoise), wrap("decode", g._decode)
    g._package, g.validate_requests = wrap("png", g._package), wrap("validate", g.validate_requests)
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
        g._denoise, g._decode, g._package, g.validate_requests = saved
    phases["encode+other"] = total - sum(phases.values())
    record(
        f"profile_batch{n}",
        {k: round(v, 3) for k, v in phases.items()} | {"total": round(total, 3)},
    )


def measure(model: Any, label: str) -> None:
    from engine.generate import generate

    started = time.perf_counter()
    generate(model, requests(1))
    generate(model, requests(8))
    record(f"{label}_warmup_s", round(time.perf_counter() - started, 1))
    record(f"{label}_single_s", round(timed(lambda: generate(model, requests(1)), 5), 3))
    seconds = timed(lambda: generate(model, requests(8)), 3)
    record(f"{label}_batch8_img_per_s", round(8 / seconds, 2))


def ti_rates(model: Any, label: str) -> None:
    import io

    import numpy as np
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


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--levers", default="eager,channels_last,compile")
    parser.add_argument("--ti", action="store_true")
    parser.add_argument("--out", default=os.environ.get("OUT", ".") + "/levers.json")
    args = parser.parse_args()
    import tempfile

    from engine.model import load_model
    from engine.speed import apply_speedups

    folder = build_sd15(Path(tempfile.gettempdir()) / "lexicon-bench" / "sd15-random")
    data_dir = Path(tempfile.gettempdir()) / "lexicon-bench" / "data"
    try:
        for lever in args.levers.split(","):
            model = load_model(str(folder), device="cuda", data_dir=data_dir)
            if lever == "eager":
                profile_phases(model, 1)
                profile_phases(model, 8)
            elif lever == "channels_last":
                apply_speedups(model, "off")
            elif lever == "compile":
                apply_speedups(model, "default")
            elif lever == "compile_max":
                apply_speedups(model, "max-autotune-no-cudagraphs")
            elif lever == "cudagraphs":
                apply_speedups(model, "reduce-overhead")
            measure(model, lever)
            if args.ti:
                ti_rates(model, lever)
            del model
            torch.cuda.empty_cache()
    finally:
        Path(args.out).write_text(json.dumps(RESULTS, indent=2))
        print(json.dumps(RESULTS, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
