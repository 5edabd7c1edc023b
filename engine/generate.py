"""Render a batch of compatible `/imagine` requests in one denoising loop.

Every image must come out exactly as stock diffusers' `StableDiffusionPipeline` would render it
alone with `generator=torch.Generator("cpu").manual_seed(seed + i)`, whatever else shares the
batch. That fixes three things:

- **Initial latents.** Stock draws the whole batch's latents from one generator, so image i's
  noise would depend on its neighbours. Here each image owns a CPU generator seeded `seed + i` and
  draws its own `[1, c, h, w]` latents from it, which is what stock draws for that image alone.
- **Ancestral noise.** Schedulers such as Euler a draw fresh noise every step from the same
  generator that made the latents. Passing the list of per-image generators to `scheduler.step`
  makes diffusers' `randn_tensor` draw each image's `[1, c, h, w]` noise from its own generator, in
  the same order as a lone run, so the random streams never mix.
- **Guidance.** CFG is combined per request with its own scale (`u + g·(c − u)`, the stock
  expression); a request with guidance ≤ 1 runs without an unconditional row, like stock.

Image-to-image follows stock `StableDiffusionImg2ImgPipeline` the same way: the starting image
(resized with Lanczos to the output size if it differs, A1111's "Just resize"; twice its size for
an upscale, A1111's Hires. fix with the Lanczos upscaler) is VAE-encoded once per request, and
image i samples its latent from that distribution and then its noise from its own generator
(stock's order for a lone image), noised with the scheduler's `add_noise` to the first of the
last `int(steps × strength)` timesteps (`get_timesteps`), and denoised from there.

Requests share one UNet call per step. When their prompts have different chunk counts, the
shorter conditionings are padded with zeros that an encoder attention mask hides, so no request
sees another's padding (a batch-mate's image is pixel-identical to its lone render on CPU). The
padding still costs every row cross-attention over the longest prompt, so a prompt over
`MAX_CHUNKS` is refused before anything runs.

SDXL models follow stock `StableDiffusionXLPipeline` the same way: each row also carries its
prompt's pooled embedding (`engine.encode`), and every row the six size numbers stock passes by
default — original size = target size = the output's (height, width), crop corner (0, 0) — as
the UNet's `added_cond_kwargs`. Image-to-image on SDXL follows stock
`StableDiffusionXLImg2ImgPipeline` (`requires_aesthetics_score=False`, `denoising_start=None`):
the same starting latents and timesteps as above, those same six numbers at the output size (twice
the base size for an upscale), and the image encoded by the VAE in its own dtype — for a
`force_upcast` VAE in a float16 model float32 as stock upcasts it, or bfloat16 on a GPU that
computes it (`engine.model.upcast_vae_dtype`).
"""

from __future__ import annotations

import hashlib
import inspect
import io
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from engine.embedding_files import EmbeddingFileError, check_family, read_embedding
from engine.encode import Conditioning, PromptEncoder
from engine.errors import Cancelled
from engine.graphs import bucket
from engine.jobs import (
    HIRES_SCALE,
    HIRES_UPSCALER,
    MAX_CHUNKS,
    MAX_SIDE,
    GeneratedImage,
    GenerateRequest,
    RequestError,
    too_many_chunks,
)
from engine.model import LoadedModel, scale_latents, unscale_latents
from engine.png import ImageParameters, close_deflate_pool, encode_png, format_parameters
from engine.previews import preview_png
from engine.schedulers import make_scheduler, sampler_label
from engine.threads import RestartablePool

# Pixels per VAE decode call: SD 1.5's 4 images at 512², one SDXL image at 1024². Smaller calls
# cost the GPU little at these sizes (docs/BENCHMARKS.md) and leave fewer PNGs to encode after
# the last one.
DECODE_PIXELS = 4 * 512 * 512
_PNG_POOL = RestartablePool(8, "png")

StepCallback = Callable[[int, int, torch.Tensor], bool | None]
PreviewCallback = Callable[[int, int, list[bytes]], None]


class InvalidRequest(ValueError):
    """A request that cannot be rendered; the message is one user-facing sentence."""


@dataclass(frozen=True)
class _Prepared:
    request: GenerateRequest
    vectors: dict[str, torch.Tensor]  # embedding name → float32 [n, d] on CPU
    hashes: dict[str, str]  # embedding name → sha256 of the file its owner brought
    init: Image.Image | None = None  # image-to-image: the starting image at the output size


def validate_requests(model: LoadedModel, requests: Sequence[GenerateRequest]) -> list[_Prepared]:
    """Check every request (and parse its embeddings) before anything runs on the device."""
    if not requests:
        raise InvalidRequest("There is nothing to render.")
    key = requests[0].batch_key
    if any(r.batch_key != key for r in requests):
        raise InvalidRequest(
            "All requests in one batch must share size, steps and sampler (and strength)."
        )
    return [_validate(model, request) for request in requests]


def _validate(model: LoadedModel, request: GenerateRequest) -> _Prepared:
    try:
        request.check()
    except RequestError as error:
        raise InvalidRequest(str(error)) from None
    vectors: dict[str, torch.Tensor] = {}
    hashes: dict[str, str] = {}
    for payload in request.embeddings:
        if payload.name in vectors:
            raise InvalidRequest(f"The embedding {payload.name} is attached twice.")
        digest = hashlib.sha256(payload.data).hexdigest()
        if payload.sha256 and payload.sha256 != digest:  # "" = not yet stored (training previews)
            raise InvalidRequest(f"The file of embedding {payload.name} does not match its hash.")
        try:
            parsed = read_embedding(payload.data, f"{payload.name}.safetensors")
            check_family(parsed.family, parsed.width, model.family, model.hidden_size)
        except EmbeddingFileError as error:
            raise InvalidRequest(f"Embedding {payload.name}: {error}") from None
        vectors[payload.name] = parsed.joined
        hashes[payload.name] = payload.source_sha256 or digest
    _check_chunks(model, request, {name: int(v.shape[0]) for name, v in vectors.items()})
    init = _starting_image(request) if request.is_img2img else None
    return _Prepared(request, vectors, hashes, init)


def _starting_image(request: GenerateRequest) -> Image.Image:
    """The request's starting image as RGB at its output size (checked against its hash)."""
    if hashlib.sha256(request.init_image).hexdigest() != request.init_sha256:
        raise InvalidRequest("The starting image does not match its hash; submit it again.")
    try:
        with Image.open(io.BytesIO(request.init_image), formats=("PNG",)) as image:
            if image.width * image.height > MAX_SIDE * MAX_SIDE:
                raise InvalidRequest("The starting image is too large; attach a smaller one.")
            rgb = image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError):
        raise InvalidRequest("The starting image cannot be read; attach it again.") from None
    size = (request.out_width, request.out_height)
    return rgb if rgb.size == size else rgb.resize(size, Image.Resampling.LANCZOS)


def _check_chunks(model: LoadedModel, request: GenerateRequest, sizes: dict[str, int]) -> None:
    """Count chunks exactly, now that the embeddings' sizes are known (5 ms for 1500 chars)."""
    encoder = PromptEncoder(model)
    for label, text in (("prompt", request.prompt), ("negative prompt", request.negative)):
        if len(encoder.tokenize(text, sizes).chunks) > MAX_CHUNKS:
            raise InvalidRequest(str(too_many_chunks(label)))


def generate(
    model: LoadedModel,
    requests: Sequence[GenerateRequest],
    *,
    on_step: StepCallback | None = None,
    preview_every: int | None = None,
    on_preview: PreviewCallback | None = None,
    preview_after: float = 0.0,
) -> list[list[GeneratedImage]]:
    """Render `requests` (one shared `batch_key`) together; one image list per request.

    `on_step(step, total, latents)` runs after every denoising step with the whole batch's
    latents; returning True (or raising `Cancelled`) stops the run with `Cancelled`.
    Every `preview_every` steps, `on_preview(step, total, pngs)` gets one small preview PNG per
    request (its first image) — once the loop has run `preview_after` seconds: a preview costs a
    device sync and a PNG per request, which a batch done in a second has no use for.
    """
    prepared = validate_requests(model, requests)
    first = prepared[0].request
    scheduler = make_scheduler(first.sampler, model.scheduler_config)
    encoder = PromptEncoder(model)

    with torch.inference_mode():
        # 1. Encode every request's prompt and negative, each with its own embeddings.
        conditionings = encoder.encode_many(
            [(p.request.prompt, p.request.negative, p.vectors) for p in prepared]
        )
        # 2. Timesteps, then latents (the order stock uses: init_noise_sigma needs timesteps).
        scheduler.set_timesteps(first.run_steps, device=model.device)
        generators = [
            torch.Generator("cpu").manual_seed(p.request.seed + i)
            for p in prepared
            for i in range(p.request.count)
        ]
        if first.is_img2img:
            timesteps = _img2img_timesteps(scheduler, first)
            latents = _noised_latents(model, scheduler, prepared, generators, timesteps[:1])
        else:
            timesteps = scheduler.timesteps
            latents = _initial_latents(model, first, generators) * scheduler.init_noise_sigma
        # 3. Denoise.
        latents = _denoise(
            model,
            scheduler,
            timesteps,
            prepared,
            conditionings,
            latents,
            generators,
            on_step,
            preview_every,
            on_preview,
            preview_after,
        )
        # 4. Decode and encode the PNGs.
        return _package(model, prepared, conditionings, _decode(model, latents))


def _initial_latents(
    model: LoadedModel, request: GenerateRequest, generators: list[torch.Generator]
) -> torch.Tensor:
    from diffusers.utils.torch_utils import randn_tensor

    shape = (
        1,
        model.latent_channels,
        request.height // model.vae_scale_factor,
        request.width // model.vae_scale_factor,
    )
    return torch.cat(
        [
            randn_tensor(shape, generator=g, device=model.device, dtype=model.dtype)
            for g in generators
        ]
    )


def _img2img_timesteps(scheduler: Any, request: GenerateRequest) -> torch.Tensor:
    """The last `denoise_steps` timesteps, with the scheduler told where it starts (stock's
    `get_timesteps`)."""
    start = (request.run_steps - request.denoise_steps) * scheduler.order
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(start)
    return scheduler.timesteps[start:]


def _noised_latents(
    model: LoadedModel,
    scheduler: Any,
    prepared: Sequence[_Prepared],
    generators: list[torch.Generator],
    timestep: torch.Tensor,
) -> torch.Tensor:
    """Each image's starting latents: its request's image encoded once (in the VAE's dtype,
    float32 for an upcast SDXL VAE), then per image a latent sample and its noise from the
    image's own generator, noised to `timestep`."""
    from diffusers.utils.torch_utils import randn_tensor

    clean: list[torch.Tensor] = []
    noise: list[torch.Tensor] = []
    own = iter(generators)
    for p in prepared:
        assert p.init is not None
        # Stock's layout (a channels-last view of [1, h, w, 3]: it picks the conv kernels) and
        # rounding (to the model's dtype, then up to an upcast VAE's float32).
        rgb = torch.from_numpy(np.asarray(p.init, dtype=np.float32)[None] / 255.0)
        pixels = (2.0 * rgb - 1.0).permute(0, 3, 1, 2).to(model.device, model.dtype)
        pixels = pixels.to(model.vae.dtype)
        distribution = model.vae.encode(pixels).latent_dist
        for _ in range(p.request.count):
            generator = next(own)
            sample = distribution.sample(generator).to(model.dtype)
            clean.append(scale_latents(model.vae, sample))
            noise.append(
                randn_tensor(
                    clean[-1].shape, generator=generator, device=model.device, dtype=model.dtype
                )
            )
    latents = torch.cat(clean)
    return scheduler.add_noise(latents, torch.cat(noise), timestep.repeat(latents.shape[0]))


@dataclass(frozen=True)
class _Batch:
    """How the images map onto UNet rows: all cond rows first, then uncond rows of CFG images."""

    states: torch.Tensor  # [rows, L, d]
    attention_mask: torch.Tensor | None  # [rows, L] or None when all lengths match
    cfg_images: list[int]  # image index of each uncond row
    guidance: list[float]  # per image
    first_image: list[int]  # per request, the index of its first image
    # SDXL: the UNet's `added_cond_kwargs` per row, pooled embeddings and size numbers
    text_embeds: torch.Tensor | None = None  # [rows, p]
    time_ids: torch.Tensor | None = None  # [rows, 6]


def _assemble_batch(
    model: LoadedModel,
    prepared: Sequence[_Prepared],
    conditionings: Sequence[Conditioning],
) -> _Batch:
    cond_rows: list[torch.Tensor] = []
    uncond_rows: list[torch.Tensor] = []
    pooled_rows: list[torch.Tensor] = []
    pooled_uncond_rows: list[torch.Tensor] = []
    cfg_images: list[int] = []
    guidance: list[float] = []
    first_image: list[int] = []
    for p, encoded in zip(prepared, conditionings, strict=True):
        first_image.append(len(guidance))
        for _ in range(p.request.count):
            if p.request.guidance > 1:
                cfg_images.append(len(guidance))
                uncond_rows.append(encoded.uncond[0])
                if encoded.pooled_uncond is not None:
                    pooled_uncond_rows.append(encoded.pooled_uncond[0])
            cond_rows.append(encoded.cond[0])
            if encoded.pooled is not None:
                pooled_rows.append(encoded.pooled[0])
            guidance.append(p.request.guidance)
    rows = cond_rows + uncond_rows
    text_embeds, time_ids = None, None
    if model.is_sdxl:
        text_embeds = torch.stack(pooled_rows + pooled_uncond_rows)
        time_ids = _time_ids(prepared[0].request, len(rows), text_embeds)
    longest = max(r.shape[0] for r in rows)
    if all(r.shape[0] == longest for r in rows):
        return _Batch(
            torch.stack(rows), None, cfg_images, guidance, first_image, text_embeds, time_ids
        )
    states = rows[0].new_zeros(len(rows), longest, rows[0].shape[-1])
    mask = torch.zeros(len(rows), longest, dtype=states.dtype, device=states.device)
    for index, row in enumerate(rows):
        states[index, : row.shape[0]] = row
        mask[index, : row.shape[0]] = 1
    return _Batch(states, mask, cfg_images, guidance, first_image, text_embeds, time_ids)


def _time_ids(request: GenerateRequest, rows: int, like: torch.Tensor) -> torch.Tensor:
    """SDXL's micro-conditioning, stock's defaults (text-to-image and image-to-image alike):
    original size and target size the output's (height, width), crop corner (0, 0) — the same for
    every row of one batch."""
    size = (request.out_height, request.out_width)
    numbers = [*size, 0, 0, *size]
    return torch.tensor([numbers], dtype=like.dtype, device=like.device).repeat(rows, 1)


def _step_kwargs(scheduler: object, generators: list[torch.Generator]) -> dict[str, object]:
    """What stock passes to `scheduler.step`: eta=0 and the generator(s), where accepted."""
    accepted = inspect.signature(scheduler.step).parameters  # type: ignore[attr-defined]
    kwargs: dict[str, object] = {}
    if "eta" in accepted:
        kwargs["eta"] = 0.0
    if "generator" in accepted:
        kwargs["generator"] = generators
    return kwargs


def _denoise(
    model: LoadedModel,
    scheduler: object,
    timesteps: torch.Tensor,
    prepared: Sequence[_Prepared],
    conditionings: Sequence[Conditioning],
    latents: torch.Tensor,
    generators: list[torch.Generator],
    on_step: StepCallback | None,
    preview_every: int | None,
    on_preview: PreviewCallback | None,
    preview_after: float,
) -> torch.Tensor:
    started = time.monotonic()
    batch = _assemble_batch(model, prepared, conditionings)
    step_kwargs = _step_kwargs(scheduler, generators)
    total = len(timesteps)
    images = latents.shape[0]
    rows = images + len(batch.cfg_images)
    padded = bucket(rows) if model.pad_batches else rows
    states, mask = _pad(batch.states, padded), _pad(batch.attention_mask, padded)
    text_embeds, time_ids = _pad(batch.text_embeds, padded), _pad(batch.time_ids, padded)
    # On the device once: a list index would copy it from the host, and wait for the GPU, at
    # every step. Indexing (not `index_select`) keeps the latents' memory layout, as stock's cat.
    cfg_rows = torch.tensor(batch.cfg_images, dtype=torch.long, device=latents.device)
    for index, t in enumerate(timesteps):
        model_input = torch.cat([latents, latents[cfg_rows]])
        model_input = _pad(scheduler.scale_model_input(model_input, t), padded)  # type: ignore[attr-defined]
        # The UNet embeds its timestep in float32 whatever its dtype, so one dtype for every
        # sampler keeps compiled graphs and CUDA graphs to one per shape.
        timestep = t.to(torch.float32)
        if model.graphs is not None:
            prediction = model.graphs.unet(
                model_input, timestep, states, mask, text_embeds, time_ids
            )
        else:
            prediction = predict_noise(
                model.unet, model_input, timestep, states, mask, text_embeds, time_ids
            )
        prediction = prediction[:rows]
        guided = _guide(prediction[:images], prediction[images:], batch)
        output = scheduler.step(guided, t, latents, **step_kwargs, return_dict=True)  # type: ignore[attr-defined]
        before, latents = latents, output.prev_sample

        step = index + 1
        if on_step is not None and on_step(step, total, latents):
            raise Cancelled("Generation was cancelled.")
        if (
            on_preview is not None
            and preview_every
            and step % preview_every == 0
            and step < total
            and time.monotonic() - started >= preview_after
        ):
            estimate = _denoised_estimate(scheduler, output, before, guided, t)
            on_preview(step, total, [preview_png(estimate[i]) for i in batch.first_image])
    return latents


def _pad(rows: torch.Tensor | None, size: int) -> Any:
    """`rows` with zero rows appended up to `size` (rows are independent in UNet and VAE)."""
    if rows is None or rows.shape[0] == size:
        return rows
    return torch.cat([rows, rows.new_zeros(size - rows.shape[0], *rows.shape[1:])])


def _guide(cond: torch.Tensor, uncond: torch.Tensor, batch: _Batch) -> torch.Tensor:
    """Classifier-free guidance per image, with the stock expression and scale."""
    if not batch.cfg_images:
        return cond
    guided = cond.clone()
    for row, image in enumerate(batch.cfg_images):
        u, c = uncond[row : row + 1], cond[image : image + 1]
        guided[image : image + 1] = u + batch.guidance[image] * (c - u)
    return guided


def _denoised_estimate(
    scheduler: object, output: object, latents: torch.Tensor, eps: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """The scheduler's x0 estimate, or the variance-preserving formula where it gives none."""
    estimate = getattr(output, "pred_original_sample", None)
    if estimate is not None:
        return estimate
    alpha = scheduler.alphas_cumprod[int(t)].to(latents.device, torch.float32)  # type: ignore[attr-defined]
    return (latents.float() - (1 - alpha).sqrt() * eps.float()) / alpha.sqrt()


def predict_noise(
    unet: Any,
    sample: torch.Tensor,
    timestep: torch.Tensor,
    states: torch.Tensor,
    mask: torch.Tensor | None,
    text_embeds: torch.Tensor | None = None,
    time_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """One UNet call of the denoising loop (what `engine.graphs` records per shape); SDXL's
    UNet also takes the pooled embeddings and size numbers."""
    added = None if text_embeds is None else {"text_embeds": text_embeds, "time_ids": time_ids}
    return unet(
        sample,
        timestep,
        encoder_hidden_states=states,
        encoder_attention_mask=mask,
        added_cond_kwargs=added,
        return_dict=False,
    )[0]


def decode_pixels(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents → uint8 `[n, h, w, 3]` on the device, rounded exactly as stock's PIL
    conversion (`(x / 2 + 0.5).clamp(0, 1)`, then ×255 and round-half-even in float32)."""
    pixels = vae.decode(latents, return_dict=False)[0]
    rgb = (pixels / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float()
    return (rgb * 255).round().to(torch.uint8)


def decode_batch(height: int, width: int) -> int:
    """Images per VAE decode call at `height` × `width`: as many as `DECODE_PIXELS` holds, down
    to a power of two (the shapes compiled graphs are built for), and at least one."""
    fits = max(1, DECODE_PIXELS // (height * width))
    return 1 << (fits.bit_length() - 1)


def _decode(model: LoadedModel, latents: torch.Tensor) -> Iterator[torch.Tensor]:
    """Latents → uint8 `[k, h, w, 3]` on CPU, `decode_batch` images at a time: lazily, so the
    caller encodes one chunk's PNGs while the GPU decodes the next."""
    height, width = (side * model.vae_scale_factor for side in latents.shape[-2:])
    size = decode_batch(height, width)
    for start in range(0, latents.shape[0], size):
        part = unscale_latents(model.vae, latents[start : start + size])
        count = part.shape[0]
        if model.pad_batches:
            part = _pad(part, bucket(count))
        if model.graphs is not None:
            yield model.graphs.decode(part)[:count].cpu()
        else:
            yield decode_pixels(model.vae, part)[:count].cpu()


def close_png_pool() -> None:
    """Stop the PNG encoder threads (an engine's close: they must not outlive the interpreter);
    a later generation starts new ones."""
    _PNG_POOL.close()
    close_deflate_pool()


def _package(
    model: LoadedModel,
    prepared: Sequence[_Prepared],
    conditionings: Sequence[Conditioning],
    chunks: Iterable[torch.Tensor],
) -> list[list[GeneratedImage]]:
    """Each image's PNG, with its A1111 parameters, from the decoded `chunks` in batch order.
    zlib releases the GIL, so the PNGs encode in parallel on the pool's threads, each chunk's
    while the next chunk decodes."""
    jobs: list[tuple[int, int, str]] = []  # (request, image index, parameters text)
    for number, (p, encoded) in enumerate(zip(prepared, conditionings, strict=True)):
        request = p.request
        ti_hashes: Mapping[str, str] = {
            name: p.hashes[name][:12] for name in sorted(encoded.used_embeddings)
        }
        for i in range(request.count):
            parameters = ImageParameters(
                prompt=request.prompt,
                negative=request.negative,
                steps=request.steps,
                sampler=sampler_label(request.sampler),
                cfg_scale=request.guidance,
                seed=request.seed + i,
                width=request.width,
                height=request.height,
                model_hash=model.checkpoint_hash,
                model_name=model.name,
                ti_hashes=ti_hashes,
                denoising_strength=request.strength if request.is_img2img else None,
                hires_upscale=HIRES_SCALE if request.hires_steps else None,
                hires_steps=request.hires_steps or None,
                hires_upscaler=HIRES_UPSCALER if request.hires_steps else "",
            )
            jobs.append((number, i, format_parameters(parameters)))
    pixels = (image.numpy() for chunk in chunks for image in chunk)
    encoding = [
        _PNG_POOL.submit(encode_png, image, text)
        for image, (_number, _i, text) in zip(pixels, jobs, strict=True)
    ]
    pngs = [future.result() for future in encoding]
    results: list[list[GeneratedImage]] = [[] for _ in prepared]
    for (number, i, _text), png in zip(jobs, pngs, strict=True):
        request = prepared[number].request
        results[number].append(GeneratedImage(index=i, seed=request.seed + i, png=png))
    return results
