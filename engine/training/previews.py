"""Preview renders of a freshly trained word, shown with the result on Discord.

They go through `engine.generate` exactly as `/imagine` would render the word, so what the user
sees is what the word will do. Half way through training one quick render (`render_halfway`)
shows the word taking shape. (`engine.previews` is the other kind: live low-resolution frames
during generation.)
"""

from __future__ import annotations

import hashlib
from typing import Any

from engine.jobs import EXAMPLE_PROMPTS, EmbeddingPayload, GenerateRequest
from engine.training.trainer import Trainer

PREVIEW_STEPS = 20
HALFWAY_STEPS = 8  # the halfway preview is a quick look, not the final render


def render_previews(model: Any, trainer: Trainer, count: int = 3) -> list[bytes]:
    """`count` seeded renders (PNG) of the new word at the model's native size, through
    `engine.generate` exactly as `/imagine` would render it. A negative embedding is shown as
    the negative prompt of a plain picture."""
    return _render(model, trainer, count, PREVIEW_STEPS)


def render_halfway(model: Any, trainer: Trainer) -> bytes:
    """One quick render of the first example prompt with the vectors as they are half way."""
    return _render(model, trainer, 1, HALFWAY_STEPS)[0]


def _render(model: Any, trainer: Trainer, count: int, steps: int) -> list[bytes]:
    from engine.generate import generate

    data = trainer.embedding_bytes()
    name = trainer.request.name
    payload = EmbeddingPayload(name, data, hashlib.sha256(data).hexdigest())
    side = int(model.native_size)
    requests = []
    for index, template in enumerate(EXAMPLE_PROMPTS[trainer.request.kind][:count]):
        prompt, negative = template.format(name), ""
        if trainer.request.negative:
            prompt, negative = template.format("cat"), name
        requests.append(
            GenerateRequest(
                prompt=prompt,
                negative=negative,
                seed=trainer.request.seed + index,
                steps=steps,
                guidance=7.5,
                width=side,
                height=side,
                embeddings=(payload,),
            )
        )
    return [images[0].png for images in generate(model, requests)]
