"""Loading the one base model a worker serves.

A worker loads its model once and every request shares it; nothing here is ever changed per user
(textual-inversion vectors are spliced in per prompt by `engine.encode`). All weights are frozen
(`requires_grad_(False)`), so training computes gradients only for the vectors it owns.

`load_model` accepts four kinds of spec:

- `tiny` — the tiny random SD 1.x model, built once under `<data_dir>/models/tiny` and reused
  (`tiny-sdxl`: its SDXL sibling, under `<data_dir>/models/tiny-sdxl`);
- a local diffusers folder (has `model_index.json`);
- a single-file checkpoint (`.safetensors` / `.ckpt`), read with `from_single_file`. Without
  network access diffusers cannot fetch the matching configs, so a local diffusers config folder
  must be found: the `config` argument, or a folder next to the checkpoint named after its stem
  (`v1-5.safetensors` + `v1-5/`), or `<data_dir>/models/config`. Only the folder's configs and
  tokenizer are used, not its weights;
- a Hugging Face hub id (`org/name`), through `from_pretrained` and the usual hub cache (read as
  SD 1.x/2.x).

A folder (or a single file's config folder) whose `model_index.json` names
`StableDiffusionXLPipeline` is loaded as SDXL: two tokenizers and text encoders, family `sdxl`
(`tiny-sdxl` for the tiny one), and `hidden_size` the two encoders' widths added (768 + 1280), the
width an SDXL embedding's `clip_l` and `clip_g` halves make side by side. In float16 an SDXL VAE
whose config says `force_upcast` (it overflows in float16) runs in bfloat16 on GPUs that compute
it natively, as ComfyUI runs it, or in float32 as stock diffusers upcasts it: `vae_float32`
(LEXICON_VAE_FLOAT32) and `upcast_vae_dtype` decide.

Devices: `auto` means CUDA when present, else CPU. An explicit `cuda` without CUDA is an error,
never a silent fallback. Default dtype: float16 on CUDA, float32 on CPU.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine.embedding_files import EmbeddingFileError, family_for_width
from engine.embedding_metadata import FAMILY_BY_PAIR
from engine.tiny import is_tiny_model, make_tiny_model

log = logging.getLogger("lexicon.engine")

_SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
_FULL_HASH_LIMIT = 64 * 1024 * 1024  # folders smaller than this are hashed byte for byte
_SAMPLE = 1024 * 1024
_SDXL_PIPELINE = "StableDiffusionXLPipeline"
TINY_SPECS = {"tiny": "sd1", "tiny-sdxl": "sdxl"}  # spec → family of the tiny model it builds
_DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message is one sentence that says what to fix."""


@dataclass
class LoadedModel:
    """The pieces of one Stable Diffusion pipeline that the engine drives directly."""

    tokenizer: Any  # transformers.CLIPTokenizer
    text_encoder: Any  # transformers.CLIPTextModel
    unet: Any  # diffusers.UNet2DConditionModel
    vae: Any  # diffusers.AutoencoderKL
    scheduler_config: Any  # the pipeline scheduler's FrozenDict config
    device: torch.device
    dtype: torch.dtype
    family: str  # "sd1" | "sd2" | "sdxl" | "tiny" | "tiny-sdxl"
    hidden_size: int  # SDXL: both text encoders' widths added
    model_hash: str  # 10 hex digits that identify the weights (workers report it)
    native_size: int  # pixels; the side the model was trained at
    source: str = ""
    # What PNG infotext says: A1111's `Model: name` and `Model hash` (sha256[:10] of the
    # checkpoint file). Folders and hub models have no such file, so their checkpoint_hash is ""
    # and images carry no `Model hash` rather than one that matches no checkpoint anywhere.
    name: str = ""
    checkpoint_hash: str = ""
    graphs: Any = None  # engine.graphs.ModelGraphs once CUDA graphs are on (engine.speed)
    pad_batches: bool = False  # pad UNet/VAE batches to powers of two (compiled models)
    # SDXL only: the second tokenizer and text encoder (a CLIPTextModelWithProjection), and
    # the pipeline's rule for an empty negative prompt (zeros instead of its encoding).
    tokenizer_2: Any = None
    text_encoder_2: Any = None
    force_zeros_for_empty_prompt: bool = False

    @property
    def is_sdxl(self) -> bool:
        return self.text_encoder_2 is not None

    @property
    def vae_scale_factor(self) -> int:
        return int(2 ** (len(self.vae.config.block_out_channels) - 1))

    @property
    def latent_channels(self) -> int:
        return int(self.unet.config.in_channels)


def resolve_device(device: str) -> torch.device:
    """`auto` → CUDA if present else CPU; an explicit device that is absent is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ModelLoadError(
            f"LEXICON_DEVICE={device!r} is not a device; use auto, cpu or cuda."
        ) from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(
                "LEXICON_DEVICE asks for cuda but no CUDA GPU is available; set it to auto or cpu."
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ModelLoadError(
                f"LEXICON_DEVICE asks for {device} but only {torch.cuda.device_count()} "
                "CUDA GPU(s) exist."
            )
    elif resolved.type != "cpu":
        raise ModelLoadError(f"LEXICON_DEVICE={device!r} is not supported; use auto, cpu or cuda.")
    return resolved


def resolve_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    """float16 on CUDA and float32 on CPU unless asked otherwise ('bf16', torch.bfloat16, …)."""
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype.lower()]
    except KeyError:
        raise ModelLoadError(f"dtype {dtype!r} is not supported; use fp32, fp16 or bf16.") from None


def load_model(
    spec: str,
    device: str = "auto",
    *,
    data_dir: Path,
    dtype: torch.dtype | str | None = None,
    config: Path | None = None,
    vae_float32: bool = False,
) -> LoadedModel:
    """Load `spec` (see the module docstring) onto `device`, frozen and in eval mode;
    `vae_float32` keeps a float16 model's `force_upcast` VAE in float32 on every GPU."""
    target = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, target)
    data_dir = Path(data_dir)
    checkpoint_hash = ""  # A1111's "Model hash" exists only for a single-file checkpoint

    if spec in TINY_SPECS:
        folder = ensure_tiny_model(data_dir / "models" / spec, family=TINY_SPECS[spec])
        pipeline = _from_folder(folder, torch_dtype)
        model_hash, name = _folder_hash(folder), spec
    elif Path(spec).expanduser().is_dir():
        folder = Path(spec).expanduser()
        if not (folder / "model_index.json").is_file():
            raise ModelLoadError(
                f"LEXICON_MODEL folder {folder} is not a diffusers model (no model_index.json)."
            )
        pipeline = _from_folder(folder, torch_dtype)
        model_hash, name = _folder_hash(folder), folder.name
    elif Path(spec).expanduser().suffix in _SINGLE_FILE_SUFFIXES:
        checkpoint = Path(spec).expanduser()
        if not checkpoint.is_file():
            raise ModelLoadError(f"LEXICON_MODEL file {checkpoint} does not exist.")
        pipeline = _from_single_file(
            checkpoint, _single_file_config(checkpoint, config, data_dir), torch_dtype
        )
        model_hash = _file_hash(checkpoint)
        name, checkpoint_hash = checkpoint.stem, model_hash
    else:
        pipeline, model_hash = _from_hub(spec, torch_dtype)
        name = spec

    loaded = _assemble(pipeline, target, torch_dtype, model_hash, spec, vae_float32)
    loaded.name, loaded.checkpoint_hash = name, checkpoint_hash
    return loaded


def ensure_tiny_model(folder: Path, seed: int = 0, family: str = "sd1") -> Path:
    """Build the tiny model of `family` into `folder` unless a complete one is already there."""
    if is_tiny_model(folder):
        return folder
    scratch = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    make_tiny_model(scratch, seed=seed, family=family)
    if folder.exists() and not is_tiny_model(folder):
        shutil.rmtree(folder)  # a half-written folder from an interrupted build
    try:
        scratch.rename(folder)
    except OSError:
        if not is_tiny_model(folder):  # someone else won the race only if theirs is complete
            raise
        shutil.rmtree(scratch, ignore_errors=True)
    return folder


def _is_sdxl_folder(folder: Path) -> bool:
    """Whether the diffusers folder's `model_index.json` names the SDXL pipeline."""
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # from_pretrained then says what is wrong with the folder
    return isinstance(index, dict) and index.get("_class_name") == _SDXL_PIPELINE


def _pipeline_class(sdxl: bool = False) -> Any:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    return StableDiffusionXLPipeline if sdxl else StableDiffusionPipeline


def _quiet(dtype: torch.dtype, sdxl: bool = False) -> dict[str, Any]:
    if sdxl:  # no safety checker to turn off; the invisible watermark is off
        return {"add_watermarker": False, "dtype": dtype}
    return {"safety_checker": None, "requires_safety_checker": False, "dtype": dtype}


def _from_folder(folder: Path, dtype: torch.dtype) -> Any:
    sdxl = _is_sdxl_folder(folder)
    try:
        return _pipeline_class(sdxl).from_pretrained(
            folder, local_files_only=True, **_quiet(dtype, sdxl)
        )
    except Exception as error:
        raise ModelLoadError(
            f"The diffusers model in {folder} could not be loaded ({_short(error)})."
        ) from error


def _single_file_config(checkpoint: Path, config: Path | None, data_dir: Path) -> Path:
    candidates = [config] if config is not None else []
    candidates += [checkpoint.with_suffix(""), data_dir / "models" / "config"]
    for candidate in candidates:
        if candidate is not None and (candidate / "model_index.json").is_file():
            return candidate
    raise ModelLoadError(
        f"The checkpoint {checkpoint.name} needs a local diffusers config folder: put one at "
        f"{checkpoint.with_suffix('')} or {data_dir / 'models' / 'config'}."
    )


def _from_single_file(checkpoint: Path, config: Path, dtype: torch.dtype) -> Any:
    sdxl = _is_sdxl_folder(config)
    try:
        return _pipeline_class(sdxl).from_single_file(
            str(checkpoint), config=str(config), local_files_only=True, **_quiet(dtype, sdxl)
        )
    except Exception as error:
        raise ModelLoadError(
            f"The checkpoint {checkpoint.name} could not be loaded with the config in {config} "
            f"({_short(error)})."
        ) from error


def _from_hub(spec: str, dtype: torch.dtype) -> tuple[Any, str]:
    if spec.count("/") != 1 or spec.startswith(("/", ".")):
        raise ModelLoadError(
            f"LEXICON_MODEL={spec!r} is neither tiny, a local folder, a .safetensors/.ckpt "
            "file nor a hub id like org/name."
        )
    pipeline_class = _pipeline_class()
    try:
        pipeline = pipeline_class.from_pretrained(spec, local_files_only=True, **_quiet(dtype))
    except Exception:
        try:
            pipeline = pipeline_class.from_pretrained(spec, **_quiet(dtype))
        except Exception as error:
            raise ModelLoadError(
                f"The hub model {spec} is not in the local Hugging Face cache and could not be "
                "downloaded; download it first or set LEXICON_MODEL to a local folder."
            ) from error
    commit = getattr(pipeline.config, "_commit_hash", None) or ""
    digest = hashlib.sha256(f"{spec}@{commit}".encode()).hexdigest()
    return pipeline, digest[:10]


def upcast_vae_dtype(vae_float32: bool, capability: tuple[int, int] | None) -> torch.dtype:
    """The dtype of a VAE that overflows in float16 (`force_upcast`) in a float16 model on a
    device of CUDA compute `capability` (None: not a CUDA device). bfloat16 has float32's range,
    so it does not overflow; GPUs from compute capability 8.0 (Ampere) on compute it natively and
    decode an SDXL batch of 8 at 1024² in 0.29 s instead of float32's 0.53 s on an H200, within
    3/255 of float32's pixels (docs/BENCHMARKS.md). Older GPUs, or `vae_float32`, get float32:
    stock diffusers' choice."""
    if vae_float32 or capability is None or capability[0] < 8:
        return torch.float32
    return torch.bfloat16


def _latent_statistics(vae: Any, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The VAE config's per-channel `latents_mean` and `latents_std`, shaped and typed to
    broadcast over `like`; None where the config has not both (SD 1.x and SDXL base)."""
    mean = getattr(vae.config, "latents_mean", None)
    std = getattr(vae.config, "latents_std", None)
    if mean is None or std is None:
        return None
    shape = (1, len(mean), 1, 1)
    as_like = {"device": like.device, "dtype": like.dtype}
    return torch.tensor(mean).view(shape).to(**as_like), torch.tensor(std).view(shape).to(**as_like)


def scale_latents(vae: Any, encoded: torch.Tensor) -> torch.Tensor:
    """What the VAE encoded → the UNet's latent space, as stock SD and SDXL pipelines do: times
    the scaling factor, after `(x - latents_mean) / latents_std` where the VAE's config gives
    them. Image-to-image and the trainer's photos both go through here."""
    statistics = _latent_statistics(vae, encoded)
    if statistics is None:
        return vae.config.scaling_factor * encoded
    mean, std = statistics
    return (encoded - mean) * vae.config.scaling_factor / std


def unscale_latents(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    """`scale_latents` undone, for the VAE to decode, in its dtype. The arithmetic is float32:
    stock's for an upcast VAE (it converts, then unscales), and one rounding, not two, for a
    bfloat16 one."""
    latents = latents.float()
    statistics = _latent_statistics(vae, latents)
    if statistics is None:
        return (latents / vae.config.scaling_factor).to(vae.dtype)
    mean, std = statistics
    return (latents * std / vae.config.scaling_factor + mean).to(vae.dtype)


def _assemble(
    pipeline: Any,
    device: torch.device,
    dtype: torch.dtype,
    model_hash: str,
    spec: str,
    vae_float32: bool,
) -> LoadedModel:
    text_encoder = pipeline.text_encoder
    text_encoder_2 = getattr(pipeline, "text_encoder_2", None)
    if text_encoder_2 is not None:
        hidden_size, family = _sdxl_family(text_encoder, text_encoder_2, spec)
    else:
        hidden_size = int(text_encoder.config.hidden_size)
        try:
            family = family_for_width(hidden_size)
        except EmbeddingFileError:
            raise ModelLoadError(
                f"The model {spec} has a text encoder of width {hidden_size}, which is not an "
                "SD 1.x or SD 2.x model."
            ) from None
    modules = [text_encoder, pipeline.unet, pipeline.vae]
    if text_encoder_2 is not None:
        modules.append(text_encoder_2)
        if dtype == torch.float16 and pipeline.vae.config.get("force_upcast", False):
            capability = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
            vae_dtype = upcast_vae_dtype(vae_float32, capability)
            pipeline.vae.to(vae_dtype)  # SDXL's VAE overflows in float16
            log.info("%s: the VAE runs in %s (LEXICON_VAE_FLOAT32)", spec, vae_dtype)
    for module in modules:
        module.requires_grad_(False)
        module.eval()
        module.to(device=device)
    scale = 2 ** (len(pipeline.vae.config.block_out_channels) - 1)
    return LoadedModel(
        tokenizer=pipeline.tokenizer,
        text_encoder=text_encoder,
        unet=pipeline.unet,
        vae=pipeline.vae,
        scheduler_config=pipeline.scheduler.config,
        device=device,
        dtype=dtype,
        family=family,
        hidden_size=hidden_size,
        model_hash=model_hash,
        native_size=int(pipeline.unet.config.sample_size) * scale,
        source=spec,
        tokenizer_2=getattr(pipeline, "tokenizer_2", None),
        text_encoder_2=text_encoder_2,
        force_zeros_for_empty_prompt=bool(
            text_encoder_2 is not None and pipeline.config.get("force_zeros_for_empty_prompt")
        ),
    )


def _sdxl_family(text_encoder: Any, text_encoder_2: Any, spec: str) -> tuple[int, str]:
    """(both encoders' widths added, family) of an SDXL pipeline, or a sentence if neither
    SDXL nor the tiny SDXL model has that pair of widths."""
    pair = (int(text_encoder.config.hidden_size), int(text_encoder_2.config.hidden_size))
    if pair not in FAMILY_BY_PAIR:
        raise ModelLoadError(
            f"The SDXL model {spec} has text encoders of widths {pair[0]}+{pair[1]}, which is "
            "not SDXL (768+1280)."
        )
    return sum(pair), FAMILY_BY_PAIR[pair]


def _file_hash(path: Path) -> str:
    """A1111's 'Model hash' of a checkpoint: the first 10 hex digits of its sha256."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_SAMPLE * 8):
            digest.update(chunk)
    return digest.hexdigest()[:10]


def _folder_hash(folder: Path) -> str:
    """A short hash of a diffusers folder's configs and weights.

    Small folders are hashed byte for byte. Large ones hash every config fully and each weight
    file's size with its first and last MiB, so start-up stays quick on multi-GB models while two
    differently trained models still differ.
    """
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    total = sum(p.stat().st_size for p in files)
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(folder)).encode())
        size = path.stat().st_size
        digest.update(str(size).encode())
        with path.open("rb") as handle:
            if total <= _FULL_HASH_LIMIT or size <= 2 * _SAMPLE or path.suffix == ".json":
                digest.update(handle.read())
            else:
                digest.update(handle.read(_SAMPLE))
                handle.seek(size - _SAMPLE)
                digest.update(handle.read(_SAMPLE))
    return digest.hexdigest()[:10]


def _short(error: BaseException) -> str:
    """The first sentence of an underlying error, to keep our message one sentence."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text.split(". ")[0][:200].rstrip(".")
