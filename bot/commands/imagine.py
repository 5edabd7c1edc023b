"""`lexicon imagine PROMPT`: render a prompt offline through the same path as the bot."""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.jobs import DEFAULT_SAMPLER, SAMPLERS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help="the prompt; stored embedding names may appear in it")
    parser.add_argument("--negative", default="", help="negative prompt")
    parser.add_argument("--seed", type=int, help="seed (default: random)")
    parser.add_argument("--steps", type=int, help="denoising steps (default LEXICON_DEFAULT_STEPS)")
    parser.add_argument("--guidance", type=float, default=7.5, help="CFG scale (default 7.5)")
    parser.add_argument("--size", help="WIDTHxHEIGHT (default: the first of LEXICON_ALLOWED_SIZES)")
    parser.add_argument("--sampler", choices=SAMPLERS, default=DEFAULT_SAMPLER, help="sampler name")
    parser.add_argument("--count", type=int, default=1, help="images to render, 1-4")
    parser.add_argument("--image", help="a starting image (image-to-image): PNG, JPEG or WebP")
    parser.add_argument(
        "--strength", type=float, help="how far to move from --image, 0.05-1 (default 0.75)"
    )
    parser.add_argument("--user", type=int, default=0, help="whose embeddings to use (default 0)")
    parser.add_argument("--model", help="a name from LEXICON_MODELS (default: the first)")
    parser.add_argument("--out", default="image.png", help="output PNG path")


def output_paths(out: Path, count: int) -> list[Path]:
    """PATH for one image; PATH with -0, -1 … before the suffix for several."""
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{i}{out.suffix or '.png'}") for i in range(count)]


def main(args: argparse.Namespace) -> int:
    from bot.commands._runner import run

    return run(lambda: _imagine(args))


async def _imagine(args: argparse.Namespace) -> int:
    from bot.commands._runner import (
        open_app,
        options_from,
        read_file,
        save_images,
        wait_for_success,
    )
    from bot.services import ImagineOptions

    options = options_from(
        ImagineOptions,
        args,
        image=None if args.image is None else read_file(args.image),
        image_name="" if args.image is None else Path(args.image).name,
    )
    async with open_app() as app:
        submitted = await app.imagine.submit(args.user, options)
        await wait_for_success(app, submitted.job.id, "imagine")
        await save_images(app, submitted.job.id, lambda count: output_paths(Path(args.out), count))
    return 0
