"""The buttons on results and embedding cards, and the extension that registers them and the
Cancel button (see `cogs.persistent` for how they survive a restart; `/library`'s page buttons
are registered by `cogs.embeddings`, which owns `/library`)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
from collections.abc import Awaitable, Callable

import discord

from bot.app import Lexicon
from bot.discord_bot import LexiconBot
from bot.services import ImagineOptions, ServiceError, Submitted
from cogs.cards import embeddings_line, example_prompts, how_to_use, technical_details
from cogs.common import actor_of, check_lookup, check_rate, shorten
from cogs.edit import EditModal
from cogs.images import parse_parameters
from cogs.persistent import PersistentButton
from cogs.queueing import CancelButton, queue_imagine, queue_job
from cogs.settings import chosen
from engine.jobs import GenerateRequest, TrainRequest
from engine.png import read_parameters
from storage.errors import NotFound
from storage.models import Delivery, Embedding, EmbeddingKind, Image, Job


async def trained_as(app: Lexicon, embedding: Embedding) -> tuple[str | None, Job | None]:
    """The kind the word was trained as (object, style, face) and its training job, if any."""
    if embedding.job_id is None:
        return None, None
    try:
        job = await app.storage.jobs.get(embedding.job_id)
    except NotFound:
        return None, None
    return TrainRequest.from_params(job.params).kind, job


async def visible_embedding(
    interaction: discord.Interaction[LexiconBot], embedding_id: int
) -> Embedding:
    """The embedding if the member may see it, else a refusal that says what to do instead."""
    try:
        return await interaction.client.app.storage.embeddings.get(
            embedding_id, interaction.user.id
        )
    except NotFound:
        raise ServiceError(
            "That word is private to the person who trained it; ask them to share it, or "
            "find shared ones with `/library`."
        ) from None


class RerollButton(PersistentButton, action="reroll", fields=("job", "idx")):
    """The same request again, every image with a new seed, queued for whoever clicks (with
    their own embeddings; the result says what that changed)."""

    label = "Reroll"
    style = discord.ButtonStyle.primary

    async def pressed(self, interaction: discord.Interaction[LexiconBot]) -> None:
        check_rate(interaction)
        app = interaction.client.app
        job = await app.storage.jobs.get(self.value("job"))
        await queue_imagine(interaction, ImagineOptions.again(source_request(app, job)))


def source_request(app: Lexicon, job: Job) -> GenerateRequest:
    """The request behind a result, naming the model it ran on (a button keeps that model)."""
    request = GenerateRequest.from_params(job.params)
    return dataclasses.replace(request, model=app.scheduler.model_of(job))


class InfoButton(PersistentButton, action="info", fields=("job", "idx")):
    """What made this one image, read from the `parameters` chunk of its PNG, with the image
    itself (private)."""

    label = "Info"

    async def pressed(self, interaction: discord.Interaction[LexiconBot]) -> None:
        app = interaction.client.app
        job, image = await _looked_up_image(interaction, self)
        png = await app.storage.images.read_png(image)
        info = parse_parameters(read_parameters(png))
        request = GenerateRequest.from_params(job.params)
        lines = [f"**Image {image.idx + 1} of {request.count}** from job #{job.id}"]
        lines.append(f"**Prompt** {shorten(info.prompt, 900)}")
        if info.negative:
            lines.append(f"**Negative** {shorten(info.negative, 500)}")
        lines.append(f"**Seed** {info.seed or image.seed}")
        lines.append(f"**Model** {app.scheduler.model_of(job)}")
        lines.append(await embeddings_line(app, request, job.user_id))
        shown = ("Steps", "Sampler", "CFG scale", "Size", "Model hash")
        settings = [f"{key} {info.settings[key]}" for key in shown if key in info.settings]
        if settings:
            lines.append(" · ".join(settings))
        mine = chosen(await app.defaults.show(interaction.user.id))
        if mine:
            shown_defaults = ", ".join(f"{label} {value}" for label, value in mine)
            lines.append(
                f"**Your defaults** {shorten(shown_defaults, 300)} (used for what you leave "
                "out; `/settings`)"
            )
        await interaction.response.send_message(
            "\n".join(lines),
            file=discord.File(io.BytesIO(png), filename=f"lexicon-{job.id}-{image.idx}.png"),
            ephemeral=True,
        )


class VaryButton(PersistentButton, action="vary", fields=("job", "idx")):
    """Vary (subtle): this image as the start, a new seed, the same prompt; for whoever
    clicks (their rights, queue and embeddings)."""

    label = "Vary (subtle)"
    strong = False

    async def pressed(self, interaction: discord.Interaction[LexiconBot]) -> None:
        vary = interaction.client.app.imagine.vary
        await _queue_from_image(interaction, self, functools.partial(vary, strong=self.strong))


class VaryStrongButton(VaryButton, action="vary-strong", fields=("job", "idx")):
    """Vary (strong): the same, moved further from the image."""

    label = "Vary (strong)"
    strong = True


class UpscaleButton(PersistentButton, action="upscale", fields=("job", "idx")):
    """Upscale ×2 (Hires. fix) of this image, for whoever clicks."""

    label = "Upscale ×2"

    async def pressed(self, interaction: discord.Interaction[LexiconBot]) -> None:
        await _queue_from_image(interaction, self, interaction.client.app.imagine.upscale)


async def _queue_from_image(
    interaction: discord.Interaction[LexiconBot],
    button: PersistentButton,
    start: Callable[..., Awaitable[Submitted]],
) -> None:
    """Queue `start(user, job, idx, …)` (an `ImagineService` image tool) for the clicker."""
    check_rate(interaction)

    async def submit(delivery: Delivery) -> Submitted:
        return await start(
            interaction.user.id,
            button.value("job"),
            button.value("idx"),
            guild_id=interaction.guild_id,
            delivery=delivery,
        )

    await queue_job(interaction, submit)


class EditButton(PersistentButton, action="edit", fields=("job", "idx")):
    """Edit & rerun: a modal prefilled with what made this image (`cogs.edit`)."""

    label = "Edit & rerun"

    async def pressed(self, interaction: discord.Interaction[LexiconBot]) -> None:
        app = interaction.client.app
        job, image = await _looked_up_image(interaction, self)
        request = source_request(app, job)
        title = f"Edit image {image.idx + 1} of job #{job.id}"
        await interaction.response.send_modal(
            EditModal(request, image.seed, title, app.settings.allowed_sizes)
        )


async def _looked_up_image(
    interaction: discord.Interaction[LexiconBot], button: PersistentButton
) -> tuple[Job, Image]:
    """The job and image a `job`/`idx` button names, counted as a look-up."""
    check_lookup(interaction)
    storage = interaction.client.app.storage
    job = await storage.jobs.get(button.value("job"))
    return job, await storage.images.get(job.id, button.value("idx"))


class DeleteButton(PersistentButton, action="delete", fields=("job",)):
    """Ask the person whose images these are to confirm; nothing is deleted yet."""

    label = "Delete"
    style = discord.ButtonStyle.danger

    async def pressed(self, interaction: discord.Interaction[LexiconBot]) -> None:
        check_lookup(interaction)
        job = await _own_job(interaction, self.value("job"))
        assert interaction.message is not None
        count = GenerateRequest.from_params(job.params).count
        view = discord.ui.View(timeout=None)
        view.add_item(ConfirmDeleteButton(job.id, interaction.message.id))
        images = "this image" if count == 1 else f"these {count} images"
        await interaction.response.send_message(
            f"Delete {images} for everyone? This cannot be undone.", view=view, ephemeral=True
        )


class ConfirmDeleteButton(PersistentButton, action="delete-yes", fields=("job", "message")):
    """Delete a result message, once its owner confirmed."""

    label = "Delete for good"
    style = discord.ButtonStyle.danger

    async def pressed(self, interaction: discord.Interaction[LexiconBot]) -> None:
        await _own_job(interaction, self.value("job"))
        assert interaction.channel_id is not None
        channel = interaction.client.get_partial_messageable(
            interaction.channel_id, guild_id=interaction.guild_id
        )
        with contextlib.suppress(discord.NotFound):
            await channel.get_partial_message(self.value("message")).delete()
        await interaction.response.edit_message(content="Deleted.", view=None)


async def _own_job(interaction: discord.Interaction[LexiconBot], job_id: int) -> Job:
    job = await interaction.client.app.storage.jobs.get(job_id)
    if job.user_id != interaction.user.id:
        raise ServiceError(
            "Only the person who asked for these images can delete them; "
            "Reroll makes your own copy."
        )
    return job


class TryButton(PersistentButton, action="try", fields=("embedding",)):
    """Render a word's first example prompt, for whoever clicks (if they may use it)."""

    label = "Try it"
    style = discord.ButtonStyle.primary

    async def pressed(self, interaction: discord.Interaction[LexiconBot]) -> None:
        check_rate(interaction)
        embedding = await visible_embedding(interaction, self.value("embedding"))
        kind, _ = await trained_as(interaction.client.app, embedding)
        options = (
            ImagineOptions("a photo of a cat", negative=f"<{embedding.name_folded}>")
            if embedding.kind is EmbeddingKind.NEGATIVE
            else ImagineOptions(example_prompts(embedding, kind)[0])
        )
        await queue_imagine(interaction, options)


class HowToButton(PersistentButton, action="howto", fields=("embedding",)):
    """How to write this word in a prompt, with examples (private)."""

    label = "How to use"

    async def pressed(self, interaction: discord.Interaction[LexiconBot]) -> None:
        check_lookup(interaction)
        embedding = await visible_embedding(interaction, self.value("embedding"))
        kind, _ = await trained_as(interaction.client.app, embedding)
        await interaction.response.send_message(how_to_use(embedding, kind), ephemeral=True)


class DetailsButton(PersistentButton, action="details", fields=("embedding",)):
    """The technical details of a word: vectors, model family, steps, loss, file hash."""

    label = "Info"

    async def pressed(self, interaction: discord.Interaction[LexiconBot]) -> None:
        check_lookup(interaction)
        embedding = await visible_embedding(interaction, self.value("embedding"))
        _, job = await trained_as(interaction.client.app, embedding)
        steps = TrainRequest.from_params(job.params).steps if job is not None else None
        loss = (job.result or {}).get("final_loss") if job is not None else None
        model = interaction.client.app.scheduler.model_of(job) if job is not None else None
        await interaction.response.send_message(
            technical_details(embedding, steps=steps, final_loss=loss, model=model),
            ephemeral=True,
        )


class ShareButton(PersistentButton, action="share", fields=("embedding",)):
    """Put an embedding in this server's library (its owner only; the library service checks)."""

    label = "Share"

    async def pressed(self, interaction: discord.Interaction[LexiconBot]) -> None:
        check_lookup(interaction)
        embeddings = interaction.client.app.storage.embeddings
        try:
            embedding = await embeddings.get(self.value("embedding"), interaction.user.id)
        except NotFound:
            embedding = None
        if embedding is None or embedding.owner_id != interaction.user.id:
            raise ServiceError(
                "Only the person who trained this word can share it; `/train` your own from "
                "3 photos."
            )
        library = interaction.client.app.library
        shared = await library.share_by_id(actor_of(interaction), embedding.id)
        await interaction.response.send_message(
            f"**{shared.name}** is in the shared library now; anyone can write "
            f"`<{shared.name_folded}>`.",
            ephemeral=True,
        )


def result_view(job_id: int, indices: list[int], *, upscaled: bool = False) -> discord.ui.View:
    """Reroll (new seeds for all) and Delete on the first row, then a row per image: Vary
    subtle and strong, Upscale (not for an upscaled image), Edit, Info; each knows its image.
    Four images make 2 + 4 × 5 = 22 buttons, inside Discord's 5 rows of 5."""
    view = discord.ui.View(timeout=None)
    view.add_item(RerollButton(job_id, 0, row=0))
    view.add_item(DeleteButton(job_id, row=0))
    tools: list[tuple[type[PersistentButton], str]] = [
        (VaryButton, "Vary subtle"),
        (VaryStrongButton, "Vary strong"),
        (UpscaleButton, "Upscale"),
        (EditButton, "Edit"),
        (InfoButton, "Info"),
    ]
    if upscaled:
        tools.remove((UpscaleButton, "Upscale"))
    for row, idx in enumerate(indices[:4], start=1):
        for button, short in tools:
            label = None if len(indices) == 1 else f"{short} {idx + 1}"
            view.add_item(button(job_id, idx, label=label, row=row))
    return view


def card_view(embedding: Embedding) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    if embedding.kind is EmbeddingKind.POSITIVE:
        view.add_item(TryButton(embedding.id))
    view.add_item(HowToButton(embedding.id))
    view.add_item(DetailsButton(embedding.id))
    if not embedding.is_shared:
        view.add_item(ShareButton(embedding.id))
    return view


PERSISTENT_BUTTONS: tuple[type[PersistentButton], ...] = (
    CancelButton,
    RerollButton,
    InfoButton,
    VaryButton,
    VaryStrongButton,
    UpscaleButton,
    EditButton,
    DeleteButton,
    ConfirmDeleteButton,
    TryButton,
    HowToButton,
    DetailsButton,
    ShareButton,
)


async def setup(bot: LexiconBot) -> None:
    bot.add_dynamic_items(*PERSISTENT_BUTTONS)


async def teardown(bot: LexiconBot) -> None:
    bot.remove_dynamic_items(*PERSISTENT_BUTTONS)
