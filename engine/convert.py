"""`python -m engine.convert FILENAME NAME KIND MODEL_FAMILY`: normalise an uploaded embedding.

The bot never imports torch, yet an uploaded `.pt` file can only be read with
`torch.load(weights_only=True)`. So the bot runs this module as a short-lived child process:
the file's bytes arrive on stdin, a JSON answer leaves on stdout — either the embedding
rewritten in Lexicon's own safetensors format (which is all that workers ever parse), or the one
sentence that says why it was refused. A hostile pickle is therefore parsed in a separate,
throw-away process, under the strict loader, and never in the bot.
"""

from __future__ import annotations

import base64
import json
import sys
from typing import Any

WIDTH_BY_FAMILY = {"sd1": 768, "sd2": 1024, "tiny": 32}


def convert(data: bytes, filename: str, name: str, kind: str, model_family: str) -> dict[str, Any]:
    from engine.embedding_files import (
        EmbeddingFileError,
        check_family,
        read_embedding,
        write_embedding,
    )

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
        )
    except EmbeddingFileError as error:
        return {"ok": False, "error": str(error)}
    return {
        "ok": True,
        "family": parsed.family,
        "width": parsed.width,
        "n_vectors": parsed.n_vectors,
        "data": base64.b64encode(canonical).decode("ascii"),
    }


def main(argv: list[str]) -> int:
    filename, name, kind, model_family = argv
    answer = convert(sys.stdin.buffer.read(), filename, name, kind, model_family)
    sys.stdout.write(json.dumps(answer))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
