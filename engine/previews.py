"""Cheap progress previews: latents → RGB by a fixed linear map, no VAE.

A VAE decode per preview would cost as much as several denoising steps; A1111's "Approx cheap"
preview instead projects SD 1.x's four latent channels onto RGB with a fixed 4×3 matrix. The
result is blurry and one eighth of the image's size, which is all a Discord progress message needs.
"""

from __future__ import annotations

import io

import torch
from PIL import Image

# SD 1.x latent channel → RGB contributions (A1111's "Approx cheap" factors).
SD1_LATENT_RGB = (
    (0.298, 0.207, 0.208),
    (0.187, 0.286, 0.173),
    (-0.158, 0.189, 0.264),
    (-0.184, -0.271, -0.473),
)


def latents_to_rgb(latents: torch.Tensor) -> torch.Tensor:
    """One image's latents `[4, h, w]` → uint8 RGB `[h, w, 3]` on CPU."""
    factors = torch.tensor(SD1_LATENT_RGB, dtype=torch.float32)
    rgb = torch.einsum("chw,cr->hwr", latents.detach().float().cpu(), factors)
    return ((rgb + 1) * 127.5).clamp(0, 255).round().to(torch.uint8)


def preview_png(latents: torch.Tensor, min_side: int = 64) -> bytes:
    """A small PNG of one image's latents `[4, h, w]`, upscaled to at least `min_side` pixels."""
    image = Image.fromarray(latents_to_rgb(latents).numpy(), mode="RGB")
    short = min(image.size)
    if short < min_side:
        scale = -(-min_side // short)
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
