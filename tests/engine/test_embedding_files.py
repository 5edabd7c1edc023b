"""Embedding file formats: what Lexicon writes, what it reads, and what it refuses."""

from __future__ import annotations

import base64
import io
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from engine.convert import convert, to_a1111
from engine.embedding_files import (
    FORMAT_TAG,
    EmbeddingFileError,
    check_family,
    family_for_width,
    read_embedding,
    write_embedding,
)
from engine.model import LoadedModel


def _vectors(n: int = 2, d: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def _torch_bytes(obj: object, legacy: bool = False) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


def test_written_file_is_emb_params_float32_with_metadata() -> None:
    """write_embedding produces safetensors {emb_params: float32[n, d]} with string metadata."""
    data = write_embedding(
        _vectors(3).half(),
        name="zorb",
        kind="negative",
        family="tiny",
        steps=250,
        base_model_hash="abc123",
        photo_hashes=["h1", "h2"],
        extra={"owner": "42"},
    )
    tensors = load_safetensors(data)
    assert list(tensors) == ["emb_params"]
    assert tensors["emb_params"].dtype == torch.float32
    assert tensors["emb_params"].shape == (3, 32)
    parsed = read_embedding(data, "whatever.bin")
    assert parsed.source_format == "lexicon"
    assert parsed.name == "zorb"
    assert parsed.metadata == {
        "owner": "42",
        "format": FORMAT_TAG,
        "name": "zorb",
        "kind": "negative",
        "family": "tiny",
        "hidden_size": "32",
        "n_vectors": "3",
        "steps": "250",
        "base_model_hash": "abc123",
        "photo_hashes": "h1,h2",
    }
    assert torch.equal(parsed.vectors, _vectors(3).half().float())


def test_write_refuses_a_family_that_does_not_match_the_width() -> None:
    """Vectors of width 32 cannot be labelled sd1, and extra may not override reserved keys."""
    with pytest.raises(ValueError, match="family"):
        write_embedding(_vectors(), name="zorb", kind="positive", family="sd1")
    with pytest.raises(ValueError, match="override"):
        write_embedding(_vectors(), name="z", kind="positive", family="tiny", extra={"name": "x"})


def test_diffusers_loads_the_written_file(stock_pipeline_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """diffusers' load_textual_inversion(path, token=name) loads our file unchanged."""
    pipe = stock_pipeline_factory()
    vectors = _vectors(2)
    path = tmp_path / "zorb.safetensors"
    path.write_bytes(write_embedding(vectors, name="zorb", kind="positive", family="tiny"))
    pipe.load_textual_inversion(str(path), token="zorb")
    ids = pipe.tokenizer.convert_tokens_to_ids(["zorb", "zorb_1"])
    table = pipe.text_encoder.get_input_embeddings().weight
    assert torch.equal(table[ids], vectors)


@pytest.mark.parametrize(
    ("filename", "make", "source", "name"),
    [
        ("any.safetensors", lambda v: save_safetensors({"emb_params": v}), "kohya", "any"),
        ("k.pt", lambda v: _torch_bytes({"emb_params": v}), "kohya", "k"),
        ("d.safetensors", lambda v: save_safetensors({"<cat-toy>": v}), "diffusers", "<cat-toy>"),
        ("learned_embeds.bin", lambda v: _torch_bytes({"<cat>": v}), "diffusers", "<cat>"),
        (
            "easyneg.pt",
            lambda v: _torch_bytes(
                {
                    "string_to_token": {"*": 265},
                    "string_to_param": {"*": torch.nn.Parameter(v)},
                    "name": "stored-name",
                    "step": 1500,
                    "sd_checkpoint": "e1441589",
                    "sd_checkpoint_name": "v1-5",
                }
            ),
            "a1111",
            "easyneg",
        ),
        (
            "legacy.pt",
            lambda v: _torch_bytes({"string_to_param": {"*": v}, "name": "x"}, legacy=True),
            "a1111",
            "legacy",
        ),
        ("misnamed.pt", lambda v: save_safetensors({"emb_params": v}), "kohya", "misnamed"),
    ],
)
def test_every_listed_format_imports(filename, make, source, name) -> None:  # type: ignore[no-untyped-def]
    """kohya, diffusers and A1111 files (safetensors, zip and legacy pickles) all import."""
    vectors = _vectors(4, 768)
    parsed = read_embedding(make(vectors), filename)
    assert parsed.source_format == source
    assert parsed.name == name
    assert parsed.family == "sd1" and parsed.width == 768 and parsed.n_vectors == 4
    assert parsed.vectors.dtype == torch.float32
    assert torch.equal(parsed.vectors, vectors)


def test_a_parameter_dict_string_to_param_imports() -> None:
    """The original textual-inversion repo's `nn.ParameterDict` layout reads like A1111's dict."""
    vectors = _vectors(3, 768)
    params = torch.nn.ParameterDict({"*": torch.nn.Parameter(vectors)})
    data = _torch_bytes({"string_to_token": {"*": 265}, "string_to_param": params, "name": "x"})
    parsed = read_embedding(data, "original-repo.pt")
    assert (parsed.source_format, parsed.name, parsed.n_vectors) == ("a1111", "original-repo", 3)
    assert torch.equal(parsed.vectors, vectors)


def test_sdxl_pair_imports_with_both_halves() -> None:
    """An SDXL {clip_l, clip_g} file keeps both halves and is family sdxl."""
    clip_l, clip_g = _vectors(2, 768), _vectors(2, 1280, seed=1)
    parsed = read_embedding(save_safetensors({"clip_l": clip_l, "clip_g": clip_g}), "x.pt")
    assert (parsed.family, parsed.width, parsed.source_format) == ("sdxl", 2048, "sdxl")
    assert torch.equal(parsed.vectors, clip_l)
    assert parsed.vectors_g is not None and torch.equal(parsed.vectors_g, clip_g)


def test_half_precision_and_one_dimensional_vectors_become_float32_rows() -> None:
    """A 1-D bfloat16 tensor becomes one float32 vector."""
    vector = torch.randn(1024).bfloat16()
    parsed = read_embedding(save_safetensors({"tok": vector}), "tok.safetensors")
    assert parsed.vectors.shape == (1, 1024) and parsed.vectors.dtype == torch.float32
    assert parsed.family == "sd2"
    assert torch.equal(parsed.vectors[0], vector.float())


def _a1111_bytes(vectors: torch.Tensor, checkpoint: str | None) -> bytes:
    """An A1111 `.pt` as its trainer saves it, naming `checkpoint` (None: no checkpoint)."""
    return _torch_bytes(
        {
            "string_to_token": {"*": 265},
            "string_to_param": {"*": vectors},
            "name": "x",
            "step": 1500,
            "sd_checkpoint": "e1441589" if checkpoint is not None else None,
            "sd_checkpoint_name": checkpoint,
        }
    )


HOSTILE_CHECKPOINT = "**v1-5**\n@everyone\u202e\t" + "x" * 500


@pytest.mark.parametrize(
    ("data", "checkpoint"),
    [
        (_a1111_bytes(torch.ones(1, 768), "v1-5-pruned-emaonly"), "v1-5-pruned-emaonly"),
        (
            save_safetensors(
                {"emb_params": torch.ones(1, 768)},
                metadata={"ss_sd_model_name": " animefull-final-pruned.ckpt\n"},
            ),
            "animefull-final-pruned.ckpt",
        ),
        (_a1111_bytes(torch.ones(1, 768), None), None),
        (save_safetensors({"emb_params": torch.ones(1, 768)}, metadata={"x": "y"}), None),
        (save_safetensors({"emb_params": torch.ones(1, 768)}), None),
        (
            save_safetensors(
                {"emb_params": torch.ones(1, 768)}, metadata={"ss_sd_model_name": "\n\t \x00"}
            ),
            None,
        ),
        (
            _a1111_bytes(torch.ones(1, 768), HOSTILE_CHECKPOINT),
            "**v1-5** @everyone " + "x" * 81,
        ),
    ],
    ids=["a1111", "kohya", "a1111-none", "kohya-none", "no-metadata", "blank", "hostile"],
)
def test_the_checkpoint_a_file_names_is_read_as_bounded_clean_text(
    data: bytes, checkpoint: str | None
) -> None:
    """A1111's `sd_checkpoint_name` and kohya's `ss_sd_model_name` are read single-line, without
    control or bidi characters, at most 100 characters; a file that names none gives None."""
    parsed = read_embedding(data, "word.pt")
    assert parsed.checkpoint == checkpoint
    assert parsed.checkpoint is None or len(parsed.checkpoint) <= 100


def test_an_import_keeps_the_checkpoint_its_file_names_through_both_exports() -> None:
    """The stored file names the checkpoint (so the .safetensors export keeps it), and the
    A1111 `.pt` export writes it back as `sd_checkpoint_name`; without one, both name none."""
    for named in ("v1-5-pruned-emaonly", None):
        answer = convert(_a1111_bytes(_vectors(2, 768), named), "w.pt", "word", "positive", "sd1")
        assert answer["ok"] and answer["checkpoint"] == named
        stored = base64.b64decode(answer["data"])
        assert read_embedding(stored, "word.safetensors").checkpoint == named
        exported = to_a1111(stored, "word")
        assert exported["ok"]
        layout = torch.load(io.BytesIO(base64.b64decode(exported["data"])), weights_only=True)
        assert layout["sd_checkpoint_name"] == named
        assert read_embedding(base64.b64decode(exported["data"]), "word.pt").checkpoint == named


class _Payload:
    """A pickle that runs code when loaded without restrictions."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("container", ["raw-pickle", "torch-zip", "torch-legacy"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path, container: str) -> None:
    """A pickle whose __reduce__ runs a shell command is refused, and the command never runs."""
    marker = tmp_path / "pwned"
    evil = {"string_to_param": {"*": _Payload(marker)}, "name": "evil"}
    if container == "raw-pickle":
        data = pickle.dumps(evil, protocol=2)
    else:
        data = _torch_bytes(evil, legacy=container == "torch-legacy")
    assert not marker.exists()
    with pytest.raises(EmbeddingFileError) as caught:
        read_embedding(data, "evil.pt")
    assert str(caught.value) == (
        "This file contains code or objects other than tensors, so it was refused for safety."
    )
    assert not marker.exists()


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ({"t": torch.tensor([[1.0, float("nan")] * 384])}, "NaN or infinite"),
        ({"t": torch.full((1, 768), float("inf"))}, "NaN or infinite"),
        ({"t": torch.ones(2, 768, dtype=torch.int64)}, "int64"),
        ({"t": torch.ones(2, 768, dtype=torch.float64)}, "float64"),
        ({"t": torch.ones(1, 2, 768)}, "3 dimensions"),
        ({"t": torch.ones(76, 768)}, "76 vectors"),
        ({"t": torch.ones(0, 768)}, "0 vectors"),
        ({"t": torch.ones(2, 500)}, "width 500"),
        ({"t": torch.ones(2, 2048)}, "width 2048"),
        ({"a": torch.ones(1, 768), "b": torch.ones(1, 768)}, "exactly one"),
        ({"clip_l": torch.ones(1, 768), "clip_g": torch.ones(2, 1280)}, "different number"),
    ],
)
def test_invalid_contents_are_refused_with_one_sentence(tensors, message) -> None:  # type: ignore[no-untyped-def]
    """NaN, inf, wrong dtype, shape, count or width each give one EmbeddingFileError sentence."""
    with pytest.raises(EmbeddingFileError, match=message) as caught:
        read_embedding(save_safetensors(tensors), "bad.safetensors")
    text = str(caught.value)
    assert text.endswith(".") and text.count(". ") == 0


def test_garbage_and_damaged_files_are_refused() -> None:
    """Random bytes, a truncated safetensors file and a pickled string are refused."""
    good = save_safetensors({"emb_params": torch.ones(1, 768)})
    for data in (b"hello world, not an embedding", good[:-10], _torch_bytes("just text")):
        with pytest.raises(EmbeddingFileError):
            read_embedding(data, "x.safetensors")


def test_family_for_width_knows_every_supported_width() -> None:
    """768 → sd1, 1024 → sd2, 2048 → sdxl, 32 → tiny; anything else is refused."""
    assert [family_for_width(w) for w in (768, 1024, 2048, 32)] == ["sd1", "sd2", "sdxl", "tiny"]
    with pytest.raises(EmbeddingFileError, match="width 640"):
        family_for_width(640)


def test_sd2_embedding_on_an_sd1_model_is_refused_naming_both() -> None:
    """An SD 2.x file against an SD 1.x model fails with a sentence naming both."""
    parsed = read_embedding(save_safetensors({"emb_params": torch.ones(1, 1024)}), "x.pt")
    with pytest.raises(EmbeddingFileError) as caught:
        check_family(parsed.family, parsed.width, "sd1", 768)
    assert str(caught.value) == (
        "This embedding is for SD 2.x (width 1024) but the loaded model is SD 1.x (width 768)."
    )
    check_family("sd1", 768, "sd1", 768)


def test_sd2_embedding_on_the_tiny_model_is_refused(tiny_model: LoadedModel) -> None:
    """The same check against the loaded tiny model names the tiny model."""
    parsed = read_embedding(save_safetensors({"emb_params": torch.ones(1, 1024)}), "x.pt")
    with pytest.raises(EmbeddingFileError) as caught:
        check_family(parsed.family, parsed.width, tiny_model.family, tiny_model.hidden_size)
    assert str(caught.value) == (
        "This embedding is for SD 2.x (width 1024) but the loaded model is "
        "the tiny test model (width 32)."
    )
