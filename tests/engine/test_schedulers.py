"""Sampler names → diffusers schedulers configured like A1111's."""

from __future__ import annotations

import pytest

from engine.jobs import SAMPLERS, RequestError
from engine.model import LoadedModel
from engine.schedulers import make_scheduler, sampler_label


def test_every_name_builds_its_scheduler(tiny_model: LoadedModel) -> None:
    """Each offered name builds the expected class with A1111-equivalent options."""
    built = {name: make_scheduler(name, tiny_model.scheduler_config) for name in SAMPLERS}
    assert {n: type(s).__name__ for n, s in built.items()} == {
        "euler": "EulerDiscreteScheduler",
        "euler_a": "EulerAncestralDiscreteScheduler",
        "ddim": "DDIMScheduler",
        "dpmpp_2m": "DPMSolverMultistepScheduler",
        "dpmpp_2m_karras": "DPMSolverMultistepScheduler",
        "pndm": "PNDMScheduler",
    }
    assert built["dpmpp_2m_karras"].config.use_karras_sigmas
    assert not built["dpmpp_2m"].config.use_karras_sigmas
    assert built["dpmpp_2m"].config.algorithm_type == "dpmsolver++"
    assert built["euler"].config.timestep_spacing == "linspace"
    assert built["ddim"].config.beta_schedule == "scaled_linear"  # the model's own betas
    built["euler"].set_timesteps(4)
    assert built["euler"].timesteps.tolist() == [999.0, 666.0, 333.0, 0.0]


def test_labels_are_a1111_sampler_names() -> None:
    """PNG parameters use A1111's sampler names."""
    assert [sampler_label(n) for n in SAMPLERS] == [
        "Euler",
        "Euler a",
        "DDIM",
        "DPM++ 2M",
        "DPM++ 2M Karras",
        "PLMS",
    ]


def test_unknown_name_lists_the_valid_ones(tiny_model: LoadedModel) -> None:
    """An unknown sampler is one sentence listing every valid name."""
    with pytest.raises(RequestError) as caught:
        make_scheduler("k_lms", tiny_model.scheduler_config)
    assert str(caught.value) == (
        "Unknown sampler 'k_lms'; choose one of euler, euler_a, ddim, dpmpp_2m, "
        "dpmpp_2m_karras, pndm (default dpmpp_2m_karras)."
    )
