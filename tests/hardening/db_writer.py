"""`python -m tests.hardening.db_writer DATA_DIR RUN`: the bot's write path in a tight loop.

It queues training jobs (three new photos each, stored inside the job's transaction), image
jobs, and embeddings, and prints `job N` / `embedding N` only after each has committed. The
bot-kill test SIGKILLs it at a random moment and then checks what the next open finds.

Each file the store renames into place waits 20 ms first (a slow disk), so a kill often lands
while a file is a temp file or stored but not yet named by a committed row — the debris the
next start-up's sweep must clear.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

from bot.app import Lexicon
from bot.services import ImagineOptions, TrainOptions
from tests.bot.conftest import make_settings, photo_bytes
from tests.hardening.hostile_files import good_embedding


def slow_renames(delay: float = 0.02) -> None:
    real_replace = os.replace

    def replace(*args: Any, **kwargs: Any) -> None:
        time.sleep(delay)
        real_replace(*args, **kwargs)

    os.replace = replace


async def write_forever(data_dir: Path, run: int) -> None:
    settings = make_settings(data_dir, "standin", engine="standin", allowed_sizes=["64x64"])
    app = await Lexicon.open(settings, start_worker=False)
    print("open", flush=True)
    index = run * 100_000  # names and users of each run are new
    while True:
        index += 1
        user = index
        photos = [(f"p{n}.png", photo_bytes(index * 3 + n, side=256)) for n in range(3)]
        job = (await app.train.submit(user, TrainOptions(f"w{index}", photos))).job
        print(f"job {job.id}", flush=True)
        job = (
            await app.imagine.submit(user, ImagineOptions(f"a cube number {index}", seed=index))
        ).job
        print(f"job {job.id}", flush=True)
        vectors = good_embedding()[:-4] + index.to_bytes(4, "little")  # a new file each time
        embedding = await app.storage.embeddings.create(
            user, f"e{index}", vectors, n_vectors=2, width=32, family="tiny", source="imported"
        )
        print(f"embedding {embedding.id}", flush=True)


if __name__ == "__main__":
    slow_renames()
    asyncio.run(write_forever(Path(sys.argv[1]), int(sys.argv[2])))
