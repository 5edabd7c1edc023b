"""The check both model families' GPU tests make of training on CUDA graphs."""

from __future__ import annotations

from engine.jobs import TrainRequest
from engine.model import LoadedModel
from engine.training import Trainer, TrainRecipe


def assert_graphed_steps_equal_eager(
    eager: LoadedModel, graphed: LoadedModel, request: TrainRequest
) -> None:
    """Train `request` on both models: the graphed model's run records its step as a CUDA graph
    and ends on the eager run's vectors and loss (within 1e-3)."""
    runs = [Trainer(model, request, TrainRecipe(batch_size=4)) for model in (eager, graphed)]
    for run in runs:
        run.run_steps(request.steps)
    assert runs[1]._recorded is not None and runs[0]._recorded is None
    difference = (runs[0].vectors - runs[1].vectors).abs().max().item()
    assert difference < 1e-3, difference
    assert abs(runs[0].recent_losses[-1] - runs[1].recent_losses[-1]) < 1e-3
