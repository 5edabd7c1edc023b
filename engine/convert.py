"""`python -m engine.convert`: read an uploaded embedding, or write one as an A1111 `.pt`.

The bot never imports torch, yet an uploaded `.pt` file can only be read with
`torch.load(weights_only=True)`, and an A1111 `.pt` can only be written with `torch.save`. So the
bot runs this module as a short-lived child process: a file's bytes arrive on stdin, a JSON answer
leaves on stdout — the converted file, or the one sentence that says why it was refused.

- `import FILENAME NAME KIND MODEL_FAMILY`: an upload, rewritten in Lexicon's own safetensors
  format (which is all that workers ever parse), keeping the checkpoint the file names.
- `a1111 NAME`: a stored Lexicon file, as A1111's `.pt` layout (`string_to_param {'*': T}`),
  naming the checkpoint an imported file named.

A hostile pickle is therefore parsed in a separate, throw-away process, under the strict loader,
and never in the bot. The child caps its own memory and CPU time before it reads anything (a
hard limit it cannot raise again), so a file that slips past the checks in
`engine.embedding_files` costs at most those limits; the bot adds a wall-clock timeout and caps
how many children run at once.
"""

from __future__ import annotations

import base64
import io
import json
import resource
import sys
from typing import Any

# Private writable memory (RLIMIT_DATA: heap and anonymous maps, not the mapped torch libraries,
# whose size differs between CPU and CUDA builds). torch itself takes ~220 MiB of it.
MEMORY_LIMIT_BYTES = 1024 * 1024 * 1024
CPU_LIMIT_SECONDS = 30  # importing torch takes ~2-3 s of it


def convert(data: bytes, filename: str, name: str, kind: str, model_family: str) -> dict[str, Any]:
    """An upload in Lexicon's format with what the bot stores about it (`checkpoint`: the one
    the file names, cleaned, or None), or the refusal."""
    from engine.embedding_files import (
        EmbeddingFileError,
        check_family,
        read_embedding,
        write_embedding,
    )
    from engine.embedding_metadata import WIDTH_BY_FAMILY

    try:
        parsed = read_embedding(data, filename)
        model_width = WIDTH_BY_FAMILY.get(model_family, 0)
        check_family(parsed.family, parsed.width, model_family, model_width)
        canonical = write_embedding(
            parsed.vectors,
            name=name,
            kind="negative" if kind == "negative" else "positive",
            family=parsed.family,
            extra={"imported_from": parsed.source_format},
            vectors_g=parsed.vectors_g,
            checkpoint=parsed.checkpoint,
        )
    except EmbeddingFileError as error:
        return {"ok": False, "error": str(error)}
    return {
        "ok": True,
        "family": parsed.family,
        "width": parsed.width,
        "n_vectors": parsed.n_vectors,
        "checkpoint": parsed.checkpoint,
        "data": base64.b64encode(canonical).decode("ascii"),
    }


def to_a1111(data: bytes, name: str) -> dict[str, Any]:
    """A Lexicon file as the `.pt` A1111 writes (`torch.save` of its dict layout)."""
    import torch

    from engine.embedding_files import EmbeddingFileError, read_embedding

    try:
        parsed = read_embedding(data, f"{name}.safetensors")
    except EmbeddingFileError as error:
        return {"ok": False, "error": str(error)}
    if parsed.vectors_g is not None:
        return {
            "ok": False,
            "error": "SDXL embeddings have no A1111 .pt form; A1111 reads the .safetensors export.",
        }
    steps = parsed.metadata.get("steps", "")
    layout = {
        "string_to_token": {"*": 265},  # A1111's placeholder token id, the same in every file
        "string_to_param": {"*": parsed.vectors},
        "name": name,
        "step": int(steps) if steps.isdigit() else None,
        "sd_checkpoint": parsed.metadata.get("base_model_hash") or None,
        "sd_checkpoint_name": parsed.checkpoint,
    }
    buffer = io.BytesIO()
    torch.save(layout, buffer)
    return {"ok": True, "data": base64.b64encode(buffer.getvalue()).decode("ascii")}


def limit_resources() -> None:
    """Cap this process's memory and CPU time, soft and hard alike."""
    resource.setrlimit(resource.RLIMIT_DATA, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_LIMIT_SECONDS, CPU_LIMIT_SECONDS))


def main(argv: list[str]) -> int:
    limit_resources()
    data = sys.stdin.buffer.read()
    match argv:
        case ["import", filename, name, kind, model_family]:
            answer = convert(data, filename, name, kind, model_family)
        case ["a1111", name]:
            answer = to_a1111(data, name)
        case _:
            sys.stderr.write("usage: engine.convert import FILE NAME KIND FAMILY | a1111 NAME\n")
            return 2
    sys.stdout.write(json.dumps(answer))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
