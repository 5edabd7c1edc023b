"""The frozen model pieces a training run uses, adapted from the worker's `LoadedModel`.

Training never changes these: the UNet, VAE and text encoder(s) are the worker's one shared
model, so `/imagine` can run between training slices. An SDXL model brings its second tokenizer
and text encoder; its vectors are both encoders' halves side by side (width 768 + 1280). Tests
and benchmarks build a `TrainComponents` directly (e.g. at a smaller training size) without a
`LoadedModel`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch

from engine.embedding_files import family_for_width


@dataclass
class TrainComponents:
    """The plain pieces training needs. `from_model` adapts the worker's `LoadedModel`."""

    tokenizer: Any
    text_encoder: Any
    unet: Any
    vae: Any
    scheduler_config: Any
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    family: str = ""
    model_hash: str = ""
    model_name: str = ""  # the checkpoint's name (`LoadedModel.name`), written into the file
    native_size: int = 0
    graphs: Any = None  # engine.graphs.ModelGraphs: training steps are recorded as CUDA graphs
    tokenizer_2: Any = None  # SDXL's second tokenizer and text encoder (None for SD 1.x/2.x)
    text_encoder_2: Any = None

    def __post_init__(self) -> None:
        self.device = torch.device(self.device)
        if not self.family:
            self.family = family_for_width(self.width)
        if not self.native_size:
            scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
            self.native_size = int(self.unet.config.sample_size) * scale

    @classmethod
    def from_model(cls, model: Any) -> TrainComponents:
        """Adapt an `engine.model.LoadedModel` (or anything with the same attributes)."""
        if isinstance(model, TrainComponents):
            return model
        # Each piece is the model's attribute of the same name; one it lacks keeps its default.
        pieces = {f.name: getattr(model, f.name) for f in fields(cls) if hasattr(model, f.name)}
        # A compiled UNet (LEXICON_COMPILE) would compile its backward too, minutes per
        # worker; the recorded CUDA-graph step is as fast without it (docs/BENCHMARKS.md).
        pieces["unet"] = getattr(model.unet, "_orig_mod", model.unet)
        pieces["model_name"] = getattr(model, "name", "")
        return cls(**pieces)

    @property
    def is_sdxl(self) -> bool:
        return self.text_encoder_2 is not None

    @property
    def width_l(self) -> int:
        """The first text encoder's width: the first half of an SDXL vector (`clip_l`)."""
        return int(self.text_encoder.config.hidden_size)

    @property
    def width(self) -> int:
        """A vector's width: both encoders' widths added on SDXL."""
        second = 0 if self.text_encoder_2 is None else self.text_encoder_2.config.hidden_size
        return self.width_l + int(second)

    def text_encoders(self) -> tuple[Any, ...]:
        """The frozen text encoder(s)."""
        return tuple(e for e in (self.text_encoder, self.text_encoder_2) if e is not None)


def param_dtype(module: Any) -> torch.dtype:
    """The dtype of a frozen module's weights (what its inputs are cast to)."""
    return next(module.parameters()).dtype
