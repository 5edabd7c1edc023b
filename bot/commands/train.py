"""`lexicon train PHOTO… --name NAME`: train an embedding offline, stored as the bot would."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("photos", nargs="+", metavar="PHOTO", help="3 to 5 photos of the concept")
    parser.add_argument("--name", required=True, help="the new word, e.g. zorb")
    parser.add_argument("--kind", choices=["object", "style", "face"], default="object")
    parser.add_argument("--init-word", help="word the vectors start from (default: by kind)")
    parser.add_argument("--vectors", type=int, help="number of vectors, 1-8 (default 1)")
    parser.add_argument("--steps", type=int, help="training steps (default LEXICON_TRAIN_STEPS)")
    parser.add_argument("--user", type=int, default=0, help="owner's Discord user id (default 0)")
    parser.add_argument("--shared", action="store_true", help="share it in the library")
    parser.add_argument("--model", help="a name from LEXICON_MODELS (default: the first)")


def main(args: argparse.Namespace) -> int:
    from bot.commands._runner import run

    return run(lambda: _train(args))


async def _train(args: argparse.Namespace) -> int:
    from bot.commands._runner import open_app, options_from, read_file, wait_for_success
    from bot.services import TrainOptions

    options = options_from(
        TrainOptions,
        args,
        photos=[(Path(name).name, read_file(name)) for name in args.photos],
        share=args.shared,
    )
    async with open_app() as app:
        submitted = await app.train.submit(args.user, options)
        await wait_for_success(app, submitted.job.id, "train")
        embedding = await app.library.info(args.user, args.name)
        print(
            f"trained '{embedding.name}' ({embedding.n_vectors} vector(s), {embedding.family}) "
            f"for user {args.user}; use it in a prompt: lexicon imagine 'a photo of "
            f"{embedding.name_folded}' --user {args.user}"
        )
    return 0
