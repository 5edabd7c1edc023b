"""Every failure storage reports on purpose is a `StorageError` whose message is one sentence.

The sentence is written for the person who caused it (a Discord user or an operator), so the
layers above can show it as it is. Anything that is not a `StorageError` is a bug.
"""

from __future__ import annotations

from typing import Literal


class StorageError(Exception):
    """A refusal or failure the user or operator can understand; the message is one sentence."""


class SchemaTooNew(StorageError):
    """The database was written by a newer Lexicon than this one."""


class StorageBusy(StorageError):
    """Another process held the database's write lock for longer than the busy timeout."""


class InvalidName(StorageError):
    """A proposed embedding name breaks the naming rule or is a word the model already knows."""


class NameTaken(StorageError):
    """The owner already has that name, or the shared library already has it."""


class NotFound(StorageError):
    """Nothing by that id or name is visible to the one asking (existence is never leaked)."""


class EmbeddingNotFound(NotFound):
    """No embedding of that name is visible to the one asking. `searched` says where storage
    looked, so a front end can point to the right list: "own", "shared" or "either"."""

    def __init__(self, message: str, searched: Literal["own", "shared", "either"]) -> None:
        super().__init__(message)
        self.searched = searched


class Forbidden(StorageError):
    """The one asking can see the thing but is not allowed to change it."""


class JobFinished(StorageError):
    """The job has already reached a final state, so it cannot be changed any more."""


class LeaseLost(StorageError):
    """A worker reported on a job it no longer holds (lease expired, job requeued or cancelled)."""


class InvalidFileId(StorageError):
    """A file id is not a 64-character lowercase sha256, so it can never name a stored file."""


class QuotaExceeded(StorageError):
    """A per-user limit checked atomically with the write it guards."""


class TooManyEmbeddings(QuotaExceeded):
    """A member already keeps (or is training) as many embeddings as one member may."""


class StorageUnavailable(StorageError):
    """The disk or the database failed (full, I/O error, read-only, damaged): nothing was saved,
    and the same request may succeed once the operator has fixed the disk."""


class StorageFull(StorageUnavailable):
    """The disk (or SQLite's page limit) is full."""


class DatabaseReadOnly(StorageUnavailable):
    """The database file or its folder cannot be written."""


class DatabaseCorrupt(StorageUnavailable):
    """The database file is not a SQLite database, or SQLite found it damaged."""


class FileStoreError(StorageUnavailable, OSError):
    """The file store's disk failed; still an `OSError` (with its errno) for callers that ask."""

    def __init__(self, error: OSError, sentence: str) -> None:
        OSError.__init__(self, error.errno, error.strerror)
        self.sentence = sentence

    def __str__(self) -> str:
        return self.sentence


class DatabaseEmpty(StorageError):
    """The database has no schema but the files folder holds files: starting would delete them."""


class AlreadyRunning(StorageError):
    """Another Lexicon process holds the data dir's lock."""
