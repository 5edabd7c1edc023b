"""Helpers shared by the offline subcommands: open the app, show progress, map errors."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from bot.cli import CommandError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    from bot.app import Lexicon
    from storage.models import Job

T = TypeVar("T")
Options = TypeVar("Options", bound="DataclassInstance")


def run(main: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine, turning every user-facing error into a one-sentence CommandError."""
    from bot.app import WorkerUnavailable
    from bot.config import StartupError
    from bot.services import ServiceError
    from storage.errors import StorageError

    try:
        return asyncio.run(main())  # type: ignore[arg-type]
    except (ServiceError, StorageError, WorkerUnavailable) as error:
        raise CommandError(str(error)) from None
    except StartupError:
        raise


@contextlib.asynccontextmanager
async def open_app(*, start_worker: bool = True) -> AsyncIterator[Lexicon]:
    """The app as every offline subcommand opens it: settings from the environment, quiet logs;
    without `start_worker` the GPU is left alone (for commands that only read the library)."""
    from bot.app import Lexicon
    from bot.config import load_settings
    from bot.logging_setup import configure_logging

    settings = load_settings()
    configure_logging("WARNING")
    async with await Lexicon.open(settings, start_worker=start_worker) as app:
        yield app


def options_from(cls: type[Options], args: argparse.Namespace, **given: Any) -> Options:
    """A service's options from the parsed arguments named like its fields, and `given` for
    those the command line holds in another form (a path for the file's bytes, `--shared`)."""
    parsed = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)
    }
    return cls(**{**parsed, **given})


class ProgressBar:
    """A one-line progress bar on a terminal; silent when stderr is not one."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.enabled = sys.stderr.isatty()

    def update(self, step: int, total: int, note: str = "") -> None:
        if not self.enabled or total <= 0:
            return
        width = 30
        filled = int(width * step / total)
        bar = "#" * filled + "-" * (width - filled)
        sys.stderr.write(f"\r{self.label} [{bar}] {step}/{total} {note}".ljust(79))
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


async def wait_for_success(app: Lexicon, job_id: int, label: str) -> Job:
    """Wait for the worker, then for the job while drawing its progress; returns the succeeded
    Job, or raises a CommandError with the job's own error sentence."""
    from storage.models import JobState

    await app.wait_for_worker()
    bar = ProgressBar(label)
    waiter = asyncio.ensure_future(app.wait_for_job(job_id))
    with app.hub.subscribe() as updates:
        while not waiter.done():
            getter = asyncio.ensure_future(updates.get())
            await asyncio.wait({waiter, getter}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                update = getter.result()
                if update.job_id == job_id and update.step is not None and update.total:
                    note = f"loss {update.loss:.4f}" if update.loss is not None else ""
                    bar.update(update.step, update.total, note)
            else:
                getter.cancel()
    bar.done()
    job = waiter.result()
    if job.state is not JobState.SUCCEEDED:
        raise CommandError(job.error or f"the job was {job.state.value}.")
    return job


def read_file(name: str) -> bytes:
    """The bytes of a file named on the command line, or one sentence why not."""
    path = Path(name)
    if not path.is_file():
        raise CommandError(f"{name} is not a file.")
    try:
        return path.read_bytes()
    except OSError as error:
        raise CommandError(f"{name} cannot be read ({error.strerror or error}).") from None


async def save_images(app: Lexicon, job_id: int, paths: Callable[[int], list[Path]]) -> None:
    """Write a finished job's images to `paths(count)` and print each path with its seed."""
    images = await app.storage.images.list_for_job(job_id)
    for image, path in zip(images, paths(len(images)), strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(await app.storage.images.read_png(image))
        print(f"{path}  seed {image.seed}")
