"""The bot process never loads the ML stack."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

from tests.conftest import REPO_ROOT

HEAVY = ("torch", "diffusers", "transformers")


def _all_modules(package: str) -> list[str]:
    path = REPO_ROOT / package
    names = [package]
    for info in pkgutil.walk_packages([str(path)], prefix=f"{package}."):
        names.append(info.name)
    return names


def test_bot_cogs_storage_do_not_import_torch() -> None:
    """Importing every module of bot, cogs and storage leaves torch & co out of sys.modules."""
    modules = [m for p in ("bot", "cogs", "storage") for m in _all_modules(p)]
    modules = [m for m in modules if m not in ("bot.__main__",)]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert len(modules) > 5


def test_engine_job_types_are_torch_free() -> None:
    """engine.jobs, engine.vocabulary and engine.embedding_metadata (imported by the bot) do not
    pull in torch."""
    code = (
        "import sys, engine.jobs, engine.vocabulary, engine.embedding_metadata\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
