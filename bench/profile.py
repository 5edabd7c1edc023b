"""Where a GPU's time goes: CUDA kernel time by kind, for one call measured under the profiler.

    shares = kernel_profile(lambda: generate(model, requests))

The categories answer the question the optimisation levers ask — how much of the time is
attention, convolution, matrix multiply, normalisation, other fused element-wise work, copies —
and `gpu_busy` against the wall clock shows what is left to the host (launches, the VAE's PNG
encoding, Python). Kernels replayed from CUDA graphs are traced like any other (CUPTI reports
graph nodes as kernels).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

# First match wins: fused Triton kernels carry the name of the op they were built around.
CATEGORIES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("attention", re.compile(r"flash|fmha|attention|attn|sdpa|mha", re.I)),
    ("normalisation", re.compile(r"group_norm|layer_norm|groupnorm|layernorm|_norm", re.I)),
    ("convolution", re.compile(r"conv|fprop|dgrad|wgrad|implicit_gemm|winograd|im2col", re.I)),
    ("matmul", re.compile(r"gemm|cutlass|nvjet|cublas|matmul|mm_|xmma|bmm", re.I)),
    ("copy", re.compile(r"memcpy|memset|copy|cat_|transpose", re.I)),
    ("fused element-wise (Triton)", re.compile(r"^triton_", re.I)),
    ("element-wise (eager)", re.compile(r"elementwise|vectorized|reduce|unrolled", re.I)),
)


def category(kernel: str) -> str:
    for name, pattern in CATEGORIES:
        if pattern.search(kernel):
            return name
    return "other"


def kernel_profile(fn: Callable[[], Any], repeats: int = 3) -> dict[str, Any]:
    """Run `fn` once to warm up, then `repeats` times under the profiler; per call: wall ms,
    GPU busy ms (sum of kernel time), the share of kernel time by category and the top kernels."""
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        started = time.perf_counter()
        for _ in range(repeats):
            fn()
        torch.cuda.synchronize()
        wall_ms = (time.perf_counter() - started) * 1000 / repeats
    by_kernel: Counter[str] = Counter()
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            by_kernel[event.name] += event.time_range.elapsed_us() / 1000 / repeats
    busy_ms = sum(by_kernel.values())
    by_category: Counter[str] = Counter()
    for kernel, ms in by_kernel.items():
        by_category[category(kernel)] += ms
    return {
        "wall_ms": round(wall_ms, 2),
        "gpu_busy_ms": round(busy_ms, 2),
        "gpu_busy_share": round(busy_ms / wall_ms, 3) if wall_ms else None,
        "kernels": sum(1 for _ in by_kernel),
        "share_by_category": {
            name: round(ms / busy_ms, 3) for name, ms in by_category.most_common()
        }
        if busy_ms
        else {},
        "top_kernels_ms": [(name[:120], round(ms, 2)) for name, ms in by_kernel.most_common(12)],
    }
