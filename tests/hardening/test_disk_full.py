"""Disk full (ENOSPC) while a file is written: a sentence, no row without its file, no partial
file. The fault is injected at the file store's write (its `open`), never inside SQLite."""

from __future__ import annotations

import builtins
import errno
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import storage.files
from storage.maintenance import check
from storage.models import FileKind
from tests.e2e.conftest import photo_options, refusal
from tests.hardening import hostile_files as hostile
from tests.hardening.conftest import stored, stored_files
from tests.simulation import Simulation


class _FullDisk:
    """A file that takes the first half of what is written, then fails with ENOSPC."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def write(self, data: bytes) -> int:
        self._handle.write(data[: len(data) // 2])
        self._handle.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()


FillDisk = Callable[..., list[Path]]


@pytest.fixture
def fill_disk(monkeypatch: pytest.MonkeyPatch) -> FillDisk:
    """`fill_disk(kind, after=n)`: the file store's writes of `kind` fail half-way from the
    (n+1)-th on; returns the list of paths it cut short."""

    def install(kind: FileKind, after: int = 0) -> list[Path]:
        cut: list[Path] = []
        seen = [0]

        def full_open(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            handle = builtins.open(path, mode, *args, **kwargs)  # noqa: SIM115 (returned)
            if kind.value in Path(path).parts and ("w" in mode or "x" in mode):
                seen[0] += 1
                if seen[0] > after:
                    cut.append(Path(path))
                    return _FullDisk(handle)
            return handle

        monkeypatch.setattr(storage.files, "open", full_open, raising=False)
        return cut

    return install


async def test_disk_full_while_an_imported_embedding_is_written(
    sim: Simulation, fill_disk: FillDisk
) -> None:
    """/embeddings import on a full disk: one sentence, no row, no partial or temp file."""
    cut = fill_disk(FileKind.EMBEDDINGS)
    alice = sim.member("alice")
    before = await stored(sim.app)
    result = await alice.slash(
        sim.channel,
        "embeddings import",
        file=("w.safetensors", hostile.good_embedding()),
        name="zorb",
    )
    assert refusal(result) == (
        "Lexicon could not save the embedding (no space left on device), so nothing was "
        "stored; try again later."
    )
    assert len(cut) == 1 and not cut[0].exists()  # the half-written temp file was removed
    assert await stored(sim.app) == before


async def test_disk_full_while_a_trained_embedding_is_stored(
    sim: Simulation, fill_disk: FillDisk
) -> None:
    """The store call a finished training makes: it raises, and leaves no row and no file."""
    cut = fill_disk(FileKind.EMBEDDINGS)
    with pytest.raises(OSError) as raised:
        await sim.app.storage.embeddings.create(
            1,
            "zorb",
            hostile.good_embedding(),
            n_vectors=2,
            width=32,
            family="tiny",
            source="trained",
        )
    assert raised.value.errno == errno.ENOSPC
    assert len(cut) == 1 and not cut[0].exists()
    assert (await stored(sim.app)).embeddings == 0
    assert stored_files(sim.settings.data_dir) == frozenset()


async def test_disk_full_while_training_photos_are_stored(
    sim: Simulation, fill_disk: FillDisk
) -> None:
    """The disk fills after the first photo: a sentence, no job; the sweep clears the rest."""
    cut = fill_disk(FileKind.PHOTOS, after=1)
    alice = sim.member("alice")
    result = await alice.slash(sim.channel, "train", name="zorb", **photo_options())
    assert refusal(result) == (
        "Lexicon could not save the photos (no space left on device), so nothing was stored; "
        "try again later."
    )
    assert len(cut) == 1 and not cut[0].exists()
    after = await stored(sim.app)
    assert (after.jobs, after.embeddings) == (0, 0)
    assert not [name for name in after.files if ".tmp-" in name]  # nothing partial
    report = await sim.app.storage.sweep()  # what the next start-up does
    assert len(report.removed_orphans) == len(after.files) <= 1
    assert (await check(sim.app.storage.db, sim.app.storage.files)).ok
