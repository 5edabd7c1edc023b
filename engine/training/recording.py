"""One training step's forward and backward, recorded as a CUDA graph and replayed.

The eager step issues ~2,800 kernels (text encoder and UNet, forward and input-gradient
backward) and costs about the same at batch 1 as at batch 8 because the CPU cannot issue them
faster; replaying the recorded step issues them at once. The random draws stay on the CPU
generator (they are copied in), and the loss scale is an input, so a replay computes exactly what
the eager loss + `backward` would. The optimizer update stays eager: it is a handful of kernels
on one small tensor and needs the overflow check on the host.

It knows the trainer only through the loss function and the vectors it is given, so the trainer
can change how it trains without this module, and this module only with CUDA-graph mechanics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import torch

from engine.training.data import TrainBatch

log = logging.getLogger("lexicon.training")


class RecordedStep:
    """`loss_on_batch(batch)` and its backward into `vectors.grad`, recorded for one batch size."""

    def __init__(
        self,
        loss_on_batch: Callable[[TrainBatch], torch.Tensor],
        vectors: torch.Tensor,
        batch: TrainBatch,
        loss_scale: float,
        pool: Any,
    ) -> None:
        from engine.graphs import record

        self.vectors = vectors
        device = vectors.device
        self.inputs = tuple(t.to(device).clone() for t in batch.tensors())
        self.scale = torch.tensor(loss_scale, device=device)
        self.scale_value = loss_scale

        def forward_backward(*fields: torch.Tensor) -> torch.Tensor:
            vectors.grad = None  # the recorded backward writes a fresh gradient each replay
            loss = loss_on_batch(TrainBatch(*fields))
            (loss * self.scale).backward()
            return loss.detach()

        started = time.monotonic()
        self.graph, self.loss = record(forward_backward, self.inputs, pool)
        self.grad = vectors.grad
        log.info(
            "training step recorded as a CUDA graph for batch %d in %.2f s",
            len(batch.timesteps),
            time.monotonic() - started,
        )

    def run(self, batch: TrainBatch, loss_scale: float) -> torch.Tensor:
        """Replay on `batch`: the loss, with its gradient × `loss_scale` in `vectors.grad`."""
        for static, value in zip(self.inputs, batch.tensors(), strict=True):
            static.copy_(value)
        if loss_scale != self.scale_value:
            self.scale.fill_(loss_scale)
            self.scale_value = loss_scale
        self.graph.replay()
        self.vectors.grad = self.grad
        return self.loss
