"""Speed levers for CUDA workers: memory layout and `torch.compile`.

Measured one by one in docs/BENCHMARKS.md (bench/levers.py); what did not help is recorded
there too. Everything here changes speed only: the equivalence tests run the plain path on CPU,
and the GPU benchmark reports the pixel difference between plain and optimised images.
"""

from __future__ import annotations

import logging
from typing import Literal

import torch

from engine.model import LoadedModel

log = logging.getLogger("lexicon.engine")

CompileMode = Literal["off", "default", "max-autotune-no-cudagraphs", "reduce-overhead"]


def apply_speedups(model: LoadedModel, compile_mode: CompileMode = "off") -> None:
    """Compile UNet and VAE decoder (CUDA only). channels_last is not applied: on the H100 it
    made both generation and training slower (docs/BENCHMARKS.md)."""
    if model.device.type != "cuda":
        if compile_mode != "off":
            log.info("LEXICON_COMPILE is ignored on %s", model.device)
        return
    if compile_mode != "off":
        mode = None if compile_mode == "default" else compile_mode
        model.unet = torch.compile(model.unet, mode=mode, dynamic=False)
        model.vae.decoder = torch.compile(model.vae.decoder, mode=mode, dynamic=False)
        log.info("UNet and VAE decoder compiled (mode %s); shapes compile on first use", mode)
