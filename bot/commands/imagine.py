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
    parser.add_argument("--user", type=int, default=0, help="whose embeddings to use (default 0)")
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
    from bot.app import Lexicon
    from bot.commands._runner import wait_for_success
    from bot.config import load_settings
    from bot.logging_setup import configure_logging
    from bot.services import ImagineOptions

    settings = load_settings()
    configure_logging("WARNING")
    async with await Lexicon.open(settings) as app:
        submitted = await app.imagine.submit(
            args.user,
            ImagineOptions(
                args.prompt,
                negative=args.negative,
                count=args.count,
                steps=args.steps,
                guidance=args.guidance,
                seed=args.seed,
                size=args.size,
                sampler=args.sampler,
            ),
        )
        await wait_for_success(app, submitted.job.id, "imagine")
        images = await app.storage.images.list_for_job(submitted.job.id)
        paths = output_paths(Path(args.out), len(images))
        for image, path in zip(images, paths, strict=True):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(await app.storage.images.read_png(image))
            print(f"{path}  seed {image.seed}")
    return 0
