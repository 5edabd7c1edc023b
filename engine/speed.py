"""Speed levers for CUDA workers: `torch.compile` (with a persistent cache) and CUDA graphs.

Measured one by one in docs/BENCHMARKS.md (bench/levers.py); what did not help is recorded
there too. Everything here changes speed only: the equivalence tests run the plain path on CPU,
and the GPU benchmark reports the pixel difference between plain and optimised images.

Compiling the UNet and VAE decoder costs minutes per start when done from scratch, so compiled
artefacts are kept under the data dir (`CompileCache`): inductor's FX graph and AOTAutograd
caches live there, and torch's portable "mega-cache" of them is saved after the warm-up and
loaded before the next start compiles. Kernels built by one torch version for one GPU model are
not valid for another, so each pair gets a folder of its own (`compile_cache_dir`).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import torch
import torch._dynamo.config
import torch._functorch.config
import torch._inductor.config

from engine.encode import run_text_encoder, run_text_encoders_sdxl
from engine.generate import decode_pixels, predict_noise
from engine.graphs import GraphCache, ModelGraphs
from engine.model import LoadedModel

log = logging.getLogger("lexicon.engine")

CompileMode = Literal["off", "default", "max-autotune-no-cudagraphs", "reduce-overhead"]

ARTIFACTS_FILE = "mega-cache.bin"


def compile_cache_dir(data_dir: Path, torch_version: str, device_name: str) -> Path:
    """`<data dir>/compile-cache/torch-2.13.0-cu128-nvidia-h200`: one folder per torch version
    and GPU model, each part reduced to lower-case letters, digits, dots and dashes."""
    return Path(data_dir) / "compile-cache" / f"torch-{_slug(torch_version)}-{_slug(device_name)}"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-.") or "unknown"


@dataclass(frozen=True)
class CompileCache:
    """A folder of compiled artefacts: `open` it before the first compile, `save` it after the
    warm-up has compiled every shape the worker serves."""

    folder: Path

    @classmethod
    def for_device(cls, data_dir: Path, device: torch.device) -> CompileCache:
        """The cache of the installed torch on `device`'s GPU model, under `data_dir`."""
        return cls(
            compile_cache_dir(data_dir, torch.__version__, torch.cuda.get_device_name(device))
        )

    @property
    def artifacts(self) -> Path:
        return self.folder / ARTIFACTS_FILE

    def open(self) -> None:
        """Point inductor's on-disk caches at the folder (FX graph and AOTAutograd caches on,
        unless an operator forces them off through torch's own variables) and load the saved
        artefacts. An unreadable file only costs a compile from scratch."""
        self.folder.mkdir(parents=True, exist_ok=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(self.folder)
        torch._inductor.config.fx_graph_cache = True
        torch._functorch.config.enable_autograd_cache = True
        if not self.artifacts.is_file():
            log.info("compile cache %s is empty: this start compiles from scratch", self.folder)
            return
        try:
            loaded = torch.compiler.load_cache_artifacts(self.artifacts.read_bytes())
        except Exception as error:  # a torch upgraded in place, a truncated file: recompile
            loaded, reason = None, str(error)
        else:
            reason = "torch could not read it"
        if loaded is None:
            log.warning(
                "compile cache %s not loaded (%s): compiling afresh", self.artifacts, reason
            )
        else:
            log.info("compile cache loaded from %s", self.artifacts)

    def save(self) -> int:
        """Write what this process compiled or loaded to the artefacts file (atomically);
        bytes written, 0 when there was nothing to save (an earlier file is then kept)."""
        saved = torch.compiler.save_cache_artifacts()
        if saved is None or not saved[0]:
            return 0
        data = saved[0]
        partial_file = self.artifacts.with_name(f"{ARTIFACTS_FILE}.partial-{os.getpid()}")
        partial_file.write_bytes(data)
        partial_file.replace(self.artifacts)
        log.info("compile cache saved to %s (%.1f MiB)", self.artifacts, len(data) / 2**20)
        return len(data)


def fuse_attention_projections(unet: torch.nn.Module) -> None:
    """One GEMM for each self-attention's q, k and v and one for each cross-attention's k and
    v (diffusers' `fuse_qkv_projections`), with the separate projections' weights turned into
    views of the fused ones, so that the UNet still holds each weight once.

    On SDXL's UNet at 1024² on an H200 this saves 0.5–2.2 ms of a 230 ms call (351 fewer
    kernel launches); on SD 1.5 on an H100 it changed nothing measurable (docs/BENCHMARKS.md),
    so only SDXL models take it. The fused weights are frozen like every other weight: training,
    which runs through the same attention, computes gradients for its vectors only.
    """
    from diffusers.models.attention_processor import Attention

    unet.fuse_qkv_projections()
    for module in unet.modules():
        if not isinstance(module, Attention):
            continue
        if module.is_cross_attention:
            _share_weights(module.to_kv, (module.to_k, module.to_v))
        else:
            _share_weights(module.to_qkv, (module.to_q, module.to_k, module.to_v))


def _share_weights(fused: torch.nn.Linear, parts: tuple[torch.nn.Linear, ...]) -> None:
    """Make each of `parts` (stacked in order in `fused`) a view of its rows of `fused`."""
    if sum(part.out_features for part in parts) != fused.out_features:
        raise ValueError(f"{fused} does not split into {parts}")
    fused.requires_grad_(False)
    start = 0
    for part in parts:
        rows = slice(start, start + part.out_features)
        part.weight = torch.nn.Parameter(fused.weight[rows], requires_grad=False)
        if part.bias is not None:
            part.bias = torch.nn.Parameter(fused.bias[rows], requires_grad=False)
        start += part.out_features


def compile_options(compile_mode: CompileMode) -> dict[str, object]:
    """inductor's options for `compile_mode`, plus `triton.multi_kernel`.

    With `multi_kernel`, inductor builds a reduction both looped and persistent and keeps the
    faster at first use. SDXL's LayerNorms over 1,280 channels are past the 1,024 values inductor
    otherwise keeps in registers, so they compile looped; persistent, an SDXL UNet call of 16
    rows took 229-230 ms instead of 236-237 on an H200 (docs/BENCHMARKS.md §0b, session 7).
    """
    if compile_mode == "off":
        raise ValueError("compile_mode 'off' compiles nothing")
    options: dict[str, object] = {}
    if compile_mode != "default":
        options.update(torch._inductor.list_mode_options(compile_mode))
    options["triton.multi_kernel"] = 1
    return options


def is_compiled(model: LoadedModel) -> bool:
    """Whether `apply_speedups` compiled the model's UNet."""
    from torch._dynamo.eval_frame import OptimizedModule

    return isinstance(model.unet, OptimizedModule)


def apply_speedups(
    model: LoadedModel,
    compile_mode: CompileMode = "off",
    cuda_graphs: bool = False,
    data_dir: Path | None = None,
) -> CompileCache | None:
    """Compile UNet and VAE decoder, then record the text encoder, UNet and VAE-decode calls as
    CUDA graphs (CUDA only). With `data_dir`, compiled artefacts are cached under it; returns
    that cache, for the caller to `save` once its warm-up has compiled the shapes it serves.

    channels_last is not applied: on the H100 it made both generation and training slower
    (docs/BENCHMARKS.md). With both levers on, the graphs record the compiled kernels.

    SDXL models take both levers the same way: the UNet's graphs also hold its pooled
    embeddings and size numbers as inputs, and the `text` graphs record both text encoders in
    one call (eagerly they cost 26 ms of launches a prompt on an H200, 0.2 s for a batch of 8).
    Before compiling, an SDXL UNet's attention projections are fused
    (`fuse_attention_projections`).
    """
    if model.device.type != "cuda":
        if compile_mode != "off":  # the default: not news on a CPU worker
            log.debug("LEXICON_COMPILE is ignored on %s", model.device)
        return None
    cache = None
    if compile_mode != "off":
        if data_dir is not None:
            cache = CompileCache.for_device(data_dir, model.device)
            cache.open()
        if model.is_sdxl:
            fuse_attention_projections(model.unet)
        # Every UNet of the process shares one `forward`, and dynamo keeps 8 compiled versions
        # of a function by default: two models' four warm-up shapes would fill that and leave a
        # third model uncompiled. Each version is one (model, shape) the warm-ups chose.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        # torch 2.11 crashes reading multi_kernel's file of picked variants for kernels loaded
        # from the compile cache (their JIT lock is lost on the way). Without the file, each
        # start times the variants again on first use, during its warm-up: milliseconds
        # (docs/DECISIONS.md, "Reductions compiled both ways").
        os.environ["TORCHINDUCTOR_DISABLE_MULTI_KERNEL_CACHE"] = "1"
        options = compile_options(compile_mode)
        model.unet = torch.compile(model.unet, dynamic=False, options=options)
        model.vae.decoder = torch.compile(model.vae.decoder, dynamic=False, options=options)
        model.pad_batches = True  # each new shape compiles for a minute: keep them few
        log.info("UNet and VAE decoder compiled (%s); shapes compile on first use", compile_mode)
    if cuda_graphs:
        if model.device.index is not None:  # graphs record and replay on the current device
            torch.cuda.set_device(model.device)
        unet, vae = model.unet, model.vae
        pool = torch.cuda.graph_pool_handle()
        if model.is_sdxl:
            eos = int(model.tokenizer.eos_token_id)
            encode = partial(run_text_encoders_sdxl, model.text_encoder, model.text_encoder_2, eos)
            text = GraphCache("text encoders", encode, pool)
        else:
            text = GraphCache("text encoder", partial(run_text_encoder, model.text_encoder), pool)
        model.graphs = ModelGraphs(
            pool=pool,
            text=text,
            unet=GraphCache("UNet", partial(predict_noise, unet), pool),
            decode=GraphCache("VAE decode", partial(decode_pixels, vae), pool),
        )
        log.info("CUDA graphs on: each text-encoder, UNet and VAE-decode shape is recorded once")
    return cache
