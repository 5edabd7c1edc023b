"""Sampler names users pick → diffusers schedulers configured like their A1111 namesakes.

Each scheduler is built `from_config` of the loaded model's own scheduler config (so betas,
prediction type and offsets are the model's), with the options that make it behave like the
A1111 sampler of the same name: k-diffusion samplers (Euler, Euler a, DPM++ 2M) space their
timesteps linearly over the whole schedule, DPM++ 2M Karras uses Karras sigmas, and DDIM / PLMS use
A1111's "uniform" discretisation (diffusers' "leading" spacing with the model's step offset).
A scheduler is stateful, so every generation builds a fresh one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.jobs import SAMPLERS, check_sampler

# name → (diffusers class name, overrides, A1111 sampler label for PNG parameters)
_SPECS: dict[str, tuple[str, dict[str, Any], str]] = {
    "euler": ("EulerDiscreteScheduler", {"timestep_spacing": "linspace"}, "Euler"),
    "euler_a": ("EulerAncestralDiscreteScheduler", {"timestep_spacing": "linspace"}, "Euler a"),
    "ddim": ("DDIMScheduler", {"timestep_spacing": "leading"}, "DDIM"),
    "dpmpp_2m": (
        "DPMSolverMultistepScheduler",
        {
            "algorithm_type": "dpmsolver++",
            "solver_order": 2,
            "use_karras_sigmas": False,
            "timestep_spacing": "linspace",
        },
        "DPM++ 2M",
    ),
    "dpmpp_2m_karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
        "DPM++ 2M Karras",
    ),
    "pndm": ("PNDMScheduler", {"timestep_spacing": "leading", "skip_prk_steps": True}, "PLMS"),
}
assert tuple(_SPECS) == SAMPLERS, "engine.jobs.SAMPLERS and engine.schedulers disagree"


def make_scheduler(name: str, model_config: Mapping[str, Any]) -> Any:
    """A fresh diffusers scheduler for `name`, built from the model's scheduler config."""
    import diffusers

    class_name, overrides, _label = _SPECS[check_sampler(name)]
    scheduler_class = getattr(diffusers, class_name)
    return scheduler_class.from_config(dict(model_config), **overrides)


def sampler_label(name: str) -> str:
    """The A1111 sampler name written into PNG parameters ("DPM++ 2M Karras")."""
    return _SPECS[check_sampler(name)][2]
