"""Fixtures for the hardening suite: the bot in SimCord on the stand-in engine, and a way to
prove that a refused request left nothing behind."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.app import Lexicon
from storage.facade import files_root
from tests.bot.conftest import _no_operator_env, tiny_model_path
from tests.e2e.conftest import refusal, settings, sim, slow_sim, standin_settings
from tests.simulation import Simulation

__all__ = [
    "_no_operator_env",
    "settings",
    "sim",
    "slow_sim",
    "standin_settings",
    "tiny_model_path",
]


@dataclass(frozen=True)
class Stored:
    """What a request could have left behind: job rows, embedding rows, stored files."""

    jobs: int
    embeddings: int
    files: frozenset[str]


def stored_files(data_dir: Path) -> frozenset[str]:
    """Every file under the data dir's files/ folder (temp files included)."""
    root = files_root(data_dir)
    if not root.is_dir():
        return frozenset()
    return frozenset(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


async def stored(app: Lexicon) -> Stored:
    db = app.storage.db
    return Stored(
        jobs=int(await db.fetch_value("SELECT count(*) FROM jobs")),
        embeddings=int(await db.fetch_value("SELECT count(*) FROM embeddings")),
        files=stored_files(app.settings.data_dir),
    )


NOTHING = Stored(jobs=0, embeddings=0, files=frozenset())


async def refused_leaving_nothing(sim: Simulation, command: str, **options: Any) -> str:
    """The one sentence a new member is refused `command` with, once sure nothing was stored."""
    result = await sim.member("alice").slash(sim.channel, command, **options)
    sentence = refusal(result)
    assert await stored(sim.app) == NOTHING
    return sentence


def record_downloads(sim: Simulation, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The attachment URLs the bot downloads from SimCord's CDN from now on."""
    fetched: list[str] = []
    cdn = sim.env.backend.cdn
    real_get = cdn.get

    def get(url: str) -> Any:
        fetched.append(url)
        return real_get(url)

    monkeypatch.setattr(cdn, "get", get)
    return fetched
