"""Settings for cog tests: the stand-in engine, a throw-away data dir, no operator env."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import Settings
from tests.bot.conftest import _no_operator_env, make_settings

__all__ = ["_no_operator_env"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data", "standin", engine="standin")
