"""Training checkpoints as bytes: everything needed to resume a run exactly, nothing executable.

A checkpoint is a safetensors file (so loading it never unpickles anything) holding:

- `vectors` float32 `[n, d]` — the trainable vectors (fp32 master copy);
- `exp_avg`, `exp_avg_sq` float32 `[n, d]` — AdamW's moment estimates;
- `generator` uint8 — the state of the one CPU `torch.Generator` that draws photos, flips,
  templates, timesteps and noise;

and string metadata: `format`, `step`, `optimizer_step` (AdamW's own counter, which differs from
`step` only after fp16 overflow skips), `loss_scale`, `recent_losses` (JSON, for the reported
loss) and `identity` (JSON: what must match for a resume to continue the same run: request,
recipe, model hash and the cached-latent identity).

The bytes are handed to the caller (the worker sends them to the bot, which stores them), so the
engine keeps no files of its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

CHECKPOINT_FORMAT = "lexicon-ti-checkpoint/1"
_TENSORS = ("vectors", "exp_avg", "exp_avg_sq", "generator")


class CheckpointError(ValueError):
    """A checkpoint that cannot resume this run; the message is one sentence."""


@dataclass(frozen=True)
class TrainCheckpoint:
    """A decoded checkpoint (CPU tensors)."""

    step: int
    vectors: torch.Tensor
    exp_avg: torch.Tensor
    exp_avg_sq: torch.Tensor
    optimizer_step: int
    generator_state: torch.Tensor
    identity: dict[str, str]
    recent_losses: tuple[float, ...] = ()
    loss_scale: float = 1.0


def encode_checkpoint(checkpoint: TrainCheckpoint) -> bytes:
    """The checkpoint as safetensors bytes (see the module docstring for the layout)."""
    tensors = {
        "vectors": checkpoint.vectors.detach().to("cpu", torch.float32).contiguous(),
        "exp_avg": checkpoint.exp_avg.detach().to("cpu", torch.float32).contiguous(),
        "exp_avg_sq": checkpoint.exp_avg_sq.detach().to("cpu", torch.float32).contiguous(),
        "generator": checkpoint.generator_state.detach().to("cpu", torch.uint8).contiguous(),
    }
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "step": str(checkpoint.step),
        "optimizer_step": str(checkpoint.optimizer_step),
        "loss_scale": repr(float(checkpoint.loss_scale)),
        # repr() of a float round-trips exactly through json, so a resumed run reports the same
        # smoothed loss as an uninterrupted one.
        "recent_losses": json.dumps([float(x) for x in checkpoint.recent_losses]),
        "identity": json.dumps(checkpoint.identity, sort_keys=True),
    }
    return save_safetensors(tensors, metadata=metadata)


def decode_checkpoint(data: bytes) -> TrainCheckpoint:
    """Parse checkpoint bytes; raise `CheckpointError` for anything that is not one."""
    try:
        tensors = load_safetensors(data)
        metadata = _metadata(data)
    except (SafetensorError, ValueError, json.JSONDecodeError) as error:
        raise CheckpointError(f"The training checkpoint is unreadable ({error}).") from None
    if metadata.get("format") != CHECKPOINT_FORMAT or set(tensors) != set(_TENSORS):
        raise CheckpointError("The data is not a Lexicon training checkpoint.")
    try:
        return TrainCheckpoint(
            step=int(metadata["step"]),
            vectors=tensors["vectors"],
            exp_avg=tensors["exp_avg"],
            exp_avg_sq=tensors["exp_avg_sq"],
            optimizer_step=int(metadata["optimizer_step"]),
            generator_state=tensors["generator"],
            identity={str(k): str(v) for k, v in json.loads(metadata["identity"]).items()},
            recent_losses=tuple(float(x) for x in json.loads(metadata["recent_losses"])),
            loss_scale=float(metadata["loss_scale"]),
        )
    except (KeyError, ValueError, TypeError, AttributeError) as error:
        raise CheckpointError(f"The training checkpoint is incomplete ({error}).") from None


def _metadata(data: bytes) -> dict[str, str]:
    """The `__metadata__` of a safetensors file (the header is 8 bytes of length, then JSON)."""
    if len(data) < 8:
        raise ValueError("too short")
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    metadata = header.get("__metadata__") or {}
    return {str(k): str(v) for k, v in metadata.items()}
