"""Shared engine fixtures: one tiny random SD 1.x model per test session, built on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.model import LoadedModel, load_model


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
