"""Shared test helpers."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def lexicon_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An environment for running `python -m bot` in a subprocess, isolated from the caller's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEXICON_", "DISCORD_"))}
    env["LEXICON_DATA_DIR"] = str(tmp_path / "data")
    # The repository first; anything the caller's PYTHONPATH adds (a GPU machine's wheels) after.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def run_lexicon(
    args: list[str],
    tmp_path: Path,
    timeout: float = 120,
    preexec_fn: Callable[[], None] | None = None,
    **env: str,
) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a subprocess with cwd=tmp_path (so no stray .env is read); `preexec_fn`
    runs in the child before exec."""
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=tmp_path,
        env=lexicon_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=preexec_fn,
    )


@pytest.fixture
def cli(tmp_path: Path):
    """Call the CLI as a user would: `cli("db", "check")` → CompletedProcess."""

    def call(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
        return run_lexicon(list(args), tmp_path, timeout=timeout, **env)

    return call


@pytest.fixture(autouse=True)
def _root_logger_level_kept():
    """Every test leaves the root logger's level as it found it. One left at DEBUG makes each
    later test log every SQLite call, slow enough to push timing-sensitive tests over."""
    before = logging.getLogger().level
    yield
    after = logging.getLogger().level
    assert after == before, (
        f"the test left the root logger at {logging.getLevelName(after)}; put it back"
    )


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


# The GPU smoke test is collected only where CUDA exists (not skipped: absent from the run).
collect_ignore = [] if _cuda_available() else ["gpu"]
