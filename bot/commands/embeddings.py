"""`lexicon embeddings list|import|export|share`."""

from __future__ import annotations

import argparse
from pathlib import Path

# The worker `import` starts loads (and may compile) its model before it reports the family
# the file is checked against.
WORKER_WAIT_SECONDS = 600.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="list a user's embeddings")
    listing.add_argument("--user", type=int, default=0)
    imported = actions.add_parser("import", help="import an embedding file")
    imported.add_argument("file", help=".safetensors, .pt or .bin embedding file")
    imported.add_argument("--name", required=True)
    imported.add_argument("--negative", action="store_true", help="a negative embedding")
    imported.add_argument("--shared", action="store_true", help="share it in the library")
    imported.add_argument("--user", type=int, default=0)
    exported = actions.add_parser("export", help="write an embedding to a file")
    exported.add_argument("name")
    exported.add_argument(
        "--out", required=True, help=".safetensors (Lexicon's file) or .pt/.bin (A1111's layout)"
    )
    exported.add_argument("--user", type=int, default=0)
    shared = actions.add_parser("share", help="share an embedding in the library")
    shared.add_argument("name")
    shared.add_argument("--user", type=int, default=0)


def main(args: argparse.Namespace) -> int:
    from bot.commands._runner import run

    return run(lambda: _embeddings(args))


async def _embeddings(args: argparse.Namespace) -> int:
    from bot.cli import CommandError
    from bot.commands._runner import open_app
    from storage.models import Actor

    # Only import needs the worker (to check the file against the loaded model's family).
    async with open_app(start_worker=args.action == "import") as app:
        library = app.library
        if args.action == "list":
            embeddings = await library.list_owned(args.user)
            if not embeddings:
                print(f"user {args.user} has no embeddings")
            for e in embeddings:
                print(
                    f"{e.name:<32} {e.kind.value:<8} {e.visibility.value:<7} "
                    f"{e.n_vectors} vector(s)  {e.family.value}  {e.source.value}  "
                    f"used {e.use_count}x"
                )
        elif args.action == "import":
            path = Path(args.file)
            if not path.is_file():
                raise CommandError(f"{args.file} is not a file.")
            embedding = await library.import_file(
                Actor(args.user, is_manager=True),
                path.name,
                path.read_bytes(),
                args.name,
                negative=args.negative,
                share=args.shared,
                worker_wait=WORKER_WAIT_SECONDS,
            )
            print(
                f"imported '{embedding.name}' ({embedding.n_vectors} vector(s), "
                f"{embedding.kind.value}, {embedding.visibility.value}) for user {args.user}"
            )
        elif args.action == "export":
            out = Path(args.out)
            operator = Actor(args.user, is_manager=True)
            _, data = await library.export(operator, args.name, out.suffix.lower())
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(data)
            layout = "safetensors" if out.suffix.lower() == ".safetensors" else "A1111 .pt layout"
            print(f"wrote {out} ({len(data)} bytes, {layout}; loads in A1111, kohya and diffusers)")
        elif args.action == "share":
            embedding = await library.share(Actor(args.user, is_manager=True), args.name)
            print(f"'{embedding.name}' is now shared in the operator's library (every server)")
    return 0
