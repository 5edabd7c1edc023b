"""Textual-inversion embedding files: the one format Lexicon writes, the formats users bring.

Lexicon writes safetensors `{"emb_params": float32[n, d]}` with string metadata. A single tensor
under one key is what A1111, kohya and diffusers (`load_textual_inversion(path, token=name)`) all
load unchanged, so an exported embedding works everywhere.

Reading accepts that format, diffusers' `{token: T}`, A1111's pickled `.pt`/`.bin` with
`string_to_param` (a dict, or the original textual-inversion repo's `nn.ParameterDict`), kohya's
`emb_params` and SDXL's `{clip_l, clip_g}`. A pickle is never trusted: it only goes through
`torch.load(weights_only=True)`, which refuses anything but tensors, plain containers and
`ParameterDict` (the one class A1111's own safe loader adds), so a file that carries code is
refused before that code can run. A `.pt` zip is measured before it is loaded: its entries'
declared sizes may not overlap or add up to more than twice the file, because `torch.load` inflates
every storage a pickle names — a 1 MB file could otherwise claim gigabytes. Every failure is an
`EmbeddingFileError` whose message is one sentence a Discord user can act on.

Many files also say which checkpoint they were trained on: A1111's `sd_checkpoint_name`, and
`ss_sd_model_name`, the key kohya's sd-scripts trainers use for the base model (its LoRA trainer
writes it; its textual-inversion trainer writes only `modelspec.*` keys, which name no
checkpoint). Lexicon keeps that claim on import under A1111's key, so its own export names it
too. It is whatever the file's author (or a forger) wrote, so `EmbeddingFile.checkpoint` is only
ever a short, single-line, printable string, and the bot shows it as the file's claim.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import unicodedata
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import PurePath
from typing import Any, Literal

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from engine.embedding_metadata import (
    FAMILY_BY_PAIR,
    FAMILY_BY_WIDTH,
    FAMILY_LABELS,
    PAIR_BY_FAMILY,
)

FORMAT_TAG = "lexicon-ti/1"
# What a .pt zip may unpack to: its entries' declared sizes, summed. torch.save stores entries
# uncompressed, so an honest file unpacks to less than its own size; the slack covers tiny files
# whose pickle was deflated by another zip tool.
UNPACK_RATIO = 2
UNPACK_SLACK = 64 * 1024
MAX_VECTORS = 75
# Metadata keys that name the checkpoint a file was trained on, the first present wins: A1111's
# (which Lexicon writes too, `write_embedding(checkpoint=…)`), then kohya's.
A1111_CHECKPOINT_KEY = "sd_checkpoint_name"
CHECKPOINT_KEYS = (A1111_CHECKPOINT_KEY, "ss_sd_model_name")
MAX_CHECKPOINT_CHARS = 100

_ACCEPTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_RESERVED_METADATA = (
    "format",
    "name",
    "kind",
    "family",
    "hidden_size",
    "n_vectors",
    "steps",
    "base_model_hash",
    "photo_hashes",
    A1111_CHECKPOINT_KEY,
)

EmbeddingKind = Literal["positive", "negative"]
SourceFormat = Literal["lexicon", "kohya", "diffusers", "a1111", "sdxl"]


class EmbeddingFileError(ValueError):
    """An embedding file that cannot be used; the message is one user-facing sentence."""


@dataclass(frozen=True)
class EmbeddingFile:
    """A validated embedding: float32 vectors on CPU plus what the file said about itself.

    `vectors` is `[n, width]`. For SDXL it holds the `clip_l` half and `vectors_g` the `clip_g`
    half (both `[n, …]`), and `width` is 768 + 1280.
    """

    vectors: torch.Tensor
    family: str
    width: int
    metadata: dict[str, str]
    source_format: SourceFormat
    name: str = ""  # the trigger word the file suggests (key, `name`, or file stem)
    vectors_g: torch.Tensor | None = field(default=None)

    @property
    def n_vectors(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def checkpoint(self) -> str | None:
        """The checkpoint the file says it was trained on (see `claimed_checkpoint`)."""
        return claimed_checkpoint(self.metadata)

    @property
    def joined(self) -> torch.Tensor:
        """`[n, width]`: what the engine splices — for SDXL the `clip_l` and `clip_g` halves
        side by side (the first encoder's width first), otherwise `vectors` itself."""
        if self.vectors_g is None:
            return self.vectors
        return torch.cat([self.vectors, self.vectors_g], dim=1)


def claimed_checkpoint(metadata: Mapping[str, str]) -> str | None:
    """The first CHECKPOINT_KEYS value that holds anything printable, as `clean_checkpoint`
    makes it; None when none does."""
    for key in CHECKPOINT_KEYS:
        if text := clean_checkpoint(metadata.get(key, "")):
            return text
    return None


def clean_checkpoint(text: str) -> str:
    """A checkpoint's name as safe text: control and format characters (newlines, bidi
    overrides) become spaces, runs of spaces one, at most MAX_CHECKPOINT_CHARS characters."""
    printable = "".join(
        " " if unicodedata.category(char).startswith("C") else char for char in text
    )
    return " ".join(printable.split())[:MAX_CHECKPOINT_CHARS].rstrip()


def family_label(family: str, width: int) -> str:
    """'SD 2.x (width 1024)' — how a family is named in messages."""
    pair = PAIR_BY_FAMILY.get(family)
    shown = f"{pair[0]}+{pair[1]}" if pair is not None and sum(pair) == width else str(width)
    return f"{FAMILY_LABELS.get(family, family)} (width {shown})"


def family_for_width(width: int) -> str:
    """The base-model family whose text encoder has this width."""
    try:
        return FAMILY_BY_WIDTH[width]
    except KeyError:
        known = ", ".join(str(w) for w in (768, 1024, 32))
        raise EmbeddingFileError(
            f"This embedding has vectors of width {width}, which matches no supported model "
            f"(known widths: {known}, or 768+1280 for SDXL)."
        ) from None


def check_family(file_family: str, file_width: int, model_family: str, model_width: int) -> None:
    """Refuse an embedding made for another base model, naming both."""
    if file_family != model_family or file_width != model_width:
        raise EmbeddingFileError(
            f"This embedding is for {family_label(file_family, file_width)} "
            f"but the loaded model is {family_label(model_family, model_width)}."
        )


# --------------------------------------------------------------------------------------------
# Writing


def write_embedding(
    vectors: torch.Tensor,
    *,
    name: str,
    kind: EmbeddingKind,
    family: str,
    steps: int = 0,
    base_model_hash: str = "",
    photo_hashes: Sequence[str] = (),
    extra: Mapping[str, str] | None = None,
    vectors_g: torch.Tensor | None = None,
    checkpoint: str | None = None,
) -> bytes:
    """Lexicon's embedding file: safetensors `{"emb_params": float32[n, d]}` plus metadata; for
    the two-encoder (SDXL) families `{"clip_l": …, "clip_g": …}`, the layout A1111, ComfyUI and
    diffusers read for SDXL, with `vectors_g` the second encoder's half. `checkpoint`, the one
    the vectors were trained on, goes under A1111's key, cleaned (`clean_checkpoint`)."""
    if kind not in ("positive", "negative"):
        raise ValueError(f"kind must be 'positive' or 'negative', not {kind!r}.")
    matrix = _validated_matrix(vectors.detach(), "emb_params")
    tensors = {"emb_params": matrix}
    width = int(matrix.shape[1])
    if vectors_g is not None:
        matrix_g = _validated_matrix(vectors_g.detach(), "clip_g")
        pair = (width, int(matrix_g.shape[1]))
        if FAMILY_BY_PAIR.get(pair) != family or matrix_g.shape[0] != matrix.shape[0]:
            raise ValueError(f"Vectors of widths {pair} do not belong to family {family!r}.")
        tensors, width = {"clip_l": matrix, "clip_g": matrix_g}, sum(pair)
    elif family_for_width(width) != family:
        raise ValueError(f"Vectors of width {width} do not belong to family {family!r}.")
    extra = dict(extra or {})
    clashes = sorted(set(extra) & set(_RESERVED_METADATA))
    if clashes:
        raise ValueError(f"extra metadata may not override {', '.join(clashes)}.")
    metadata = {
        **{str(k): str(v) for k, v in extra.items()},
        "format": FORMAT_TAG,
        "name": name,
        "kind": kind,
        "family": family,
        "hidden_size": str(width),
        "n_vectors": str(int(matrix.shape[0])),
        "steps": str(int(steps)),
        "base_model_hash": base_model_hash,
        "photo_hashes": ",".join(photo_hashes),
    }
    if named := clean_checkpoint(checkpoint or ""):
        metadata[A1111_CHECKPOINT_KEY] = named
    return save_safetensors({k: t.contiguous() for k, t in tensors.items()}, metadata=metadata)


# --------------------------------------------------------------------------------------------
# Reading


def read_embedding(data: bytes, filename: str) -> EmbeddingFile:
    """Parse and validate an embedding file of any supported format.

    The container is recognised from the bytes (safetensors header, zip or pickle), never from
    the extension; `filename` only supplies the trigger word A1111 would use (the stem).
    """
    stem = PurePath(filename).stem
    if _looks_like_safetensors(data):
        tensors, metadata = _load_safetensors(data)
        return _interpret(tensors, metadata, stem)
    if data[:4] == b"PK\x03\x04":
        _check_zip(data)
    if data[:4] == b"PK\x03\x04" or data[:1] == b"\x80":
        loaded = _load_pickle_safely(data)
        return _interpret_pickle(loaded, stem)
    raise EmbeddingFileError(
        "This file is not an embedding: its contents are neither safetensors nor a PyTorch .pt "
        "or .bin file, whatever its name says; send the embedding's own file."
    )


def _looks_like_safetensors(data: bytes) -> bool:
    if len(data) < 10:
        return False
    (header_length,) = struct.unpack("<Q", data[:8])
    return 2 <= header_length <= len(data) - 8 and data[8:9] == b"{"


def _load_safetensors(data: bytes) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        (header_length,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + header_length])
        metadata = header.get("__metadata__") or {}
        tensors = load_safetensors(data)
    except Exception:
        raise EmbeddingFileError("This safetensors file is damaged and cannot be read.") from None
    if not isinstance(metadata, dict):
        metadata = {}
    return dict(tensors), {str(k): str(v) for k, v in metadata.items()}


def _check_zip(data: bytes) -> None:
    """Refuse a zip whose entries overlap or would unpack to far more than the file's size."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, ValueError, EOFError):
        raise EmbeddingFileError("This .pt/.bin file is damaged and cannot be read.") from None
    unpacked = sum(entry.file_size for entry in entries)
    spans = sorted((e.header_offset, e.header_offset + e.compress_size) for e in entries)
    overlap = any(start < end for (_, end), (start, _) in pairwise(spans))
    if overlap or unpacked > UNPACK_RATIO * len(data) + UNPACK_SLACK:
        raise EmbeddingFileError(
            f"This .pt file would unpack to {unpacked / 2**20:,.1f} MiB from "
            f"{len(data) / 2**10:,.0f} KiB{' through overlapping entries' if overlap else ''}, "
            "so it was refused; save the embedding again with torch.save or as .safetensors."
        )


def _load_pickle_safely(data: bytes) -> Any:
    """`torch.load` restricted to tensors, plain containers and `ParameterDict`: a pickle is
    never trusted."""
    try:
        with torch.serialization.safe_globals([torch.nn.ParameterDict]):
            return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError:
        raise EmbeddingFileError(
            "This file contains code or objects other than tensors, so it was refused for safety."
        ) from None
    except Exception:
        raise EmbeddingFileError("This .pt/.bin file is damaged and cannot be read.") from None


def _interpret_pickle(loaded: Any, stem: str) -> EmbeddingFile:
    if isinstance(loaded, torch.Tensor):
        return _single(loaded, "diffusers", stem, {}, "the tensor")
    if not isinstance(loaded, dict):
        raise EmbeddingFileError("This file holds no embedding vectors.")
    if "string_to_param" in loaded:
        params = loaded["string_to_param"]
        if isinstance(params, torch.nn.ParameterDict):  # the original textual-inversion repo
            params = dict(params.items())
        if not isinstance(params, dict) or len(params) != 1:
            raise EmbeddingFileError(
                "This A1111 embedding must hold exactly one vector set under string_to_param."
            )
        tensor = next(iter(params.values()))
        metadata = {
            key: str(loaded[key])
            for key in ("name", "step", "sd_checkpoint", "sd_checkpoint_name")
            if loaded.get(key) is not None
        }
        # A1111 uses the file stem as the trigger word, not the stored `name`.
        return _single(tensor, "a1111", stem, metadata, "string_to_param")
    tensors = {k: v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
    return _interpret(tensors, {}, stem)


def _interpret(tensors: dict[str, Any], metadata: dict[str, str], stem: str) -> EmbeddingFile:
    if "clip_l" in tensors and "clip_g" in tensors:
        return _sdxl(tensors["clip_l"], tensors["clip_g"], metadata, stem)
    if "emb_params" in tensors:
        lexicon = metadata.get("format") == FORMAT_TAG
        name = metadata.get("name", "") if lexicon else stem
        source: SourceFormat = "lexicon" if lexicon else "kohya"
        return _single(tensors["emb_params"], source, name or stem, metadata, "emb_params")
    if len(tensors) == 1:
        token, tensor = next(iter(tensors.items()))
        return _single(tensor, "diffusers", str(token) or stem, metadata, str(token))
    if not tensors:
        raise EmbeddingFileError("This file holds no embedding vectors.")
    raise EmbeddingFileError(
        f"This file holds {len(tensors)} tensors, and an embedding file must hold exactly one "
        "(or clip_l and clip_g for SDXL)."
    )


def _single(
    tensor: Any, source: SourceFormat, name: str, metadata: dict[str, str], label: str
) -> EmbeddingFile:
    matrix = _validated_matrix(tensor, label)
    width = int(matrix.shape[1])
    if width in {sum(pair) for pair in FAMILY_BY_PAIR}:  # meaningful only as a clip_l + clip_g pair
        raise EmbeddingFileError(
            f"This embedding has vectors of width {width}, which matches no supported model."
        )
    return EmbeddingFile(
        vectors=matrix,
        family=family_for_width(width),
        width=width,
        metadata=metadata,
        source_format=source,
        name=name,
    )


def _sdxl(clip_l: Any, clip_g: Any, metadata: dict[str, str], stem: str) -> EmbeddingFile:
    matrix_l = _validated_matrix(clip_l, "clip_l")
    matrix_g = _validated_matrix(clip_g, "clip_g")
    widths = (int(matrix_l.shape[1]), int(matrix_g.shape[1]))
    if widths not in FAMILY_BY_PAIR:
        raise EmbeddingFileError(
            f"This SDXL embedding has widths {widths[0]}+{widths[1]} instead of 768+1280."
        )
    if matrix_l.shape[0] != matrix_g.shape[0]:
        raise EmbeddingFileError(
            "This SDXL embedding has a different number of clip_l and clip_g vectors."
        )
    return EmbeddingFile(
        vectors=matrix_l,
        vectors_g=matrix_g,
        family=FAMILY_BY_PAIR[widths],
        width=sum(widths),
        metadata=metadata,
        source_format="sdxl",
        name=metadata.get("name") or stem,
    )


def _validated_matrix(tensor: Any, label: str) -> torch.Tensor:
    """A float32 `[n, d]` CPU copy of `tensor`, or a sentence saying why it is not usable."""
    if not isinstance(tensor, torch.Tensor):
        raise EmbeddingFileError(f"The entry {label} in this file is not a tensor.")
    if tensor.dtype not in _ACCEPTED_DTYPES:
        dtype = str(tensor.dtype).removeprefix("torch.")
        raise EmbeddingFileError(
            f"The vectors in this file are {dtype}, but an embedding must be float16, "
            "bfloat16 or float32."
        )
    if tensor.dim() == 1:
        tensor = tensor.unsqueeze(0)
    if tensor.dim() != 2:
        raise EmbeddingFileError(
            f"The vectors in this file have {tensor.dim()} dimensions instead of 1 or 2."
        )
    count = int(tensor.shape[0])
    if not 1 <= count <= MAX_VECTORS:
        raise EmbeddingFileError(
            f"This embedding has {count} vectors, and 1 to {MAX_VECTORS} are allowed."
        )
    matrix = tensor.detach().to(device="cpu", dtype=torch.float32).contiguous().clone()
    if not bool(torch.isfinite(matrix).all()):
        raise EmbeddingFileError("This embedding contains NaN or infinite values.")
    return matrix
