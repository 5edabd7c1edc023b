"""Shared engine fixtures: one tiny random SD 1.x model (and one SDXL) per test session, built on
CPU."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from engine.model import LoadedModel, load_model

# The CI and dev machines have 2 shared cores; torch's default of one thread per core makes
# OpenMP threads spin against the other processes and slows the tiny model 10-30×.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def engine_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir whose `models/tiny` holds the session's tiny model."""
    return tmp_path_factory.mktemp("engine-data")


@pytest.fixture(scope="session")
def tiny_model(engine_data_dir: Path) -> LoadedModel:
    """The tiny model loaded once on CPU in float32 (shared: never mutate it)."""
    return load_model("tiny", "cpu", data_dir=engine_data_dir)


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_model: LoadedModel, engine_data_dir: Path) -> Path:
    """The tiny model's diffusers folder (for stock-pipeline comparisons)."""
    return engine_data_dir / "models" / "tiny"


@pytest.fixture(scope="session")
def stock_pipeline_factory(tiny_model_dir: Path) -> Callable[[], Any]:
    """Makes a fresh stock `StableDiffusionPipeline` of the tiny model (safe to mutate)."""
    return _stock_factory(
        "StableDiffusionPipeline",
        tiny_model_dir,
        safety_checker=None,
        requires_safety_checker=False,
    )


@pytest.fixture(scope="session")
def tiny_sdxl_model(engine_data_dir: Path) -> LoadedModel:
    """The tiny random SDXL model loaded once on CPU in float32 (shared: never mutate it)."""
    return load_model("tiny-sdxl", "cpu", data_dir=engine_data_dir)


@pytest.fixture(scope="session")
def tiny_sdxl_dir(tiny_sdxl_model: LoadedModel, engine_data_dir: Path) -> Path:
    """The tiny SDXL model's diffusers folder (for stock-pipeline comparisons)."""
    return engine_data_dir / "models" / "tiny-sdxl"


@pytest.fixture(scope="session")
def stock_sdxl_factory(tiny_sdxl_dir: Path) -> Callable[[], Any]:
    """Makes a fresh stock `StableDiffusionXLPipeline` of the tiny SDXL model (safe to mutate)."""
    return _stock_factory("StableDiffusionXLPipeline", tiny_sdxl_dir, add_watermarker=False)


def _stock_factory(class_name: str, folder: Path, **options: Any) -> Callable[[], Any]:
    """Makes fresh stock diffusers pipelines of `folder`, progress bars off."""
    import diffusers

    def make() -> Any:
        pipe = getattr(diffusers, class_name).from_pretrained(folder, **options)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    return make
