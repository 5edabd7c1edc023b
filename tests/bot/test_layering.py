"""The bot process never loads the ML stack."""

from __future__ import annotations

import ast
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


# The worker process's code: `engine.worker.*` and the torch modules it drives.
WORKER_SIDE = ("engine.worker", "engine.diffusers_engine", "engine.generate")


def _is_worker_side(module: str) -> bool:
    return module.startswith("engine.training") or any(
        module == name or module.startswith(f"{name}.") for name in WORKER_SIDE
    )


def test_bot_and_cogs_never_import_worker_code() -> None:
    """No import in bot or cogs, even inside a function, names the worker side of engine."""
    offenders = []
    for package in ("bot", "cogs"):
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
                else:
                    continue
                offenders += [
                    f"{path.relative_to(REPO_ROOT)}:{node.lineno} {name}"
                    for name in names
                    if _is_worker_side(name)
                ]
    assert offenders == []


def test_contract_modules_load_no_worker_code() -> None:
    """The torch-free modules the bot shares with workers load neither torch nor the worker."""
    contracts = ("engine.protocol", "engine.worker_config", "engine.redis_wire")
    code = (
        "import importlib, sys\n"
        f"for name in {contracts!r}:\n"
        "    importlib.import_module(name)\n"
        "print('\\n'.join(sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    loaded = result.stdout.split()
    assert "engine.redis_wire" in loaded
    assert [m for m in loaded if m.split(".")[0] in HEAVY or _is_worker_side(m)] == []
