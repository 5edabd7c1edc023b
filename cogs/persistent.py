"""`PersistentButton`: the one base of every button that must work after a restart.

A persistent button keeps everything it needs in its `custom_id` (`lexicon:<action>:<id>:…`) or
in SQLite, so a button on a message posted before a restart still works: the extension that owns
a button class registers it with `bot.add_dynamic_items` in its `setup`, and discord.py rebuilds
the item from the clicked component. Buttons have no command tree, so every press runs under
`report_error`, the same error path the slash commands use.

A subclass names its `action` and the fields of its custom id, sets its look, and implements
`pressed`:

    class DeleteButton(PersistentButton, action="delete", fields=("job",)):
        style = discord.ButtonStyle.danger
        label = "Delete"

        async def pressed(self, interaction): ...
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Self

import discord

from bot.discord_bot import LexiconBot
from cogs.errors import report_error

# Discord's limit on a custom id; the longest field ids stay well under it.
CUSTOM_ID_MAX = 100


class PersistentButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"lexicon:(?!)",  # the base itself matches nothing; each subclass sets its own
):
    """A button rebuilt from its custom id: `lexicon:<action>:<field>:<field>…`."""

    action: ClassVar[str]
    fields: ClassVar[tuple[str, ...]]
    text_field: ClassVar[str | None] = None  # the one field that is free text, not a number
    label: ClassVar[str] = ""  # a button rebuilt from its custom id is never shown again
    style: ClassVar[discord.ButtonStyle] = discord.ButtonStyle.secondary

    def __init_subclass__(
        cls, *, action: str, fields: tuple[str, ...], text_field: str | None = None
    ) -> None:
        cls.action, cls.fields, cls.text_field = action, fields, text_field
        groups = ":".join(
            f"(?P<{name}>.{{0,50}})" if name == text_field else f"(?P<{name}>[0-9]{{1,20}})"
            for name in fields
        )
        super().__init_subclass__(template=rf"lexicon:{action}:{groups}")

    def __init__(
        self,
        *values: int | str,
        label: str | None = None,
        row: int | None = None,
        disabled: bool = False,
    ) -> None:
        if len(values) != len(self.fields):
            raise TypeError(f"{type(self).__name__} takes {len(self.fields)} ids: {self.fields}")
        custom_id = ":".join(["lexicon", self.action, *(str(value) for value in values)])
        super().__init__(
            discord.ui.Button(
                label=label or self.label,
                style=self.style,
                custom_id=custom_id[:CUSTOM_ID_MAX],
                row=row,
                disabled=disabled,
            )
        )
        self.values = values

    def value(self, name: str) -> Any:
        """One field of the custom id, by name."""
        return self.values[self.fields.index(name)]

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
    ) -> Self:
        return cls(
            *(match[name] if name == cls.text_field else int(match[name]) for name in cls.fields)
        )

    # discord.py declares these two with a generic client; the one client here is a LexiconBot.
    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        try:
            await self.pressed(interaction)
        except Exception as error:
            await report_error(interaction, error)

    async def pressed(self, interaction: discord.Interaction[LexiconBot]) -> None:
        raise NotImplementedError
