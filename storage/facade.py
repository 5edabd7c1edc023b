"""`Storage`: the database, the file store and every repository, opened and closed together.

The bot's `setup_hook` (and the offline CLI) open one `Storage` and hand it to the services;
`close()` releases what `open()` took. Opening refuses an empty database beside stored files
(`refuse_empty_database`) before anything is created, so a lost database is never "migrated"
into a new, empty one that the start-up sweep would then clean every file against.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from storage.clock import Clock, utc_now
from storage.db import DEFAULT_BUSY_TIMEOUT, AsyncClosing, Database
from storage.embeddings import EmbeddingRepository
from storage.files import FileStore
from storage.guilds import GuildSettingsRepository
from storage.images import ImageRepository
from storage.jobs import JobRepository
from storage.maintenance import SweepReport, refuse_empty_database, sweep
from storage.model_reports import ModelReportRepository
from storage.names import IsReservedWord, NameRules
from storage.preferences import PreferenceRepository
from storage.users import UserRepository

DATABASE_FILENAME = "lexicon.sqlite3"  # the same name as `Settings.database_path`
FILES_DIRNAME = "files"


def files_root(data_dir: Path) -> Path:
    """Where the content-addressed files of a data dir live."""
    return Path(data_dir) / FILES_DIRNAME


@dataclass(frozen=True, slots=True)
class Storage(AsyncClosing):
    db: Database
    files: FileStore
    users: UserRepository
    embeddings: EmbeddingRepository
    jobs: JobRepository
    images: ImageRepository
    guilds: GuildSettingsRepository
    preferences: PreferenceRepository
    model_reports: ModelReportRepository

    @classmethod
    async def open(
        cls,
        data_dir: Path | str,
        *,
        database_path: Path | str | None = None,
        is_reserved_word: IsReservedWord | None = None,
        reads_as_words: IsReservedWord | None = None,
        clock: Clock = utc_now,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
    ) -> Storage:
        """Open (and migrate) the database and wire the repositories to it.

        `is_reserved_word` is the engine's tokenizer check for new embedding names,
        `reads_as_words` its stricter one for shared names.
        """
        data_dir = Path(data_dir)
        db_path = Path(database_path) if database_path else data_dir / DATABASE_FILENAME
        files = FileStore(files_root(data_dir))
        if not db_path.is_file() or db_path.stat().st_size == 0:
            await refuse_empty_database(db_path, files)  # before opening writes a header
        db = await Database.open(db_path, migrate=False, busy_timeout=busy_timeout)
        try:
            if await db.schema_version() == 0:
                await refuse_empty_database(db_path, files)
            await db.migrate()
        except BaseException:
            await db.close()
            raise
        return cls(
            db=db,
            files=files,
            users=UserRepository(db, clock),
            embeddings=EmbeddingRepository(
                db, files, NameRules(is_reserved_word, reads_as_words), clock
            ),
            jobs=JobRepository(db, files, clock),
            images=ImageRepository(db, files, clock),
            guilds=GuildSettingsRepository(db, clock),
            preferences=PreferenceRepository(db, clock),
            model_reports=ModelReportRepository(db, clock),
        )

    async def sweep(self) -> SweepReport:
        """The start-up repair; call it before any writer starts."""
        return await sweep(self.db, self.files)

    async def close(self) -> None:
        await self.db.close()
