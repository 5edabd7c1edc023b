"""The default fast path on CUDA (compiled + CUDA graphs, compile cache under the data dir):
what it renders, and that the cache makes the second start of a machine faster than the first."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from engine.diffusers_engine import DiffusersEngine
from engine.generate import generate
from engine.jobs import GenerateRequest
from engine.model import load_model
from engine.speed import ARTIFACTS_FILE, CompileCache, is_compiled
from tests.conftest import run_lexicon


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def test_default_fast_path_renders_the_plain_path_within_2_of_255(tmp_path: Path) -> None:
    """The default settings' engine (compiled, graphed, warmed up) renders the warmed shapes
    within 2/255 of the plain eager path, and leaves its compile cache under the data dir."""
    engine = DiffusersEngine.load(
        "tiny", "cuda", tmp_path, compile_mode="default", cuda_graphs=True, warm_up_batches=(1, 2)
    )
    plain = load_model("tiny", device="cuda", data_dir=tmp_path)
    try:
        assert is_compiled(engine.model) and engine.model.graphs is not None
        cache = CompileCache.for_device(tmp_path, engine.model.device)
        assert cache.artifacts.stat().st_size > 0
        for batch in (1, 2):
            requests = [
                GenerateRequest(f"a blue boat {i}", i, 6, 7.5, 64, 64) for i in range(batch)
            ]
            fast = generate(engine.model, requests)
            reference = generate(plain, requests)
            for mine, theirs in zip(fast, reference, strict=True):
                difference = np.abs(_pixels(mine[0].png) - _pixels(theirs[0].png))
                assert difference.max() <= 2, (batch, difference.max())
    finally:
        torch.compiler.set_stance("default")


def _warm_seconds(tmp_path: Path, data_dir: Path) -> tuple[float, str]:
    """Run `lexicon warm` (a worker's start: load, compile, warm up, save) in a fresh process."""
    result = run_lexicon(
        ["warm"],
        tmp_path,
        timeout=600,
        LEXICON_MODEL="tiny",
        LEXICON_DEVICE="cuda",
        LEXICON_DATA_DIR=str(data_dir),
        LEXICON_MAX_BATCH="2",
    )
    assert result.returncode == 0, result.stderr[-4000:]
    match = re.search(r"in ([\d.]+) s; the cache is in (.+)$", result.stdout.strip())
    assert match, result.stdout
    assert (Path(match.group(2)) / ARTIFACTS_FILE).is_file()
    return float(match.group(1)), result.stderr


def test_second_start_reuses_the_compile_cache_and_is_faster(tmp_path: Path) -> None:
    """Two starts in fresh processes on one data dir: the second loads the first's compiled
    artefacts instead of compiling, and is ready sooner."""
    data_dir = tmp_path / "data"
    built = run_lexicon(["make-tiny-model", str(data_dir / "models" / "tiny")], tmp_path)
    assert built.returncode == 0, built.stderr  # so neither start pays for building the model
    first, first_log = _warm_seconds(tmp_path, data_dir)
    second, second_log = _warm_seconds(tmp_path, data_dir)
    assert "is empty: this start compiles from scratch" in first_log, first_log[-4000:]
    assert "compile cache loaded from" in second_log, second_log[-4000:]
    assert second < first, (first, second, second_log[-4000:])
