"""Everything Lexicon knows: one SQLite database (aiosqlite) plus content-addressed files.

Only the standard library and aiosqlite are imported here — never torch, never discord — so the
bot process stays light. Start from `Storage.open(data_dir)`; the names below are the API.
"""

from storage.db import Database, Transaction
from storage.embeddings import EmbeddingRepository
from storage.errors import (
    AlreadyRunning,
    DatabaseCorrupt,
    DatabaseEmpty,
    DatabaseReadOnly,
    EmbeddingNotFound,
    FileStoreError,
    Forbidden,
    InvalidFileId,
    InvalidName,
    JobFinished,
    LeaseLost,
    NameTaken,
    NotFound,
    QuotaExceeded,
    SchemaTooNew,
    StorageBusy,
    StorageError,
    StorageFull,
    StorageUnavailable,
    TooManyEmbeddings,
)
from storage.facade import Storage, files_root
from storage.files import FileStore
from storage.guilds import GuildSettingsRepository
from storage.images import ImageRepository
from storage.jobs import Cancellation, JobRepository, Lease
from storage.maintenance import CheckReport, SweepReport, backup, backup_database, check, sweep
from storage.model_reports import ModelReport, ModelReportRepository
from storage.models import (
    Actor,
    Delivery,
    Embedding,
    EmbeddingKind,
    EmbeddingSource,
    Family,
    FileKind,
    GuildSettings,
    Image,
    Job,
    JobKind,
    JobProgress,
    JobState,
    NewImage,
    Visibility,
)
from storage.names import NameRules, parse_name
from storage.users import UserRepository

__all__ = [
    "Actor",
    "AlreadyRunning",
    "Cancellation",
    "CheckReport",
    "Database",
    "DatabaseCorrupt",
    "DatabaseEmpty",
    "DatabaseReadOnly",
    "Delivery",
    "Embedding",
    "EmbeddingKind",
    "EmbeddingNotFound",
    "EmbeddingRepository",
    "EmbeddingSource",
    "Family",
    "FileKind",
    "FileStore",
    "FileStoreError",
    "Forbidden",
    "GuildSettings",
    "GuildSettingsRepository",
    "Image",
    "ImageRepository",
    "InvalidFileId",
    "InvalidName",
    "Job",
    "JobFinished",
    "JobKind",
    "JobProgress",
    "JobRepository",
    "JobState",
    "Lease",
    "LeaseLost",
    "ModelReport",
    "ModelReportRepository",
    "NameRules",
    "NameTaken",
    "NewImage",
    "NotFound",
    "QuotaExceeded",
    "SchemaTooNew",
    "Storage",
    "StorageBusy",
    "StorageError",
    "StorageFull",
    "StorageUnavailable",
    "SweepReport",
    "TooManyEmbeddings",
    "Transaction",
    "UserRepository",
    "Visibility",
    "backup",
    "backup_database",
    "check",
    "files_root",
    "parse_name",
    "sweep",
]
