"""One Lexicon process per data dir: an exclusive `flock` on `<data dir>/lexicon.lock`.

The app core (the bot, and the CLI's `train`, `imagine` and `embeddings`) requeues running jobs,
sweeps files and dispatches work as if it were alone, so a second one on the same data dir
would steal the first one's jobs. The lock is the kernel's: it is released when the holder
closes it or dies (even by SIGKILL), so a stale lock file never blocks a restart. The file holds
the holder's pid, only to name it in the refusal. `lexicon db check` and `db backup` do not take
it: they only read.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from storage.errors import AlreadyRunning, StorageError

LOCK_FILENAME = "lexicon.lock"


class DataDirLock:
    """The held lock; `release()` (or the process ending) lets the next holder in."""

    def __init__(self, path: Path, descriptor: int) -> None:
        self.path = path
        self._descriptor: int | None = descriptor

    @classmethod
    def acquire(cls, data_dir: Path) -> DataDirLock:
        """Take the lock or raise `AlreadyRunning` with the holder's pid."""
        path = Path(data_dir) / LOCK_FILENAME
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as error:
            raise StorageError(
                f"Lexicon could not create its lock file {path} ({error.strerror}); give its "
                "user write access to the data folder."
            ) from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(descriptor)
            os.close(descriptor)
            raise AlreadyRunning(
                f"Lexicon is already running on this data folder (pid {holder}); stop it first "
                "or use a different LEXICON_DATA_DIR."
            ) from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        return cls(path, descriptor)

    def release(self) -> None:
        if self._descriptor is None:
            return
        descriptor, self._descriptor = self._descriptor, None
        with contextlib.suppress(OSError):
            os.ftruncate(descriptor, 0)
        os.close(descriptor)  # closing the only descriptor releases the flock


def _read_pid(descriptor: int) -> str:
    text = os.pread(descriptor, 32, 0).decode("ascii", "replace").strip()
    return text if text.isdigit() else "unknown"
