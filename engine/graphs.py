"""CUDA graphs: replay a whole forward (or forward + backward) with one launch.

On an H100 the SD 1.5 UNet at the batch of one CFG image is bound by kernel launches, not by
arithmetic: eager PyTorch spends ~40 ms of CPU per step issuing ~1,500 kernels that the GPU runs
in a fraction of that (docs/BENCHMARKS.md). A CUDA graph records the kernels of one call for one
set of input shapes; replaying it issues them all at once.

The rules that keep a replay identical to the eager call it recorded:

- **Static shapes.** A `GraphCache` holds one graph per input signature (shapes and dtypes),
  recorded on the signature's first use after `WARMUP_CALLS` eager calls on a side stream (so
  cuDNN and cuBLAS have chosen their kernels and lazy buffers exist).
- **Static memory.** Inputs are copied into the graph's own buffers before a replay, and outputs
  are cloned out after it, so a later replay never changes a tensor a caller holds.
- **One pool, one replay at a time.** All graphs of a model share one memory pool; that is
  safe because the worker replays them from one thread, one after another, and every graph's
  inputs and outputs stay alive as long as the graph does.
- **Nothing on the CPU inside.** A recorded region may not synchronise with the host or draw
  random numbers; callers keep seeds and per-image generators outside (see `engine.generate`).

Graphs only change speed: the same kernels run on the same data. `tests/gpu` compares graphed and
eager results on the GPU; on CPU nothing here is used.
"""

from __future__ import annotations

import functools
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import torch

log = logging.getLogger("lexicon.engine")

WARMUP_CALLS = 2
MAX_GRAPHS = 24  # per cache; the least recently used graph is dropped beyond this

Signature = tuple[tuple[tuple[int, ...], torch.dtype] | None, ...]


class GraphCaptureError(RuntimeError):
    """A call could not be recorded as a CUDA graph; the message names the call and shapes."""


Output: TypeAlias = torch.Tensor | tuple[torch.Tensor, ...]


@dataclass
class _Recorded:
    graph: torch.cuda.CUDAGraph
    inputs: tuple[torch.Tensor | None, ...]
    output: Output

    def fresh_output(self) -> Any:
        """The output of the last replay, cloned (a tensor, or a tuple of them)."""
        if isinstance(self.output, tuple):
            return tuple(part.clone() for part in self.output)
        return self.output.clone()


def bucket(rows: int) -> int:
    """The power of two at or above `rows`: the batch sizes that graphs and compiled kernels are
    built for, so a busy queue records a handful of shapes rather than one per batch size."""
    return 1 << max(0, rows - 1).bit_length()


def signature(args: tuple[torch.Tensor | None, ...]) -> Signature:
    return tuple(None if a is None else (tuple(a.shape), a.dtype) for a in args)


@functools.cache
def _streams(device: int) -> tuple[torch.cuda.Stream, torch.cuda.Stream]:
    """The stream warm-up calls run on and the stream graphs are recorded on, one pair per
    device for the process. cuBLAS keeps a workspace for each stream it has run on and never
    frees it, so a fresh pair per recording leaked GPU memory at every graph recorded."""
    return torch.cuda.Stream(device), torch.cuda.Stream(device)


def record(
    fn: Callable[..., Any], inputs: tuple[torch.Tensor | None, ...], pool: Any
) -> tuple[torch.cuda.CUDAGraph, Any]:
    """Warm `fn(*inputs)` up on a side stream, then record one call; (graph, its output).

    Records on the current CUDA device (`engine.speed` makes the model's device current)."""
    side, capture = _streams(torch.cuda.current_device())
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(WARMUP_CALLS):
            fn(*inputs)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool, stream=capture):
        output = fn(*inputs)
    return graph, output


class GraphCache:
    """`fn(*tensors) -> tensor` (or a tuple of tensors), replayed from a CUDA graph per input
    signature.

    Arguments may be `None` (an absent optional input); the output is fresh (cloned). Calls run
    under `torch.inference_mode()`. A signature that cannot be recorded runs eagerly from then
    on, with a warning — unless `strict` (set during worker warm-up), which raises
    `GraphCaptureError` so a worker never starts slower than it was configured to be.
    """

    def __init__(self, name: str, fn: Callable[..., Output], pool: Any) -> None:
        self.name = name
        self.fn = fn
        self.pool = pool
        self.strict = False
        self._graphs: OrderedDict[Signature, _Recorded] = OrderedDict()
        self._failed: set[Signature] = set()

    def __len__(self) -> int:
        return len(self._graphs)

    def __call__(self, *args: torch.Tensor | None) -> Any:
        key = signature(args)
        with torch.inference_mode():
            recorded = self._graphs.get(key)
            if recorded is None:
                if key in self._failed:
                    return self.fn(*args)
                recorded = self._record(key, args)
                if recorded is None:
                    return self.fn(*args)
            else:
                self._graphs.move_to_end(key)
            for static, value in zip(recorded.inputs, args, strict=True):
                if static is not None:
                    static.copy_(value)
            recorded.graph.replay()
            return recorded.fresh_output()

    def _record(self, key: Signature, args: tuple[torch.Tensor | None, ...]) -> _Recorded | None:
        inputs = tuple(None if a is None else a.clone() for a in args)
        try:
            graph, output = record(self.fn, inputs, self.pool)
        except Exception as error:
            if self.strict:
                raise GraphCaptureError(
                    f"{self.name} could not be recorded as a CUDA graph for {_shapes(key)}: "
                    f"{error}; set LEXICON_CUDA_GRAPHS=off to run it eagerly."
                ) from error
            # Correct but slower: this signature runs eagerly from now on, and says so once.
            log.warning(
                "%s runs eagerly for %s: recording a CUDA graph failed (%s)",
                self.name,
                _shapes(key),
                error,
            )
            self._failed.add(key)
            return None
        recorded = _Recorded(graph, inputs, output)
        self._graphs[key] = recorded
        if len(self._graphs) > MAX_GRAPHS:
            self._graphs.popitem(last=False)
        log.info("%s recorded for %s (%d graphs)", self.name, _shapes(key), len(self._graphs))
        return recorded


def _shapes(key: Signature) -> str:
    """`2x4x64x64, scalar, 2x77x768, -` (a dash for an absent input)."""
    return ", ".join(
        "-" if part is None else "x".join(map(str, part[0])) or "scalar" for part in key
    )


@dataclass
class ModelGraphs:
    """A loaded model's CUDA graphs — the text encoder, the UNet's denoising call and the VAE
    decode, by shape — and the memory pool that training's recorded steps share with them."""

    pool: Any
    text: GraphCache
    unet: GraphCache
    decode: GraphCache

    def set_strict(self, strict: bool) -> None:
        self.text.strict = self.unet.strict = self.decode.strict = strict
