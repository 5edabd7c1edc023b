"""Hostile embedding files through `/embeddings import`: parsed in a throw-away process, refused
with one sentence, nothing stored, and a pickle's payload never runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import refusal
from tests.hardening import hostile_files as hostile
from tests.hardening.conftest import NOTHING, refused_leaving_nothing, stored
from tests.simulation import Simulation

UNSAFE = "This file contains code or objects other than tensors, so it was refused for safety."

BAD_FILES: dict[str, tuple[str, Callable[[], bytes], str]] = {
    "int32-vectors": (
        "ints.safetensors",
        hostile.wrong_dtype,
        "The vectors in this file are int32, but an embedding must be float16, bfloat16 or "
        "float32.",
    ),
    "float64-vectors": (
        "doubles.safetensors",
        hostile.float64_vectors,
        "The vectors in this file are float64, but an embedding must be float16, bfloat16 or "
        "float32.",
    ),
    "three-dimensions": (
        "cube.safetensors",
        hostile.wrong_shape,
        "The vectors in this file have 3 dimensions instead of 1 or 2.",
    ),
    "100-vectors": (
        "long.safetensors",
        hostile.too_many_vectors,
        "This embedding has 100 vectors, and 1 to 75 are allowed.",
    ),
    "nan": (
        "nan.safetensors",
        hostile.nan_vectors,
        "This embedding contains NaN or infinite values.",
    ),
    "infinity": (
        "inf.safetensors",
        hostile.inf_vectors,
        "This embedding contains NaN or infinite values.",
    ),
    "sd2-width-on-tiny": (
        "sd2.safetensors",
        hostile.sd2_width,
        "This embedding is for SD 2.x (width 1024) but the loaded model is the tiny test model "
        "(width 32).",
    ),
    "sd1-width-on-tiny": (
        "sd1.safetensors",
        hostile.sd1_width,
        "This embedding is for SD 1.x (width 768) but the loaded model is the tiny test model "
        "(width 32).",
    ),
    "lying-header": (
        "short.safetensors",
        hostile.lying_header,
        "This safetensors file is damaged and cannot be read.",
    ),
    "two-tensors": (
        "pair.safetensors",
        hostile.two_tensors,
        "This file holds 2 tensors, and an embedding file must hold exactly one (or clip_l and "
        "clip_g for SDXL).",
    ),
    "text-named-pt": (
        "notes.pt",
        lambda: b"just some text, not an embedding",
        "This file is not an embedding: its contents are neither safetensors nor a PyTorch .pt "
        "or .bin file, whatever its name says; send the embedding's own file.",
    ),
}


@pytest.mark.parametrize(("filename", "make", "sentence"), BAD_FILES.values(), ids=BAD_FILES.keys())
async def test_a_bad_embedding_file_is_refused(
    sim: Simulation, filename: str, make: Callable[[], bytes], sentence: str
) -> None:
    """Wrong dtype, shape, count, NaN/inf, another model's width, a damaged file: one sentence."""
    refused = await refused_leaving_nothing(
        sim, "embeddings import", file=(filename, make()), name="zorb"
    )
    assert refused == sentence


@pytest.mark.parametrize(
    "make", [hostile.pickle_that_writes, hostile.torch_zip_that_writes], ids=["pickle", "torch-zip"]
)
async def test_a_pickle_that_writes_a_file_is_refused_and_never_runs(
    sim: Simulation, tmp_path: Path, make: Callable[[Path], bytes]
) -> None:
    """A .pt whose unpickling would write a file is refused; the file never appears."""
    target = tmp_path / "owned.txt"
    alice = sim.member("alice")
    result = await alice.slash(
        sim.channel, "embeddings import", file=("evil.pt", make(target)), name="zorb"
    )
    assert refusal(result) == UNSAFE
    assert not target.exists()
    assert await stored(sim.app) == NOTHING


@pytest.mark.parametrize(
    "make", [hostile.pickle_that_writes, hostile.torch_zip_that_writes], ids=["pickle", "torch-zip"]
)
def test_the_pickle_payload_is_live_when_loaded_unsafely(
    tmp_path: Path, make: Callable[[Path], bytes]
) -> None:
    """Control: the same bytes loaded without restrictions do write the file."""
    import io
    import pickle

    import torch

    target = tmp_path / "owned.txt"
    data = make(target)
    if data[:2] == b"PK":
        torch.load(io.BytesIO(data), weights_only=False)
    else:
        pickle.loads(data)
    assert target.read_text() == "owned"
