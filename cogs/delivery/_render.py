"""The final message of a job: images with Reroll/Info/Delete, an embedding card, or a sentence.

A rendered message is data (text, an embed, file bytes, a view factory), so a delivery that fails
on one route can be retried on another with fresh `discord.File` objects.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from dataclasses import dataclass, field

import discord

from bot.app import Lexicon
from bot.services import job_notes
from cogs.buttons import card_view, result_view
from cogs.cards import embedding_card, embeddings_line
from cogs.images import Upload, fit_uploads
from cogs.text import cancelled_text, failed_text, job_title
from engine.jobs import GenerateRequest, TrainRequest
from storage.errors import NotFound
from storage.models import Image, Job, JobKind, JobState


@dataclass
class Outgoing:
    content: str
    embeds: list[discord.Embed] = field(default_factory=list)
    uploads: list[Upload] = field(default_factory=list)
    view: Callable[[], discord.ui.View | None] = lambda: None
    mention_in_channel: bool = True  # after the token expired: post it to the channel
    remove: bool = False  # the job's message goes away (a cancelled job leaves no clutter)

    def files(self) -> list[discord.File]:
        return [discord.File(io.BytesIO(u.data), filename=u.filename) for u in self.uploads]


async def render_final(app: Lexicon, job: Job, upload_limit: int) -> Outgoing:
    if job.state is JobState.CANCELLED:
        return Outgoing(cancelled_text(job), mention_in_channel=False, remove=True)
    if job.state is JobState.FAILED:
        return Outgoing(failed_text(job))
    if job.kind is JobKind.TRAIN:
        return await _train_card(app, job, upload_limit)
    return await _generate_result(app, job, upload_limit)


async def _uploads_of(app: Lexicon, job: Job, stem: str) -> tuple[list[Upload], list[Image]]:
    """A job's images as uploads named `stem-idx.png`, and their rows."""
    images = await app.storage.images.list_for_job(job.id)
    uploads = [
        Upload(f"{stem}-{image.idx}.png", await app.storage.images.read_png(image))
        for image in images
    ]
    return uploads, images


async def _generate_result(app: Lexicon, job: Job, upload_limit: int) -> Outgoing:
    uploads, images = await _uploads_of(app, job, f"lexicon-{job.id}")
    uploads = await asyncio.to_thread(fit_uploads, uploads, upload_limit)
    request = GenerateRequest.from_params(job.params)
    details = [
        *await _upscale_of(app, request),
        *_seeds(images),
        f"{request.steps} steps",
        f"{request.out_width}x{request.out_height}",
    ]
    if request.is_img2img:
        details.append(f"strength {request.strength:g}")
    lines = [job_title(job), " · ".join(details), await embeddings_line(app, request, job.user_id)]
    lines.extend(f"-# {note}" for note in job_notes(job))
    indices = [image.idx for image in images]
    upscaled = bool(request.hires_steps)
    return Outgoing(
        "\n".join(lines),
        uploads=uploads,
        view=lambda: result_view(job.id, indices, upscaled=upscaled),
    )


async def _upscale_of(app: Lexicon, request: GenerateRequest) -> list[str]:
    """`×2 upscale of image 2 of job #5` for an upscale (its starting image is a stored image,
    found by its sha256), else nothing."""
    if not request.hires_steps:
        return []
    try:
        source = await app.storage.images.find(request.init_sha256)
    except NotFound:  # the source was deleted since
        return [f"×{request.scale} upscale"]
    return [f"×{request.scale} upscale of image {source.idx + 1} of job #{source.job_id}"]


def _seeds(images: list[Image]) -> list[str]:
    """`seed 42`, or one seed per image: `image 1 seed 42`, `image 2 seed 43`, …"""
    if len(images) == 1:
        return [f"seed {images[0].seed}"]
    return [f"image {image.idx + 1} seed {image.seed}" for image in images]


async def _train_card(app: Lexicon, job: Job, upload_limit: int) -> Outgoing:
    result = job.result or {}
    try:
        embedding = await app.storage.embeddings.get(int(result["embedding_id"]), job.user_id)
    except (KeyError, NotFound):
        return Outgoing(
            f"The {job_title(job)} (job #{job.id}) finished, but its embedding is gone."
        )
    uploads, _images = await _uploads_of(app, job, embedding.name_folded)
    uploads = await asyncio.to_thread(fit_uploads, uploads, upload_limit)
    kind = TrainRequest.from_params(job.params).kind
    shown = [u.filename for u in uploads]
    model = app.scheduler.model_of(job)
    embeds = embedding_card(embedding, kind=kind, images=shown, model=model)
    content = (
        f"**{embedding.name}** is ready — write `<{embedding.name_folded}>` in `/imagine`. "
        "Here is what it makes:"
    )
    return Outgoing(content, embeds=embeds, uploads=uploads, view=lambda: card_view(embedding))
