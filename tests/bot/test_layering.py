"""The bot process never loads the ML stack."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from collections.abc import Sequence

from tests.conftest import REPO_ROOT

HEAVY = ("torch", "diffusers", "transformers")


def _all_modules(package: str) -> list[str]:
    path = REPO_ROOT / package
    names = [package]
    for info in pkgutil.walk_packages([str(path)], prefix=f"{package}."):
        names.append(info.name)
    return names


def _loaded_after_importing(modules: Sequence[str], timeout: float = 60) -> list[str]:
    """Every module in `sys.modules` once a fresh interpreter has imported `modules`."""
    code = (
        "import importlib, sys\n"
        f"for name in {list(modules)!r}:\n"
        "    importlib.import_module(name)\n"
        "print('\\n'.join(sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def _heavy(loaded: list[str]) -> list[str]:
    return [m for m in loaded if m.split(".")[0] in HEAVY]


def test_bot_cogs_storage_do_not_import_torch() -> None:
    """Importing every module of bot, cogs and storage leaves torch & co out of sys.modules."""
    modules = [m for p in ("bot", "cogs", "storage") for m in _all_modules(p)]
    modules = [m for m in modules if m not in ("bot.__main__",)]
    assert _heavy(_loaded_after_importing(modules, timeout=120)) == []
    assert len(modules) > 5


def test_engine_job_types_are_torch_free() -> None:
    """engine.jobs, engine.vocabulary and engine.embedding_metadata (imported by the bot) do not
    pull in torch."""
    modules = ("engine.jobs", "engine.vocabulary", "engine.embedding_metadata")
    assert _heavy(_loaded_after_importing(modules)) == []


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
    loaded = _loaded_after_importing(contracts)
    assert "engine.redis_wire" in loaded
    assert _heavy(loaded) == []
    assert [m for m in loaded if _is_worker_side(m)] == []
