"""Edit & rerun: a modal prefilled with what made one image, queued as whoever submits it.

The Edit button is persistent (`cogs.buttons.EditButton`); the modal it opens lives in memory
only for `MODAL_MINUTES` (a modal has no custom-id route back after a restart, and a member
who walks away should not pin it forever). What the member types is read here into
`ImagineOptions`; every limit is checked by `ImagineService`, so a bad value is the same one
private sentence `/imagine` gives, and nothing is queued.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import discord

from bot.discord_bot import LexiconBot
from bot.services import ImagineOptions, ServiceError, embedding_names_in
from cogs.common import check_rate
from cogs.errors import report_error
from cogs.queueing import queue_imagine
from engine.jobs import MAX_PROMPT_CHARS, GenerateRequest
from storage.names import fold_for_lookup

MODAL_MINUTES = 15


def _number(name: str, text: str, kind: type[int] | type[float], example: str) -> Any:
    """`text` as a `kind` (None when left empty), or a refusal that shows the form."""
    text = text.strip()
    if not text:
        return None
    try:
        return kind(text)
    except ValueError:
        raise ServiceError(f"{name} must be {example}; you wrote '{text}'.") from None


class EditModal(discord.ui.Modal):
    """Prompt, negative prompt, seed, steps and guidance of one image, ready to change."""

    def __init__(
        self, request: GenerateRequest, seed: int, title: str, sizes: Sequence[str]
    ) -> None:
        super().__init__(title=title, timeout=MODAL_MINUTES * 60)
        self.request = request
        size = f"{request.width}x{request.height}"
        self.size = size if size in sizes else None  # else the member's or Lexicon's default
        self.prompt = discord.ui.TextInput[Any](
            label="Prompt",
            style=discord.TextStyle.paragraph,
            default=request.prompt[:MAX_PROMPT_CHARS],
            max_length=MAX_PROMPT_CHARS,
        )
        self.negative = discord.ui.TextInput[Any](
            label="Negative prompt",
            style=discord.TextStyle.paragraph,
            default=request.negative[:MAX_PROMPT_CHARS] or None,
            max_length=MAX_PROMPT_CHARS,
            required=False,
        )
        self.seed = discord.ui.TextInput[Any](
            label="Seed (empty for a random one)", default=str(seed), required=False, max_length=20
        )
        self.steps = discord.ui.TextInput[Any](
            label="Steps", default=str(request.steps), required=False, max_length=5
        )
        self.guidance = discord.ui.TextInput[Any](
            label="Guidance (CFG scale)",
            default=f"{request.guidance:g}",
            required=False,
            max_length=10,
        )
        for field in (self.prompt, self.negative, self.seed, self.steps, self.guidance):
            self.add_item(field)

    def options(self) -> ImagineOptions:
        """One image from what was typed, the source's size and sampler; the source's
        embeddings still named are expected (one the member may not use gets a note)."""
        prompt, negative = self.prompt.value, self.negative.value
        explicit, bare = embedding_names_in(f"{prompt}\n{negative}")
        written = {fold_for_lookup(name) for name in explicit | bare}
        return ImagineOptions(
            prompt,
            negative=negative,
            count=1,
            steps=_number("Steps", self.steps.value, int, "a whole number, like 30"),
            guidance=_number("Guidance", self.guidance.value, float, "a number, like 7.5"),
            seed=_number("The seed", self.seed.value, int, "a whole number, like 42"),
            size=self.size,
            sampler=self.request.sampler,
            expected=tuple(e.name for e in self.request.embeddings if e.name in written),
            model=self.request.model or None,
        )

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        await self.submitted(interaction)

    async def submitted(self, interaction: discord.Interaction[LexiconBot]) -> None:
        try:
            options = self.options()  # a value that is no number costs no rate-limit token
            check_rate(interaction)
            await queue_imagine(interaction, options)
        except Exception as error:
            await report_error(interaction, error)
