"""Textual-inversion training, split by what changes for which reason.

`recipe` (operator settings, request errors) · `templates` (prompts per kind) · `components`
(the frozen model pieces) · `data` (prompts with vector slots, initial vectors, cached latents,
a step's draws) · `recording` (the step as a CUDA graph) · `checkpoint` (resumable bytes) ·
`trainer` (the run, driven in slices by `engine.worker`) · `previews` (renders of the result, and
one half way).
Imports go one way, in that order. The names the worker's engine uses are re-exported here.
"""

from engine.training.checkpoint import CheckpointError
from engine.training.previews import render_halfway, render_previews
from engine.training.recipe import TrainRecipe, TrainRequestError
from engine.training.trainer import Trainer

__all__ = [
    "CheckpointError",
    "TrainRecipe",
    "TrainRequestError",
    "Trainer",
    "render_halfway",
    "render_previews",
]
