"""Speed levers for CUDA workers: `torch.compile` and CUDA graphs.

Measured one by one in docs/BENCHMARKS.md (bench/levers.py); what did not help is recorded
there too. Everything here changes speed only: the equivalence tests run the plain path on CPU,
and the GPU benchmark reports the pixel difference between plain and optimised images.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Literal

import torch

from engine.encode import run_text_encoder
from engine.generate import decode_pixels, predict_noise
from engine.graphs import GraphCache, ModelGraphs
from engine.model import LoadedModel

log = logging.getLogger("lexicon.engine")

CompileMode = Literal["off", "default", "max-autotune-no-cudagraphs", "reduce-overhead"]


def apply_speedups(
    model: LoadedModel, compile_mode: CompileMode = "off", cuda_graphs: bool = False
) -> None:
    """Compile UNet and VAE decoder, then record the text encoder, UNet and VAE-decode calls as
    CUDA graphs (CUDA only).

    channels_last is not applied: on the H100 it made both generation and training slower
    (docs/BENCHMARKS.md). With both levers on, the graphs record the compiled kernels.
    """
    if model.device.type != "cuda":
        if compile_mode != "off":  # an explicit choice (graphs are on by default: no news)
            log.info("LEXICON_COMPILE is ignored on %s", model.device)
        return
    if compile_mode != "off":
        mode = None if compile_mode == "default" else compile_mode
        model.unet = torch.compile(model.unet, mode=mode, dynamic=False)
        model.vae.decoder = torch.compile(model.vae.decoder, mode=mode, dynamic=False)
        model.pad_batches = True  # each new shape compiles for a minute: keep them few
        log.info("UNet and VAE decoder compiled (mode %s); shapes compile on first use", mode)
    if cuda_graphs:
        if model.device.index is not None:  # graphs record and replay on the current device
            torch.cuda.set_device(model.device)
        unet, vae = model.unet, model.vae
        pool = torch.cuda.graph_pool_handle()
        model.graphs = ModelGraphs(
            pool=pool,
            text=GraphCache("text encoder", partial(run_text_encoder, model.text_encoder), pool),
            unet=GraphCache("UNet", partial(predict_noise, unet), pool),
            decode=GraphCache("VAE decode", partial(decode_pixels, vae), pool),
        )
        log.info("CUDA graphs on: each text-encoder, UNet and VAE-decode shape is recorded once")
