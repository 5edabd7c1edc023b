"""Migration 0006 (several checkpoints): job rows and server settings name a model, and rows
written before it mean the deployment's default model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from storage import Storage
from storage.jobs import ModelFilter
from storage.models import Actor
from tests.storage.conftest import database_at

SERVER = 10


# What an older Lexicon left at schema 5: a queued job and a configured server.
VERSION_5_ROWS = f"""
        INSERT INTO users (id, created_at) VALUES (1, 0);
        INSERT INTO jobs (id, user_id, guild_id, kind, params, created_at)
            VALUES (7, 1, {SERVER}, 'generate', '{{}}', 0);
        INSERT INTO guild_settings (guild_id, default_negative_prompt, updated_at)
            VALUES ({SERVER}, 'blurry', 0);
        """


async def test_migration_0006_keeps_old_rows_on_the_default_model(data_dir: Path) -> None:
    """An old job has no model (the default's) and an old server no default model; both take
    one after the migration, and an old job counts as the default model's when filtering."""
    database_at(data_dir, 5, VERSION_5_ROWS)
    store = await Storage.open(data_dir)
    try:
        old = await store.jobs.get(7)
        assert old.model is None
        settings = await store.guilds.get(SERVER)
        assert (settings.default_negative_prompt, settings.default_model) == ("blurry", None)

        new = await store.jobs.enqueue(1, "generate", {"prompt": "x"}, model="xl")
        assert (await store.jobs.get(new.id)).model == "xl"
        for_default = await store.jobs.fair_order(models=ModelFilter({"sd15"}, "sd15"))
        for_xl = await store.jobs.fair_order(models=ModelFilter({"xl"}, "sd15"))
        assert [job.id for job in for_default] == [7]
        assert [job.id for job in for_xl] == [new.id]

        manager = Actor(1, is_manager=True, guild_id=SERVER)
        updated = await store.guilds.update(
            manager, SERVER, lambda current: dataclasses.replace(current, default_model="xl")
        )
        assert updated.default_model == "xl"
        assert (await store.guilds.get(SERVER)).default_model == "xl"
    finally:
        await store.close()
