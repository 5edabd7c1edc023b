"""How a run trains (the operator's settings), and the error for a request that cannot be trained.

Kept apart from the trainer: the recipe changes with tuning decisions (docs/TRAINING.md), the
training step with the maths. Its trajectory fields are part of a checkpoint's identity.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from engine.photos import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS


class TrainRequestError(ValueError):
    """The training request itself is unusable; the message is one sentence for the user."""


@dataclass(frozen=True)
class TrainRecipe:
    """How to train (operator settings). What to train, and for how many steps by default,
    comes from the `TrainRequest`; `steps` here overrides the request's when set.

    The default — 250 steps × batch 4 at a constant 5e-3 — is explained in docs/TRAINING.md:
    quality plateaus near 250 steps (DVAR), and 5e-3 is the paper's and A1111's rate for the
    vectors alone.
    """

    steps: int | None = None
    batch_size: int = 4
    learning_rate: float = 5e-3
    lr_schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    flip: bool = True  # mirrored views as augmentation
    mixed_precision: bool = True  # on CUDA: frozen nets under autocast (bf16 for fp32 models)
    max_steps: int = 5000  # a request above this is refused
    max_photo_bytes: int = DEFAULT_MAX_BYTES
    max_photo_pixels: int = DEFAULT_MAX_PIXELS

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {self.batch_size}.")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, not {self.learning_rate}.")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be constant or cosine, not {self.lr_schedule!r}.")
        if self.warmup_steps < 0 or self.weight_decay < 0:
            raise ValueError("warmup_steps and weight_decay cannot be negative.")

    def trajectory_fields(self) -> dict[str, Any]:
        """The settings that change which vectors a run ends with (checkpoint identity)."""
        fields_ = asdict(self)
        for bookkeeping in ("max_steps", "max_photo_bytes", "max_photo_pixels"):
            fields_.pop(bookkeeping)
        return fields_
