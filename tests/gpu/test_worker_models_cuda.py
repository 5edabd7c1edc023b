"""A worker holding two models on one GPU: evicting the least recently used one returns its
CUDA memory to the device (CPU tests check the bookkeeping; only a GPU shows the memory)."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
import torch

from engine.graphs import record
from engine.worker.local import model_cache
from engine.worker_config import EngineSpec, ModelSource

MODELS = (ModelSource("sd", "tiny"), ModelSource("xl", "tiny-sdxl"))


def allocated() -> int:
    """Bytes the caching allocator has handed out now (after collecting what is unreachable)."""
    gc.collect()
    torch.cuda.synchronize()
    return torch.cuda.memory_allocated()


@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_an_evicted_models_memory_goes_back_to_the_gpu(tmp_path: Path, cuda_graphs: bool) -> None:
    """Both models fit under no cap; under a cap that fits one, loading the other evicts it and
    the memory allocated falls to about one model's, with or without recorded CUDA graphs."""

    def spec(memory: int | None) -> EngineSpec:
        warm_up = (1,) if cuda_graphs else ()
        return EngineSpec(
            "diffusers",
            MODELS,
            "cuda",
            tmp_path,
            cuda_graphs=cuda_graphs,
            warm_up_batches=warm_up,
            model_memory=memory,
        )

    # The process's recording streams, and the cuBLAS workspace each keeps for good, exist
    # before the baseline: they are the process's, not a model's.
    weights = torch.ones(8, 8, device="cuda")
    with torch.inference_mode():
        record(lambda x: x @ weights, (weights,), torch.cuda.graph_pool_handle())
    baseline = allocated()
    both = model_cache(spec(None))
    assert set(both.resident) == {"sd", "xl"}
    with_both = allocated() - baseline
    sizes = dict(both.policy.sizes)
    both.close()
    del both
    assert allocated() - baseline < with_both // 4  # closing a cache frees its models

    one = model_cache(spec(max(sizes.values()) + min(sizes.values()) // 2))
    try:
        assert one.resident == ("sd",)  # start loads xl, then sd, which evicts xl
        with_sd = allocated() - baseline
        _engine, seconds = one.get("xl")
        assert seconds is not None and one.resident == ("xl",)
        with_xl = allocated() - baseline
    finally:
        one.close()
    # Each eviction gave back (at least half of) what the evicted model holds on its own.
    assert with_both - with_sd >= with_xl // 2, (with_both, with_sd, with_xl)
    assert with_both - with_xl >= with_sd // 2, (with_both, with_sd, with_xl)
