"""Stock diffusers and Lexicon side by side on one GPU, same random-weight SDXL model.

    python -m bench.sdxl_bench [--out results.json] [--skip SECTIONS]

Builds the real SDXL base architecture (UNet 2.6B with 1/2/10 transformer layers per level,
CLIP ViT-L and OpenCLIP bigG text encoders with the real tokenizer, the KL VAE whose
`force_upcast` makes stock decode in float32 and Lexicon in bfloat16 by default) with random
weights — a UNet pass costs the same whatever the weights hold — saves it once as a diffusers
folder, then measures, in this one process, at 1024x1024, 25 steps, CFG 5, DPM++ 2M Karras, fp16:

- `stock`: `StableDiffusionXLPipeline` as its documentation shows it, one image and a prompt list
  of 8;
- `lexicon`: the default configuration (compiled + CUDA graphs, warmed up for batches 1 and 8),
  one image worker-side (request in, PNG out) and 8 requests from 8 users with their own SDXL
  embeddings in one batch;
- `ti`: the default textual-inversion recipe (Settings' defaults) on that engine (or, with
  `lexicon` skipped, on the uncompiled graphed one: the training step is the same), from 4
  photos to the saved `{clip_l, clip_g}` file;
- the pixel difference between stock's and Lexicon's first image, and peak memory per phase.

Sections the call leaves out go in `--skip`; the results file is rewritten after each figure
(as `bench.gpu_bench` does), so a call cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.gpu_bench import (
    RESULTS_FILE,
    clip_config,
    kl_vae,
    peak_gib,
    photos,
    record,
    run_section,
    timed,
    write_results,
)

SIZE, STEPS, GUIDANCE = 1024, 25, 5.0
PROMPT = "a photo of a cat on a beach"
SECTIONS = ("stock", "lexicon", "ti")


def build_sdxl(folder: Path) -> Path:
    """SDXL base's exact configs with random weights, saved in fp16 as a diffusers folder."""
    if (folder / "model_index.json").is_file():
        return folder
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from engine.tiny import save_sdxl_pipeline

    torch.manual_seed(0)
    with torch.device("cuda"):
        unet = UNet2DConditionModel(
            sample_size=128,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=(320, 640, 1280),
            layers_per_block=2,
            transformer_layers_per_block=(1, 2, 10),
            attention_head_dim=(5, 10, 20),
            cross_attention_dim=2048,
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816,
        )
        vae = kl_vae(sample_size=1024, scaling_factor=0.13025, force_upcast=True)
        text_encoder = CLIPTextModel(clip_config(768, 12, 12, "quick_gelu"))  # CLIP ViT-L
        text_encoder_2 = CLIPTextModelWithProjection(clip_config(1280, 32, 20, "gelu"))  # bigG
    # Random weights scaled down so activations stay finite in fp16 through 25 steps.
    with torch.no_grad():
        for module in (unet, vae):
            for parameter in module.parameters():
                parameter.mul_(0.5)
    save_sdxl_pipeline(folder, unet, vae, text_encoder, text_encoder_2, torch.float16)
    del unet, vae, text_encoder, text_encoder_2
    torch.cuda.empty_cache()
    return folder


def sdxl_word(user: int) -> Any:
    """User `user`'s own random SDXL embedding (`clip_l` + `clip_g`), as a request carries it."""
    from engine.embedding_files import write_embedding
    from engine.jobs import EmbeddingPayload

    generator = torch.Generator().manual_seed(user)
    vectors = torch.randn(1, 768, generator=generator) * 0.015
    vectors_g = torch.randn(1, 1280, generator=generator) * 0.015
    data = write_embedding(
        vectors, vectors_g=vectors_g, name=f"word{user}", kind="positive", family="sdxl"
    )
    return EmbeddingPayload(f"word{user}", data, "")


def lexicon_request(seed: int, user: int | None = None) -> Any:
    """A 1024² request; with `user`, one that uses that user's own SDXL embedding."""
    from engine.jobs import GenerateRequest

    if user is None:
        return GenerateRequest(PROMPT, seed, STEPS, GUIDANCE, SIZE, SIZE)
    prompt = f"a photo of word{user} on a beach"
    return GenerateRequest(prompt, seed, STEPS, GUIDANCE, SIZE, SIZE, embeddings=(sdxl_word(user),))


def bench_stock(folder: Path) -> np.ndarray:
    """Stock `StableDiffusionXLPipeline`, fp16: one image, then a prompt list of 8."""
    from diffusers import StableDiffusionXLPipeline

    from engine.jobs import GenerateRequest
    from engine.schedulers import make_scheduler

    pipe = StableDiffusionXLPipeline.from_pretrained(
        folder, torch_dtype=torch.float16, add_watermarker=False
    ).to("cuda")
    sampler = GenerateRequest(PROMPT, 0, STEPS, GUIDANCE, SIZE, SIZE).sampler
    pipe.scheduler = make_scheduler(sampler, pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)

    def run(count: int, seed: int = 0) -> Any:
        return pipe(
            [PROMPT] * count,
            num_inference_steps=STEPS,
            guidance_scale=GUIDANCE,
            height=SIZE,
            width=SIZE,
            generator=[torch.Generator("cpu").manual_seed(seed + i) for i in range(count)],
        ).images

    torch.cuda.reset_peak_memory_stats()
    image = np.asarray(run(1)[0]).astype(int)
    record("stock_single_s", round(timed(lambda: run(1), repeats=3), 3))
    seconds = timed(lambda: run(8), repeats=2)
    record("stock_batch8_s", round(seconds, 3))
    record("stock_batch8_img_per_s", round(8 / seconds, 3))
    record("stock_peak_gib", peak_gib())
    return image


def bench_lexicon(folder: Path, data_dir: Path) -> tuple[Any, np.ndarray]:
    """The default engine (compiled + graphed), warmed up for batches 1 and 8 as a worker is."""
    from PIL import Image

    from engine.diffusers_engine import DiffusersEngine
    from engine.generate import generate

    started = time.perf_counter()
    engine = DiffusersEngine.load(
        str(folder),
        "cuda",
        data_dir,
        compile_mode="default",
        cuda_graphs=True,
        warm_up_batches=(1, 8),
    )
    record("lexicon_load_and_warm_up_s", round(time.perf_counter() - started, 1))
    model = engine.model
    torch.cuda.reset_peak_memory_stats()
    first = generate(model, [lexicon_request(0)])[0][0].png
    image = np.asarray(Image.open(io.BytesIO(first)).convert("RGB")).astype(int)
    record("lexicon_single_s", round(timed(lambda: generate(model, [lexicon_request(0)]), 3), 3))
    batch = [lexicon_request(i, user=i) for i in range(8)]
    seconds = timed(lambda: generate(model, batch), repeats=5)
    record("lexicon_batch8_s", round(seconds, 3))
    record("lexicon_batch8_img_per_s", round(8 / seconds, 3))
    record("lexicon_peak_gib", peak_gib())
    return engine, image


def graphed_engine(folder: Path, data_dir: Path) -> Any:
    """The default engine without compiling: training's step is the same (it never runs the
    compiled UNet), only its previews render on uncompiled, graphed kernels."""
    from engine.diffusers_engine import DiffusersEngine

    return DiffusersEngine.load(
        str(folder), "cuda", data_dir, compile_mode="off", cuda_graphs=True, warm_up_batches=()
    )


def bench_training(engine: Any) -> None:
    """The default recipe (Settings' defaults) on the warmed engine, 4 photos → saved file."""
    from bot.config import Settings
    from engine.diffusers_engine import DiffusersEngine
    from engine.jobs import TrainRequest
    from engine.training import TrainRecipe

    defaults = Settings()
    trainer_engine = DiffusersEngine(engine.model, TrainRecipe(batch_size=defaults.train_batch))
    request = TrainRequest("zorb", tuple(photos(4)), steps=defaults.train_steps, seed=0)
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.synchronize()
    started = time.perf_counter()
    trainer = trainer_engine.start_training(request, None)
    trainer.run_steps(trainer.total)
    torch.cuda.synchronize()
    training = time.perf_counter() - started
    result = trainer.finish()
    total = time.perf_counter() - started
    samples = trainer.total * trainer_engine.recipe.batch_size
    record("lexicon_ti_steps", trainer.total)
    record("lexicon_ti_batch", trainer_engine.recipe.batch_size)
    record("lexicon_ti_samples_per_s", round(samples / training, 1))
    record("lexicon_ti_training_s", round(training, 2))
    record("lexicon_ti_photos_to_embedding_s", round(total, 2))
    record("lexicon_ti_previews", len(result.previews))
    record("lexicon_ti_peak_gib", peak_gib())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="sdxl_bench.json")
    parser.add_argument("--skip", default="", help=f"comma list of: {','.join(SECTIONS)}")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    if unknown := skip - set(SECTIONS):
        parser.error(f"--skip: unknown sections {sorted(unknown)}; use {','.join(SECTIONS)}")
    if not torch.cuda.is_available():
        print("sdxl_bench needs a CUDA GPU.", file=sys.stderr)
        return 2
    RESULTS_FILE.append(Path(args.out))
    record("gpu", torch.cuda.get_device_name())
    record("torch", torch.__version__)
    work = Path(tempfile.gettempdir()) / "lexicon-bench"
    started = time.perf_counter()
    folder = build_sdxl(work / "sdxl-random")
    record("build_s", round(time.perf_counter() - started, 1))

    section = partial(run_section, skip)

    try:
        stock_image = section("stock", lambda: bench_stock(folder))
        both = section("lexicon", lambda: bench_lexicon(folder, work / "data"))
        if both is not None and stock_image is not None:
            difference = np.abs(stock_image - both[1])
            record("stock_vs_lexicon_max_pixel_diff", int(difference.max()))
            record("stock_vs_lexicon_mean_pixel_diff", round(float(difference.mean()), 3))
        if both is not None:
            section("ti", lambda: bench_training(both[0]))
        elif "ti" not in skip:  # training alone: its step runs the uncompiled UNet, graphed
            section("ti", lambda: bench_training(graphed_engine(folder, work / "data")))
    finally:
        write_results(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
