"""`check_trained`, the bot's torch-free check of a trained file: Lexicon's one-tensor layout for
SD 1.x and the `{clip_l, clip_g}` pair for the SDXL families, judged from the header alone."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save as save_safetensors

from engine.embedding_files import write_embedding
from engine.embedding_metadata import NotLexiconEmbedding, check_trained


def _pair(rows_l: int, width_l: int, rows_g: int, width_g: int) -> bytes:
    generator = torch.Generator().manual_seed(5)
    return save_safetensors(
        {
            "clip_l": torch.randn(rows_l, width_l, generator=generator),
            "clip_g": torch.randn(rows_g, width_g, generator=generator),
        },
        metadata={"family": "tiny-sdxl"},
    )


def test_a_trained_sdxl_pair_is_accepted_with_the_halves_widths_added() -> None:
    """A {clip_l, clip_g} file the trainer writes passes and reports 32 + 64 (tiny SDXL) and
    768 + 1280 (SDXL)."""
    for family, (width_l, width_g) in (("tiny-sdxl", (32, 64)), ("sdxl", (768, 1280))):
        data = write_embedding(
            torch.ones(2, width_l),
            vectors_g=torch.zeros(2, width_g),
            name="zorblat",
            kind="positive",
            family=family,
        )
        assert check_trained(data, n_vectors=2, family=family) == width_l + width_g


def test_an_sd1_file_is_still_one_emb_params_tensor() -> None:
    """SD 1.x files keep their one-tensor layout; a pair is refused for them and vice versa."""
    data = write_embedding(torch.ones(3, 32), name="z", kind="negative", family="tiny")
    assert check_trained(data, n_vectors=3, family="tiny") == 32
    with pytest.raises(NotLexiconEmbedding, match="not the tensors clip_l and clip_g"):
        check_trained(data, n_vectors=3, family="tiny-sdxl")
    with pytest.raises(NotLexiconEmbedding, match="not the tensors emb_params"):
        check_trained(_pair(1, 32, 1, 64), n_vectors=1, family="tiny")


def test_an_sdxl_pair_of_the_wrong_widths_is_refused() -> None:
    """Halves swapped or of another family's widths are refused, naming the tensor."""
    with pytest.raises(NotLexiconEmbedding, match=r"clip_. is 1x\d+, not 1 vectors of a tiny-sdxl"):
        check_trained(_pair(1, 64, 1, 32), n_vectors=1, family="tiny-sdxl")
    with pytest.raises(NotLexiconEmbedding, match="of a sdxl model"):
        check_trained(_pair(1, 32, 1, 64), n_vectors=1, family="sdxl")


def test_an_sdxl_pair_with_mismatched_rows_is_refused() -> None:
    """Halves with different vector counts, or not the job's count, are refused."""
    with pytest.raises(NotLexiconEmbedding, match=r"is 1x.*not 2 vectors"):
        check_trained(_pair(2, 32, 1, 64), n_vectors=2, family="tiny-sdxl")
    with pytest.raises(NotLexiconEmbedding, match="not 3 vectors"):
        check_trained(_pair(2, 32, 2, 64), n_vectors=3, family="tiny-sdxl")


def test_an_sdxl_pair_with_trailing_or_missing_bytes_is_refused() -> None:
    """The pair's tensors must fill the data exactly."""
    data = _pair(1, 32, 1, 64)
    assert check_trained(data, n_vectors=1, family="tiny-sdxl") == 96
    for damaged in (data + b"\0" * 4, data[:-4]):
        with pytest.raises(NotLexiconEmbedding, match="do not match the shape"):
            check_trained(damaged, n_vectors=1, family="tiny-sdxl")
