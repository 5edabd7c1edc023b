"""`lexicon upscale PNG`: Upscale ×2 of an image this Lexicon made, as the bot's button does.

The PNG is found in the data dir by its bytes (sha256), so the upscale uses the very request
that made it (prompt, seed, steps, embeddings), not a re-reading of its text chunk.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("png", help="a PNG Lexicon rendered (from `lexicon imagine` or Discord)")
    parser.add_argument("--out", help="output PNG path (default: PNG's name with -upscaled)")
    parser.add_argument("--user", type=int, default=0, help="whose embeddings to use (default 0)")


def main(args: argparse.Namespace) -> int:
    from bot.commands._runner import run

    return run(lambda: _upscale(args))


async def _upscale(args: argparse.Namespace) -> int:
    from bot.commands._runner import open_app, read_file, save_images, wait_for_success

    sha = hashlib.sha256(read_file(args.png)).hexdigest()
    source = Path(args.png)
    out = Path(args.out) if args.out else source.with_name(f"{source.stem}-upscaled.png")
    async with open_app() as app:
        image = await app.storage.images.find(sha)
        submitted = await app.imagine.upscale(args.user, image.job_id, image.idx)
        await wait_for_success(app, submitted.job.id, "upscale")
        await save_images(app, submitted.job.id, lambda count: [out])
    return 0
