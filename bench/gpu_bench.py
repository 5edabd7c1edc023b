"""Stock diffusers and Lexicon side by side on one GPU, same random-weight SD 1.5 model.

    python -m bench.gpu_bench [--out results.json] [--quick] [--compile MODE] [--graphs on|off]
                              [--skip SECTIONS] [--startup]

Builds the real SD 1.5 architecture (UNet 860M, KL VAE, CLIP ViT-L/14 text encoder with the real
tokenizer) with random weights — a UNet pass costs the same whatever the weights hold — saves it
once as a diffusers folder, then measures, in this one process:

- single-image latency (512x512, 25 steps, CFG 7.5, DPM++ 2M Karras), stock vs Lexicon;
- throughput at batch 1/4/8/16 (stock: one prompt list; Lexicon: that many requests from
  different users with different embeddings);
- stock compiled (`stock_compiled`): diffusers' own documented speed-up — channels_last UNet and
  VAE, `torch.compile` of the UNet and the VAE decoder with `fullgraph=True` — in fp16 like the
  stock column. The guide's `mode="max-autotune"` tunes for tens of minutes, so the compile mode
  is inductor's default (`mode=None`), as Lexicon's is: one image and batch 16;
- the UNet's FLOPs (`flops`: counted once on the eager UNet at one latent row, x2 for CFG, x25
  steps) and from them each configuration's achieved UNet TFLOP/s (`*_unet_tflops`: all of an
  image's time charged to its UNet, so a lower bound);
- served throughput: 64 requests from 8 users through the real scheduler, local transport and
  worker process (Lexicon only);
- textual inversion: the stock diffusers example's training step (samples/s) and Lexicon's
  default recipe from 4 photos to a saved embedding (seconds and samples/s);
- worker start-up (`startup`, alone with `--startup`): the bench's compile cache emptied, one
  `Lexicon.open` + `wait_for_worker` (cold: compiles every warm-up shape), closed, then another
  on the same data dir (warm: loads the cache);
- image-to-image: one 512x512 render and one ×2 upscale to 1024x1024 (strength 0.5), stock
  `StableDiffusionImg2ImgPipeline` vs Lexicon, same sampler and seed;
- where the GPU's time goes (`profile`, after `lexicon`, with its model): CUDA kernel time by
  kind for one image, a batch of 8, ten training steps and the previews (`bench/profile.py`);
- peak GPU memory of each phase, and the pixel difference between stock and Lexicon images.

Lexicon's side runs with the settings' defaults (`--compile default --graphs on`). Every section
keeps its compiled artefacts in one compile cache (`<tmp>/lexicon-bench/data/compile-cache`), so
a later call on the same machine skips compiling; `--skip` leaves sections out so that each GPU
call stays short (docs/BENCHMARKS.md lists the calls). The results file is rewritten after each
figure, so a call cut short keeps what it measured.

The stock side is plain diffusers as its documentation shows it: fp16, SDPA (the default
attention processor on torch 2), `pipe(...)`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bot.services import ImagineOptions

RESULTS: dict[str, Any] = {}
RESULTS_FILE: list[Path] = []  # where record() keeps the results (set by main)
SIZE, STEPS, GUIDANCE = 512, 25, 7.5
SECTIONS = (
    "stock",
    "stock_compiled",
    "flops",
    "img2img",
    "lexicon",
    "profile",
    "ti",
    "served",
    "startup",
)


def log(*parts: object) -> None:
    print(*parts, flush=True, file=sys.stderr)


def record(key: str, value: Any) -> None:
    RESULTS[key] = value
    log(f"{key}: {value}")
    for path in RESULTS_FILE:
        path.write_text(json.dumps(RESULTS, indent=2))


def write_results(path: str) -> None:
    """Save the figures recorded so far to `path`, and print them."""
    text = json.dumps(RESULTS, indent=2)
    Path(path).write_text(text)
    print(text)


def timed(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """Median seconds of `fn` after warm-up, synchronised with the GPU."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def run_section(skip: set[str], name: str, fn: Callable[[], Any]) -> Any:
    """`fn()`'s result, or None when `name` is skipped or fails: a broken section records its
    error and must not lose the other sections' figures. GPU memory is freed after each."""
    if name in skip:
        return None
    try:
        return fn()
    except Exception as error:
        traceback.print_exc()
        record(f"{name}_error", f"{type(error).__name__}: {error}")
        return None
    finally:
        gc.collect()
        torch.cuda.empty_cache()


def peak_gib() -> float:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2)


# --- the model ---------------------------------------------------------------------------------


def kl_vae(**config: Any) -> Any:
    """The KL VAE of SD 1.x and SDXL (4 latent channels, 8× down), `config` added."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=2,
        **config,
    )


def clip_config(hidden: int, layers: int, heads: int, activation: str) -> Any:
    """A CLIP text encoder's config with the real vocabulary and 77 positions."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=49408,
        max_position_embeddings=77,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=1,
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        hidden_act=activation,
        projection_dim=hidden,
    )


def build_sd15(folder: Path) -> Path:
    """SD 1.5's exact configs with random weights, saved in fp16 as a diffusers folder."""
    if (folder / "model_index.json").is_file():
        return folder
    from diffusers import DPMSolverMultistepScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from engine.tiny import SD15_NOISE_SCHEDULE, save_pipeline, write_clip_tokenizer

    write_clip_tokenizer(folder / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    torch.manual_seed(0)
    with torch.device("cuda"):
        unet = UNet2DConditionModel(
            sample_size=64,
            cross_attention_dim=768,
            attention_head_dim=8,
            block_out_channels=(320, 640, 1280, 1280),
            layers_per_block=2,
        )
        vae = kl_vae(sample_size=512)
        text_encoder = CLIPTextModel(clip_config(768, 12, 12, "quick_gelu"))  # CLIP ViT-L/14
    # Random weights scaled down so activations stay finite in fp16 through 25 steps.
    with torch.no_grad():
        for module in (unet, vae):
            for parameter in module.parameters():
                parameter.mul_(0.5)
    scheduler = DPMSolverMultistepScheduler(**SD15_NOISE_SCHEDULE, use_karras_sigmas=True)
    save_pipeline(folder, unet, vae, text_encoder, tokenizer, scheduler, torch.float16)
    del unet, vae, text_encoder
    torch.cuda.empty_cache()
    return folder


def _pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def random_embedding(seed: int, n: int = 1) -> bytes:
    from engine.embedding_files import write_embedding

    vectors = torch.randn(n, 768, generator=torch.Generator().manual_seed(seed)) * 0.015
    return write_embedding(vectors, name=f"word{seed}", kind="positive", family="sd1")


# --- stock diffusers ---------------------------------------------------------------------------


def stock_pipeline(folder: Path) -> Any:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(folder, torch_dtype=torch.float16).to("cuda")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def stock_images(pipe: Any, batch: int, seed: int = 1) -> Any:
    """One `pipe(...)` call for `batch` copies of the bench prompt, as diffusers' docs show it."""
    return pipe(
        ["a photo of a cat on a beach"] * batch,
        num_inference_steps=STEPS,
        guidance_scale=GUIDANCE,
        height=SIZE,
        width=SIZE,
        generator=torch.Generator("cpu").manual_seed(seed),
    ).images


def bench_stock(folder: Path, batches: list[int]) -> Any:
    pipe = stock_pipeline(folder)
    run = partial(stock_images, pipe)

    torch.cuda.reset_peak_memory_stats()
    record("stock_single_s", round(timed(lambda: run(1), repeats=5, warmup=2), 3))
    for batch in batches:
        seconds = timed(lambda b=batch: run(b), repeats=2)
        record(f"stock_batch{batch}_img_per_s", round(batch / seconds, 2))
    record("stock_peak_gib", peak_gib())
    return np.asarray(run(1, seed=7)[0])


def bench_stock_compiled(folder: Path) -> None:
    """diffusers' documented speed-up (optimization/fp16 + torch2.0 guides), default mode."""
    pipe = stock_pipeline(folder)
    pipe.unet.to(memory_format=torch.channels_last)
    pipe.vae.to(memory_format=torch.channels_last)
    pipe.unet = torch.compile(pipe.unet, mode=None, fullgraph=True)
    pipe.vae.decoder = torch.compile(pipe.vae.decoder, mode=None, fullgraph=True)
    run = partial(stock_images, pipe)

    torch.cuda.reset_peak_memory_stats()
    for batch in (1, 16):  # the first call of each shape compiles it
        started = time.perf_counter()
        run(batch)
        torch.cuda.synchronize()
        record(f"stock_compiled_first_batch{batch}_s", round(time.perf_counter() - started, 1))
    record("stock_compiled_single_s", round(timed(lambda: run(1), repeats=5), 3))
    seconds = timed(lambda: run(16), repeats=2)
    record("stock_compiled_batch16_img_per_s", round(16 / seconds, 2))
    record("stock_compiled_peak_gib", peak_gib())


def count_unet_flops(folder: Path) -> None:
    """FLOPs of one image's UNet work: one eager call at one latent row, x2 (CFG), x STEPS."""
    from diffusers import UNet2DConditionModel
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    unet = UNet2DConditionModel.from_pretrained(
        folder, subfolder="unet", torch_dtype=torch.float16
    ).to("cuda")
    side = SIZE // 8
    latents = torch.randn(1, unet.config.in_channels, side, side, device="cuda").half()
    context = torch.randn(1, 77, unet.config.cross_attention_dim, device="cuda").half()
    counter = FlopCounterMode(display=False)
    # The math attention is plain matmuls, which the counter counts on every torch build.
    with torch.inference_mode(), sdpa_kernel(SDPBackend.MATH), counter:
        unet(latents, torch.tensor([500], device="cuda"), context)
    per_row = counter.get_total_flops()
    record("unet_gflop_per_row", round(per_row / 1e9, 1))
    record("unet_tflop_per_image", round(per_row * 2 * STEPS / 1e12, 2))


def add_unet_tflops() -> None:
    """Each img/s or seconds-per-image figure as the UNet TFLOP/s it implies."""
    per_image = RESULTS.get("unet_tflop_per_image")
    if per_image is None:
        return
    for key, value in list(RESULTS.items()):
        if key.endswith("_img_per_s") and isinstance(value, int | float):
            record(f"{key.removesuffix('_img_per_s')}_unet_tflops", round(per_image * value, 1))
        elif key.endswith("_single_s") and isinstance(value, int | float) and value > 0:
            record(f"{key.removesuffix('_s')}_unet_tflops", round(per_image / value, 1))


# --- Lexicon engine ----------------------------------------------------------------------------


def lexicon_request(seed: int, user: int | None = None) -> Any:
    """A 512² request; with `user`, one that uses that user's own random embedding."""
    from engine.jobs import EmbeddingPayload, GenerateRequest

    embeddings: tuple[EmbeddingPayload, ...] = ()
    prompt = "a photo of a cat on a beach"
    if user is not None:
        data = random_embedding(user)
        embeddings = (EmbeddingPayload(f"word{user}", data, ""),)
        prompt = f"a photo of word{user} on a beach"
    return GenerateRequest(prompt, seed, STEPS, GUIDANCE, SIZE, SIZE, embeddings=embeddings)


def bench_lexicon(
    folder: Path, batches: list[int], data_dir: Path, compile_mode: str, graphs: bool
) -> Any:
    from PIL import Image

    from engine.generate import generate
    from engine.model import load_model

    model = load_model(str(folder), device="cuda", data_dir=data_dir)
    request = lexicon_request

    if compile_mode != "off" or graphs:
        from engine.diffusers_engine import DiffusersEngine
        from engine.speed import apply_speedups
        from engine.worker_config import warm_up_batch_sizes

        plain = generate(model, [request(7, user=1)])[0][0].png
        cache = apply_speedups(model, compile_mode, graphs, data_dir)  # type: ignore[arg-type]
        warm_up = DiffusersEngine(model).warm_up(warm_up_batch_sizes(8))
        record("lexicon_warmup_s", round(warm_up, 1))
        if cache is not None:
            cache.save()
        optimized = generate(model, [request(7, user=1)])[0][0].png
        diff = np.abs(_pixels(plain) - _pixels(optimized))
        record("optimized_vs_plain_max_pixel_diff", int(diff.max()))
        record("optimized_vs_plain_mean_pixel_diff", round(float(diff.mean()), 3))
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    generate(model, [request(1)])
    torch.cuda.synchronize()
    record("lexicon_first_image_s", round(time.perf_counter() - started, 2))
    record(
        "lexicon_single_s",
        round(timed(lambda: generate(model, [request(1)]), repeats=5, warmup=1), 3),
    )
    for batch in batches:
        requests = [request(i, user=i) for i in range(batch)]
        seconds = timed(lambda r=requests: generate(model, r), repeats=2)
        record(f"lexicon_batch{batch}_img_per_s", round(batch / seconds, 2))
    record("lexicon_peak_gib", peak_gib())
    png = generate(model, [request(7)])[0][0].png
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    return model, image


# --- image-to-image and the ×2 upscale ---------------------------------------------------------


def bench_img2img(folder: Path, data_dir: Path, strength: float = 0.5) -> None:
    """One 512² image-to-image and one ×2 upscale (Lexicon's second pass at 1024²), each
    against stock `StableDiffusionImg2ImgPipeline` given the same (Lanczos-enlarged) image."""
    from diffusers import StableDiffusionImg2ImgPipeline
    from PIL import Image

    from engine.generate import generate
    from engine.jobs import DEFAULT_SAMPLER, GenerateRequest
    from engine.model import load_model
    from engine.schedulers import make_scheduler

    rng = np.random.default_rng(0)
    start = Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    start.save(buffer, format="PNG")
    png = buffer.getvalue()
    prompt = "a photo of a cat on a beach"
    model = load_model(str(folder), device="cuda", data_dir=data_dir)
    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(folder, torch_dtype=torch.float16)
    pipe = pipe.to("cuda")
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = make_scheduler(DEFAULT_SAMPLER, model.scheduler_config)

    def lexicon(hires_steps: int) -> bytes:
        request = GenerateRequest(
            prompt,
            1,
            STEPS,
            GUIDANCE,
            SIZE,
            SIZE,
            init_sha256=hashlib.sha256(png).hexdigest(),
            init_image=png,
            strength=strength,
            hires_steps=hires_steps,
        )
        return generate(model, [request])[0][0].png

    def stock(image: Any) -> Any:
        return pipe(
            prompt,
            image=image,
            strength=strength,
            num_inference_steps=STEPS,
            guidance_scale=GUIDANCE,
            generator=torch.Generator("cpu").manual_seed(1),
            output_type="np",
        ).images[0]

    enlarged = start.resize((2 * SIZE, 2 * SIZE), Image.Resampling.LANCZOS)
    for label, hires_steps, image in (("img2img_512", 0, start), ("upscale_1024", STEPS, enlarged)):
        torch.cuda.reset_peak_memory_stats()
        record(f"stock_{label}_s", round(timed(lambda i=image: stock(i), repeats=3), 3))
        record(f"lexicon_{label}_s", round(timed(lambda h=hires_steps: lexicon(h), repeats=3), 3))
        record(f"{label}_peak_gib", peak_gib())
        expected = (stock(image) * 255).round().astype(int)
        diff = np.abs(_pixels(lexicon(hires_steps)) - expected)
        record(f"stock_vs_lexicon_{label}_max_pixel_diff", int(diff.max()))


# --- served throughput through scheduler + worker -------------------------------------------


def bench_served(
    folder: Path, data_dir: Path, compile_mode: str, graphs: bool, users: int = 8, per_user: int = 8
) -> None:
    from bot.app import Lexicon
    from bot.config import Settings

    settings = Settings(
        model=str(folder),
        data_dir=data_dir,
        device="cuda",
        allowed_sizes=[f"{SIZE}x{SIZE}"],
        max_queued_per_user=per_user,
        max_batch=8,
        compile=compile_mode,
        cuda_graphs=graphs,
    )

    async def main() -> None:
        app = await Lexicon.open(settings)
        try:
            started = time.perf_counter()
            await app.wait_for_worker(limit_seconds=600)
            record("served_worker_start_s", round(time.perf_counter() - started, 1))
            for user in range(1, users + 1):
                await app.storage.embeddings.create(
                    user,
                    f"word{user}",
                    random_embedding(user),
                    n_vectors=1,
                    width=768,
                    family="sd1",
                    source="imported",
                )
            # warm-up batch (first-call costs are not steady-state service)
            warm = [
                (
                    await app.imagine.submit(
                        100 + u, ImagineOptions("warm up", steps=STEPS, seed=u)
                    )
                ).job.id
                for u in range(8)
            ]
            await asyncio.gather(*(app.wait_for_job(j) for j in warm))
            started = time.perf_counter()
            ids = []
            for _ in range(per_user):
                for user in range(1, users + 1):
                    submitted = await app.imagine.submit(
                        user,
                        ImagineOptions(
                            f"a photo of word{user} on a beach", steps=STEPS, guidance=GUIDANCE
                        ),
                    )
                    ids.append(submitted.job.id)
            jobs = await asyncio.gather(*(app.wait_for_job(j) for j in ids))
            seconds = time.perf_counter() - started
            ok = sum(job.state.value == "succeeded" for job in jobs)
            record("served_requests", len(ids))
            record("served_succeeded", ok)
            record("served_img_per_s", round(ok / seconds, 2))
            from bot import metrics

            worker_seconds = metrics.RUN_SECONDS.labels("generate")
            submitted_to_stored, in_worker = [], []
            for attempt in range(3):
                before = worker_seconds._sum.get()
                single = (
                    await app.imagine.submit(1, ImagineOptions(f"one alone {attempt}", steps=STEPS))
                ).job.id
                started = time.perf_counter()
                await app.wait_for_job(single)
                submitted_to_stored.append(round(time.perf_counter() - started, 3))
                # What the worker measured: job received → PNG bytes ready to send.
                in_worker.append(round(worker_seconds._sum.get() - before, 3))
            record("served_single_request_s", submitted_to_stored)
            record("served_single_worker_s", in_worker)
        finally:
            await app.close()

    asyncio.run(main())


def with_bench_cache(data_dir: Path, prefix: str) -> Path:
    """A fresh data dir (its own database) whose compile cache is the bench's shared one."""
    fresh = Path(tempfile.mkdtemp(prefix=prefix, dir=data_dir.parent))
    shared = data_dir / "compile-cache"
    shared.mkdir(parents=True, exist_ok=True)
    (fresh / "compile-cache").symlink_to(shared, target_is_directory=True)
    return fresh


def bench_startup(folder: Path, data_dir: Path, compile_mode: str, graphs: bool) -> None:
    """Worker start to ready with the bench's compile cache emptied (cold), then again (warm)."""
    import shutil

    from bot.app import Lexicon
    from bot.config import Settings

    shutil.rmtree(data_dir / "compile-cache", ignore_errors=True)
    settings = Settings(
        model=str(folder),
        data_dir=with_bench_cache(data_dir, "startup-"),
        device="cuda",
        allowed_sizes=[f"{SIZE}x{SIZE}"],
        max_batch=8,
        compile=compile_mode,
        cuda_graphs=graphs,
    )

    async def start() -> float:
        started = time.perf_counter()
        app = await Lexicon.open(settings)
        try:
            await app.wait_for_worker(limit_seconds=900)
            return time.perf_counter() - started
        finally:
            await app.close()

    record("startup_cold_s", round(asyncio.run(start()), 1))
    record("startup_warm_s", round(asyncio.run(start()), 1))


# --- textual inversion ----------------------------------------------------------------------


def photos(n: int = 4) -> list[bytes]:
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (640, 640, 3), dtype=np.uint8)).save(buffer, "PNG")
        out.append(buffer.getvalue())
    return out


def bench_stock_ti_step(folder: Path, batch: int, steps: int = 10) -> float:
    """The diffusers textual_inversion.py example's step, as that script runs it."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    tokenizer.add_tokens(["<zorb>"])
    token_id = tokenizer.convert_tokens_to_ids("<zorb>")
    text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder").cuda()
    text_encoder.resize_token_embeddings(len(tokenizer))
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=torch.float16).cuda()
    unet = UNet2DConditionModel.from_pretrained(
        folder, subfolder="unet", torch_dtype=torch.float16
    ).cuda()
    vae.requires_grad_(False)
    unet.requires_grad_(False)
    # The example freezes everything in the text encoder but the token embedding matrix
    # (transformers 5 has no `text_model` attribute to reach the sub-modules by name).
    text_encoder.requires_grad_(False)
    text_encoder.get_input_embeddings().requires_grad_(True)
    unet.train()
    text_encoder.train()
    noise_scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
    optimizer = torch.optim.AdamW(text_encoder.get_input_embeddings().parameters(), lr=2e-3)
    ids = tokenizer(
        ["a photo of a <zorb>"] * batch, padding="max_length", max_length=77, return_tensors="pt"
    ).input_ids.cuda()
    pixels = torch.randn(batch, 3, SIZE, SIZE, device="cuda", dtype=torch.float16)
    orig = text_encoder.get_input_embeddings().weight.data.clone()

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.float16):
            latents = vae.encode(pixels).latent_dist.sample().detach() * 0.18215
            noise = torch.randn_like(latents)
            timesteps = torch.randint(0, 1000, (batch,), device="cuda").long()
            noisy = noise_scheduler.add_noise(latents, noise, timesteps)
            hidden = text_encoder(ids)[0].to(torch.float16)
            pred = unet(noisy, timesteps, hidden).sample
            loss = torch.nn.functional.mse_loss(pred.float(), noise.float())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        keep = torch.ones(len(tokenizer), dtype=torch.bool)
        keep[token_id] = False
        with torch.no_grad():
            text_encoder.get_input_embeddings().weight[keep] = orig[keep]

    return batch / timed(step, repeats=steps, warmup=2)


def bench_profile(model: Any) -> None:
    """Kernel time by kind (`bench.profile`) for one image, a batch of 8 requests from 8 users,
    the default recipe's training step and the three previews that end a training."""
    from bench.profile import kernel_profile
    from bot.config import Settings
    from engine.diffusers_engine import DiffusersEngine
    from engine.generate import generate
    from engine.jobs import TrainRequest
    from engine.training import TrainRecipe
    from engine.training.previews import render_previews

    record("profile_one_image", kernel_profile(lambda: generate(model, [lexicon_request(1)])))
    batch = [lexicon_request(i, user=i) for i in range(8)]
    record("profile_batch8", kernel_profile(lambda: generate(model, batch), repeats=2))
    defaults = Settings()
    engine = DiffusersEngine(model, TrainRecipe(batch_size=defaults.train_batch))
    request = TrainRequest("zorb", tuple(photos(4)), steps=defaults.train_steps, seed=0)
    trainer = engine.start_training(request, None)
    record("profile_ti_10_steps", kernel_profile(lambda: trainer.run_steps(10), repeats=2))
    record(
        "profile_ti_previews", kernel_profile(lambda: render_previews(model, trainer), repeats=1)
    )


def bench_lexicon_ti(model: Any) -> None:
    """The product's default recipe (Settings' defaults), from 4 photos to the saved file."""
    from bot.config import Settings
    from engine.diffusers_engine import DiffusersEngine
    from engine.jobs import TrainRequest
    from engine.training import TrainRecipe

    defaults = Settings()
    engine = DiffusersEngine(model, TrainRecipe(batch_size=defaults.train_batch))
    request = TrainRequest("zorb", tuple(photos(4)), steps=defaults.train_steps, seed=0)
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.synchronize()
    started = time.perf_counter()
    trainer = engine.start_training(request, None)
    torch.cuda.synchronize()
    setup = time.perf_counter() - started
    trainer.run_steps(trainer.total)
    torch.cuda.synchronize()
    training = time.perf_counter() - started - setup
    result = trainer.finish()
    torch.cuda.synchronize()
    total = time.perf_counter() - started
    samples = trainer.total * engine.recipe.batch_size
    record("lexicon_ti_setup_s", round(setup, 2))
    record("lexicon_ti_training_s", round(training, 2))
    record("lexicon_ti_finish_s", round(total - setup - training, 2))  # previews + the file
    record("lexicon_ti_steps", trainer.total)
    record("lexicon_ti_batch", engine.recipe.batch_size)
    record("lexicon_ti_samples_per_s", round(samples / training, 1))
    record("lexicon_ti_photos_to_embedding_s", round(total, 2))
    record("lexicon_ti_previews", len(result.previews))
    record("lexicon_ti_peak_gib", peak_gib())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.environ.get("OUT", ".") + "/bench.json")
    parser.add_argument("--quick", action="store_true", help="batches 1 and 8 only")
    parser.add_argument(
        "--compile",
        default="default",
        choices=["off", "default", "reduce-overhead", "max-autotune-no-cudagraphs"],
        help="LEXICON_COMPILE for Lexicon's side (generation and the served worker)",
    )
    parser.add_argument(
        "--graphs",
        default="on",
        choices=["on", "off"],
        help="LEXICON_CUDA_GRAPHS for Lexicon's side (generation, training and the served worker)",
    )
    parser.add_argument("--skip", default="", help=f"comma list of: {','.join(SECTIONS)}")
    parser.add_argument(
        "--startup", action="store_true", help="measure worker start-up only (cold, then warm)"
    )
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    if unknown := skip - set(SECTIONS):
        parser.error(f"--skip: unknown sections {sorted(unknown)}; use {','.join(SECTIONS)}")
    if args.startup:
        skip = set(SECTIONS) - {"startup"}
    graphs = args.graphs == "on"
    if not torch.cuda.is_available():
        print("gpu_bench needs a CUDA GPU.", file=sys.stderr)
        return 2
    RESULTS_FILE.append(Path(args.out))
    torch._dynamo.config.recompile_limit = 64  # stock and Lexicon compile the same UNet code
    record("gpu", torch.cuda.get_device_name())
    record("torch", torch.__version__)
    batches = [1, 8] if args.quick else [1, 4, 8, 16]
    work = Path(tempfile.gettempdir()) / "lexicon-bench"
    folder = build_sd15(work / "sd15-random")
    data_dir = work / "data"
    stock_image = lexicon_image = model = None

    section = partial(run_section, skip)

    try:
        section("flops", lambda: count_unet_flops(folder))
        stock_image = section("stock", lambda: bench_stock(folder, batches))
        section("stock_compiled", lambda: bench_stock_compiled(folder))
        both = section(
            "lexicon", lambda: bench_lexicon(folder, batches, data_dir, args.compile, graphs)
        )
        if both is not None:
            model, lexicon_image = both
            section("profile", lambda: bench_profile(model))
        if stock_image is not None and lexicon_image is not None:
            diff = np.abs(stock_image.astype(int) - lexicon_image.astype(int))
            record("stock_vs_lexicon_max_pixel_diff", int(diff.max()))
            record("stock_vs_lexicon_mean_pixel_diff", round(float(diff.mean()), 3))
        for batch in (1, 8):
            value = section("ti", lambda b=batch: bench_stock_ti_step(folder, b))
            if value is not None:
                record(f"stock_ti_step_batch{batch}_samples_per_s", round(value, 1))
        if model is None and "ti" not in skip:  # training alone: the default engine's graphs
            from engine.model import load_model
            from engine.speed import apply_speedups

            model = load_model(str(folder), device="cuda", data_dir=data_dir)
            apply_speedups(model, "off", graphs, data_dir)  # training runs the uncompiled UNet
        section("ti", lambda: bench_lexicon_ti(model))
        model = None
        torch.cuda.empty_cache()
        section("img2img", lambda: bench_img2img(folder, data_dir))
        served_dir = with_bench_cache(data_dir, "served-")  # a fresh database
        section("served", lambda: bench_served(folder, served_dir, args.compile, graphs))
        section("startup", lambda: bench_startup(folder, data_dir, args.compile, graphs))
        add_unet_tflops()
    finally:
        write_results(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
