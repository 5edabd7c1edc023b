"""The content-addressed file store: `<root>/<kind>/<ab>/<sha256><suffix>`.

A file's name is the sha256 of its bytes, so no user-supplied string ever becomes a path, equal
content is stored once, and writing the same bytes twice is a no-op. A file is written to a temp
file in its final folder, fsynced, renamed into place and the folder fsynced — all before the
row that names it commits — so a crash leaves at worst an orphan file (removed by the start-up
sweep), never a row without its file. The methods are synchronous: async callers run them in a
thread (`asyncio.to_thread`), as the repositories do.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from storage.errors import FileStoreError, InvalidFileId, NotFound
from storage.models import FileKind

TEMP_PREFIX = ".tmp-"
_SHA256 = re.compile(r"[0-9a-f]{64}", re.ASCII)


def disk_error(error: OSError) -> FileStoreError:
    """The sentence for a file the store could not read or write."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        sentence = "Lexicon's disk is full, so nothing was saved; try again later."
    else:
        reason = (error.strerror or "a disk error").lower()
        sentence = f"Lexicon could not read or write its files ({reason}); try again later."
    return FileStoreError(error, sentence)


@contextlib.contextmanager
def _disk() -> Iterator[None]:
    """OSErrors of the block (but a missing file, which callers handle) as `disk_error`."""
    try:
        yield
    except FileNotFoundError:
        raise
    except OSError as error:
        raise disk_error(error) from error


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_sha256(sha: str) -> str:
    """The sha itself, or InvalidFileId: only 64 lowercase hex digits may name a file."""
    if not isinstance(sha, str) or _SHA256.fullmatch(sha) is None:
        raise InvalidFileId(f"{sha!r:.80} is not a sha256 file id (64 lowercase hex digits).")
    return sha


@dataclass(frozen=True, slots=True)
class Scan:
    """What one kind's folder holds, sorted into stored files, temp leftovers and strangers."""

    files: dict[str, Path] = field(default_factory=dict)  # sha256 -> path
    temp: list[Path] = field(default_factory=list)
    foreign: list[Path] = field(default_factory=list)


class FileStore:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def path(self, kind: FileKind | str, sha: str) -> Path:
        kind = FileKind(kind)
        check_sha256(sha)
        return self.root / kind.value / sha[:2] / f"{sha}{kind.suffix}"

    def exists(self, kind: FileKind | str, sha: str) -> bool:
        return self.path(kind, sha).is_file()

    def read(self, kind: FileKind | str, sha: str) -> bytes:
        path = self.path(kind, sha)
        try:
            with _disk():
                return path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"The stored file {sha[:12]}… is missing from {kind}.") from None

    def put(self, kind: FileKind | str, data: bytes) -> str:
        """Store `data` durably and return its sha256; storing existing content changes nothing."""
        sha = sha256_of(data)
        target = self.path(kind, sha)
        if target.is_file():
            return sha
        temp = target.parent / f"{TEMP_PREFIX}{secrets.token_hex(8)}"
        with _disk():
            _make_dirs_durably(target.parent)
            try:
                with open(temp, "xb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temp, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    temp.unlink()
                raise
            _fsync_dir(target.parent)
        return sha

    def remove(self, kind: FileKind | str, sha: str) -> bool:
        """Delete one stored file; True if it was there."""
        path = self.path(kind, sha)
        try:
            with _disk():
                path.unlink()
        except FileNotFoundError:
            return False
        return True

    def scan(self, kind: FileKind | str) -> Scan:
        kind = FileKind(kind)
        scan = Scan()
        for path in self._walk(self.root / kind.value):
            sha = path.name.removesuffix(kind.suffix)
            if path.name.startswith(TEMP_PREFIX):
                scan.temp.append(path)
            elif (
                path.name.endswith(kind.suffix)
                and _SHA256.fullmatch(sha)
                and path.parent.name == sha[:2]
            ):
                scan.files[sha] = path
            else:
                scan.foreign.append(path)
        return scan

    @staticmethod
    def _walk(folder: Path) -> Iterator[Path]:
        if not folder.is_dir():
            return
        for shard in sorted(folder.iterdir()):
            if shard.is_dir():
                yield from sorted(p for p in shard.iterdir() if p.is_file())
            elif shard.is_file():
                yield shard


def _fsync_dir(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _make_dirs_durably(folder: Path) -> None:
    """mkdir -p, fsyncing each parent whose entries changed so the new folders survive a crash."""
    missing: list[Path] = []
    current = folder
    while not current.is_dir():
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            path.mkdir()
        _fsync_dir(path.parent)
